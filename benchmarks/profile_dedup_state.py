"""Where the streaming dedup's memory goes on the local runner: tracemalloc, per remembered reportId.

A TestStream of N distinct reportIds (event times a second apart, the watermark following) runs through
DedupRedeliveries on the bundle-based DirectRunner, in each state form; once all N are released and still
inside the 24 h horizon, a probe report takes a tracemalloc snapshot in the runner's own process (leaving
out what the TestStream's own events hold). Prints the traced bytes per remembered reportId and the
allocation sites that hold most of them.

    .venv/bin/python benchmarks/profile_dedup_state.py --ids 20000
"""
import argparse
import pathlib
import sys
import tempfile
import time
import tracemalloc

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transforms.dedup import DedupRedeliveries  # noqa: E402

PROBE = "probe"
CHUNK = 1000
NOT_STATE = ("*/apache_beam/testing/test_stream.py", "*/cloudpickle/*", "*/runners/direct/test_stream_impl.py",
             __file__)


class _SnapshotAtProbe(beam.DoFn):
    """At the probe report: the traced memory and its top sites, written to `path` (the DoFn is a copy)."""

    def __init__(self, path, top):
        self.path = path
        self.top = top

    def process(self, report):
        if report["reportId"] != PROBE:
            return
        snapshot = tracemalloc.take_snapshot().filter_traces(  # not the TestStream's own events
            [tracemalloc.Filter(False, pattern, all_frames=True) for pattern in NOT_STATE])
        total = sum(stat.size for stat in snapshot.statistics("filename"))
        lines = [f"{total}"] + [f"{stat.size} {stat.count} {stat.traceback}"
                                for stat in snapshot.statistics("lineno")[:self.top]]
        pathlib.Path(self.path).write_text("\n".join(lines))


def stream(ids, start):
    events = TestStream().advance_watermark_to(start)
    for first in range(0, ids, CHUNK):
        events = (events.add_elements([TimestampedValue({"reportId": f"report-{i:08d}", "n": i}, start + i)
                                       for i in range(first, min(ids, first + CHUNK))])
                  .advance_watermark_to(start + min(ids, first + CHUNK)))
    return (events.add_elements([TimestampedValue({"reportId": PROBE, "n": -1}, start + ids + 1)])
            .advance_watermark_to(start + ids + 2)
            .advance_watermark_to_infinity())


def traced(state, ids, top):
    """(traced bytes at the probe, top sites), with all `ids` remembered."""
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        tracemalloc.start(8)
        with beam.Pipeline(options=options) as p:
            _ = (p | stream(ids, int(time.time()))
                 | DedupRedeliveries(horizon_hours=24, state=state)
                 | beam.ParDo(_SnapshotAtProbe(out.name, top)))
        tracemalloc.stop()
        total, *sites = pathlib.Path(out.name).read_text().splitlines()
    return int(total), sites


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    baseline, _ = traced("bucketed", 10, 0)  # the runner, the pipeline and a bucket or two: what N ids add to
    for state in ("per-key", "bucketed"):
        total, sites = traced(state, args.ids, args.top)
        print(f"{state:9s} {args.ids} reportIds remembered: {(total - baseline) / args.ids:8.0f} traced bytes each "
              f"({total / 1e6:.1f} MB traced, {baseline / 1e6:.1f} MB with 10 ids)")
        for site in sites:
            size, count, where = site.split(" ", 2)
            print(f"    {int(size) / args.ids:8.0f} B/id  {int(count):8d} blocks  {where}")


if __name__ == "__main__":
    main()
