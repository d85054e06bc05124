"""The agency service over real HTTP (uvicorn in its own process): each agency sees its own jurisdictions'
reports and nothing else, whatever it sends; bad credentials, floods and probes reveal nothing."""
import base64
import dataclasses
import hashlib
import json
import subprocess
import sys
from urllib.parse import quote

import httpx
import pytest

from services.agencies.directory import AgencyDirectory, credential_from_header
from services.agencies.events import AuditLog
from services.common import credentials
from tests.agency_service import REPO, routed_record, running_service, wait_for, write_agencies, write_routed

AGENCIES = [
    {"agency_id": "uk", "jurisdictions": "GB", "secret": "uk-secret"},
    {"agency_id": "wa-la", "jurisdictions": "US-WA US-CA-LA", "secret": "wa-secret"},
    {"agency_id": "uk-revoked", "jurisdictions": "GB", "secret": "revoked-secret", "status": "revoked"},
    {"agency_id": "uk-expired", "jurisdictions": "GB", "secret": "expired-secret", "expires_at": "2020-01-01T00:00:00Z"},
    {"agency_id": "no-credential", "jurisdictions": "GB"},
]
UK, WA = ("uk", "uk-secret"), ("wa-la", "wa-secret")
SINKS = {"GB": ["gb-1", "gb-2", "gb-3", "gb-4", "gb-5"], "US-WA": ["wa-1", "wa-2", "wa-3"],
         "US-CA-LA": ["la-1", "la-2"], "FR": ["fr-1", "fr-2"]}
REPORT_ENDPOINTS = [("GET", "/reports/{id}"), ("POST", "/reports/{id}/ack"), ("GET", "/ui/reports/{id}")]


def build_output(root):
    output = root / "out"
    for code, ids in SINKS.items():
        records = [routed_record(report_id, code, priority="P1" if report_id.endswith("-1") else "P2",
                                 submitted_at=f"2026-11-23T00:{10 + n:02d}:00Z", md5=f"{n:032x}")
                   for n, report_id in enumerate(ids)]
        write_routed(output, code, records)
    return output, write_agencies(root / "agencies.csv", AGENCIES)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("agencies")
    output, agencies = build_output(root)
    with running_service(output, agencies, "--refresh-seconds", "0.5", "--rate-limit", "1000", "--burst", "100000") as base:
        yield {"base": base, "output": output, "agencies": agencies}


def all_report_ids(base, auth, **params):
    """Every report id the agency can list, following the `before` cursor page by page."""
    seen, query = [], {"limit": 2, **params}
    while True:
        answer = httpx.get(f"{base}/reports", params=query, auth=auth)
        assert answer.status_code == 200
        body = answer.json()
        seen += [item["reportId"] for item in body["reports"]]
        if not body["next"]:
            return seen
        query["before"] = body["next"]["before"]


def test_each_agency_lists_exactly_its_own_jurisdictions(service):
    base = service["base"]
    uk, wa = all_report_ids(base, UK), all_report_ids(base, WA)
    assert sorted(uk) == SINKS["GB"] and len(uk) == len(set(uk))
    assert sorted(wa) == sorted(SINKS["US-WA"] + SINKS["US-CA-LA"]) and len(wa) == len(set(wa))
    assert all_report_ids(base, UK, priority="P1") == ["gb-1"]
    synced = httpx.get(f"{base}/reports", params={"since": "0"}, auth=WA).json()
    assert sorted(item["reportId"] for item in synced["reports"]) == sorted(wa)
    assert synced["next"]["since"] == synced["reports"][-1]["cursor"]
    assert httpx.get(f"{base}/reports", params={"since": synced["next"]["since"]}, auth=WA).json()["reports"] == []


def test_an_agency_reads_its_report_and_no_media_is_served(service):
    answer = httpx.get(f"{service['base']}/reports/gb-2", auth=UK)
    assert answer.status_code == 200
    body = answer.json()
    assert body["report"]["reportId"] == "gb-2" and body["jurisdiction"] == "GB" and body["acknowledged"] is False
    assert not {"content", "contentUri", "locationOfFile"} & set(json.dumps(body).replace('"', " ").split())


