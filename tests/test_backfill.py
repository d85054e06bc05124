"""Batch backfill: replaying JSON Lines and Avro files through the whole pipeline (`run`, `--source files`).

Counts must reconcile with what the synthetic stream is known to hold, and every valid report must be
routed exactly once, whatever the file format or the runner's parallelism.
"""
import json

import fastavro
import pytest
from fastavro.validation import validate

from pipelines.tipline_pipeline import run
from schemas import avro_schema
from tests.test_pipeline_end_to_end import routed_records
from transforms.demo.synthetic import SyntheticConfig, expected_counts, generate_messages

CONFIG = SyntheticConfig(count=300, seed=606, hours=2)


def write_jsonl(path, messages):
    path.write_bytes(b"".join(message + b"\n" for message in messages))


def write_avro(path, messages):
    """The contract-valid reports as Avro records (malformed messages cannot be written with the schema)."""
    schema = fastavro.parse_schema(avro_schema("report"))
    records = []
    for message in messages:
        try:
            record = json.loads(message)
        except ValueError:
            continue
        if validate(record, schema, raise_errors=False):
            records.append(record)
    with path.open("wb") as handle:
        fastavro.writer(handle, schema, records)


def routed_ids(out):
    return sorted(record["reportId"] for records in routed_records(out).values() for record in records)


def replay(tmp_path, input_path, *extra):
    out = tmp_path / "out"
    summary = run(["--source", "files", "--input", str(input_path), "--output", str(out), "--demo-data", *extra])
    return summary, routed_ids(out)


@pytest.fixture(scope="module")
def messages():
    return list(generate_messages(CONFIG))


def test_jsonl_replay_reconciles_with_the_stream(tmp_path, messages):
    write_jsonl(tmp_path / "reports.jsonl", messages)
    summary, routed = replay(tmp_path, tmp_path / "reports.jsonl")
    expected = expected_counts(CONFIG)
    assert summary["read"] == expected.messages == len(messages)
    assert summary["duplicates"] == expected.redeliveries
    assert (summary["routed"], summary["dead_lettered"]) == (expected.valid_reports, expected.malformed)
    assert summary["dead_lettered_by_stage"] == {"parse": expected.malformed}
    assert summary["reconciled"]
    assert len(routed) == len(set(routed)) == summary["routed"]


def test_avro_replay_routes_every_valid_report_once(tmp_path, messages):
    write_avro(tmp_path / "reports.avro", messages)
    with (tmp_path / "reports.avro").open("rb") as handle:
        written = [record["reportId"] for record in fastavro.reader(handle)]
    summary, routed = replay(tmp_path, tmp_path / "reports.avro")
    expected = expected_counts(CONFIG)
    schema_valid_but_malformed = len(written) - expected.valid_reports - expected.redeliveries  # e.g. bad dates
    assert summary["read"] == len(written)
    assert (summary["routed"], summary["duplicates"]) == (expected.valid_reports, expected.redeliveries)
    assert summary["dead_lettered"] == summary["dead_lettered_by_stage"]["parse"] == schema_valid_but_malformed
    assert summary["reconciled"]
    assert len(routed) == len(set(routed)) == expected.valid_reports and set(routed) <= set(written)


def test_multi_processing_replay_reconciles_too(tmp_path, messages):
    """Two worker processes: counters merge across processes and dedup still sees every copy of a reportId."""
    write_jsonl(tmp_path / "reports.jsonl", messages)
    summary, routed = replay(tmp_path, tmp_path / "reports.jsonl",
                             "--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    expected = expected_counts(CONFIG)
    assert (summary["read"], summary["duplicates"]) == (expected.messages, expected.redeliveries)
    assert (summary["routed"], summary["dead_lettered"]) == (expected.valid_reports, expected.malformed)
    assert summary["reconciled"]
    assert len(routed) == len(set(routed)) == summary["routed"] > 0
