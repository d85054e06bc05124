"""Streaming through the local Pub/Sub emulator: Beam's stock read vs the whole pipeline on the local source.

1. stock read: N messages pre-published, then ReadFromPubSub -> json.loads -> Map on the streaming
   DirectRunner for --seconds; messages/s.
2. whole pipeline: contract reports published live at --rate by a producer process (submittedAt =
   publish time) while
   `run_for` (the `tipline run --source pubsub --duration` path, local pull source) runs for --seconds;
   sustained reports/s (routed by the deadline / seconds), latency publish -> routed record emitted
   (p50/p99; the windowed Avro file is finalized later, when its window closes), RSS after warm-up
   (a tenth of --seconds), at the deadline, and after the drain (every window firing at once).
   Then the same below capacity (--below-rate, default half the rate routed in 2): its p50/p99 latency.

3. --soak: the whole pipeline at --rate (default 200/s) for --seconds (default 600) with the dedup horizon
   at 24 h, every --copy-every-th report published twice (a producer's retry, re-stamped): RSS every
   --sample-seconds, bytes of RSS per remembered reportId after warm-up (the first tenth), and whether dedup
   stayed exact (no reportId twice in the routed files, read = routed + duplicates + dead-lettered). With
   --dedup-state per-key (main's form) as well as bucketed unless --soak-forms says otherwise, each form in a
   process of its own (so the second form's RSS does not start on the first's heap). --census: which steps'
   keyed state and which object types grew after warm-up, each step's state by its keys, windows, buffered
   values, timers and MB held (the deep size of its state values and timers), sorted by how much it grew,
   and RSS after malloc_trim(0) at the deadline.

    .venv/bin/python benchmarks/bench_streaming.py               # 300 s per part
    .venv/bin/python benchmarks/bench_streaming.py --seconds 30 --rate 1200
    .venv/bin/python benchmarks/bench_streaming.py --soak        # 600 s per form, bucketed then per-key, a process each
"""
import argparse
import collections
import ctypes
import gc
import itertools
import multiprocessing
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import types
import uuid

import apache_beam as beam
import fastavro
import pyarrow
from apache_beam.io.gcp.pubsub import ReadFromPubSub
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines import emulator  # noqa: E402
from pipelines.options import TiplineOptions  # noqa: E402
from pipelines.publish import ensure_subscription, ensure_topic, publish  # noqa: E402
from pipelines.streaming import local_streaming_options, run_for, tipline_counts  # noqa: E402
from transforms.plumbing.pubsub_source import elements_in_flight  # noqa: E402
from transforms.plumbing.direct_runner import install_local_streaming_support  # noqa: E402
from pipelines.tipline_pipeline import build_pipeline  # noqa: E402
from transforms.demo.synthetic import SyntheticConfig, generate_messages  # noqa: E402

PROJECT = "tipline-bench"


def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def memory_by_kind():
    """MB of RSS by where it lives (/proc/self/smaps): the main heap, other anonymous mappings (glibc's
    per-thread arenas, numpy's large arrays, Arrow's pool), mapped files; then Python's allocated blocks
    (count, thousands) and Arrow's allocated MB, which tell live objects from memory an allocator keeps."""
    kinds = collections.Counter()
    with open("/proc/self/smaps") as smaps:
        kind = None
        for line in smaps:
            fields = line.split()
            if not fields[0].endswith(":"):
                path = fields[5] if len(fields) > 5 else ""
                kind = ("heap" if path == "[heap]" else "anonymous" if not path
                        else "files" if not path.startswith("[") else "other")
            elif fields[0] == "Rss:":
                kinds[kind] += int(fields[1]) / 1024
    kinds["python kblocks"] = sys.getallocatedblocks() / 1000
    kinds["arrow"] = pyarrow.total_allocated_bytes() / 2**20
    return kinds


