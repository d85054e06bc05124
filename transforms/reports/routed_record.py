"""The routed record a jurisdiction's sink receives (schemas/routed_report.avsc), built from an enriched report.

It carries the report's facts, enrichment and routing, but never media bytes or media URIs: `content`,
`contentUri`, `locationOfFile` and internet-detail URLs stay behind, and so do the reporter's contact details.
Instants are integers of microseconds since the epoch (UTC), which is what Avro's `timestamp-micros` stores:
the record is JSON-able as it is, and its encoding converts nothing.
"""
import time
from datetime import datetime, timedelta, timezone

from schemas import avro_schema
from transforms.location.jurisdiction_rules import legal_process_required
from transforms.reports.avro_validation import compile_validator
from transforms.reports.validation import parse_rfc3339

SCHEMA_VERSION = 3  # schemas/routed_report.avsc: raise it with every change of the schema
TIMESTAMP_FIELDS = ("submittedAt", "routedAt", "incidentDateTime")  # and decidedWith.geoipDatabases[].builtAt
VIDEO_MATCH_FIELDS = {"queryMatchPercent": None, "bankMatchPercent": None, "segments": None}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)


def micros_of(text):
    """Microseconds since the epoch of an RFC 3339 time (None for None); `ValueError` for anything else."""
    if text is None:
        return None
    since = parse_rfc3339(text) - EPOCH
    return (since.days * 86400 + since.seconds) * 1_000_000 + since.microseconds


def now_micros():
    return time.time_ns() // 1000


def iso_of_micros(micros):
    """`2026-11-23T10:00:00Z` (fraction only when there is one): how JSON outputs print a record's instants."""
    return (EPOCH + micros * MICROSECOND).isoformat().replace("+00:00", "Z")


def with_every_match_field(match):
    """A match with the video fields an image match has not (null), so every record holds every field (the
    Avro sink's fast encoder takes no defaults)."""
    return None if match is None else {**VIDEO_MATCH_FIELDS, **match}


def routed_file(file, hashes):
    """One file of a routed record: classification, legal flag, hashes and matches; no media. (Most files
    match nothing: their empty lists are made without a comprehension, a call each.)"""
    annotations, matches, benign = file.get("fileAnnotations"), hashes["matches"], hashes.get("benignMatch")
    return {
        "fileId": file.get("fileId"),
        "fileName": file.get("fileName"),
        "industryClassification": file.get("industryClassification"),
        "fileAnnotations": list(annotations) if annotations else [],
        "fileViewedByEsp": file.get("fileViewedByEsp"),
        "legalProcessRequired": legal_process_required(file),
        "publiclyAvailable": file.get("publiclyAvailable"),
        "mediaStatus": hashes["mediaStatus"],
        "mediaError": hashes["mediaError"],
        "hashes": hashes["hashes"],
        "video": hashes.get("video"),
        "matches": [with_every_match_field(match) for match in matches] if matches else [],
        "benignMatch": None if benign is None else with_every_match_field(benign),
    }


def to_routed_record(report, routed_at=None, decided_with=None):
    """The record a jurisdiction's sink receives for an enriched, routed report, routed at `routed_at` (µs
    since the epoch; now when None) with the reference data `decided_with` (`reference_versions.decided_with`;
    None outside a pipeline run)."""
    summary = report["incidentSummary"]
    user = report.get("personOrUserReported")
    routing = report["_routing"]
    files = report.get("files") or []
    return {
        "schemaVersion": SCHEMA_VERSION,
        "reportId": report["reportId"],
        "submittedAt": micros_of(report["submittedAt"]),
        "routedAt": now_micros() if routed_at is None else routed_at,
        "reporterKind": report["reporter"].get("kind", "esp"),
        "espId": report["reporter"]["espId"] if report["reporter"].get("kind", "esp") == "esp" else "public",
        "espName": report["reporter"].get("espName"),
        "incidentType": summary["incidentType"],
        "incidentDateTime": micros_of(summary.get("incidentDateTime")),
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
        "bundleId": None,  # StampBundleIds stamps it
        "decidedWith": decided_with,
        "files": [routed_file(file, hashes) for file, hashes in zip(files, report["_hashes"]["files"])],
    }


class RoutedRecordCheck:
    """The routed schema's check of each record, `decidedWith` checked once per value: every record a worker
    routes shares one `decidedWith` (until its reference files change), a fifth of the full check's work.

    A record whose `decidedWith` is not the value last found valid gets the full check; the others get the
    check of every other field (the schema without `decidedWith`, whose messages name the same paths), so a
    record refused either way is refused with the same reason."""

    def __init__(self):
        schema = avro_schema("routed_report")
        self.full = compile_validator(schema)
        self.without_decided_with = compile_validator(
            {**schema, "fields": [field for field in schema["fields"] if field["name"] != "decidedWith"]})
        self.checked_decided_with = None

    def __call__(self, record):
        """Raises `InvalidRecord` naming the first offending field, as the full check would."""
        decided = record.get("decidedWith") if isinstance(record, dict) else None
        if decided is None or decided is not self.checked_decided_with:
            self.full(record)
            self.checked_decided_with = decided
            return
        self.without_decided_with(record)


def json_ready(record):
    """The record with its instants as ISO 8601 UTC text (`...Z`), as JSON outputs print them (route
    topics, the agency service); the Avro record keeps them as `timestamp-micros`."""
    text = {name: iso_of_micros(record[name]) for name in TIMESTAMP_FIELDS if record.get(name) is not None}
    decided = record.get("decidedWith")
    if decided is not None:
        text["decidedWith"] = {**decided, "geoipDatabases": [
            {**database, "builtAt": iso_of_micros(database["builtAt"])} for database in decided["geoipDatabases"]]}
    return {**record, **text}
