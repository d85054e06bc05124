"""Faults (issue #7.3): a sink folder that cannot be written, a bank file replaced mid-run.

What each fault does is recorded in docs/RELIABILITY.md. Real parts: the whole pipeline on the DirectRunner,
the real `MatchHashBatches` DoFn with real bank files.
"""
import hashlib
import json
import os
import time

import pytest
from apache_beam.transforms.window import TimestampedValue

from pipelines.tipline_pipeline import run
from tests import hostile
from tests.conftest import example_report
from tests.test_pipeline_end_to_end import variant
from transforms.enrich_hashes import MatchHashBatches

BANK_HEADER = "hash_type,hash_value,bank,label,external_id\n"


# --- a sink folder that cannot be written -----------------------------------------------------------

@pytest.fixture(scope="module")
def blocked_sink_run(tmp_path_factory, city_test_db):
    """A run whose routed/jurisdiction=GB 'folder' is a regular file (unwritable even for root)."""
    root = tmp_path_factory.mktemp("blocked")
    reports = [variant(f"r-gb-{i}", ip="81.2.69.160") for i in range(3)] + \
              [variant(f"r-wa-{i}", ip="216.160.83.56") for i in range(3)]
    (root / "in.jsonl").write_text("\n".join(json.dumps(r) for r in reports) + "\n")
    (root / "out" / "routed").mkdir(parents=True)
    (root / "out" / "routed" / "jurisdiction=GB").write_text("not a folder")
    try:
        summary, error = run(["--source", "files", "--input", str(root / "in.jsonl"), "--output", str(root / "out"),
                              "--geoip-city-db", city_test_db]), None
    except Exception as raised:  # noqa: BLE001 - stopping with a clear error is an acceptable outcome
        summary, error = None, raised
    return root / "out", summary, error


def test_an_unwritable_sink_does_not_affect_other_jurisdictions(blocked_sink_run):
    out, summary, error = blocked_sink_run
    if error is None:
        assert sorted(r["reportId"] for r in hostile.read_routed(out).get("jurisdiction=US-WA", [])) == \
            ["r-wa-0", "r-wa-1", "r-wa-2"]


def test_an_unwritable_sink_stops_the_run_or_keeps_every_report(blocked_sink_run):
    out, summary, error = blocked_sink_run
    if error is not None:
        assert "jurisdiction=GB" in str(error)  # stopped, naming the sink
        return
    routed = {r["reportId"] for records in hostile.read_routed(out).values() for r in records}
    assert summary["routed"] == len(routed), (summary["routed_by_jurisdiction"], sorted(routed))


# --- a bank file replaced mid-run -----------------------------------------------------------------------

def md5_report(report_id, data):
    report = example_report()
    report["reportId"] = report_id
    report["files"][0].update(content=hostile.b64(data), contentUri=None, originalFileHashes=[])
    return report


def write_bank(path, rows):
    """Writes a bank the way an operator should: a new file renamed over the old one."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(BANK_HEADER + "".join(f"MD5,{value},ops-bank,{label},x-{label}\n" for value, label in rows))
    os.replace(temporary, path)
    future = time.time() + 5  # a distinct mtime even on coarse-grained filesystems
    os.utime(path, (future, future))


def matches(fn, report):
    [enriched] = list(fn.process([(report, 0)]))
    assert isinstance(enriched, TimestampedValue)
    return [m["label"] for file in enriched.value["_hashes"]["files"] for m in file["matches"]]


@pytest.fixture
def bank_fn(tmp_path):
    bank = tmp_path / "bank.csv"
    write_bank(bank, [("0" * 32, "placeholder")])
    fn = MatchHashBatches([str(bank)], [], refresh_seconds=0)
    fn.setup()
    return fn, bank


def test_a_bank_replaced_mid_run_is_used_by_the_next_batch(bank_fn):
    fn, bank = bank_fn
    media = hostile.benign_image(5)
    assert matches(fn, md5_report("before", media)) == []
    write_bank(bank, [(hashlib.md5(media).hexdigest(), "added")])
    assert matches(fn, md5_report("after", media)) == ["added"]


def test_a_broken_bank_replacement_keeps_the_last_good_bank(bank_fn):
    fn, bank = bank_fn
    media = hostile.benign_image(6)
    write_bank(bank, [(hashlib.md5(media).hexdigest(), "good")])
    assert matches(fn, md5_report("good", media)) == ["good"]
    bank.write_text("hash_type,hash_value\nMD5,not-a-hash-and-missing-columns\n")  # a truncated/bad write
    os.utime(bank, (time.time() + 10, time.time() + 10))
    assert matches(fn, md5_report("still-good", media)) == ["good"]