def print_memory_by_kind(before, after):
    print("  memory after warm-up -> deadline: " + ", ".join(
        f"{kind} {before.get(kind, 0):.0f} -> {after[kind]:.0f}" for kind in after))


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
        submitted = record["submittedAt"] / 1e6  # timestamp-micros
        with open(self.path, "a") as handle:
            handle.write(f"{time.time() - submitted}\n")


def latencies(path):
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def produce(topic, rate, seconds, published, copy_every=0, copies=None):
    """The live producer (a separate process): benchmark reports stamped with their publish time; with
    `copy_every`, every so many reports published a second time (a retry: same reportId, new submittedAt),
    the number of such copies published left in `copies`."""
    is_copy = []

    def with_copies(messages):
        for index, message in enumerate(messages, 1):
            is_copy.append(False)
            yield message
            if copy_every and index % copy_every == 0:
                is_copy.append(True)
                yield message

    published.value = publish(with_copies(benchmark_messages(2)), topic, rate=rate, duration=seconds, live=True)
    if copies is not None:
        copies.value = sum(is_copy[:published.value])


def routed_copies(out):
    """How many routed records each reportId has in the run's routed files."""
    copies = collections.Counter()
    for path in (out / "routed").glob("jurisdiction=*/*.avro"):
        with open(path, "rb") as handle:
            copies.update(record["reportId"] for record in fastavro.reader(handle))
    return copies


def whole_pipeline(seconds, rate, out, extra_args=(), name="whole", copy_every=0, sample_every=None,
                   warm_up=None, census=False):
    """(routed by the deadline / seconds, published, counts at the end, RSS MB start/end, copies published,
    samples [(seconds, RSS MB, counts)] every `sample_every` s while reading)."""
    topic, subscription = topic_and_subscription(name)
    options = local_streaming_options(["--source", "pubsub", "--subscription", subscription,
                                       "--output", str(out), "--window-minutes", "1", *extra_args])
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options.view_as(TiplineOptions))
    _ = outputs["routed"] | "RecordLatency" >> beam.ParDo(_RecordLatency(str(out / "latencies.txt")))
    at_deadline, rss = {}, {}
    spawn = multiprocessing.get_context("spawn")  # a producer of its own, as in production: not the run's GIL
    published, copies = spawn.Value("q", 0), spawn.Value("q", 0)
    producer = spawn.Process(target=produce, args=(topic, rate, seconds, published, copy_every, copies),
                             daemon=True)
    run_id = uuid.uuid4().hex
    result_box, samples = [], []

    def counts_now():
        return tipline_counts(result_box[0]) if result_box else {}

    def snapshot():
        started = time.monotonic()
        time.sleep(warm_up or seconds / 10)  # after warm-up: banks and GeoIP db loaded, numba kernels compiled
        rss["start"], rss["start_counts"] = rss_mb(), counts_now()
        if census and result_box:
            rss["start_kinds"] = memory_by_kind()
            rss["start_census"], rss["start_objects"] = keyed_state_census(result_box[0]), object_census()
            if census == "trace":
                tracemalloc.start(12)  # what is allocated from now on and still held at the deadline (slow)
        while sample_every and time.monotonic() - started + sample_every < seconds:
            time.sleep(sample_every)
            samples.append((time.monotonic() - started, rss_mb(), counts_now()))
            in_flight = elements_in_flight(result_box[0]._evaluation_context) if result_box else 0
            print(f"  [{samples[-1][0]:5.0f} s] RSS {samples[-1][1]:6.0f} MB  routed {samples[-1][2].get('routed', 0)}"
                  f"  duplicates {samples[-1][2].get('duplicates', 0)}  elements in flight {in_flight}", flush=True)
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        at_deadline.update(counts_now())
        rss["deadline"] = rss_mb()
        if census and result_box:
            rss["deadline_kinds"] = memory_by_kind()
            rss["deadline_census"], rss["deadline_objects"] = keyed_state_census(result_box[0]), object_census()
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # what of the growth is freed memory the heap kept
            rss["deadline_trimmed"] = rss_mb()
            rss["garbage"] = gc.collect()  # cyclic garbage the collector had not reached yet
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            rss["deadline_collected"] = rss_mb()
            if census == "trace":
                rss["traced"] = tracemalloc.take_snapshot()
                tracemalloc.stop()

    original_run = pipeline.run
    pipeline.run = lambda: result_box.append(original_run()) or result_box[0]
    producer.start()
    threading.Thread(target=snapshot, daemon=True).start()
    result = run_for(pipeline, subscription, seconds, run_id, progress=False)
    rss["end"] = rss_mb()
    producer.join()
    rss["deadline_counts"] = dict(at_deadline)
    return (at_deadline.get("routed", 0) / seconds, published.value, tipline_counts(result), rss, copies.value,
            samples)