def test_another_agencys_report_answers_exactly_like_one_that_does_not_exist(service):
    base = service["base"]
    probes = ["wa-1", "la-2", "fr-1", "no-such-report", "gb-1' OR '1'='1", "gb-1%' OR 1=1 --", "x\" UNION SELECT record",
              "US-WA", "jurisdiction=US-WA", "...", "%2e%2e", "gb-1;DROP TABLE reports", "GB/gb-1"]
    for method, template in REPORT_ENDPOINTS:
        answers = [httpx.request(method, base + template.replace("{id}", quote(probe, safe="")), auth=UK)
                   for probe in probes]
        assert {answer.status_code for answer in answers} == {404}, template
        assert len({answer.content for answer in answers}) == 1, template
        assert len({tuple(sorted((k, v) for k, v in a.headers.items() if k not in ("date", "content-length")))
                    for a in answers}) == 1, template
    assert httpx.get(f"{base}/reports/gb-1", auth=UK).status_code == 200
    acks = (service["output"] / "agencies-state" / "acks.jsonl")
    assert not acks.exists() or not any(probe in acks.read_text() for probe in probes)


def test_a_cross_site_post_cannot_acknowledge(service):
    base = service["base"]
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        assert httpx.post(f"{base}/reports/gb-3/ack", auth=UK, headers=headers).status_code == 403
    assert httpx.get(f"{base}/reports/gb-3", auth=UK).json()["acknowledged"] is False
    assert httpx.post(f"{base}/reports/gb-3/ack", auth=UK, headers={"Origin": base}).status_code == 200


def test_path_traversal_reaches_no_file(service):
    base = service["base"]
    for path in ["/reports/..%2F..%2Fagencies-state%2Faudit.jsonl", "/reports/%2e%2e/%2e%2e/routed",
                 "/ui/reports/..%2F..%2F..%2Fetc%2Fpasswd", "/agencies-state/audit.jsonl",
                 "/routed/jurisdiction=US-WA/", "/reports/wa-1/../../reports/wa-1", "/static/../agencies.csv"]:
        answer = httpx.get(base + path, auth=UK)
        assert answer.status_code == 404, path
        assert b"wa-1" not in answer.content and b"scrypt" not in answer.content and b"root:" not in answer.content


def test_a_jurisdiction_code_in_the_query_string_widens_nothing(service):
    base = service["base"]
    for code in ["US-WA", "FR", "GB' OR '1'='1", "GB%", "*", "US-WA US-CA-LA"]:
        answer = httpx.get(f"{base}/reports", params={"jurisdiction": code}, auth=UK)
        assert answer.status_code == 200 and answer.json()["reports"] == [], code
    assert sorted(all_report_ids(base, UK, jurisdiction="GB")) == SINKS["GB"]
    assert sorted(all_report_ids(base, WA, jurisdiction="US-CA-LA")) == SINKS["US-CA-LA"]
    many = httpx.get(f"{base}/reports?jurisdiction=GB&jurisdiction=US-WA", auth=UK).json()["reports"]
    assert {item["reportId"] for item in many} <= set(SINKS["GB"])


def test_sql_metacharacters_in_parameters_are_refused_or_match_nothing(service):
    base = service["base"]
    refused = [({"since": "0 OR 1=1"}, 400), ({"before": "1; DROP TABLE reports"}, 400), ({"since": "-1"}, 400),
               ({"priority": "P1' OR '1'='1"}, 422), ({"limit": "1 OR 1"}, 422), ({"limit": "100000"}, 422)]
    for params, status in refused:
        answer = httpx.get(f"{base}/reports", params=params, auth=UK)
        assert answer.status_code == status, params
        assert b"gb-" not in answer.content and b"wa-" not in answer.content
    assert sorted(all_report_ids(base, UK)) == SINKS["GB"]


BAD_CREDENTIALS = [
    None, "Bearer uk:wrong", "Bearer uk:", "Bearer uk", "Bearer nobody:uk-secret", "Bearer uk-revoked:revoked-secret",
    "Bearer uk-expired:expired-secret", "Bearer no-credential:anything", "Bearer ../uk:uk-secret", "Basic !!!",
    "Basic " + base64.b64encode(b"uk:wrong").decode(), "Digest uk", "Bearer uk' OR '1'='1:x",
]


