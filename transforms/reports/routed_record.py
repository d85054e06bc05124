"""The routed record a jurisdiction's sink receives (schemas/routed_report.avsc), built from an enriched report.

It carries the report's facts, enrichment and routing, but never media bytes or media URIs: `content`,
`contentUri`, `locationOfFile` and internet-detail URLs stay behind, and so do the reporter's contact details.
"""
from transforms.location.jurisdiction_rules import legal_process_required

SCHEMA_VERSION = 2  # schemas/routed_report.avsc: raise it with every change of the schema


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
        "benignMatch": hashes.get("benignMatch"),
    }


def to_routed_record(report):
    """The record a jurisdiction's sink receives for an enriched, routed report."""
    summary = report["incidentSummary"]
    user = report.get("personOrUserReported")
    routing = report["_routing"]
    files = report.get("files") or []
    return {
        "schemaVersion": SCHEMA_VERSION,
        "reportId": report["reportId"],
        "submittedAt": report["submittedAt"],
        "reporterKind": report["reporter"].get("kind", "esp"),
        "espId": report["reporter"]["espId"] if report["reporter"].get("kind", "esp") == "esp" else "public",
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