def keyed_state_census(result):
    """{step: (keys, windows, buffered values, timers, MB held)} of the DirectRunner's keyed state (a racy
    walk of a running pipeline, retried until it reads through). MB held: the deep size of the step's state
    values and timers, an object shared with a step walked earlier counted there only."""
    states = result._evaluation_context._transform_keyed_states
    for _ in range(20):
        try:
            census, walked = {}, set()
            for applied, keyed in list(states.items()):
                held = list(keyed.values())
                census[applied.full_label] = (
                    len(held), sum(len(state.state) for state in held),
                    sum(len(values) for state in held for tags in list(state.state.values())
                        for values in list(tags.values())),
                    sum(len(timers) for state in held for timers in list(state.timers.values())),
                    round(sum(deep_bytes(state.state, walked) + deep_bytes(state.timers, walked) for state in held)
                          / 2**20, 1))
            return census
        except RuntimeError:  # a dict changed size while walked
            time.sleep(0.01)
    return {}


_NOT_STATE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def deep_bytes(root, walked):
    """Bytes of `root` and what it refers to (not classes, modules or functions), skipping ids in `walked`."""
    total, stack = 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in walked or isinstance(obj, _NOT_STATE):
            continue
        walked.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def object_census():
    """{type name: live objects} the garbage collector tracks."""
    return collections.Counter(type(obj).__name__ for obj in gc.get_objects())


def print_census(before, after, label, top=12):
    grown = sorted(after, key=lambda name: after[name][4] - before.get(name, (0,) * 5)[4], reverse=True)
    print(f"  keyed state, {label} (keys / windows / buffered values / timers / MB held):")
    for name in grown[:top]:
        print(f"    {after[name]!s:38} was {before.get(name, (0, 0, 0, 0, 0))!s:34} {name}")


def print_traced(snapshot, top=15):
    """The allocation sites holding most of what was allocated after warm-up, with the step's own frames."""
    stats = snapshot.statistics("traceback")
    print(f"  traced after warm-up and still held: {sum(stat.size for stat in stats) / 2**20:.0f} MB")
    for stat in stats[:top]:
        frames = [f"{frame.filename.split('site-packages/')[-1].split('streammem3/')[-1]}:{frame.lineno}"
                  for frame in stat.traceback]
        print(f"    {stat.size / 2**20:6.1f} MB {stat.count:8d} blocks  " + " < ".join(frames[::-1][:7]))


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def seconds_until_hour_mid_way(warm_up, seconds, now=None):
    """How long to wait before a run of `seconds` so that a clock hour ends half-way through its measured
    part (after `warm_up`): the local source's watermark is the wall clock, so only then do the run's hourly
    windows fire and the sliding day windows fill, as in every hour of a real stream."""
    middle = (now if now is not None else time.time()) + (warm_up + seconds) / 2
    return (3600 - middle % 3600) % 3600