@pytest.mark.parametrize("method,path", [("GET", "/reports"), ("GET", "/reports/gb-1"), ("GET", "/reports/wa-1"),
                                         ("GET", "/reports/no-such"), ("POST", "/reports/gb-1/ack"),
                                         ("GET", "/ui"), ("GET", "/ui/reports/gb-1")])
def test_every_bad_credential_gets_the_same_answer_as_an_unknown_agency(service, method, path):
    answers = []
    for header in BAD_CREDENTIALS:
        headers = {"Authorization": header} if header else {}
        answers.append(httpx.request(method, service["base"] + path, headers=headers))
    assert {answer.status_code for answer in answers} == {401}
    assert len({answer.content for answer in answers}) == 1
    assert len({answer.headers["www-authenticate"] for answer in answers}) == 1


def test_every_refused_credential_derives_exactly_one_key(service, monkeypatch):
    """Equal work is what makes the timing equal: wrong, unknown, revoked, expired and malformed all pay one
    scrypt, every time; only a credential that verified is remembered."""
    directory = AgencyDirectory.load(service["agencies"])
    derivations = []
    real_scrypt = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: derivations.append(k["n"]) or real_scrypt(*a, **k))
    refused = [("uk", "wrong"), ("nobody", "uk-secret"), ("uk-revoked", "revoked-secret"),
               ("uk-expired", "expired-secret"), ("no-credential", "x")]
    for attempt in range(2):
        for agency_id, secret in refused:
            derivations.clear()
            assert directory.authenticate(agency_id, secret) is None
            assert derivations == [credentials.SCRYPT_N], (attempt, agency_id, secret)
    derivations.clear()
    assert directory.authenticate("uk", "uk-secret").agency_id == "uk"
    assert directory.authenticate("uk", "uk-secret").agency_id == "uk"
    assert derivations == [credentials.SCRYPT_N]
    assert credential_from_header("Basic !!!") is None
    derivations.clear()
    credentials.spend_one_derivation()
    assert derivations == [credentials.SCRYPT_N]


def test_a_remembered_credential_is_refused_once_revoked_with_the_same_work(service, monkeypatch):
    directory = AgencyDirectory.load(service["agencies"])
    assert directory.authenticate("uk", "uk-secret") is not None
    uk = directory.agencies["uk"]
    directory.agencies["uk"] = dataclasses.replace(uk, status="revoked")
    derivations = []
    real_scrypt = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: derivations.append(k["n"]) or real_scrypt(*a, **k))
    assert directory.authenticate("uk", "uk-secret") is None
    assert derivations == [credentials.SCRYPT_N]


def test_a_flood_is_rate_limited_before_any_credential_is_checked(tmp_path):
    output, agencies = build_output(tmp_path)
    with running_service(output, agencies, "--rate-limit", "0.001", "--burst", "5") as base:
        # the readiness probe took some of the burst; drain it, then flood
        statuses = [httpx.get(f"{base}/reports", auth=UK).status_code for _ in range(20)]
        assert statuses.count(429) >= 15 and set(statuses) <= {200, 429}
        assert statuses[-1] == 429
        flooded = httpx.get(f"{base}/reports/gb-1", auth=UK)
        assert flooded.status_code == 429 and "retry-after" in flooded.headers and b"gb-1" not in flooded.content
        assert httpx.get(f"{base}/reports", auth=("nobody", "x")).status_code == 429


def tipline(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, capture_output=True, text=True)


