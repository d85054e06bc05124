"""Hostile input: every message ends routed or dead-lettered with a reason; the job never crashes.

Stage functions are fuzzed with hypothesis through `tests.hostile.run_stages` (the real stage functions with
the pipeline's own exception handling and its coder/sink boundaries); one whole-pipeline run over a fixed
hostile corpus checks the counts reconcile and every dead letter keeps its reason and payload.
Inputs that once crashed the job keep their own tests (`hostile.ONCE_CRASHED`, docs/RELIABILITY.md).
"""
import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import hostile
from tests.conftest import example_report
from transforms.reports.avro_validation import InvalidRecord
from transforms.location.geoip import LOCATION_FIELDS, classify_ip
from transforms.matching.media import MAX_MEDIA_BYTES, UnhashableMedia, decode_image, media_bytes
from transforms.reports.validation import ReportValidator, decode_message

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ends_well(payload):
    """Runs one message through the stage chain; checks the outcome is a routed record or a complete dead letter."""
    outcome, value = hostile.run_stages(payload)
    if outcome == "dead_letter":
        assert value["reason"] and isinstance(value["reason"], str)
        assert value["stage"] in ("parse", "enrich_hashes", "enrich_geo", "assign_jurisdiction", "route")
        if value["stage"] == "parse":
            assert hostile.letter_payload(value) == payload  # replayable byte for byte
    else:
        assert value["jurisdiction"] and value["jurisdictionReason"]
        assert set(value["location"]) == set(LOCATION_FIELDS)
    return outcome, value


# --- property-based: the stage chain ---------------------------------------------------------------

@FAST
@given(st.binary(max_size=2000))
def test_any_bytes_end_routed_or_dead_lettered(payload):
    ends_well(payload)


@FAST
@given(hostile.json_values)
def test_any_json_value_ends_routed_or_dead_lettered(value):
    ends_well(json.dumps(value).encode())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile.mutated_reports())
def test_mutated_contract_reports_end_routed_or_dead_lettered(payload):
    ends_well(payload)


@pytest.mark.slow
@LONG
@given(hostile.mutated_reports())
def test_mutated_contract_reports_long_fuzz(payload):
    ends_well(payload)


@FAST
@given(hostile.mutated_reports(), st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3))
def test_a_lone_surrogate_in_any_field_ends_routed_or_dead_lettered(payload, surrogates):
    try:
        report = json.loads(payload.decode("utf-8"))
    except ValueError:
        report = hostile.contract_report(hostile.random.Random(0), "s")
    report[hostile.random.Random(len(payload)).choice(sorted(report))] = surrogates
    ends_well(json.dumps(report).encode("ascii"))  # json escapes them: the bytes are valid ASCII


@FAST
@given(st.text(max_size=60))
def test_classify_ip_never_raises_and_names_a_reason(text):
    ip, problem = classify_ip(text)
    assert problem is None or (isinstance(problem, str) and problem)
    if problem is None:
        assert ip and isinstance(ip, str)


@FAST
@given(st.lists(st.one_of(st.sampled_from(hostile.EXOTIC_IPS + hostile.PLACED_IPS), st.text(max_size=45),
                          st.ip_addresses().map(str)), max_size=5),
       st.one_of(st.none(), st.text(max_size=4)))
def test_geo_locator_places_any_ip_list_or_explains(ips, country):
    report = example_report()
    report["files"][0]["ipCaptureEvent"] = None
    report["personOrUserReported"]["ipCaptureEvents"] = [{"ipAddress": ip, "eventName": "Login"} for ip in ips]
    report["personOrUserReported"]["estimatedLocation"] = {"countryCode": country, "region": None, "city": None}
    outcome, record = ends_well(json.dumps(report).encode())
    assert outcome == "routed"
    location = record["location"]
    if location["locationSource"] == "none":
        assert location["unlocatedReason"] and record["jurisdiction"] == "UNKNOWN"


@FAST
@given(st.binary(max_size=3000), st.sampled_from(["content", "contentUri"]))
def test_any_media_bytes_or_uri_hash_or_explain_without_leaking(data, field):
    report = example_report()
    marker = "/nonexistent/secret-media-path/"
    report["files"][0].update(content=None, contentUri=None)
    report["files"][0][field] = base64.b64encode(data).decode() if field == "content" else marker + data.hex()[:40]
    outcome, record = ends_well(json.dumps(report).encode())
    assert outcome == "routed"
    file = record["files"][0]
    assert file["mediaStatus"] in (("hashed", "unhashable") if data or field == "contentUri"
                                  else ("provided_only",))
    assert marker not in json.dumps(record)
    if file["mediaStatus"] == "unhashable":
        assert file["mediaError"]


# --- the fixed hostile corpus through the stage chain: every message ends routed or dead-lettered ----

def test_every_kind_of_the_hostile_corpus_ends_well_at_the_stage_level():
    outcomes = {}
    for kind, payload, outcome, value in hostile.corpus_outcomes():
        if outcome == "dead_letter":
            assert value["reason"] and value["stage"]
            if value["stage"] == "parse":
                assert hostile.letter_payload(value) == payload
        outcomes.setdefault(kind, set()).add(outcome)
    assert outcomes["valid"] == {"routed"}
    assert outcomes["not_an_object"] == {"dead_letter"} and outcomes["invalid_utf8"] == {"dead_letter"}
    assert outcomes["exotic_ip"] >= {"routed"} and outcomes["media_content"] >= {"routed"}
    assert set(outcomes) == {"valid", "redelivery", "oversize"} | {m.__name__ for m in hostile.MUTATIONS}


