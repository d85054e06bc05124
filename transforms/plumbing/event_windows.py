"""Event-time windows shared by the windowed stages (trends, bundles, spike alerts, file sinks).

Unbounded input uses Beam's windows and triggers: panes fire when the watermark passes a window and again
for late data. Bounded input (a batch replay) has no late data and fires every window exactly once, so
there the stages key by the window's start instead and group in the global window: the same result,
without the DirectRunner's general trigger driver, which every windowed grouping goes through even with the
default trigger (it was most of a batch run's time: trends 1.3 ms a report before, ~0.2 ms after).
"""
import datetime

import apache_beam as beam
from apache_beam.transforms import trigger, window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

ON_TIME_PANE = {"pane_index": 0, "pane_timing": "ON_TIME"}  # the one pane of a bounded run's window


def utc(moment):
    """A Beam Timestamp or epoch seconds as an aware UTC datetime."""
    seconds = moment.micros / 1e6 if isinstance(moment, Timestamp) else moment
    return datetime.datetime.fromtimestamp(0, datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def pane_columns(pane):
    """Which firing a row comes from: the latest pane_index per window is the total to use."""
    return {"pane_index": pane.index, "pane_timing": PaneInfoTiming.to_string(pane.timing)}


def window_start_seconds(timestamp, window_seconds):
    """Start (epoch seconds) of the fixed event-time window holding `timestamp`, as FixedWindows assigns it."""
    micros = timestamp.micros
    return (micros - micros % (window_seconds * 1_000_000)) // 1_000_000


def fixed_window(timestamp, window_seconds):
    """The IntervalWindow FixedWindows(window_seconds) puts `timestamp` in."""
    start = window_start_seconds(timestamp, window_seconds)
    return window.IntervalWindow(start, start + window_seconds)


def in_window(element, window_start, window_seconds):
    """`element` timestamped at the last instant of its window, so a later fixed windowing (a file sink's)
    of the same or a coarser size puts it back in that window."""
    return TimestampedValue(element, Timestamp(window_start + window_seconds) - Duration(micros=1))


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
