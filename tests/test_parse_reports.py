"""ParseReports: contract reports pass with their event time; everything else is a dead letter."""
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from tests.conftest import example_report
from transforms.reports.avro_validation import InvalidRecord
from transforms.reports.validation import ReportValidator, decode_message
from transforms.parse import ParseReports


def payload(report):
    return json.dumps(report).encode("utf-8")


def mutated(**changes):
    report = example_report()
    for dotted, value in changes.items():
        target = report
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return payload(report)


BAD_MESSAGES = {
    b"not json at all": "message is not JSON",
    b'{"reportId": "x", ': "message is not JSON",
    b"\xff\xfe{}": "message is not UTF-8",
    b"[1, 2]": "message is a JSON list, not an object",
    mutated(reportId=""): "$.reportId: must not be empty",
    mutated(incidentSummary__incidentType="Jaywalking"): "unknown incident type 'Jaywalking'",
    mutated(submittedAt="yesterday"): "$.submittedAt: 'yesterday' is not an RFC 3339 date-time",
    mutated(submittedAt="2026-11-23T10:00:05"): "$.submittedAt: '2026-11-23T10:00:05' has no UTC offset",
    mutated(reporter={"espName": "x"}): "$.reporter.espId: required field is missing",
    mutated(files="none"): "$.files: expected a list, got str",
    # JSON has no NaN or infinity (json.dumps writes them; json.loads would read them back)
    mutated(score=float("nan")): "message is not JSON: NaN is not a JSON number",
    mutated(score=float("-inf")): "message is not JSON: -Infinity is not a JSON number",
    payload(example_report())[:-1] + b', "score": 1e999}': "a number past a double's range: 1e999",
}


@pytest.mark.parametrize("message,reason", BAD_MESSAGES.items())
def test_each_bad_message_has_a_clear_reason(message, reason):
    validator = ReportValidator()
    with pytest.raises(InvalidRecord) as refused:
        validator.validate(decode_message(message, 10_000))
    assert reason in str(refused.value)


def test_oversized_messages_are_refused_before_decoding():
    with pytest.raises(InvalidRecord, match="exceeds the limit of 100 bytes"):
        decode_message(b"{" + b" " * 200 + b"}", 100)


def test_pipeline_stamps_event_time_and_dead_letters_the_rest():
    good = payload(example_report())

    def with_timestamp(report, ts=beam.DoFn.TimestampParam):
        return report["reportId"], ts

    with TestPipeline() as p:
        reports, dead = p | beam.Create([good, *BAD_MESSAGES]) | ParseReports(max_message_bytes=100_000)
        assert_that(reports | beam.Map(with_timestamp),
                    equal_to([("ESP17-2026-000123", Timestamp.of(1795428005))]), label="reports")
        assert_that(dead | beam.Map(lambda letter: (letter["stage"], letter["payloadEncoding"])),
                    equal_to([("parse", "base64")] + [("parse", "utf-8")] * (len(BAD_MESSAGES) - 1)),
                    label="dead letters")


def test_windowed_messages_are_stamped_into_the_window_of_their_event_time():
    def with_window(report, win=beam.DoFn.WindowParam, ts=beam.DoFn.TimestampParam):
        return report["reportId"], ts, win

    with TestPipeline() as p:
        messages = (p | beam.Create([payload(example_report())])
                    | beam.WindowInto(window.FixedWindows(60)))  # a windowed input is windowed again at its event time
        reports, _ = messages | ParseReports(max_message_bytes=100_000)
        assert_that(reports | beam.Map(with_window), equal_to([
            ("ESP17-2026-000123", Timestamp.of(1795428005), window.IntervalWindow(1795428000, 1795428060))]))


def test_dead_letters_keep_the_payload_and_report_id():
    message = mutated(incidentSummary__incidentType="Jaywalking")
    with TestPipeline() as p:
        _, dead = p | beam.Create([message]) | ParseReports()
        assert_that(dead | beam.Map(lambda letter: (letter["payload"].encode(), letter["reportId"])),
                    equal_to([(message, "ESP17-2026-000123")]))
