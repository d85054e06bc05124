"""A batch backfill over a streaming run's output, and a streaming run after a batch run, into one output:
nothing a reader globs is counted twice, and both name their files the same way.

The streaming run is the whole pipeline on the streaming DirectRunner fed by a TestStream (each message at its
submittedAt, as the Pub/Sub attribute gives it); the batch run is `tipline run --source files` over the same
reports. The second run reads the reportIds the first one routed and routes none of them again, so it adds no
routed record, trend row, bundle, alert or notice; the malformed message is dead-lettered once, the second
run's dead-letter file having the first one's name (`files_already_written`).
"""
import datetime
import json
import re

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.coders import BytesCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipelines.options import TiplineOptions
from pipelines.streaming import local_streaming_options
from pipelines.summary import summarize
from pipelines.tipline_pipeline import build_pipeline, run
from tests import hostile
from tests.test_pipeline_end_to_end import variant
from transforms.plumbing.direct_runner import count_every_bundle
from transforms.plumbing.metrics import read_counters
from transforms.plumbing.windowed_files import GROUPED_AS_LINES, JsonLinesSink, WriteWindowedFiles

HOUR = 3600
MIDNIGHT = 1795392000  # 2026-11-23T00:00:00Z

IPS = {"GB": "81.2.69.160", "US-WA": "216.160.83.56", "SE": "89.160.20.112"}
BAD_MESSAGE = b"{not json"
WINDOWED_NAME = re.compile(r"^\d{8}T\d{6}Z--\d{8}T\d{6}Z-[0-9a-f]{20}\.(avro|parquet|jsonl|csv)$")
UNWINDOWED_NAME = re.compile(r"^unwindowed-[0-9a-f]{20}\.jsonl$")
WINDOWED_OUTPUTS = ("routed", "trends", "bundles", "notices")  # named by event-time window and digest
UNWINDOWED_OUTPUTS = ("alerts", "dead_letter")                  # written as judged / as refused


def reports():
    """Reports over two hours: three jurisdictions, repeated content (a bundle) and an unlocated user's
    public file (a takedown notice)."""
    found = []
    for hour in (10, 11):
        for code, ip in IPS.items():
            report = variant(f"r-{code}-{hour}", ip=ip)
            report["submittedAt"] = f"2026-11-23T{hour}:{len(found):02d}:00Z"
            found.append(report)
    unlocated = variant("r-unlocated", ip=IPS["GB"])
    unlocated["personOrUserReported"].update(ipCaptureEvents=[], estimatedLocation=None)
    unlocated["files"][0]["ipCaptureEvent"] = None
    unlocated["submittedAt"] = "2026-11-23T10:30:00Z"
    return found + [unlocated]


def messages():
    return [json.dumps(report).encode("utf-8") for report in reports()] + [BAD_MESSAGE]


def event_time(payload):
    if payload == BAD_MESSAGE:
        return Timestamp.from_rfc3339("2026-11-23T10:00:00Z")
    submitted = datetime.datetime.fromisoformat(json.loads(payload)["submittedAt"])
    return Timestamp.from_utc_datetime(submitted)


def streaming_run(out, city_db):
    count_every_bundle()
    options = local_streaming_options(["--source", "pubsub", "--output", str(out), "--geoip-city-db", city_db])
    stream = TestStream(coder=BytesCoder()).add_elements(
        [TimestampedValue(payload, event_time(payload)) for payload in messages()])
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, options.view_as(TiplineOptions), messages=pipeline | stream.advance_watermark_to_infinity())
    return summarize(read_counters(pipeline.result))


def batch_run(out, city_db):
    source = out.parent / "in.jsonl"
    source.write_bytes(b"".join(payload + b"\n" for payload in messages()))
    return run(["--source", "files", "--input", str(source), "--output", str(out), "--geoip-city-db", city_db,
                "--demo-data"])


