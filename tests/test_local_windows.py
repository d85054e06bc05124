"""The windowed combine's two streaming forms (Beam's fixed windows and grouping; one merged accumulator per
key and window, for the DirectRunner) give the same results, panes, timestamps and windows, late and
dropped elements included, accumulating and discarding."""
import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream

from tests.test_dedup_state_forms import collected, pipeline_of
from tests.test_trends import at, routed_record
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms.plumbing.event_windows import CombinePerKeyAndWindow, combine_in_event_windows
from transforms.trends import TrendCounts

HOUR = 3600


def counted(keys, amount=1):
    """An element counted under `keys`, adding `amount`."""
    return {"keys": keys, "amount": amount}


def keys_and_amount(element):
    return tuple(element["keys"]), element["amount"]


def element_stream():
    """Hourly windows, lateness 2 h: keys a and b on time in hours 0 and 1; after the watermark passes hour 0,
    two late bundles for it (one of two elements of a: one pane), a late element opening hour 2's window for
    key c behind the watermark, elements after hour 0 expired (dropped) while hour 1 still takes late ones,
    and an element in the current hour that drains on time."""
    return (TestStream().advance_watermark_to(0)
            .add_elements([at(10, counted(["a", "b"])), at(20, counted(["a"], 2)), at(HOUR + 5, counted(["b"]))])
            .add_elements([at(100, counted(["b"], 3))])
            .advance_watermark_to(HOUR + 60)
            .add_elements([at(30, counted(["a"])), at(40, counted(["a"], 5))])
            .add_elements([at(50, counted(["b"])), at(HOUR + 70, counted(["a"]))])
            .advance_watermark_to(3 * HOUR + 10)
            .add_elements([at(2 * HOUR + 1, counted(["c"]))])
            .add_elements([at(2 * HOUR + 2, counted(["c"], 4)), at(HOUR + 1, counted(["a", "c"]))])
            .advance_watermark_to(3 * HOUR + 30)
            .add_elements([at(60, counted(["a"])), at(HOUR + 2, counted(["b"])), at(3 * HOUR + 40, counted(["d"]))])
            .advance_watermark_to_infinity())


