"""ParseReports: raw messages -> validated report dicts stamped with their event time.

Everything that is not a contract report (../shared/contract/REPORT_FORMAT.md) leaves here as a dead
letter with the original payload and the reason; the job keeps going. What a contract report is lives in
transforms/reports/validation.py (the intake service refuses with the same rules).
"""
import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.plumbing.bounded_lines import OversizeLine
from transforms.plumbing.metrics import counter
from transforms.reports.avro_validation import InvalidRecord
from transforms.reports.validation import (DEFAULT_MAX_CLOCK_SKEW_HOURS, DEFAULT_MAX_FILES_PER_REPORT,
                                          DEFAULT_MAX_MESSAGE_BYTES, ReportValidator, decode_message, report_id_of)
from transforms.dead_letters import dead_letter

STAGE = "parse"
DEAD_LETTERS = "dead_letters"


class _ParseReportFn(beam.DoFn):
    def __init__(self, max_message_bytes, max_files, stamp_event_time, max_clock_skew_hours):
        self.max_message_bytes = max_message_bytes
        self.max_files = max_files
        self.stamp_event_time = stamp_event_time
        self.max_clock_skew_hours = max_clock_skew_hours
        self.read = counter("read")
        self.valid = counter("valid")

    def setup(self):
        self.validator = ReportValidator(self.max_files, self.max_clock_skew_hours)

    def process(self, payload, timestamp=beam.DoFn.TimestampParam):
        self.read.inc()
        if isinstance(payload, OversizeLine):
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                STAGE, payload.reason(self.max_message_bytes), payload.head, payload.report_id()))
            return
        try:
            report = decode_message(payload, self.max_message_bytes)
            event_time = self.validator.validate(report)
            if not self.stamp_event_time:
                self.validator.check_source_time(timestamp)
        except InvalidRecord as error:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(STAGE, str(error), payload, report_id_of(payload)))
            return
        self.valid.inc()
        if self.stamp_event_time:
            yield TimestampedValue(report, Timestamp.from_utc_datetime(event_time))
        else:
            yield report


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
        parsed = messages | "Parse" >> beam.ParDo(
            _ParseReportFn(self.max_message_bytes, self.max_files, self.stamp_event_time, self.max_clock_skew_hours)).with_outputs(DEAD_LETTERS, main="reports")
        return parsed.reports, parsed[DEAD_LETTERS]
