"""One outcome per reportId, whatever the input order and however often it is replayed into an output.

Before: the same reportIds with different bodies (one locating to GB, one to US-WA) replayed AB then BA into
one output landed in both jurisdictions' sinks; a producer retry with a re-stamped submittedAt, run again,
landed twice in one sink; a batch backfill over a streaming run's output duplicated all of it (the two name
their files differently). Now a run reads the reportIds its output already holds and routes none of them
again (counted as duplicates), and within a batch the copy kept is the earliest, then the smallest digest.
"""
import json

import pytest

from pipelines.tipline_pipeline import run
from tests import hostile
from tests.test_pipeline_end_to_end import variant
from tests.test_pubsub_emulator import make_topic, pubsub  # noqa: F401 - pubsub is a fixture
from pipelines.publish import publish

GB, WA = "81.2.69.160", "216.160.83.56"


def write_jsonl(path, reports):
    path.write_text("".join(json.dumps(report) + "\n" for report in reports))
    return path


def batch(input_path, out, city_db):
    return run(["--source", "files", "--input", str(input_path), "--output", str(out), "--geoip-city-db", city_db, "--demo-data"])


def routed_ids(out):
    """{reportId: [jurisdiction folder, ...]}"""
    found = {}
    for folder, records in hostile.read_routed(out).items():
        for record in records:
            found.setdefault(record["reportId"], []).append(folder)
    return found


def test_replays_in_either_order_leave_each_report_in_one_sink_once(tmp_path, city_test_db):
    a = [variant(f"r-{i}", ip=GB) for i in range(4)]
    b = [variant(f"r-{i}", ip=WA) for i in range(4)]
    out = tmp_path / "out"
    first = batch(write_jsonl(tmp_path / "ab.jsonl", a + b), out, city_test_db)
    second = batch(write_jsonl(tmp_path / "ba.jsonl", b + a), out, city_test_db)
    assert {rid: len(folders) for rid, folders in routed_ids(out).items()} == {f"r-{i}": 1 for i in range(4)}
    assert (first["routed"], first["duplicates"]) == (4, 4)
    assert (second["routed"], second["duplicates"], second["other_counts"]["already_in_output"]) == (0, 8, 8)


def test_the_copy_kept_does_not_depend_on_input_order(tmp_path, city_test_db):
    a = [variant(f"r-{i}", ip=GB) for i in range(4)]
    b = [variant(f"r-{i}", ip=WA) for i in range(4)]
    batch(write_jsonl(tmp_path / "ab.jsonl", a + b), tmp_path / "out-ab", city_test_db)
    batch(write_jsonl(tmp_path / "ba.jsonl", b + a), tmp_path / "out-ba", city_test_db)
    assert routed_ids(tmp_path / "out-ab") == routed_ids(tmp_path / "out-ba")


def test_a_producer_retry_with_a_new_submitted_at_is_not_routed_again(tmp_path, city_test_db):
    out = tmp_path / "out"
    batch(write_jsonl(tmp_path / "first.jsonl", [variant("r-retry", ip=GB)]), out, city_test_db)
    retry = variant("r-retry", ip=GB, submittedAt="2026-11-23T13:07:00Z")
    summary = batch(write_jsonl(tmp_path / "retry.jsonl", [retry]), out, city_test_db)
    assert routed_ids(out) == {"r-retry": ["jurisdiction=GB"]}
    assert (summary["routed"], summary["duplicates"], summary["reconciled"]) == (0, 1, True)


@pytest.mark.emulator
def test_a_batch_backfill_over_a_streaming_runs_output_adds_no_copy(pubsub, tmp_path, city_test_db):  # noqa: F811
    reports = [variant(f"s-{i}", ip=ip) for i, ip in enumerate([GB, WA, GB])]
    topic, subscription = make_topic()
    publish(iter([json.dumps(report).encode() for report in reports]), topic)
    out = tmp_path / "out"
    streamed = run(["--source", "pubsub", "--subscription", subscription, "--duration", "6",
                    "--output", str(out), "--geoip-city-db", city_test_db, "--demo-data"])
    assert streamed["routed"] == 3
    backfill = batch(write_jsonl(tmp_path / "backfill.jsonl", reports), out, city_test_db)
    assert {rid: len(folders) for rid, folders in routed_ids(out).items()} == {"s-0": 1, "s-1": 1, "s-2": 1}
    assert (backfill["routed"], backfill["duplicates"]) == (0, 3)
