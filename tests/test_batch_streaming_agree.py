"""Batch and streaming forms of the windowed stages give the same rows for the same on-time input.

Bounded input takes a faster path (keys by window start in the global window, transforms/plumbing/event_windows.py);
these tests pin it to the event-time windows and triggers the streaming path uses.
"""
import json
import random

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream

from tests.test_trends import at, routed_record, streaming_pipeline
from transforms.bundles import BundleRepeats
from transforms.alerts import SpikeAlerts, SpikeRule
from transforms.trends import TrendCounts

HOUR = 3600
RULES = {"esp": SpikeRule(min_count=5, ratio=2.0, warmup_windows=2),
         "jurisdiction": SpikeRule(min_count=5, ratio=2.0, warmup_windows=2)}


def mixed_records(count=400, hours=30, seed=7):
    """Records over `hours` (crossing midnight) with repeating hashes, users, ESPs and a flood hour."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        hour = 20 if index % 5 == 0 else rng.randrange(hours)
        records.append(at(hour * HOUR + rng.randrange(HOUR), routed_record(
            f"r{index}", jurisdiction=rng.choice(["GB", "US-CA", "IN"]), country=rng.choice(["GB", "US", None]),
            esp=rng.choice(["esp-1", "esp-2"]), user=rng.choice([None, "u1", "u2", f"u{index}"]),
            match=rng.choice(["new", "known"]), files=rng.randrange(4),
            bundle=rng.choice([None, "bnd-a", "bnd-b"]),
            hashes=[("MD5", rng.choice(["aa", "bb", f"{index:02x}"]))],
            matches=[("bank", "e1")] if rng.random() < 0.1 else [],
            annotations=rng.choice([(), ("sextortion",), ("sextortion", "spam")]))))
    return records


def run_both(stage, records, tmp_path, folder):
    """{form: the files `stage` wrote under `folder`} for a bounded Create and a TestStream of `records`."""
    for form in ("batch", "streaming"):
        out = str(tmp_path / form)
        if form == "batch":
            with TestPipeline() as p:
                _ = p | beam.Create(records) | stage(out)
        else:
            with streaming_pipeline() as p:
                _ = p | TestStream().add_elements(records).advance_watermark_to_infinity() | stage(out)
    return files_of(tmp_path / "batch" / folder), files_of(tmp_path / "streaming" / folder)


def files_of(folder):
    """{relative path of each data file: its rows} under `folder` (Parquet or JSON Lines)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".parquet":
            found[str(path.relative_to(folder))] = sorted(map(repr, pq.read_table(path).to_pylist()))
        elif path.suffix == ".jsonl":
            found[str(path.relative_to(folder))] = sorted(path.read_text().splitlines())
    return found


def rows(files):
    return [row for file_rows in files.values() for row in file_rows]


def test_trend_tables_are_the_same_in_batch_and_streaming(tmp_path):
    batch, streaming = run_both(TrendCounts, mixed_records(), tmp_path, "trends")
    assert batch == streaming
    assert {path.split("/")[0] for path in batch} == {
        f"{kind}_{suffix}" for kind in ("hourly", "sliding24h")
        for suffix in ("total", "by_jurisdiction", "by_country", "by_incident_type", "by_esp", "by_match_class",
                       "by_annotation")}
    assert len({path.split("/")[1] for path in batch}) == 3  # partitions of three days (sliding ends included)


def test_bundles_are_the_same_in_batch_and_streaming(tmp_path):
    batch, streaming = run_both(BundleRepeats, mixed_records(), tmp_path, "bundles")
    assert batch == streaming
    assert any("'reports': 1," not in row for row in rows(batch))  # some bundle holds repeats


def test_spike_alerts_are_the_same_in_batch_and_streaming(tmp_path):
    batch, streaming = run_both(lambda out: SpikeAlerts(out, rules=RULES), mixed_records(), tmp_path, "alerts")
    assert sorted(rows(batch)) == sorted(rows(streaming))  # files differ: a stream writes alerts as they come
    assert any(json.loads(row)["window_start"][11:13] == "20" for row in rows(batch))  # the flood hour alerts
