"""Routing: each report's routed record (BuildRoutedRecords), then its jurisdiction's sink, and no other
(RouteToSinks).

A routed record (schemas/routed_report.avsc, built by transforms/reports/routed_record.py) carries no media.
Records are built and checked before StampBundleIds gives them their bundle ids (transforms/bundles.py), so
the bundle grouping carries records, not whole enriched reports: a third fewer bytes and a cheaper unpack
per report in batch, and a record that cannot be built is a dead letter before anything groups it.
Files land under `<output>/routed/jurisdiction=<code>/`: in batch one file set per event-time window; in
streaming a file set per flush of processing time, so that no report, however late, is dropped by a
window that has closed (its event time stays in `submittedAt`).

Each record says when it was routed (`routedAt`: the processing time it was built at, or the `routed_at`
given) and with which reference data (`decidedWith`: the GeoIP databases' types and build times, each
bank's name, file digest and entries, the jurisdiction tables' digest), read by the building worker from the
same files as the enrichment stages and re-checked on the same `refresh_seconds`. A replay into the same
output writes nothing new even so: its reports are already in the output and are not routed again
(`routed_report_ids`, used by DedupRedeliveries).
"""
import functools

import apache_beam as beam
import fastavro
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.shared import Shared

from transforms.dead_letters import dead_letter, original_report_json
from transforms.plumbing.metrics import counter, LabelledCounters
from transforms.plumbing.reference_files import RefreshedOnChange
from transforms.plumbing.windowed_files import GROUPED_ENCODED, AvroSink, WriteWindowedFiles
from transforms.reports.reference_versions import decided_with
from transforms.reports.routed_record import RoutedRecordCheck, to_routed_record

STAGE = "route"
DEAD_LETTERS = "dead_letters"
ROUTED_SINK = functools.partial(AvroSink, "routed_report", repeated=("decidedWith",))  # the same in every record


class _DecidedWith:
    """The `decidedWith` value, held through `Shared` (a dict cannot be: it takes no weak reference)."""

    def __init__(self, sources):
        self.value = decided_with(sources)


class _ToRoutedRecordFn(beam.DoFn):
    """Builds and checks routed records here, so a bad one is a dead letter rather than a failed write (the
    Avro sink then encodes without checking again)."""

    def __init__(self, routed_at=None, reference=None, refresh_seconds=60):
        self.routed_at = routed_at
        self.reference = reference
        self.refresh_seconds = refresh_seconds
        self._shared = Shared()
        self.routed = counter("routed")
        self.routed_by_jurisdiction = LabelledCounters("routed_by_jurisdiction")
        self.reloads = counter("decided_with_reloads")
        self.reload_failures = counter("decided_with_reload_failures")

    def setup(self):
        self.check = RoutedRecordCheck()
        self.versions = None if self.reference is None else RefreshedOnChange(
            self._shared, self.reference.paths(), functools.partial(_DecidedWith, self.reference),
            self.refresh_seconds, self.reloads, self.reload_failures, "reference data of routed records")

    def process(self, report):
        try:
            record = to_routed_record(report, self.routed_at,
                                      None if self.versions is None else self.versions.get().value)
            self.check(record)
        except (ValueError, KeyError, TypeError, AttributeError) as error:  # InvalidRecord is a ValueError
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


class BuildRoutedRecords(beam.PTransform):
    """Enriched, assigned reports -> `(records, dead_letters)`: each report's routed record, checked against
    the routed schema, its `bundleId` null until StampBundleIds stamps it.

    `reference` (`ReferenceSources`) names the reference files each record's `decidedWith` describes (None:
    null there); `routed_at` (µs since the epoch) fixes every record's `routedAt` instead of the processing
    time, for tests that compare whole files."""

    def __init__(self, reference=None, refresh_seconds=60, routed_at=None):
        super().__init__()
        self.reference = reference
        self.refresh_seconds = refresh_seconds
        self.routed_at = routed_at

    def expand(self, reports):
        records = reports | "ToRoutedRecord" >> beam.ParDo(
            _ToRoutedRecordFn(self.routed_at, self.reference, self.refresh_seconds)
        ).with_outputs(DEAD_LETTERS, main="records")
        return records.records, records[DEAD_LETTERS]


class RouteToSinks(beam.PTransform):
    """Writes each routed record to `<output>/routed/jurisdiction=<code>/` as Avro; returns the records.

    The records come from BuildRoutedRecords, which checked each against the routed schema (a bad one is a
    dead letter there), so each encodes here without a second check; the bundle id StampBundleIds adds is
    null or a `bnd-` id, both of the schema."""

    def __init__(self, output_dir, window_seconds=3600, allowed_lateness_seconds=24 * 3600):
        super().__init__()
        self.output_dir = output_dir
        self.window_seconds = window_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(self, records):
        _ = records | "WriteRoutedFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/routed",
            destination=jurisdiction_folder,
            sink=ROUTED_SINK,
            suffix=".avro",
            window_seconds=self.window_seconds if records.is_bounded else None,
            label_seconds=self.window_seconds,  # a stream's flushes are named by event-time window, as in batch
            allowed_lateness_seconds=self.allowed_lateness_seconds,
            grouped_as=GROUPED_ENCODED)  # as Avro datums: checked by _ToRoutedRecordFn, so each encodes
        return records
