"""Streaming through the local Pub/Sub emulator: Beam's stock read vs the whole pipeline on the local source.

1. stock read: N messages pre-published, then ReadFromPubSub -> json.loads -> Map on the streaming
   DirectRunner for --seconds; messages/s.
2. whole pipeline: contract reports published live at --rate by a producer process (submittedAt =
   publish time) while
   `run_for` (the `tipline run --source pubsub --duration` path, local pull source) runs for --seconds;
   sustained reports/s (routed by the deadline / seconds), latency publish -> routed record emitted
   (p50/p99; the windowed Avro file is finalized later, when its window closes), RSS after warm-up
   (a tenth of --seconds) and at the end.

    .venv/bin/python benchmarks/bench_streaming.py               # 300 s per part
    .venv/bin/python benchmarks/bench_streaming.py --seconds 30 --rate 1200
"""
import argparse
import itertools
import multiprocessing
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime

import apache_beam as beam
from apache_beam.io.gcp.pubsub import ReadFromPubSub
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines import emulator  # noqa: E402
from pipelines.options import TiplineOptions  # noqa: E402
from pipelines.publish import ensure_subscription, ensure_topic, publish  # noqa: E402
from pipelines.streaming import local_streaming_options, run_for, tipline_counts  # noqa: E402
from transforms.plumbing.direct_runner import install_local_streaming_support  # noqa: E402
from pipelines.tipline_pipeline import build_pipeline  # noqa: E402
from transforms.demo.synthetic import SyntheticConfig, generate_messages  # noqa: E402

PROJECT = "tipline-bench"


def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def benchmark_messages(seed):
    """Contract reports without repeats or malformed ones, as long as the caller reads."""
    for epoch in itertools.count():
        yield from generate_messages(SyntheticConfig.for_benchmark(20_000, seed=seed + epoch))


def topic_and_subscription(name):
    from google.cloud import pubsub_v1

    topic, subscription = f"projects/{PROJECT}/topics/{name}", f"projects/{PROJECT}/subscriptions/{name}"
    ensure_topic(pubsub_v1.PublisherClient(), topic)
    ensure_subscription(pubsub_v1.SubscriberClient(), subscription, topic)
    return topic, subscription


def stock_read(seconds, prepublish):
    """messages/s of ReadFromPubSub -> json.loads -> Map on the streaming DirectRunner."""
    topic, subscription = topic_and_subscription("stock")
    publish(benchmark_messages(1), topic, count=prepublish)
    install_local_streaming_support()
    counter = Metrics.counter("bench", "read")
    pipeline = beam.Pipeline(options=local_streaming_options([]))
    _ = (pipeline
         | ReadFromPubSub(subscription=subscription)
         | beam.Map(lambda data: __import__("json").loads(data))
         | beam.Map(lambda report: counter.inc()))
    result = pipeline.run()
    time.sleep(seconds)
    read = sum(c.attempted for c in result.metrics().query(MetricsFilter().with_name("read"))["counters"])
    result.cancel()
    return read / seconds


class _RecordLatency(beam.DoFn):
    """Appends each routed record's age (now - submittedAt, which the publisher set to the publish time) to a file:
    the DoFn is a pickled copy, so a list in this module would stay empty."""

    def __init__(self, path):
        self.path = path

    def process(self, record):
        submitted = datetime.fromisoformat(record["submittedAt"].replace("Z", "+00:00")).timestamp()
        with open(self.path, "a") as handle:
            handle.write(f"{time.time() - submitted}\n")


def latencies(path):
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def produce(topic, rate, seconds, published):
    """The live producer (a separate process): benchmark reports stamped with their publish time."""
    published.value = publish(benchmark_messages(2), topic, rate=rate, duration=seconds, live=True)


def whole_pipeline(seconds, rate, out):
    """(routed by the deadline / seconds, published, counts at the end, RSS MB start/end)."""
    topic, subscription = topic_and_subscription("whole")
    options = local_streaming_options(["--source", "pubsub", "--subscription", subscription,
                                       "--output", str(out), "--window-minutes", "1"])
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options.view_as(TiplineOptions))
    _ = outputs["routed"] | "RecordLatency" >> beam.ParDo(_RecordLatency(str(out / "latencies.txt")))
    at_deadline, rss = {}, {}
    spawn = multiprocessing.get_context("spawn")  # a producer of its own, as in production: not the run's GIL
    published = spawn.Value("q", 0)
    producer = spawn.Process(target=produce, args=(topic, rate, seconds, published), daemon=True)
    run_id = uuid.uuid4().hex
    result_box = []

    def snapshot():
        time.sleep(seconds / 10)  # after warm-up: banks and GeoIP db loaded, numba kernels compiled
        rss["start"] = rss_mb()
        time.sleep(seconds - seconds / 10)
        if result_box:
            at_deadline.update(tipline_counts(result_box[0]))

    original_run = pipeline.run
    pipeline.run = lambda: result_box.append(original_run()) or result_box[0]
    producer.start()
    threading.Thread(target=snapshot, daemon=True).start()
    result = run_for(pipeline, subscription, seconds, run_id, progress=False)
    rss["end"] = rss_mb()
    producer.join()
    return at_deadline.get("routed", 0) / seconds, published.value, tipline_counts(result), rss


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300, help="length of each part")
    parser.add_argument("--rate", type=float, default=1200, help="whole pipeline: reports published per second")
    parser.add_argument("--skip-stock", action="store_true", help="only the whole pipeline")
    args = parser.parse_args()
    out = pathlib.Path(tempfile.mkdtemp(prefix="tipline-bench-stream-"))
    try:
        with emulator.running() as running:
            print(f"emulator {running.host}; os.cpu_count() = {os.cpu_count()}; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            stock = None if args.skip_stock else stock_read(args.seconds, int(args.seconds * 700))
            if stock is not None:
                print(f"stock read (ReadFromPubSub -> json -> map)   {stock:8.0f} messages/s", flush=True)
            sustained, published, counts, rss = whole_pipeline(args.seconds, args.rate, out)
            latency = latencies(out / "latencies.txt")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"whole pipeline (local source), {args.seconds:.0f} s     {sustained:8.0f} reports/s routed by the deadline "
          f"(target >= 1,000; published {published} at up to {args.rate:.0f}/s)")
    print(f"  at the end: read {counts.get('read', 0)}  routed {counts.get('routed', 0)}  "
          f"dead-lettered {counts.get('dead_lettered', 0)}")
    if stock:
        print(f"whole / stock read                         {sustained / stock:8.2f}  (target >= 0.8)")
    print(f"latency publish -> routed record           p50 {percentile(latency, 0.5):.2f} s  "
          f"p99 {percentile(latency, 0.99):.2f} s  ({len(latency)} records)")
    print(f"RSS start {rss['start']:.0f} MB, end {rss['end']:.0f} MB  "
          f"(growth {100 * (rss['end'] / rss['start'] - 1):+.0f}%, target <= 10%)")
    print(f"os.cpu_count() = {os.cpu_count()}; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
