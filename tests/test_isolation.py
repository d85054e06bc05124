"""Jurisdiction isolation (issue #7.5): files, topics, late data and hostile codes never put a report in
another jurisdiction's sink. (Re-runs: tests/test_replay_idempotence.py.)"""
import json
import re

import fastavro
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import reference_table
from tests import hostile
from tests.conftest import example_report
from transforms.location.jurisdiction_rules import UNKNOWN, JurisdictionRules
from transforms.route import BuildRoutedRecords, RouteToSinks
from transforms.plumbing.route_topics import route_topic

SAFE_CODE = re.compile(r"^(UNKNOWN|[A-Z]{2}(-[A-Z0-9]+)*)$")
HOUR = 3600


def known_codes():
    """Every code the tables can produce."""
    rules = JurisdictionRules.load()
    codes = {row["jurisdiction"] for row in reference_table("jurisdictions")} - {"US-<state>"}
    codes |= set(rules.task_forces) | {f"US-{state}" for state in rules.state_task_forces} | {UNKNOWN}
    return codes


def test_every_code_the_tables_can_produce_is_folder_and_topic_safe():
    codes = known_codes()
    assert len(codes) > 200
    assert [code for code in codes if not SAFE_CODE.match(code)] == []


geo_text = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(
    ["../", "..", "/", "US-../..", "US-CA/../../etc", "US-CA", "ca", "CA", "TX", "US-TX", "GB", "gb", "A1", "EU",
     "Los Angeles", "los angeles", "Houston", "{jurisdiction}", "%2e%2e%2f", "\x00", "US-\u0130L"]))


@settings(max_examples=300, deadline=None)
@given(geo_text, geo_text, geo_text, st.sampled_from(["geoip", "estimatedLocation", "none"]),
       st.one_of(st.none(), st.booleans()))
def test_no_location_can_produce_a_code_outside_the_tables(country, subdivision, city, source, anonymous):
    geo = dict.fromkeys(("ip", "ipSource", "ipChoiceReason", "accuracyRadiusKm", "asn", "asOrganization",
                         "unlocatedReason"))
    geo.update(countryCode=country, subdivisionCode=subdivision, city=city, locationSource=source, anonymous=anonymous)
    code, reason, agency = JurisdictionRules.load().jurisdiction_of(geo)
    assert code in known_codes() and SAFE_CODE.match(code) and reason and agency


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_a_hostile_code_cannot_escape_the_topic_template(code):
    topic = route_topic("projects/p/topics/tips-{jurisdiction}", code)
    assert topic.startswith("projects/p/topics/tips-")
    assert "/" not in topic.removeprefix("projects/p/topics/") and ".." not in topic.split("/")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["../", "/", "US-../..", "../../etc", "ZZ", "A1", "US-ZZ", " GB", "{jurisdiction}"]),
       st.sampled_from(["countryCode", "region"]))
def test_a_hostile_estimated_location_routes_to_unknown_or_a_table_code(value, field):
    report = example_report()
    report["files"][0]["ipCaptureEvent"] = None
    report["personOrUserReported"]["ipCaptureEvents"] = []
    report["personOrUserReported"]["estimatedLocation"] = {"countryCode": "US", "region": None, "city": None,
                                                           field: value}
    outcome, record = hostile.run_stages(json.dumps(report).encode())
    assert outcome == "routed" and record["jurisdiction"] in known_codes()


# --- the whole hostile run: every folder holds only its own jurisdiction ----------------------------

@pytest.fixture(scope="module")
def whole_run():
    return hostile.hostile_run()


def test_routed_folders_hold_only_their_own_jurisdiction(whole_run):
    out = whole_run["out"]
    routed = hostile.read_routed(out)
    assert len(routed) >= 4
    for folder, records in routed.items():
        assert {f"jurisdiction={record['jurisdiction']}" for record in records} == {folder}
    assert {folder.removeprefix("jurisdiction=") for folder in routed} <= known_codes()
    assert {path.parent.parent.name for path in (out / "routed").rglob("*.avro")} == {"routed"}  # no escape


def test_notice_folders_hold_only_their_own_provider_and_day(whole_run):
    notices = hostile.read_jsonl(whole_run["out"] / "notices")
    assert notices
    for folder, records in notices.items():
        assert {f"provider={notice['provider']}" for notice in records} == {folder}
    for path in (whole_run["out"] / "notices").rglob("*.jsonl"):
        assert {json.loads(line)["day"] for line in path.open()} == {path.parent.parent.name.removeprefix("dt=")}
    routed = {r["reportId"]: r["jurisdiction"] for rs in hostile.read_routed(whole_run["out"]).values() for r in rs}
    for notice in (n for ns in notices.values() for n in ns):
        assert {routed[item["reportId"]] for item in notice["reports"]} == set(notice["jurisdictions"])


def test_trend_rows_by_jurisdiction_match_the_routed_folders(whole_run):
    import pyarrow.parquet as pq

    rows = pq.read_table(whole_run["out"] / "trends" / "hourly_by_jurisdiction").to_pylist()
    totals = {}
    for row in rows:
        totals[row["jurisdiction"]] = totals.get(row["jurisdiction"], 0) + row["reports"]
    assert totals == {folder.removeprefix("jurisdiction="): len(records)
                      for folder, records in hostile.read_routed(whole_run["out"]).items()}


# --- late data: a late report goes to its own folder; a too-late one must not vanish -----------------

def assigned(report_id, ip):
    """An enriched, assigned report as BuildRoutedRecords receives it (through the real stage functions)."""
    report = example_report()
    report["reportId"] = report_id
    report["files"][0]["ipCaptureEvent"]["ipAddress"] = ip
    report["personOrUserReported"]["ipCaptureEvents"] = []
    validator, matcher, locator, rules, _ = hostile._stages()
    report = {**report, "_hashes": matcher.enrich_report(report)}
    report = {**report, "_geo": locator.locate(report)}
    return {**report, "_routing": rules.assign(report)}


def route_stream(tmp_path, too_late):
    stream = (TestStream()
              .add_elements([TimestampedValue(assigned("gb-on-time", "81.2.69.160"), 60),
                             TimestampedValue(assigned("wa-on-time", "216.160.83.56"), 120)])
              .advance_watermark_to(HOUR + 60)
              .add_elements([TimestampedValue(assigned("wa-late", "216.160.83.56"), 300),
                             TimestampedValue(assigned("gb-late", "81.2.69.160"), 400)])
              .advance_watermark_to(3 * HOUR + 60))
    if too_late:
        stream = stream.add_elements([TimestampedValue(assigned("gb-too-late", "81.2.69.160"), 500)])
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        records, _ = p | stream | BuildRoutedRecords()
        _ = records | RouteToSinks(str(tmp_path), window_seconds=HOUR, allowed_lateness_seconds=2 * HOUR)
    found = {}
    for path in tmp_path.rglob("*.avro"):
        found.setdefault(path.parent.name, set()).update(r["reportId"] for r in fastavro.reader(path.open("rb")))
    return found


def test_late_reports_land_in_their_own_jurisdiction_folder(tmp_path):
    assert route_stream(tmp_path, too_late=False) == {
        "jurisdiction=GB": {"gb-on-time", "gb-late"}, "jurisdiction=US-WA": {"wa-on-time", "wa-late"}}


def test_a_report_later_than_the_allowed_lateness_still_reaches_its_sink(tmp_path):
    assert "gb-too-late" in route_stream(tmp_path, too_late=True).get("jurisdiction=GB", set())
