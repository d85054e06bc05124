"""The streaming spike detector in its two forms (one key per watched key; watched keys in buckets, for the
DirectRunner) judges the same windows the same way: out of order, late, silent and forgotten keys included."""
import pickle

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream

from tests.test_dedup_state_forms import collected, pipeline_of
from tests.test_trends import at
from transforms.alerts import (BASELINE_RECORD, DEFAULT_RULES, SpikeRule, WatchedCounts, baseline_offsets,
                               key_by_detector_bucket, watched_key, _OnTimeCountsInBucketsFn, _SpikeDetectorFn,
                               _SpikeDetectorInBucketFn)
from transforms.plumbing.event_windows import WindowResult
from transforms.reports.signatures import compact_signature

HOUR = 3600
RULES = {**DEFAULT_RULES, "esp": SpikeRule(min_count=5, ratio=2.0, warmup_windows=1)}


def count(kind, value, hour, number):
    """A watched key's on-time count for the window starting at `hour`, as `_OnTimeCountFn` gives it, at the
    window's last instant."""
    return at((hour + 1) * HOUR - 1e-6, ((kind, value), (hour * HOUR, number)))


def count_stream():
    """Forget after 2 silent windows: sig-a floods, goes quiet and is forgotten, then floods again; esp-1 steady
    then jumps; sig-b's hours arrive out of order; a count for a window already judged; esp-2's next count
    is already pending when its forget time passes (the baseline is kept for it)."""
    return (TestStream().advance_watermark_to(0)
            .add_elements([count("signature", "sig-a", 0, 12), count("esp", "esp-1", 0, 4),
                           count("signature", "sig-b", 2, 30)])
            .add_elements([count("signature", "sig-b", 0, 3), count("esp", "esp-1", 1, 4),
                           count("esp", "esp-2", 0, 3), count("esp", "esp-2", 5, 40)])  # pending past its forget time
            .advance_watermark_to(2 * HOUR)
            .add_elements([count("esp", "esp-1", 2, 20), count("signature", "sig-a", 1, 1),
                           count("signature", "sig-b", 1, 2)])
            .advance_watermark_to(4 * HOUR)
            .add_elements([count("esp", "esp-1", 0, 50)])  # a window already judged: skipped
            .advance_watermark_to(9 * HOUR)
            .add_elements([count("signature", "sig-a", 9, 11), count("esp", "esp-1", 9, 6)])
            .advance_watermark_to_infinity())


def alerts(form, buckets):
    @pipeline_of(streaming=True)
    def build(p):
        counts = p | count_stream()
        if form == "per-key":
            out = counts | beam.ParDo(_SpikeDetectorFn(RULES, HOUR, forget_after_windows=2))
        else:
            out = (counts | beam.ParDo(key_by_detector_bucket(buckets))
                   | beam.ParDo(_SpikeDetectorInBucketFn(RULES, HOUR, forget_after_windows=2)))
        return out | beam.Map(lambda a: (a["kind"], a["key"], a["window_start"], a["count"], a["baseline"],
                                         a["history_windows"]))
    return collected(build)


@pytest.mark.parametrize("buckets", [1, 2, 1024])
def test_the_bucketed_detector_alerts_as_the_per_key_one(buckets):
    per_key = alerts("per-key", buckets)
    assert alerts("bucketed", buckets) == per_key
    assert ("signature", "sig-a", "1970-01-01T09:00:00Z", 11, 0.0, 0) in per_key  # forgotten: no history
    assert [alert[:4] for alert in per_key if alert[0] == "esp"] == [
        ("esp", "esp-1", "1970-01-01T02:00:00Z", 20),
        ("esp", "esp-2", "1970-01-01T05:00:00Z", 40)]  # past its warm-up: its baseline was kept for this count


def test_baselines_are_found_by_whole_records_only():
    """A digest's bytes that appear across two records (here: the end of one record and the start of the
    next) are not a record of it; each record is found where it starts."""
    first = BASELINE_RECORD.pack(b"AAAAAAAA", 1, 2, 0.0)
    second = BASELINE_RECORD.pack(b"BBBBBBBB", 3, 4, 1.5)
    straddling = first[-4:] + second[:4]
    offsets = baseline_offsets(first + second)
    assert offsets == {b"AAAAAAAA": 0, b"BBBBBBBB": BASELINE_RECORD.size}
    assert straddling not in offsets


def test_a_windows_pane_is_spread_over_the_buckets_as_single_counts_are():
    """The bucketed path's on-time pane (a window's `WatchedCounts`) becomes one pickled list per bucket:
    every key in the bucket `key_by_detector_bucket` picks for it, with its window and count, each count as
    `by_key()` gives it; a late pane, nothing (its reports counted as ignored)."""
    table = WatchedCounts()
    for n in range(500):
        for _ in range(n % 3 + 1):
            table.add((compact_signature(f"md5:{n:032x}"), ("esp", "esp-1")), 1)
    table.add(("text-signature:x", ("jurisdiction", "GB")), 1)
    table.add(("text-signature:x",), 1)
    counted = table.by_key()
    assert counted[("esp", "esp-1")] == 999 and counted["text-signature:x"] == 2
    on_time = WindowResult(None, 7 * HOUR, 8 * HOUR, table, {"pane_timing": "ON_TIME"})
    spread = list(_OnTimeCountsInBucketsFn(64).process(on_time))
    assert len({bucket for bucket, _ in spread}) == len(spread) > 1
    single = key_by_detector_bucket(64)
    one_by_one = [bucketed for key, count in counted.items()
                  for bucketed in single.process((watched_key(key), (7 * HOUR, count)))]
    assert as_watched_counts(spread) == as_watched_counts(one_by_one)
    assert ("signature", "md5:" + "0" * 30 + "0a") in {key for _, key, _, _ in as_watched_counts(spread)}
    late_fn = _OnTimeCountsInBucketsFn(64)
    late = WindowResult(None, 7 * HOUR, 8 * HOUR, table, {"pane_timing": "LATE"})
    assert list(late_fn.process(late)) == []
    assert table.total() == sum(counted.values())


def as_watched_counts(bucketed):
    """{(bucket, watched key, window start, count)} of (bucket, pickled (start, [(key, count)])) elements."""
    return {(bucket, watched_key(key), start, count) for bucket, packed in bucketed
            for start, counts in [pickle.loads(packed)] for key, count in counts}
