"""RouteToSinks: each report to its own jurisdiction's sink, and to no other.

A routed record (schemas/routed_report.avsc, built by transforms/reports/routed_record.py) carries no media.
Files land under `<output>/routed/jurisdiction=<code>/`: in batch one file set per event-time window; in
streaming a file set per flush of processing time, so that no report, however late, is dropped by a
window that has closed (its event time stays in `submittedAt`).
"""
import functools

import apache_beam as beam
import fastavro
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas import avro_schema
from transforms.dead_letters import dead_letter, original_report_json
from transforms.plumbing.metrics import counter, LabelledCounters
from transforms.plumbing.windowed_files import AvroSink, WriteWindowedFiles
from transforms.reports.avro_validation import InvalidRecord, compile_validator
from transforms.reports.enrichment import routed_record

STAGE = "route"
DEAD_LETTERS = "dead_letters"


class _ToRoutedRecordFn(beam.DoFn):
    """Builds and checks routed records here, so a bad one is a dead letter rather than a failed write."""

    def __init__(self):
        self.routed = counter("routed")
        self.routed_by_jurisdiction = LabelledCounters("routed_by_jurisdiction")

    def setup(self):
        self.check = compile_validator(avro_schema("routed_report"))

    def process(self, report):
        try:
            record = routed_record(report, self.check)
        except (InvalidRecord, KeyError, TypeError, AttributeError) as error:
            reason = f"routed record could not be built: {type(error).__name__}: {error}"[:500]
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, dead_letter(STAGE, reason, original_report_json(report), report.get("reportId")))
            return
        self.routed.inc()
        self.routed_by_jurisdiction.inc(record["jurisdiction"])
        yield record


def routed_report_ids(output_dir):
    """Every reportId in the routed files under `output_dir` (any Beam filesystem): what a run into the
    same output must not route again. Reads whole records (fastavro has no projection)."""
    ids = set()
    pattern = FileSystems.join(output_dir, "routed", "jurisdiction=*", "*.avro")
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            ids.update(record["reportId"] for record in fastavro.reader(handle))
    return ids


def jurisdiction_folder(record):
    return f"jurisdiction={record['jurisdiction']}"


class RouteToSinks(beam.PTransform):
    """Writes each report to `<output>/routed/jurisdiction=<code>/` as Avro; returns `(routed, dead_letters)`."""

    def __init__(self, output_dir, window_seconds=3600, allowed_lateness_seconds=24 * 3600):
        super().__init__()
        self.output_dir = output_dir
        self.window_seconds = window_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(self, reports):
        records = reports | "ToRoutedRecord" >> beam.ParDo(_ToRoutedRecordFn()).with_outputs(DEAD_LETTERS, main="records")
        _ = records.records | "WriteRoutedFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/routed",
            destination=jurisdiction_folder,
            sink=functools.partial(AvroSink, "routed_report"),
            suffix=".avro",
            window_seconds=self.window_seconds if records.records.is_bounded else None,
            label_seconds=self.window_seconds,  # a stream's flushes are named by event-time window, as in batch
            allowed_lateness_seconds=self.allowed_lateness_seconds,
            json_records=True)  # routed_report.avsc: JSON types only (no NaN: durations and percentages are finite)
        return records.records, records[DEAD_LETTERS]
