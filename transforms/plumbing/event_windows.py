"""Event-time windows shared by the windowed stages (trends, bundles, spike alerts, file sinks).

Unbounded input uses Beam's windows and triggers: panes fire when the watermark passes a window and again
for late data (on the DirectRunner, the same panes from transforms/plumbing/local_windows.py). Bounded input (a batch replay) has no late data and fires every window exactly once, so
there the stages key by the window's start instead and group in the global window: the same result,
without the DirectRunner's general trigger driver, which every windowed grouping goes through even with the
default trigger (it was most of a batch run's time: trends 1.3 ms a report before, ~0.2 ms after).
"""
import datetime
import typing

import apache_beam as beam
from apache_beam.transforms import trigger, window
from apache_beam.transforms.combiners import ToListCombineFn
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils import windowed_value
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms.plumbing.direct_runner import on_the_direct_runner
from transforms.plumbing.local_windows import combine_in_local_windows

ON_TIME_PANE = {"pane_index": 0, "pane_timing": "ON_TIME"}  # the one pane of a bounded run's window


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def utc(moment):
    """A Beam Timestamp or epoch seconds as an aware UTC datetime."""
    if isinstance(moment, Timestamp):
        return utc_of_micros(moment.micros)
    return EPOCH + datetime.timedelta(seconds=moment)


def utc_of_micros(micros):
    """Microseconds since the epoch as an aware UTC datetime, exactly (no float seconds between)."""
    return EPOCH + datetime.timedelta(microseconds=micros)


