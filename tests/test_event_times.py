"""Event times the windows, `dt=` partitions and sinks cannot represent, or implausibly far past the run's
clock, are refused at parse with a reason, in the body and in the Pub/Sub `submittedAt` attribute alike;
a run with such a report beside good ones finishes, routes the good ones and dead-letters the bad.

Before: `9999-12-31T23:30:00Z` crashed a batch run in BundleRepeats/ToBundleRecord (OverflowError),
`0001-01-01T00:00:00Z` in TrendCounts/TimelineRows, a year before 1000 wrote `dt=999-06-01` partitions, and
in streaming the run failed without acknowledging anything, the good reports blocked for ever.
"""
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from pipelines.tipline_pipeline import run
from tests import hostile
from tests.test_pipeline_end_to_end import variant
from tests.test_pubsub_emulator import make_topic, pubsub, pull_all  # noqa: F401 - pubsub is a fixture
from transforms.reports import validation
from transforms.reports.validation import ReportValidator
from transforms.reports.avro_validation import InvalidRecord

FAR = ["9999-12-31T23:30:00Z", "0001-01-01T00:00:00Z", "0999-06-01T00:00:00Z", "1969-12-31T23:59:59Z"]


def rfc3339(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def in_hours(hours):
    return rfc3339(datetime.now(timezone.utc) + timedelta(hours=hours))


@pytest.mark.parametrize("field", [("submittedAt",), ("incidentSummary", "incidentDateTime")])
@pytest.mark.parametrize("moment", FAR + ["in two days"])
def test_parse_refuses_event_times_outside_what_sinks_hold_or_the_clock_allows(field, moment):
    report = variant("r-far")
    moment = in_hours(48) if moment == "in two days" else moment
    hostile._set(report, field, moment)
    with pytest.raises(InvalidRecord, match=r"is before 1970-01-01|is later than .*--max-clock-skew-hours"):
        ReportValidator().validate(report)


def test_the_allowed_skew_is_configurable_and_the_past_since_1970_is_fine():
    ahead = variant("r-ahead", submittedAt=in_hours(30))
    with pytest.raises(InvalidRecord, match="--max-clock-skew-hours"):
        ReportValidator().validate(ahead)
    assert ReportValidator(max_clock_skew_hours=48).validate(ahead)
    for moment in ("1970-01-01T00:00:00Z", "2003-05-01T12:00:00Z", in_hours(1)):
        assert ReportValidator().validate(variant("r-ok", submittedAt=moment))


def test_a_batch_run_with_far_event_times_finishes_and_dead_letters_them(tmp_path, city_test_db):
    good = [variant(f"r-good-{i}", ip="81.2.69.160") for i in range(3)]
    far = [variant(f"r-far-{i}", submittedAt=moment) for i, moment in enumerate(FAR + [in_hours(48)])]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(report) + "\n" for report in good + far))
    out = tmp_path / "out"
    summary = run(["--source", "files", "--input", str(tmp_path / "in.jsonl"), "--output", str(out),
                   "--geoip-city-db", city_test_db, "--demo-data"])
    assert (summary["routed"], summary["dead_lettered"], summary["reconciled"]) == (3, len(far), True)
    letters = hostile.read_jsonl(out / "dead_letter")["stage=parse"]
    assert sorted(letter["reportId"] for letter in letters) == sorted(report["reportId"] for report in far)
    assert all("$.submittedAt" in letter["reason"] for letter in letters)
    assert not [path for path in out.rglob("dt=*") if not path.name.startswith("dt=2026-")]
    # the reasons do not quote the clock: a replay writes the very same dead-letter file, and skips it
    letter_files = sorted(path.name for path in (out / "dead_letter").rglob("*.jsonl"))
    replay = run(["--source", "files", "--input", str(tmp_path / "in.jsonl"), "--output", str(out),
                  "--geoip-city-db", city_test_db, "--demo-data"])
    assert sorted(path.name for path in (out / "dead_letter").rglob("*.jsonl")) == letter_files
    assert replay["other_counts"]["files_already_written"] == len(letter_files)