@pytest.mark.parametrize("name", sorted(hostile.ONCE_CRASHED), ids=str)
def test_messages_that_once_crashed_the_job_are_dead_lettered(name):
    """Deep nesting, huge integers, far offsets, lone surrogates (docs/RELIABILITY.md) are dead-lettered."""
    outcome, letter = ends_well(hostile.once_crashed(name))
    assert outcome == "dead_letter" and letter["stage"] == "parse"


# --- limits -------------------------------------------------------------------------------------------

def test_message_size_limit_dead_letters_with_the_limit_in_the_reason():
    payload = json.dumps(example_report()).encode()
    with pytest.raises(InvalidRecord, match=rf"message of {len(payload)} bytes exceeds the limit of 100 bytes"):
        decode_message(payload, 100)
    outcome, letter = hostile.run_stages(payload, max_message_bytes=100)
    assert outcome == "dead_letter" and "exceeds the limit" in letter["reason"] and letter["payload"] == payload.decode()


def test_media_byte_limit_and_pixel_limit_mark_the_file_unhashable_with_a_reason():
    too_big = base64.b64encode(b"\0" * (MAX_MEDIA_BYTES + 4)).decode()
    with pytest.raises(UnhashableMedia, match=f"media larger than {MAX_MEDIA_BYTES} bytes"):
        media_bytes({"content": too_big}, roots=())
    with pytest.raises(UnhashableMedia, match=r"image too large \(8000x8000 pixels\)"):
        decode_image(hostile.bomb_png())
    report = example_report()
    report["files"][0].update(content=base64.b64encode(hostile.bomb_png()).decode(), contentUri=None)
    outcome, record = ends_well(json.dumps(report).encode())
    assert outcome == "routed" and record["files"][0]["mediaStatus"] == "unhashable"
    assert "too large" in record["files"][0]["mediaError"]
    # the exact digests of the refused image still match: they come from the raw bytes
    assert {h["signalType"] for h in record["files"][0]["hashes"]} >= {"MD5", "SHA1"}


def many_file_report(count, content=None):
    report = example_report()
    file = dict(report["files"][0], contentUri=None, content=content)
    report["files"] = [dict(file, fileId=f"f{i}") for i in range(count)]
    return report


def test_a_report_over_the_files_per_report_limit_is_dead_lettered():
    with pytest.raises(InvalidRecord, match="files"):
        ReportValidator().validate(many_file_report(10_001))


@pytest.mark.slow
def test_a_10000_file_report_with_inline_media_is_refused_before_any_hashing():
    content = base64.b64encode(hostile.benign_image(1, size=32)).decode()
    payload = json.dumps(many_file_report(10_000, content)).encode()
    assert len(payload) < 10 * 2**20  # under the message limit: only a files limit can refuse it
    outcome, letter = ends_well(payload)
    assert outcome == "dead_letter" and letter["stage"] == "parse" and "files exceed the limit" in letter["reason"]


# --- the one whole-pipeline run over the hostile corpus -------------------------------------------------

@pytest.fixture(scope="module")
def whole_run():
    return hostile.hostile_run()


def test_whole_run_reads_everything_and_reconciles(whole_run):
    summary, corpus = whole_run["summary"], whole_run["corpus"]
    assert summary["read"] == len(corpus)
    assert summary["reconciled"]
    assert summary["read"] == summary["routed"] + summary["duplicates"] + summary["dead_lettered"]
    assert summary["duplicates"] == sum(1 for kind, _, _ in corpus if kind == "redelivery")


def test_whole_run_routes_each_accepted_report_once_and_dead_letters_the_rest(whole_run):
    out, corpus = whole_run["out"], whole_run["corpus"]
    routed = [record["reportId"] for records in hostile.read_routed(out).values() for record in records]
    letters = [letter for letters in hostile.read_jsonl(out / "dead_letter").values() for letter in letters]
    assert len(routed) == len(set(routed)) == whole_run["summary"]["routed"]
    assert len(letters) == whole_run["summary"]["dead_lettered"]
    valid_ids = {rid for kind, rid, _ in corpus if kind == "valid"}
    assert valid_ids <= set(routed)
    # the stage chain predicts the whole run exactly: same routed set, same dead letters
    expected_routed, expected_letters = set(), []
    for kind, payload, outcome, value in hostile.corpus_outcomes(1_000_000):
        if kind == "redelivery":
            continue
        if outcome == "routed":
            expected_routed.add(value["reportId"])
        else:
            expected_letters.append(hostile.files_source_letter_payload(payload))
    assert set(routed) == expected_routed
    assert sorted(hostile.letter_payload(letter) for letter in letters) == sorted(expected_letters)


def test_every_dead_letter_has_a_stage_a_reason_and_its_original_payload(whole_run):
    payloads = {hostile.files_source_letter_payload(payload) for _, _, payload in whole_run["corpus"]}
    letters = hostile.read_jsonl(whole_run["out"] / "dead_letter")
    assert letters, "the hostile corpus must produce dead letters"
    for folder, records in letters.items():
        for letter in records:
            assert folder == f"stage={letter['stage']}"
            assert set(letter) == {"stage", "reason", "reportId", "payload", "payloadEncoding"}
            assert letter["reason"].strip()
            assert hostile.letter_payload(letter) in payloads
    oversize = [letter for records in letters.values() for letter in records if "exceeds the limit" in letter["reason"]]
    assert {letter["stage"] for letter in oversize} == {"parse"} and "big" in {l["reportId"] for l in oversize}