def test_referral_acknowledgement_new_files_and_the_audit_log(tmp_path):
    output, agencies = build_output(tmp_path)
    calls = 0

    def call(method, path, auth, **kwargs):
        nonlocal calls
        calls += 1
        return httpx.request(method, base + path, auth=auth, **kwargs)

    with running_service(output, agencies, "--refresh-seconds", "0.5", "--rate-limit", "1000", "--burst", "100000") as base:
        cursor = call("GET", "/reports", UK, params={"since": "0"}).json()["next"]["since"]
        assert call("GET", "/reports/wa-2", WA).status_code == 200

        referred = tipline("reports", "refer", "wa-2", "--to", "GB", "--reason", "user moved to the UK",
                           "--output", str(output), "--agencies", str(agencies))
        assert referred.returncode == 0, referred.stderr
        assert call("GET", "/reports/wa-2", WA).status_code == 404
        assert "wa-2" not in [item["reportId"] for item in call("GET", "/reports", WA).json()["reports"]]
        picked_up = call("GET", "/reports", UK, params={"since": cursor}).json()["reports"]
        assert [item["reportId"] for item in picked_up] == ["wa-2"]
        detail = call("GET", "/reports/wa-2", UK).json()
        assert detail["jurisdiction"] == "GB" and detail["report"]["jurisdiction"] == "US-WA"
        assert [(r["from"], r["to"], r["reason"]) for r in detail["referrals"]] == [("US-WA", "GB", "user moved to the UK")]

        assert tipline("reports", "refer", "wa-1", "--to", "ZZ-NOWHERE", "--reason", "x", "--output", str(output),
                       "--agencies", str(agencies)).returncode == 2
        assert tipline("reports", "refer", "no-such", "--to", "GB", "--reason", "x", "--output", str(output),
                       "--agencies", str(agencies)).returncode == 1

        assert call("POST", "/reports/gb-1/ack", UK).json() == {"reportId": "gb-1", "acknowledged": True}
        assert call("GET", "/reports/gb-1", UK).json()["acknowledged"] is True
        unacked = tipline("reports", "unacked", "--priority", "P1", "--minutes", "0", "--format", "json",
                          "--output", str(output), "--agencies", str(agencies))
        assert sorted((row["report_id"], row["agencies"]) for row in json.loads(unacked.stdout)) == [
            ("fr-1", "(none)"), ("la-1", "wa-la"), ("wa-1", "wa-la")]

        write_routed(output, "GB", [routed_record("gb-new", "GB", submitted_at="2026-11-23T05:00:00Z")],
                     window="2026-11-23T05:00:00--2026-11-23T06:00:00")
        wait_for(lambda: call("GET", "/reports", UK, params={"since": cursor}).json()["reports"][-1:]
                 and call("GET", "/reports", UK, params={"since": cursor}).json()["reports"][-1]["reportId"] == "gb-new",
                 "the new routed file being indexed")

        revoked = [dict(row, status="revoked") if row["agency_id"] == "uk" else row for row in AGENCIES]
        write_agencies(agencies, revoked)
        wait_for(lambda: call("GET", "/reports", UK).status_code == 401, "the revocation taking effect")
        assert call("GET", "/reports", WA).status_code == 200

        for method in ("DELETE", "PUT", "PATCH"):
            assert call(method, "/reports/gb-1", WA).status_code in (404, 405)
        assert call("GET", "/audit", WA).status_code == 404

    audit = AuditLog(output / "agencies-state" / "audit.jsonl")
    entries = [entry for entry in audit.entries() if entry["route"] != "/healthz"]
    http_entries = [entry for entry in entries if entry["client"] != "cli"]
    assert len(http_entries) == calls
    assert {(entry["agency"], entry["route"]) for entry in http_entries} >= {
        ("wa-la", "/reports/{report_id}"), ("uk", "/reports/{report_id}/ack"), ("uk", "/reports"), (None, "/reports")}
    refused = [entry for entry in http_entries if entry["reportId"] == "wa-2" and entry["status"] == 404]
    assert refused and refused[0]["agency"] == "wa-la" and refused[0]["served"] is None
    revoked_calls = [entry for entry in http_entries if entry["status"] == 401]
    assert revoked_calls and {(entry["agency"], entry["claimed"]) for entry in revoked_calls} == {(None, "uk")}
    assert [entry["route"] for entry in entries if entry["client"] == "cli"] == ["reports refer"]
    assert audit.verify_chain() == (len(audit.entries()), None)
    assert oct((output / "agencies-state" / "audit.jsonl").stat().st_mode & 0o777) == "0o600"
    verified = tipline("reports", "audit", "--verify", "--output", str(output))
    assert verified.returncode == 0 and "chain intact" in verified.stdout

    lines = audit.path.read_text().splitlines()
    lines[1] = lines[1].replace('"at":"', '"at":"1', 1)
    audit.path.write_text("\n".join(lines) + "\n")
    assert audit.verify_chain()[1] == 3