@pytest.mark.emulator
def test_a_stream_with_far_times_in_body_or_attribute_routes_the_good_reports_and_acknowledges_all(
        pubsub, tmp_path, city_test_db):  # noqa: F811 - pubsub is a fixture
    from google.cloud import pubsub_v1

    topic, subscription = make_topic()
    publisher = pubsub_v1.PublisherClient()
    good = [variant(f"s-good-{i}", ip="81.2.69.160") for i in range(3)]
    in_body = variant("s-far-body", submittedAt="9999-12-31T23:30:00Z")
    in_attribute = variant("s-far-attribute")  # a valid body; only its attribute is in year 9999
    messages = [(report, {"reportId": report["reportId"], "submittedAt": report["submittedAt"]})
                for report in good + [in_body]]
    messages.append((in_attribute, {"reportId": in_attribute["reportId"], "submittedAt": "9999-12-31T23:30:00Z"}))
    for report, attributes in messages:
        publisher.publish(topic, json.dumps(report).encode(), **attributes).result(timeout=30)
    out = tmp_path / "out"
    summary = run(["--source", "pubsub", "--subscription", subscription, "--duration", "8",
                   "--output", str(out), "--geoip-city-db", city_test_db, "--demo-data"])
    routed = sorted(r["reportId"] for records in hostile.read_routed(out).values() for r in records)
    assert routed == [report["reportId"] for report in good]
    letters = {letter["reportId"]: letter["reason"]
               for letter in hostile.read_jsonl(out / "dead_letter")["stage=parse"]}
    assert set(letters) == {"s-far-body", "s-far-attribute"}
    assert "the submittedAt attribute" in letters["s-far-attribute"]
    assert summary["reconciled"] and summary["read"] == 5
    assert pull_all(subscription) == []  # everything acknowledged: nothing blocked


def test_the_clock_is_read_per_report_not_once_per_worker(monkeypatch):
    """A streaming worker lives for days: a bound fixed when it started would refuse every report after a day."""
    started = datetime(2026, 11, 23, 10, tzinfo=timezone.utc)
    monkeypatch.setattr(validation, "now_utc", lambda: started)
    validator = ReportValidator()
    monkeypatch.setattr(validation, "now_utc", lambda: started + timedelta(days=3))
    assert validator.validate(variant("r-later", submittedAt=rfc3339(started + timedelta(days=2, hours=23))))


def general_path(text):
    """parse_rfc3339 of the same instant spelled `+00:00`, which the plain-`Z` fast path never takes."""
    return validation.parse_rfc3339(text[:-1] + "+00:00")


def outcome(parse, text):
    try:
        moment = parse(text)
        return moment, moment.tzinfo, moment.utcoffset()
    except ValueError:
        return "refused"


@pytest.mark.parametrize("text", FAR + [
    "2026-11-23T01:19:01Z", "2024-02-29T23:59:59Z", "2026-02-29T00:00:00Z", "2026-11-31T00:00:00Z",
    "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-11-23T24:00:00Z", "2026-11-23T23:60:00Z",
    "2026-11-23T23:59:60Z", "0000-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "2026-11-23T01:19:01z",
    "2026-11-23 01:19:01Z", "2026-W47-1T01:19:01Z", "２０２６-11-23T01:19:01Z", "2026-11-23T01:19:01.5Z"])
def test_plain_utc_times_read_as_the_general_path_reads_them(text):
    assert outcome(validation.parse_rfc3339, text) == outcome(general_path, text)


@given(st.text(alphabet="0123456789", min_size=14, max_size=14))
def test_plain_utc_times_agree_with_the_general_path_for_any_digits(digits):
    text = f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}T{digits[8:10]}:{digits[10:12]}:{digits[12:14]}Z"
    assert validation.PLAIN_UTC_RFC3339.fullmatch(text)
    assert outcome(validation.parse_rfc3339, text) == outcome(general_path, text)
