"""RouteToSinks: each report to its own jurisdiction's sink, and to no other.

A routed record (schemas/routed_report.avsc) carries the report's facts, enrichment and routing, but never
media bytes or media URIs: `content`, `contentUri`, `locationOfFile` and internet-detail URLs stay behind.
Files land under `<output>/routed/jurisdiction=<code>/`: in batch one file set per event-time window; in
streaming a file set per flush of processing time, so that no report, however late, is dropped by a
window that has closed (its event time stays in `submittedAt`).
"""
import functools

import apache_beam as beam

from schemas import avro_schema
from transforms.plumbing.metrics import counter, LabelledCounters
from transforms.reports.avro_validation import InvalidRecord, compile_validator
from transforms.dead_letters import dead_letter, original_report_json
from transforms.location.jurisdiction_rules import legal_process_required
from transforms.plumbing.windowed_files import AvroSink, WriteWindowedFiles

STAGE = "route"
DEAD_LETTERS = "dead_letters"


def routed_file(file, hashes):
    """One file of a routed record: classification, legal flag, hashes and matches; no media."""
    return {
        "fileId": file.get("fileId"),
        "fileName": file.get("fileName"),
        "industryClassification": file.get("industryClassification"),
        "fileAnnotations": list(file.get("fileAnnotations") or []),
        "fileViewedByEsp": file.get("fileViewedByEsp"),
        "legalProcessRequired": legal_process_required(file),
        "publiclyAvailable": file.get("publiclyAvailable"),
        "mediaStatus": hashes["mediaStatus"],
        "mediaError": hashes["mediaError"],
        "hashes": hashes["hashes"],
        "video": hashes.get("video"),
        "matches": hashes["matches"],
    }


def to_routed_record(report):
    """The record a jurisdiction's sink receives for an enriched, routed report."""
    summary = report["incidentSummary"]
    user = report.get("personOrUserReported")
    routing = report["_routing"]
    files = report.get("files") or []
    return {
        "reportId": report["reportId"],
        "submittedAt": report["submittedAt"],
        "espId": report["reporter"]["espId"],
        "espName": report["reporter"].get("espName"),
        "incidentType": summary["incidentType"],
        "incidentDateTime": summary.get("incidentDateTime"),
        "escalateToHighPriority": summary.get("escalateToHighPriority"),
        "reportAnnotations": list(summary.get("reportAnnotations") or []),
        "batchedReason": (report.get("batchedReport") or {}).get("reason"),
        "internetDetailKinds": [detail["kind"] for detail in report.get("internetDetails") or []],
        "reportedUser": {"espIdentifier": user.get("espIdentifier"), "screenName": user.get("screenName")} if user else None,
        "victimCount": len(report.get("victims") or []),
        "location": report["_geo"],
        "jurisdiction": routing["jurisdiction"],
        "jurisdictionReason": routing["jurisdictionReason"],
        "agency": routing.get("agency"),
        "priority": routing["priority"],
        "referralClass": routing["referralClass"],
        "matchSummary": report["_hashes"]["matchSummary"],
        "bundleId": report.get("_bundleId"),
        "files": [routed_file(file, hashes) for file, hashes in zip(files, report["_hashes"]["files"])],
    }


class _ToRoutedRecordFn(beam.DoFn):
    """Builds and checks routed records here, so a bad one is a dead letter rather than a failed write."""

    def __init__(self):
        self.routed = counter("routed")
        self.routed_by_jurisdiction = LabelledCounters("routed_by_jurisdiction")

    def setup(self):
        self.check = compile_validator(avro_schema("routed_report"))

    def process(self, report):
        try:
            record = to_routed_record(report)
            self.check(record)
        except (InvalidRecord, KeyError, TypeError, AttributeError) as error:
            reason = f"routed record could not be built: {type(error).__name__}: {error}"[:500]
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, dead_letter(STAGE, reason, original_report_json(report), report.get("reportId")))
            return
        self.routed.inc()
        self.routed_by_jurisdiction.inc(record["jurisdiction"])
        yield record


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
            allowed_lateness_seconds=self.allowed_lateness_seconds,
            json_records=True)  # routed_report.avsc: strings, booleans, 32/64-bit integers, no floats
        return records.records, records[DEAD_LETTERS]
