"""Throughput of windowed dedup + bundling + trend tables on a bounded replay, and the ratio to the bare replay.

    .venv/bin/python benchmarks/bench_windows.py                  # 200,000 reports over 48 h of event time
    .venv/bin/python benchmarks/bench_windows.py --reports 50000 --with-alerts

Records are generated inside the pipeline (a small Create of shard ids + FlatMap; a large Create is slow),
with 2% redeliveries and a skewed set of content hashes so bundles repeat. Prints figures, never asserts.
"""
import argparse
import os
import random
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import TimestampedValue

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transforms.bundles import BundleRepeats, StampBundleIds  # noqa: E402
from transforms.dedup import DedupRedeliveries  # noqa: E402
from transforms.alerts import SpikeAlerts  # noqa: E402
from transforms.trends import TrendCounts  # noqa: E402

HOURS = 48
JURISDICTIONS = ["US-CA", "US-TX", "US-NY", "US-WA", "GB", "DE", "IN", "BR", "PH", "UNKNOWN"]
ESPS = [f"esp-{n}" for n in range(12)]
MATCH = ["known", "new", "no_media"]


def shard_reports(shard, per_shard, seed=2026):
    """A shard's routed records (with the fields the stages read), 2% redelivered."""
    rng = random.Random(seed * 1000 + shard)
    for n in range(per_shard):
        event_time = rng.uniform(0, HOURS * 3600)
        copies = 2 if rng.random() < 0.02 else 1
        digest = f"{int(rng.paretovariate(1.2)) % 50_000:032x}" if rng.random() < 0.6 else f"{rng.getrandbits(128):032x}"
        files = [{"fileId": "f-1", "mediaStatus": "hashed", "mediaError": None,
                  "hashes": [{"signalType": "MD5", "value": digest, "source": "provided"}], "matches": []}]
        record = {"reportId": f"r-{shard}-{n}", "espId": rng.choice(ESPS), "incidentType": "Online Enticement",
                  "matchSummary": rng.choice(MATCH), "jurisdiction": rng.choice(JURISDICTIONS),
                  "location": {"countryCode": rng.choice(["US", "GB", "DE", "IN", None])},
                  "reportedUser": {"espIdentifier": f"u-{rng.randrange(20_000)}"}, "batchedReason": None,
                  "bundleId": None, "files": files}
        for _ in range(copies):
            yield TimestampedValue(record, event_time)


def replay(p, reports, shards):
    return (p | "Shards" >> beam.Create(list(range(shards)))
            | "Generate" >> beam.FlatMap(shard_reports, per_shard=reports // shards))


def bare(p, reports, shards, _output):
    _ = replay(p, reports, shards) | "Count" >> beam.combiners.Count.Globally()


def windowed(p, reports, shards, output, with_alerts=False):
    unique = (replay(p, reports, shards) | "Dedup" >> DedupRedeliveries(horizon_hours=24)
              | "Stamp" >> StampBundleIds())
    _ = unique | "Trends" >> TrendCounts(output)
    _ = unique | "Bundles" >> BundleRepeats(output)
    if with_alerts:
        _ = unique | "Alerts" >> SpikeAlerts(output)


def timed(build, reports, shards, **kwargs):
    with tempfile.TemporaryDirectory() as output:
        start = time.perf_counter()
        with beam.Pipeline(options=PipelineOptions()) as p:
            build(p, reports, shards, output, **kwargs)
        return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=40)
    parser.add_argument("--with-alerts", action="store_true", help="also run SpikeAlerts in the windowed replay")
    args = parser.parse_args()
    replayed = args.reports * 1.02  # with redeliveries, approximately
    print(f"os.cpu_count() = {os.cpu_count()}; {args.reports:,} reports (+~2% redeliveries), {HOURS} h of event time")
    bare_seconds = timed(bare, args.reports, args.shards)
    print(f"bare replay:                       {bare_seconds:7.1f} s  {replayed / bare_seconds:9,.0f} reports/s")
    stages = "dedup + bundles + trends" + (" + alerts" if args.with_alerts else "")
    windowed_seconds = timed(windowed, args.reports, args.shards, with_alerts=args.with_alerts)
    print(f"{stages + ':':34s}{windowed_seconds:7.1f} s  {replayed / windowed_seconds:9,.0f} reports/s")
    print(f"ratio windowed / bare throughput:  {bare_seconds / windowed_seconds:.3f}")


if __name__ == "__main__":
    main()
