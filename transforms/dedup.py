"""DedupRedeliveries: a redelivered report (same reportId) is dropped and counted.

The semantics of Beam's `DeduplicatePerKey(event_time_duration=...)`: a reportId is remembered until the
watermark passes its event time plus the horizon, so a redelivery arriving within that horizon — late or
out of order included — never reaches a sink twice. A report older than the horizon when it arrives (a
backlog, a redelivery after an outage) would be forgotten as soon as it is seen, since the watermark of a
live stream follows the clock: so the horizon starts at the later of its event time and its arrival. Written out here (the same few lines) because the
stock DoFn also declares a processing-time timer, which makes the DirectRunner fall back from the
FnApiRunner to its much slower bundle-based runner even in batch, and because it drops duplicates
silently where this one counts them. Runs in the global window, so a redelivery is caught across windows.

A bounded run (a batch replay) has no watermark until its end, so the horizon spans the whole input there:
it groups by reportId instead, which gives the same result without per-key state (the FnApiRunner's state
cache measures every state value's size, ~3 ms a report here). There the copy kept does not depend on input
order: the earliest event time, then the smallest digest of the report's canonical JSON.

Across runs: a reportId the output already holds (`already_routed()`, read from its routed files by each
worker as it starts, so that building the pipeline reads nothing) is dropped and counted as a duplicate too, so replays in any order, a producer's retry with a
new `submittedAt`, or a batch backfill over a streaming run's output never route a report twice.
"""
import hashlib

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.plumbing.event_windows import in_global_window
from transforms.plumbing.metrics import counter
from transforms.plumbing.windowed_files import record_line

DEFAULT_HORIZON_HOURS = 24


class _FirstReportPerIdFn(beam.DoFn):
    SEEN = userstate.ReadModifyWriteStateSpec("seen", BooleanCoder())
    FORGET = userstate.TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, horizon):
        self.horizon = horizon
        self.duplicates = counter("duplicates")

    def process(self, keyed, ts=beam.DoFn.TimestampParam,
                seen=beam.DoFn.StateParam(SEEN), forget=beam.DoFn.TimerParam(FORGET)):
        if seen.read():
            self.duplicates.inc()
            return
        seen.write(True)
        forget.set(max(ts, Timestamp.now()) + self.horizon)
        yield keyed[1]

    @userstate.on_timer(FORGET)
    def forget_report_id(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


class _FirstOfGroupFn(beam.DoFn):
    """The batch form: one report per reportId group, back at its event time; the rest are counted."""

    def __init__(self):
        self.duplicates = counter("duplicates")

    def process(self, grouped):
        copies = list(grouped[1])
        report, event_time = min(copies, key=lambda copy: (copy[1], hashlib.sha256(record_line(copy[0])).digest()))
        self.duplicates.inc(len(copies) - 1)
        yield TimestampedValue(report, event_time)


class _DropAlreadyRoutedFn(beam.DoFn):
    """Drops (and counts as duplicates) the reports whose reportId the output holds already."""

    def __init__(self, read_already_routed):
        self.read_already_routed = read_already_routed
        self.duplicates = counter("duplicates")
        self.already_in_output = counter("already_in_output")

    def setup(self):
        self.already_routed = frozenset(self.read_already_routed())

    def process(self, report):
        if report["reportId"] in self.already_routed:
            self.duplicates.inc()
            self.already_in_output.inc()
            return
        yield report


class DedupRedeliveries(beam.PTransform):
    """Keeps the first report per reportId within `horizon_hours` of event time; counts the rest."""

    def __init__(self, horizon_hours=DEFAULT_HORIZON_HOURS, already_routed=None):
        """`already_routed`: a function giving the reportIds the output holds (None: no output to consult)."""
        super().__init__()
        self.horizon = Duration(seconds=int(horizon_hours * 3600))
        self.already_routed = already_routed

    def expand(self, reports):
        if self.already_routed is not None:
            reports = reports | "DropAlreadyRouted" >> beam.ParDo(_DropAlreadyRoutedFn(self.already_routed))
        reports = in_global_window(reports)
        if reports.is_bounded:
            return (reports
                    | "KeyByReportIdWithEventTime" >> beam.Map(
                        lambda report, ts=beam.DoFn.TimestampParam: (report["reportId"], (report, ts)))
                    | "GroupByReportId" >> beam.GroupByKey()
                    | "FirstOfGroup" >> beam.ParDo(_FirstOfGroupFn()))
        return (reports
                | "KeyByReportId" >> beam.Map(lambda report: (report["reportId"], report))
                | "FirstPerReportId" >> beam.ParDo(_FirstReportPerIdFn(self.horizon)))
