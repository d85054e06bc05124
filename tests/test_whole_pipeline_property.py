"""The whole pipeline, batch and streaming (TestStream), over reports with edge values drawn in every field:
every run finishes, reads every message, reconciles (read = routed + duplicates + dead-lettered), routes each
reportId at most once and gives every dead letter its stage and reason. In streaming the event time comes
from the message (as Pub/Sub's submittedAt attribute would give it), so it is drawn too, edge values included.

Most edge values stop a report at parse; so that they also reach the stages after routing (bundles, trends,
alerts, takedown notices and their sinks), some reports keep the contract valid and carry edge strings only
in the free-text fields those stages read (provider, user, file ids and names, the public URL of a file of
an unlocated user), with event times at the edges parse accepts (the epoch, close to the run's clock). Any
failure there is a side-stage dead letter: counted apart, every one of them on disk with its stage.
"""
import datetime
import json

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipelines.options import TiplineOptions
from pipelines.streaming import local_streaming_options
from pipelines.summary import summarize
from pipelines.tipline_pipeline import build_pipeline, run
from tests import hostile
from tests.conftest import example_report
from transforms.plumbing.direct_runner import count_every_bundle
from transforms.plumbing.metrics import read_counters

# a whole run costs seconds: a few examples, not shrunk (a failure prints its reports as drawn)
WHOLE_RUNS = settings(max_examples=3, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FIELDS = sorted(set(hostile.json_paths(example_report())) - {()}, key=repr)
TIMES = ["9999-12-31T23:30:00Z", "0001-01-01T00:00:00Z", "0999-06-01T00:00:00Z", "1969-12-31T23:59:59Z",
         "1970-01-01T00:00:00Z", "2262-04-11T23:47:16Z", "2026-11-23T10:00:00+23:59"]
EDGE_VALUES = TIMES + [
    "", " ", "\x00", "uſ", "ıe", "US", "../../etc", "jurisdiction=GB/../x", "x" * 20_000, "81.2.69.142", "10.0.0.1",
    "https://files.example.net%2Fa/b", "https://a\\b/c", "file:///etc/hostname", "\u202e", "\ud800",
    0, -1, 2**31, 2**63, -(2**63) - 1, 1.5e308, -0.0, True, False, None, [], {}, [None], {"": None}]
# free text the stages after routing read, and the URL a takedown notice names
ROUTABLE_TEXT_FIELDS = [("reporter", "espId"), ("reporter", "espName"), ("personOrUserReported", "espIdentifier"),
                        ("personOrUserReported", "screenName"), ("files", 0, "fileId"), ("files", 0, "fileName"),
                        ("files", 0, "locationOfFile"), ("files", 0, "originalFileHashes", 0, "value")]
EDGE_TEXT = ["", " ", "\x00", "uſ", "../../etc", "jurisdiction=GB/../x", "dt=2026-01-01/x", "x" * 20_000,
             "https://files.example.net%2Fa/b", "https://a\\b/c", "https://[::1]:0/x", "http://10.0.0.1/x",
             "file:///etc/hostname", "\u202e", "\U0001F600", 'a,"b"\r\nc', "NaN", "null", "0" * 32, "f" * 64]
ACCEPTED_TIMES = ["1970-01-01T00:00:00Z", "1970-01-01T00:59:59.999999Z", "2026-11-23T23:59:59Z",
                  "2026-11-30T23:59:59-12:00", "now"]
EDGE_TIMESTAMPS = [Timestamp.from_rfc3339(moment) for moment in
                   ("9999-12-31T23:30:00Z", "1000-01-01T00:00:00Z", "1969-12-31T23:59:59Z")] + [
    Timestamp.from_rfc3339("2026-11-23T10:00:05Z")] * 3


def accepted_time(choice):
    """An RFC 3339 time parse accepts: `now` is a little before the run's clock (the skew limit's side)."""
    if choice != "now":
        return choice
    return (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def with_edge_value_anywhere(draw, report):
    for path in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        try:
            hostile._set(report, path, draw(st.sampled_from(EDGE_VALUES)))
        except (KeyError, IndexError, TypeError):  # an earlier edit replaced a container on the path
            pass
    return report


def with_edge_text_past_routing(draw, report):
    """A valid report with edge text in the fields later stages read; sometimes its user unlocated, so
    its public file's URL gets a takedown notice."""
    for path in draw(st.lists(st.sampled_from(ROUTABLE_TEXT_FIELDS), min_size=1, max_size=4, unique=True)):
        hostile._set(report, path, draw(st.sampled_from(EDGE_TEXT)))
    report["submittedAt"] = accepted_time(draw(st.sampled_from(ACCEPTED_TIMES)))
    report["incidentSummary"]["incidentDateTime"] = None
    if draw(st.booleans()):
        report["personOrUserReported"].update(ipCaptureEvents=[], estimatedLocation=None)
        report["files"][0]["ipCaptureEvent"] = None
    if draw(st.booleans()):  # the same content again: a bundle of repeats
        report["files"][0]["originalFileHashes"] = [{"hashType": "MD5", "value": "9e107d9d372bb6826bd81d3542a419d6"}]
    return report


@st.composite
def edge_reports(draw):
    """(payload, event time) pairs: contract reports with an edge value in one to three fields each, or valid
    reports with edge text in the fields the stages after routing read."""
    reports = []
    for number in range(draw(st.integers(3, 8))):
        report = example_report()
        report["reportId"] = f"p-{number}"
        past_routing = draw(st.booleans())
        edit = with_edge_text_past_routing if past_routing else with_edge_value_anywhere
        report = edit(draw, report)
        payload = json.dumps(report).encode("utf-8", "surrogatepass")
        event_time = (Timestamp.from_utc_datetime(
            datetime.datetime.fromisoformat(report["submittedAt"]).astimezone(datetime.timezone.utc))
                      if past_routing else draw(st.sampled_from(EDGE_TIMESTAMPS)))
        reports.append((payload, event_time))
    if draw(st.booleans()):
        reports.append(reports[0])  # a redelivery
    return reports


SIDE_STAGES = {"bundles", "trends", "alerts", "notices"}


def check_outcome(summary, out, count):
    assert summary["read"] == count and summary["reconciled"], summary
    routed = [r["reportId"] for records in hostile.read_routed(out).values() for r in records]
    assert len(routed) == len(set(routed)) == summary["routed"]
    letters = [letter for records in hostile.read_jsonl(out / "dead_letter").values() for letter in records]
    side = [letter for letter in letters if letter["stage"] in SIDE_STAGES]
    assert len(letters) - len(side) == summary["dead_lettered"]
    assert len(side) == summary["side_stage_failures"], side  # each one on disk, none in the reconciliation
    assert all(letter["stage"] and letter["reason"].strip() for letter in letters)


@WHOLE_RUNS
@given(edge_reports())
def test_a_batch_run_over_edge_values_in_every_field_finishes_and_reconciles(tmp_path_factory, city_test_db,
                                                                             reports):
    root = tmp_path_factory.mktemp("edges")
    (root / "in.jsonl").write_bytes(b"".join(payload.replace(b"\n", b" ") + b"\n" for payload, _ in reports))
    summary = run(["--source", "files", "--input", str(root / "in.jsonl"), "--output", str(root / "out"),
                   "--geoip-city-db", city_test_db, "--demo-data"])
    check_outcome(summary, root / "out", len(reports))


@settings(WHOLE_RUNS, max_examples=2)  # a streaming run on the bundle-based DirectRunner costs ~1 min
@given(edge_reports())
def test_a_streaming_run_over_edge_values_and_event_times_finishes_and_reconciles(tmp_path_factory, city_test_db,
                                                                                 reports):
    out = tmp_path_factory.mktemp("edges-stream") / "out"
    count_every_bundle()  # as `tipline run --source pubsub` does: the streaming DirectRunner's counters
    options = local_streaming_options(["--source", "pubsub", "--output", str(out), "--geoip-city-db", city_test_db])
    stream = TestStream(coder=BytesCoder())
    for payload, event_time in reports:
        stream = stream.add_elements([TimestampedValue(payload, event_time)])
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, options.view_as(TiplineOptions),
                       messages=pipeline | stream.advance_watermark_to_infinity())
    summary = summarize(read_counters(pipeline.result))
    check_outcome(summary, out, len(reports))