def soak(args, state):
    """One soak run in dedup state form `state`; prints its figures."""
    out = pathlib.Path(tempfile.mkdtemp(prefix=f"tipline-soak-{state}-"))
    if args.cross_hour:
        wait = seconds_until_hour_mid_way(args.warm_up_seconds or args.seconds / 10, args.seconds)
        print(f"  waiting {wait:.0f} s, so that an hour ends half-way through the measured part", flush=True)
        time.sleep(wait)
    try:
        print(f"soak, --dedup-state {state}: {args.seconds:.0f} s at {args.rate:.0f} reports/s, horizon 24 h, "
              f"every {args.copy_every}th report published twice", flush=True)
        sustained, published, counts, rss, copies, samples = whole_pipeline(
            args.seconds, args.rate, out, ["--dedup-state", state, "--dedup-horizon-hours", "24"],
            name=f"soak-{state}", copy_every=args.copy_every, sample_every=args.sample_seconds,
            warm_up=args.warm_up_seconds, census=args.census)
        routed = routed_copies(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    remembered = rss["deadline_counts"].get("routed", 0) - rss["start_counts"].get("routed", 0)
    growth = rss["deadline"] - rss["start"]
    routed_twice = sum(1 for count in routed.values() if count > 1)
    exact = (routed_twice == 0 and sum(routed.values()) == counts.get("routed")
             and counts.get("read") == counts.get("routed", 0) + counts.get("duplicates", 0)
             + counts.get("dead_lettered", 0))
    print(f"  RSS after warm-up {rss['start']:.0f} MB, at the deadline {rss['deadline']:.0f} MB: growth {growth:+.0f} MB "
          f"(target <= 100; +764 in 300 s when it was set) for {remembered} reportIds remembered since: "
          f"{growth * 2**20 / max(remembered, 1):.0f} bytes of RSS each (target <= 300; ~8,000 when it was set)")
    print(f"  published {published} ({copies} second copies); at the end read {counts.get('read', 0)}  routed "
          f"{counts.get('routed', 0)}  duplicates {counts.get('duplicates', 0)}  dead-lettered "
          f"{counts.get('dead_lettered', 0)}; {sum(routed.values())} routed records, {routed_twice} reportIds routed "
          f"twice: dedup {'exact' if exact else 'NOT EXACT'}; "
          f"{sustained:.0f} reports/s routed by the deadline", flush=True)
    if "deadline_census" in rss:
        print(f"  RSS at the deadline after malloc_trim(0): {rss['deadline_trimmed']:.0f} MB; after a full collection "
              f"({rss['garbage']:,} unreachable objects) and malloc_trim(0): {rss['deadline_collected']:.0f} MB")
        print_memory_by_kind(rss.get("start_kinds", {}), rss["deadline_kinds"])
        print_census(rss.get("start_census", {}), rss["deadline_census"], "after warm-up -> deadline")
        objects = rss["deadline_objects"]
        objects.subtract(rss.get("start_objects", collections.Counter()))
        if "traced" in rss:
            print_traced(rss["traced"])
        print("  objects grown after warm-up: " + ", ".join(f"{name} {count:+d}" for name, count in objects.most_common(12)))


def form_argv(argv, state):
    """`argv` with `--soak-forms` set to the one form `state`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--soak-forms":
            skip = True
        elif not arg.startswith("--soak-forms="):
            kept.append(arg)
    return [*kept, "--soak-forms", state]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="length of each part (300; soak 600)")
    parser.add_argument("--rate", type=float, default=None,
                        help="whole pipeline: reports published per second (1200; soak 200)")
    parser.add_argument("--skip-stock", action="store_true", help="only the whole pipeline")
    parser.add_argument("--below-rate", type=float, default=None,
                        help="then the whole pipeline again at this rate, for its latency below capacity "
                        "(default: half the rate it routed at --rate; 0 skips it)")
    parser.add_argument("--soak", action="store_true", help="the memory soak instead of the throughput parts")
    parser.add_argument("--soak-forms", default="bucketed,per-key", help="dedup state forms to soak, in order")
    parser.add_argument("--copy-every", type=int, default=10, help="soak: every so many reports published twice")
    parser.add_argument("--sample-seconds", type=float, default=30, help="soak: RSS printed this often")
    parser.add_argument("--census", nargs="?", const="count", choices=("count", "trace"),
                        help="soak: which steps' keyed state (counts and MB held) and which object types grew "
                        "after warm-up; "
                        "`--census trace` also traces allocations (tracemalloc: several times slower)")
    parser.add_argument("--warm-up-seconds", type=float, default=None, help="RSS growth counted from then "
                        "(default: a tenth of --seconds)")
    parser.add_argument("--cross-hour", action="store_true",
                        help="soak: start when an hour will end half-way through the measured part (waits up to an "
                        "hour), so its hourly windows fire and the sliding day windows fill, as every hour of a stream")
    args = parser.parse_args()
    if args.soak and "," in args.soak_forms:
        for state in args.soak_forms.split(","):  # a process each: the second form's RSS not on the first's heap
            subprocess.run([sys.executable, __file__, *form_argv(sys.argv[1:], state)], check=True)
        return
    if args.soak:
        args.seconds, args.rate = args.seconds or 600, args.rate or 200
        with emulator.running() as running:
            print(f"emulator {running.host}; os.cpu_count() = {os.cpu_count()}; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            for state in args.soak_forms.split(","):
                soak(args, state)
        print(f"load average now {os.getloadavg()[0]:.1f}")
        return
    args.seconds, args.rate = args.seconds or 300, args.rate or 1200
    out = pathlib.Path(tempfile.mkdtemp(prefix="tipline-bench-stream-"))
    try:
        with emulator.running() as running:
            print(f"emulator {running.host}; os.cpu_count() = {os.cpu_count()}; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            stock = None if args.skip_stock else stock_read(args.seconds, int(args.seconds * 700))
            if stock is not None:
                print(f"stock read (ReadFromPubSub -> json -> map)   {stock:8.0f} messages/s", flush=True)
            (out / "overload").mkdir(), (out / "below").mkdir()
            sustained, published, counts, rss, _, _ = whole_pipeline(args.seconds, args.rate, out / "overload")
            print_whole_pipeline(args, sustained, published, counts, rss, latencies(out / "overload" / "latencies.txt"))
            if stock:
                print(f"whole / stock read                         {sustained / stock:8.2f}  (target >= 0.8; 0.72 when it was set)")
            below = sustained / 2 if args.below_rate is None else args.below_rate
            if below > 0:
                print(f"below capacity: published at {below:.0f}/s (half the rate routed above unless --below-rate)",
                      flush=True)
                result = whole_pipeline(args.seconds, below, out / "below", name="below")
                print_whole_pipeline(args, *result[:4], latencies(out / "below" / "latencies.txt"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"os.cpu_count() = {os.cpu_count()}; load average now {os.getloadavg()[0]:.1f}")


def print_whole_pipeline(args, sustained, published, counts, rss, latency):
    print(f"whole pipeline (local source), {args.seconds:.0f} s     {sustained:8.0f} reports/s routed by the deadline "
          f"(the goal is its ratio to the stock read; published {published})")
    print(f"  at the end: read {counts.get('read', 0)}  routed {counts.get('routed', 0)}  "
          f"dead-lettered {counts.get('dead_lettered', 0)}")
    print(f"  latency publish -> routed record         p50 {percentile(latency, 0.5):.2f} s  "
          f"p99 {percentile(latency, 0.99):.2f} s  ({len(latency)} records; target p99 <= 10 s below capacity)")
    growth = rss["deadline"] - rss["start"]
    routed = rss["deadline_counts"].get("routed", 0) - rss["start_counts"].get("routed", 0)
    print(f"  RSS after warm-up {rss['start']:.0f} MB, at the deadline {rss['deadline']:.0f} MB ({growth:+.0f} MB, "
          f"{growth * 2**20 / max(routed, 1):.0f} bytes a reportId routed since, which dedup remembers for its "
          f"horizon; the memory goals are --soak's), after the drain {rss['end']:.0f} MB (the heap's peak while "
          "every window fires at once)", flush=True)

if __name__ == "__main__":
    main()