def micros_of_utc(moment):
    """An aware datetime as microseconds since the epoch, exactly as `Timestamp.from_utc_datetime` gives them
    (~0.15 µs, not ~2)."""
    elapsed = moment - EPOCH
    return (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds


def pane_columns(pane):
    """Which firing a row comes from: the latest pane_index per window is the total to use."""
    return {"pane_index": pane.index, "pane_timing": PaneInfoTiming.to_string(pane.timing)}


def window_start_seconds(micros, window_seconds):
    """Start (epoch seconds) of the fixed event-time window holding the instant `micros` (µs since the
    epoch), as FixedWindows assigns it."""
    return (micros - micros % (window_seconds * 1_000_000)) // 1_000_000


def fixed_window(micros, window_seconds):
    """The IntervalWindow FixedWindows(window_seconds) puts the instant `micros` in."""
    start = window_start_seconds(micros, window_seconds)
    return window.IntervalWindow(start, start + window_seconds)


GLOBAL_WINDOWS = (window.GlobalWindow(),)


def in_global_window_at(element, micros):
    """`element` at event time `micros` (µs since the epoch) in the global window, as a DoFn over input in
    the global window (every bounded stage here) yields it. Why not a `TimestampedValue`: the runner passes a
    WindowedValue on as it is, but assigns a TimestampedValue its windows again (GlobalWindows.assign makes
    a GlobalWindow and its end Timestamp each time, ~10 µs an element). Made by Beam's `create`, as
    `with_value` makes one: the Timestamp object is made only if a step asks for it (~1.4 µs an element)."""
    return windowed_value.create(element, micros, GLOBAL_WINDOWS)


def in_window(element, window_start, window_seconds):
    """Bounded: `element` timestamped at the last instant of its window (in the global window), so a later
    fixed windowing (a file sink's) of the same or a coarser size puts it back in that window."""
    return in_global_window_at(element, (window_start + window_seconds) * 1_000_000 - 1)


def in_global_window(pcoll):
    """`pcoll` in the global window: as it is when it already is (a step fewer per element), else re-windowed."""
    if isinstance(pcoll.windowing.windowfn, window.GlobalWindows):
        return pcoll
    return pcoll | "Unwindow" >> beam.WindowInto(window.GlobalWindows())


def late_firing_windows(window_fn, allowed_lateness_seconds, accumulate):
    """Event-time windows that fire when the watermark passes, then once per late element (unbounded input)."""
    return beam.WindowInto(
        window_fn,
        trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
        accumulation_mode=(trigger.AccumulationMode.ACCUMULATING if accumulate
                           else trigger.AccumulationMode.DISCARDING),
        allowed_lateness=Duration(seconds=allowed_lateness_seconds))


class WindowResult(typing.NamedTuple):
    """One key's combined value in one fixed event-time window (start and end in epoch seconds)."""
    key: object
    start: int
    end: int
    value: object
    pane: dict


class TallyCombineFn(beam.CombineFn):
    """Combines mutable tallies: `new_tally()` makes an empty one, `tally.add(value)` counts an input in,
    `tally.merge(other)` takes another tally in. One CombineFn for every stage that counts into a tally."""

    def __init__(self, new_tally):
        self.new_tally = new_tally

    def create_accumulator(self):
        return self.new_tally()

    def add_input(self, tally, value):
        tally.add(value)
        return tally

    def merge_accumulators(self, tallies):
        merged = self.new_tally()
        for tally in tallies:
            merged.merge(tally)
        return merged

    def extract_output(self, tally):
        return tally


class KeyedTableCombineFn(TallyCombineFn):
    """(keys, value) records -> {key: output}, through one table of a window's records rather than an
    accumulator per key: a tally (`new_table()`, `merge`) whose `add(keys, value)` takes a record in and
    `by_key()` gives the outputs. For `CombinePerKeyAndWindow(keyed_combine_fn=...)`, where each of a
    record's keys would otherwise hold its values."""

    def add_input(self, table, keys_and_value):
        table.add(*keys_and_value)
        return table

    def extract_output(self, table):
        return table.by_key()


class TablePaneCombineFn(KeyedTableCombineFn):
    """`KeyedTableCombineFn` whose output is the window's table itself: for a `pane_as_one` stage that reads
    a pane of many keys its own way, without the {key: output} dict of them all."""

    def extract_output(self, table):
        return table


class KeyedCombineFn(beam.CombineFn):
    """`combine_fn` per key inside one accumulator ({key: accumulator}), fed one element per record:
    `(keys, value)` adds `value` under each of `keys`. A record counted under many keys (trend dimensions,
    watched alert keys) then costs one element, not one per key."""

    def __init__(self, combine_fn):
        self.combine_fn = combine_fn

    def create_accumulator(self):
        return {}

    def add_input(self, accumulators, keys_and_value):
        keys, value = keys_and_value
        for key in keys:
            found = accumulators.get(key)
            if found is None:
                found = self.combine_fn.create_accumulator()
            accumulators[key] = self.combine_fn.add_input(found, value)
        return accumulators

    def merge_accumulators(self, many):
        merged = {}
        for accumulators in many:
            for key, accumulator in accumulators.items():
                merged[key] = (accumulator if key not in merged
                               else self.combine_fn.merge_accumulators([merged[key], accumulator]))
        return merged

    def extract_output(self, accumulators):
        return {key: self.combine_fn.extract_output(accumulator) for key, accumulator in accumulators.items()}


class ConcatListsCombineFn(ToListCombineFn):
    """Beam's `ToListCombineFn` with a merge linear in the values: its own sums the lists, which copies the
    merged list once per accumulator (quadratic when a key has many). `accumulator_coder` (optional) is how
    its lists cross the grouping."""

    def __init__(self, accumulator_coder=None):
        super().__init__()
        self.accumulator_coder = accumulator_coder

    def get_accumulator_coder(self):
        return self.accumulator_coder or super().get_accumulator_coder()

    def merge_accumulators(self, accumulators):
        merged = []
        for accumulator in accumulators:
            merged.extend(accumulator)
        return merged


def group_in_batches(accumulator_coder=None):
    """A GroupByKey for bounded input in the global window that moves a list per key and bundle, not an
    element per value: `CombinePerKey` with a list accumulator, which the runner lifts into a pre-combine
    in each bundle (the FnApiRunner does, in one process and in several), so each value is appended to its
    key's list where it was made and the shuffle carries one list per key and bundle (a value crossing a
    grouping on its own is encoded, buffered, decoded and re-encoded there, one element at a time). Gives
    (key, [values]) as GroupByKey gives (key, values), in no particular order; few keys, many values each
    (a bundle holds its lists until it ends). `accumulator_coder`: how the lists cross the grouping."""
    return beam.CombinePerKey(ConcatListsCombineFn(accumulator_coder))


class CombinePerKeyAndWindow(beam.PTransform):
    """Elements -> a `WindowResult` per key and fixed event-time window: the one way a windowed stage
    (trends, bundles, spike alerts) counts, so each states its logic once and gets the right form here.

    `keys_and_value(element)` gives the keys an element counts under and the value it adds (no keys: not
    counted); `combine_fn` combines one key's values. `keyed_combine_fn` (optional, not with `accumulate`)
    replaces `KeyedCombineFn(combine_fn)` where all keys share one accumulator: a form that holds a window's
    records more compactly than an accumulator per key, with the same outputs; with it, unbounded,
    `pane_as_one` gives each pane as one WindowResult (key None, value {key: value}, or the table itself with
    `TablePaneCombineFn`), for a stage that spreads a pane of many keys itself (an element per key costs ~400
    bytes while its bundle lasts). The form follows the input:
    - bounded: one element per record keyed by its window's start, combined in the global window (no
      trigger driver); one on-time pane per window, each result timestamped inside its window;
    - unbounded: fixed windows firing when the watermark passes and once per late element; discarding
      panes are combined with the keys inside one accumulator (one element per record); accumulating panes
      per key, so a late element fires its own key again, not every key of its window. On the DirectRunner
      (or with `local`) the same panes come from one merged accumulator per key and window
      (transforms/plumbing/local_windows.py), not from Beam's grouping, which holds what reaches it until
      the window fires.
    """

    def __init__(self, keys_and_value, combine_fn, window_seconds, allowed_lateness_seconds, accumulate,
                 local=None, keyed_combine_fn=None, pane_as_one=False):
        super().__init__()
        if accumulate and keyed_combine_fn is not None:
            raise ValueError("keyed_combine_fn is for discarding panes: accumulating ones combine per key")
        self.pane_as_one = pane_as_one
        self.keys_and_value = keys_and_value
        self.combine_fn = combine_fn
        self.keyed_combine_fn = keyed_combine_fn or KeyedCombineFn(combine_fn)
        self.window_seconds = window_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.accumulate = accumulate
        self.local = local

    def expand(self, elements):
        if elements.is_bounded:
            return (in_global_window(elements)
                    | "KeysAndValueByWindow" >> beam.ParDo(_KeysAndValueByWindowFn(self.keys_and_value,
                                                                                 self.window_seconds))
                    | "Combine" >> beam.CombinePerKey(self.keyed_combine_fn)
                    | "Results" >> beam.FlatMap(_on_time_results, self.window_seconds))
        local = local_forms(elements.pipeline, self.local)
        window_fn = window.FixedWindows(self.window_seconds)
        if self.accumulate:
            per_key = elements | "PerKey" >> beam.FlatMap(_per_key, self.keys_and_value)
            return (combine_in_event_windows(per_key, "", window_fn, self.combine_fn,
                                             self.allowed_lateness_seconds, self.accumulate, local)
                    | "Results" >> beam.ParDo(_KeyedResultFn()))
        under_one_key = elements | "KeysAndValue" >> beam.Map(_under_one_key, self.keys_and_value)
        return (combine_in_event_windows(under_one_key, "", window_fn, self.keyed_combine_fn,
                                         self.allowed_lateness_seconds, self.accumulate, local)
                | "Results" >> beam.ParDo(_PaneResultFn() if self.pane_as_one else _PaneResultsFn()))

def local_forms(pipeline, local):
    """Whether a stage uses its local state forms: as `local` says, or (None) on the DirectRunner."""
    return on_the_direct_runner(pipeline) if local is None else local


def combine_in_event_windows(keyed, label, window_fn, combine_fn, allowed_lateness_seconds, accumulate, local):
    """(key, value) timestamped elements -> (key, combined) per pane of `window_fn`'s windows, firing when the
    watermark passes and once per late bundle: Beam's windows and CombinePerKey, or with `local` the same
    panes from one merged accumulator per key and window (local_windows.py), which reads the windows from
    the timestamps. `label` prefixes the steps' names."""
    if local:
        return in_global_window(keyed) | f"{label}Combine" >> combine_in_local_windows(
            combine_fn, window_fn, allowed_lateness_seconds, accumulate)
    return (keyed
            | f"{label}Windows" >> late_firing_windows(window_fn, allowed_lateness_seconds, accumulate)
            | f"{label}Combine" >> beam.CombinePerKey(combine_fn))


class _KeysAndValueByWindowFn(beam.DoFn):
    """Bounded: (start of the element's fixed window, (keys, value))."""

    def __init__(self, keys_and_value, window_seconds):
        self.keys_and_value = keys_and_value
        self.window_seconds = window_seconds

    def process(self, element, stamped=beam.DoFn.WindowedValueParam):
        yield window_start_seconds(stamped.timestamp_micros, self.window_seconds), self.keys_and_value(element)


def _on_time_results(keyed, window_seconds):
    """Bounded: a window's {key: value} -> its results, each timestamped inside the window."""
    start, combined = keyed
    for key, value in combined.items():
        yield in_window(WindowResult(key, start, start + window_seconds, value, ON_TIME_PANE), start, window_seconds)


def _under_one_key(element, keys_and_value):
    return None, keys_and_value(element)


def _per_key(element, keys_and_value):
    keys, value = keys_and_value(element)
    return [(key, value) for key in keys]


def _seconds(timestamp):
    return int(timestamp.micros // 1_000_000)


class _KeyedResultFn(beam.DoFn):
    def process(self, keyed, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        key, value = keyed
        yield WindowResult(key, _seconds(win.start), _seconds(win.end), value, pane_columns(pane))


class _PaneResultsFn(beam.DoFn):
    def process(self, keyed, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        _, combined = keyed
        columns = pane_columns(pane)
        for key, value in combined.items():
            yield WindowResult(key, _seconds(win.start), _seconds(win.end), value, columns)


class _PaneResultFn(beam.DoFn):
    """`pane_as_one`: a window's pane as one WindowResult, its value the combine's output, its key None."""

    def process(self, keyed, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        _, combined = keyed
        yield WindowResult(None, _seconds(win.start), _seconds(win.end), combined, pane_columns(pane))
