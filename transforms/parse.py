"""ParseReports: raw messages -> validated report dicts stamped with their event time.

Everything that is not a contract report (../shared/contract/REPORT_FORMAT.md) leaves here as a dead
letter with the original payload and the reason; the job keeps going. What a contract report is lives in
transforms/reports/validation.py (the intake service refuses with the same rules).
"""
import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.plumbing.bounded_lines import OversizeLine
from transforms.plumbing.event_windows import in_global_window_at, micros_of_utc
from transforms.plumbing.metrics import counter
from transforms.reports.avro_validation import InvalidRecord
from transforms.reports.validation import (DEFAULT_MAX_CLOCK_SKEW_HOURS, DEFAULT_MAX_FILES_PER_REPORT,
                                          DEFAULT_MAX_MESSAGE_BYTES, ReportValidator, decode_message, report_id_of)
from transforms.dead_letters import dead_letter

STAGE = "parse"
DEAD_LETTERS = "dead_letters"


class _ParseReportFn(beam.DoFn):
    """Decodes and validates a message; stamps the report with its event time (`submittedAt`).

    Why not a `TimestampedValue` of `Timestamp.from_utc_datetime`: the runner assigns a TimestampedValue its
    windows again and the Timestamp is made at once (~7 µs a report together); input in the global window
    (every source here) is stamped as a WindowedValue at its event micros instead."""

    def __init__(self, max_message_bytes, max_files, max_clock_skew_hours, in_global_window):
        self.max_message_bytes = max_message_bytes
        self.max_files = max_files
        self.max_clock_skew_hours = max_clock_skew_hours
        self.in_global_window = in_global_window
        self.read = counter("read")
        self.valid = counter("valid")

    def setup(self):
        self.validator = ReportValidator(self.max_files, self.max_clock_skew_hours)

    def process(self, payload):
        parsed = self.parsed(payload)
        if not isinstance(parsed, tuple):
            yield parsed
            return
        report, event_time = parsed
        micros = micros_of_utc(event_time)
        if self.in_global_window:
            yield in_global_window_at(report, micros)
        else:
            yield TimestampedValue(report, Timestamp(micros=micros))

    def parsed(self, payload, source_time=None):
        """(report, event time), or the payload's dead letter as a tagged output. `source_time`: the
        timestamp the source gave the message, checked against the clock."""
        self.read.inc()
        if isinstance(payload, OversizeLine):
            return beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                STAGE, payload.reason(self.max_message_bytes), payload.head, payload.report_id()))
        try:
            report = decode_message(payload, self.max_message_bytes)
            event_time = self.validator.validate(report)
            if source_time is not None:
                self.validator.check_source_time(source_time)
        except InvalidRecord as error:
            return beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(STAGE, str(error), payload,
                                                                      report_id_of(payload)))
        self.valid.inc()
        return report, event_time


class _ParseSourceStampedReportFn(_ParseReportFn):
    """For a source that stamped each message already (Pub/Sub's `submittedAt` attribute): the report keeps
    that timestamp, which is checked against the clock like `submittedAt`."""

    def process(self, payload, timestamp=beam.DoFn.TimestampParam):
        parsed = self.parsed(payload, timestamp)
        yield parsed[0] if isinstance(parsed, tuple) else parsed


class ParseReports(beam.PTransform):
    """Decodes and validates messages; returns `(reports, dead_letters)`.

    `stamp_event_time` sets each report's timestamp from `submittedAt`; turn it off for sources that
    already did (Pub/Sub with the `submittedAt` attribute), since a step may not move time backwards.
    """

    def __init__(self, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, stamp_event_time=True,
                 max_files=DEFAULT_MAX_FILES_PER_REPORT, max_clock_skew_hours=DEFAULT_MAX_CLOCK_SKEW_HOURS):
        super().__init__()
        self.max_message_bytes = max_message_bytes
        self.max_files = max_files
        self.stamp_event_time = stamp_event_time
        self.max_clock_skew_hours = max_clock_skew_hours

    def expand(self, messages):
        parse = _ParseReportFn if self.stamp_event_time else _ParseSourceStampedReportFn
        in_global_window = isinstance(messages.windowing.windowfn, window.GlobalWindows)
        parsed = messages | "Parse" >> beam.ParDo(parse(
            self.max_message_bytes, self.max_files, self.max_clock_skew_hours, in_global_window)).with_outputs(
                DEAD_LETTERS, main="reports")
        return parsed.reports, parsed[DEAD_LETTERS]
