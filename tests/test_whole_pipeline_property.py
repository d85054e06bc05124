"""The whole pipeline, batch and streaming (TestStream), over reports with edge values drawn in every field:
every run finishes, reads every message, reconciles (read = routed + duplicates + dead-lettered), routes each
reportId at most once and gives every dead letter its stage and reason. In streaming the event time comes
from the message (as Pub/Sub's submittedAt attribute would give it), so it is drawn too, edge values included.
"""
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
EDGE_TIMESTAMPS = [Timestamp.from_rfc3339(moment) for moment in
                   ("9999-12-31T23:30:00Z", "1000-01-01T00:00:00Z", "1969-12-31T23:59:59Z")] + [
    Timestamp.from_rfc3339("2026-11-23T10:00:05Z")] * 3


@st.composite
def edge_reports(draw):
    """(payload, event time) pairs: contract reports with an edge value in one to three fields each."""
    reports = []
    for number in range(draw(st.integers(3, 8))):
        report = example_report()
        report["reportId"] = f"p-{number}"
        for path in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
            try:
                hostile._set(report, path, draw(st.sampled_from(EDGE_VALUES)))
            except (KeyError, IndexError, TypeError):  # an earlier edit replaced a container on the path
                pass
        payload = json.dumps(report).encode("utf-8", "surrogatepass")
        reports.append((payload, draw(st.sampled_from(EDGE_TIMESTAMPS))))
    if draw(st.booleans()):
        reports.append(reports[0])  # a redelivery
    return reports


def check_outcome(summary, out, count):
    assert summary["read"] == count and summary["reconciled"], summary
    routed = [r["reportId"] for records in hostile.read_routed(out).values() for r in records]
    assert len(routed) == len(set(routed)) == summary["routed"]
    letters = [letter for records in hostile.read_jsonl(out / "dead_letter").values() for letter in records]
    assert len(letters) == summary["dead_lettered"]
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