def data_files(out):
    """{output kind: sorted file names} of the files a reader globs (no summaries, no hidden files)."""
    return {kind: sorted(path.name for path in (out / kind).rglob("*") if path.is_file())
            for kind in WINDOWED_OUTPUTS + UNWINDOWED_OUTPUTS}


def parquet_rows(folder):
    return [row for path in folder.rglob("*.parquet") for row in pq.read_table(path).to_pylist()]


def jsonl_rows(folder):
    return [json.loads(line) for path in folder.rglob("*.jsonl") for line in path.read_text().splitlines()]


def check_nothing_counted_twice(out, count):
    routed = [record["reportId"] for records in hostile.read_routed(out).values() for record in records]
    assert sorted(routed) == sorted(report["reportId"] for report in reports()) and len(routed) == count
    # a reader summing every row of a table sees each report once
    assert sum(row["reports"] for row in parquet_rows(out / "trends" / "hourly_total")) == count
    assert sum(row["reports"] for row in parquet_rows(out / "trends" / "hourly_by_jurisdiction")) == count
    bundles = parquet_rows(out / "bundles")
    assert len({row["bundle_id"] for row in bundles}) == len(bundles) > 0
    notices = jsonl_rows(out / "notices")
    assert len({notice["noticeId"] for notice in notices}) == len(notices) > 0
    alerts = jsonl_rows(out / "alerts")
    assert len({alert["alert_id"] for alert in alerts}) == len(alerts)
    assert [letter["payload"] for letter in jsonl_rows(out / "dead_letter")] == [BAD_MESSAGE.decode()]


def check_names(files):
    for kind in WINDOWED_OUTPUTS:
        assert files[kind] and all(WINDOWED_NAME.match(name) for name in files[kind]), (kind, files[kind])
    for kind in UNWINDOWED_OUTPUTS:
        assert all(UNWINDOWED_NAME.match(name) for name in files[kind]), (kind, files[kind])


@pytest.mark.parametrize("order", ["streaming then batch", "batch then streaming"])
def test_a_second_run_of_the_other_kind_into_the_same_output_counts_nothing_twice(tmp_path, city_test_db, order):
    out = tmp_path / "out"
    first_run, second_run = (streaming_run, batch_run) if order == "streaming then batch" else (batch_run, streaming_run)
    first = first_run(out, city_test_db)
    after_first = data_files(out)
    check_names(after_first)
    second = second_run(out, city_test_db)
    assert first["routed"] == len(reports()) and first["reconciled"] and second["reconciled"]
    assert (second["routed"], second["duplicates"], second["dead_lettered"]) == (0, len(reports()), 1)
    assert data_files(out) == after_first  # the second run wrote no file: its one dead letter had the same name
    check_nothing_counted_twice(out, len(reports()))


def test_a_stream_flushed_by_processing_time_names_its_files_by_event_time_window_as_batch_does(tmp_path):
    """`label_seconds`: records of two event-time hours in one flush go to two files, named as a bounded run
    with hourly windows names them, the same records giving the same names."""
    records = [TimestampedValue({"id": n, "dest": "GB"}, MIDNIGHT + n * 1200) for n in range(5)]  # 00:00-01:20

    def names(streaming):
        out = tmp_path / ("streaming" if streaming else "batch")
        options = PipelineOptions()
        options.view_as(StandardOptions).streaming = streaming
        if streaming:
            count_every_bundle()
        with TestPipeline(options=options) as p:
            source = (TestStream().add_elements(records).advance_watermark_to_infinity() if streaming
                      else beam.Create(records))
            _ = p | source | WriteWindowedFiles(
                str(out), destination=lambda r: f"dest={r['dest']}", sink=JsonLinesSink, suffix=".jsonl",
                window_seconds=None if streaming else HOUR, label_seconds=HOUR, grouped_as=GROUPED_AS_LINES)
        return sorted(path.name for path in out.rglob("*.jsonl"))

    batch = names(streaming=False)
    assert [name[:35] for name in batch] == ["20261123T000000Z--20261123T010000Z-",
                                            "20261123T010000Z--20261123T020000Z-"]
    assert names(streaming=True) == batch