class _Fields(beam.DoFn):
    def process(self, result, timestamp=beam.DoFn.TimestampParam, win=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        yield (str(result.key), result.start, result.end, result.value, result.pane["pane_index"],
               result.pane["pane_timing"], timestamp.micros, win.start.micros, win.end.micros,
               pane.is_first, pane.is_last, pane.nonspeculative_index)


def results(local, accumulate):
    @pipeline_of(streaming=True)
    def build(p):
        return (p | element_stream()
                | CombinePerKeyAndWindow(keys_and_amount, beam.CombineFn.from_callable(sum), HOUR, 2 * HOUR,
                                         accumulate, local=local)
                | beam.ParDo(_Fields()))
    return collected(build)


@pytest.mark.parametrize("accumulate", [True, False])
def test_the_local_form_gives_beams_panes(accumulate):
    beams = results(False, accumulate)
    assert results(True, accumulate) == beams
    panes = {}
    for row in sorted(beams, key=lambda row: row[4]):  # a discarding window's panes count across its keys
        panes.setdefault((row[0], row[1]), []).append((row[3], row[5]))
    late_of_a = 9 if accumulate else 6  # two late elements in one bundle: one pane; one after expiry: none
    assert panes["a", 0] == [(3, "ON_TIME"), (late_of_a, "LATE")]
    assert panes["b", HOUR] == [(1, "ON_TIME"), (2 if accumulate else 1, "LATE")]  # hour 1 still takes late ones
    assert panes["c", 2 * HOUR] == [(1, "LATE"), (5 if accumulate else 4, "LATE")]  # opened behind the watermark
    assert panes["d", 3 * HOUR] == [(1, "ON_TIME")]


class _SlidingFields(beam.DoFn):
    def process(self, keyed, timestamp=beam.DoFn.TimestampParam, win=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        yield (keyed[0], keyed[1], timestamp.micros, win.start.micros, win.end.micros, pane.timing,
               pane.index, pane.is_first, pane.is_last, pane.nonspeculative_index)


def per_key_amounts(element):
    return [(key, element["amount"]) for key in element["keys"]]


def sliding_results(local):
    """The element stream summed per key in 3-hour windows sliding hourly, accumulating, lateness 2 h."""
    @pipeline_of(streaming=True)
    def build(p):
        keyed = p | element_stream() | beam.FlatMap(per_key_amounts)
        return (combine_in_event_windows(keyed, "Sliding", window.SlidingWindows(3 * HOUR, HOUR),
                                         beam.CombineFn.from_callable(sum), 2 * HOUR, True, local)
                | beam.ParDo(_SlidingFields()))
    return collected(build)


def test_the_local_form_of_sliding_windows_held_per_period_gives_beams_panes():
    """The local form holds each key's sum once per hour and merges a window's hours per pane."""
    beams = sliding_results(False)
    assert sliding_results(True) == beams
    panes = {}
    for key, total, _, start, _, timing, index, *_ in sorted(beams, key=lambda row: row[6]):
        panes.setdefault((key, start // 1_000_000 // HOUR), []).append((total, timing))
    on_time, late = PaneInfoTiming.ON_TIME, PaneInfoTiming.LATE
    assert panes["a", 0] == [(10, on_time), (11, late), (12, late)]  # two late bundles: two panes
    assert panes["a", -2] == [(3, on_time), (9, late)]  # the last late a came after [-2 h, 1 h) expired
    assert panes["c", 0] == [(1, late), (6, late)]  # c opened behind the watermark in a fired window
    assert panes["c", 2] == [(5, on_time)]  # and on time in [2 h, 5 h)


def trend_stream():
    """Routed records over three hours, lateness 2 h: on time, late into a fired hour (one bundle of two), after
    hour 0 expired (dropped), and a day later one late into fired and unfired sliding windows."""
    return (TestStream().advance_watermark_to(0)
            .add_elements([at(10, routed_record("a", user="u1")), at(20, routed_record("b", country="FR", user="u2"))])
            .add_elements([at(HOUR + 5, routed_record("c", user="u1", bundle="x"))])
            .advance_watermark_to(HOUR + 60)
            .add_elements([at(30, routed_record("d", user="u3")), at(40, routed_record("e", user="u1"))])
            .add_elements([at(2 * HOUR + 1, routed_record("f", esp="esp-2", user="u1", bundle="x"))])
            .advance_watermark_to(3 * HOUR + 10)
            .add_elements([at(HOUR + 20, routed_record("g", user="u4"))])
            .add_elements([at(50, routed_record("h", user="u5"))])
            .advance_watermark_to(25 * HOUR + 10)
            .add_elements([at(23 * HOUR + 30, routed_record("i", user="u6"))])
            .advance_watermark_to_infinity())


class _RowFields(beam.DoFn):
    def process(self, row, timestamp=beam.DoFn.TimestampParam):
        yield (row["table"], row["window_start"].timestamp(), row["window_end"].timestamp(),
               str(row.get("country") or row.get("espId") or ""), row["reports"], row["files"], row["users"],
               row["bundles"], row["pane_index"], row["pane_timing"], timestamp.micros)


def trend_rows(local, output):
    @pipeline_of(streaming=True)
    def build(p):
        return (p | trend_stream() | TrendCounts(output, allowed_lateness_seconds=2 * HOUR, local=local)
                | beam.ParDo(_RowFields()))
    return collected(build)


def test_the_local_form_gives_beams_trend_rows_hourly_and_sliding(tmp_path):
    beams = trend_rows(False, str(tmp_path / "beam"))
    assert trend_rows(True, str(tmp_path / "local")) == beams
    panes = {}
    for row in sorted(beams, key=lambda row: row[8]):
        panes.setdefault((row[0], row[1] // HOUR), []).append((row[4], row[6], row[9]))
    assert panes["hourly_total", 0] == [(2, 2, "ON_TIME"), (4, 3, "LATE")]  # h came after hour 0 expired
    assert panes["sliding24h_total", 0] == [(7, 5, "ON_TIME"), (8, 6, "LATE")]  # i: late for [0 h, 24 h)
    assert panes["sliding24h_total", 2] == [(2, 2, "ON_TIME")]  # and on time for [2 h, 26 h)
