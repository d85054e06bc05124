"""Helpers for the agency service tests: routed Avro files, an agencies table, and the real service on uvicorn."""
import contextlib
import csv
import pathlib
import socket
import subprocess
import sys
import time

import fastavro
import httpx

from schemas import avro_schema
from services.agencies.directory import COLUMNS
from services.common.credentials import hash_secret
from transforms.reports.routed_record import SCHEMA_VERSION, micros_of

REPO = pathlib.Path(__file__).resolve().parents[1]
STARTUP_DEADLINE_SECONDS = 180


def routed_record(report_id, jurisdiction, priority="P2", submitted_at="2026-11-23T00:10:00Z", user="user-1",
                  md5="0" * 32, bundle_id=None, esp_id="esp-01"):
    """A routed record as the pipeline writes it (schemas/routed_report.avsc), with one file and one hash."""
    return {
        "schemaVersion": SCHEMA_VERSION, "reportId": report_id, "submittedAt": micros_of(submitted_at),
        "routedAt": micros_of(submitted_at) + 5_000_000, "espId": esp_id, "espName": "ExampleSocial",
        "incidentType": "Child Pornography (possession, manufacture, and distribution)", "incidentDateTime": None,
        "escalateToHighPriority": "imminent danger" if priority == "P1" else None, "reportAnnotations": [],
        "batchedReason": None, "internetDetailKinds": [],
        "reportedUser": {"espIdentifier": user, "screenName": f"screen_{user}"}, "victimCount": 1,
        "location": {"ip": "81.2.69.160", "ipSource": "file f-1 Upload", "ipChoiceReason": "first placed IP",
                     "countryCode": jurisdiction[:2], "subdivisionCode": None, "city": None, "accuracyRadiusKm": 100,
                     "asn": None, "asOrganization": None, "anonymous": None, "locationSource": "geoip",
                     "unlocatedReason": None},
        "jurisdiction": jurisdiction, "jurisdictionReason": "test", "agency": "test agency", "priority": priority,
        "referralClass": "referral", "matchSummary": "new", "bundleId": bundle_id,
        "files": [{"fileId": "f-1", "fileName": "a.jpg", "industryClassification": "A1", "fileAnnotations": [],
                   "fileViewedByEsp": True, "legalProcessRequired": False, "publiclyAvailable": False,
                   "mediaStatus": "provided_only", "mediaError": None,
                   "hashes": [{"signalType": "MD5", "value": md5, "source": "provided"}], "matches": []}],
    }


def write_routed(output, jurisdiction, records, window="2026-11-23T00:00:00--2026-11-23T01:00:00"):
    """Writes one routed file the way the sink does: a hidden name first, then renamed into place."""
    folder = pathlib.Path(output) / "routed" / f"jurisdiction={jurisdiction}"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{window}-{abs(hash(tuple(r['reportId'] for r in records))):x}.avro"
    hidden = folder / f".{final.name}.tmp"
    with open(hidden, "wb") as handle:
        fastavro.writer(handle, avro_schema("routed_report"), records)
    hidden.rename(final)
    return final


def write_agencies(path, rows):
    """rows: dicts with agency_id, jurisdictions and optional secret, status, expires_at."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({"agency_id": row["agency_id"], "agency_name": row.get("name", row["agency_id"]),
                             "jurisdictions": row["jurisdictions"],
                             "credential_hash": hash_secret(row["secret"]) if row.get("secret") else "",
                             "status": row.get("status", "active"), "expires_at": row.get("expires_at", "")})
    return path


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_service(output, agencies, *extra):
    """`tipline serve agencies` in its own process on a free port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "agencies", "--output", str(output), "--agencies", str(agencies),
         "--port", str(port), *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, process)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)


def wait_until_up(base, process):
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited: {process.stdout.read().decode(errors='replace')}")
        try:
            if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service did not answer on {base} within {STARTUP_DEADLINE_SECONDS} s")


def wait_for(condition, what, seconds=120):
    """Polls `condition` until true (a bound for a loaded machine, not a timing claim)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {seconds} s")
