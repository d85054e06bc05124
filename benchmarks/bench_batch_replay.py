"""Batch replay: contract reports from JSON Lines through the whole pipeline (`tipline run --source files`).

Prints reports/s for the whole pipeline (in one process, then in `--workers` processes), for a trivial Beam
pipeline over the same file (read -> parse -> count: the floor Beam itself sets), the start-up cost (the whole
pipeline over the file's first 200 reports, in one process and in `--workers`) and the rate past it, for the
grouping floor (read -> decode -> pack -> the four groupings the whole pipeline makes of every report, no work
between: the most the whole pipeline can reach on this runner however cheap its own work), the floor with the
chain's own work added (the most this design can reach: what the rest of the pipeline costs is the gap) and for the
plain-Python enrichment loop over the same reports (the work with no Beam at all), their ratios, and
os.cpu_count(); the CPU seconds (user + sys of this process and its worker processes) per million reports of
each run, the figure a Dataflow bill follows, and for the run in worker processes the runner process's share
apart from the workers' (the runner holds every grouping's buffers and the data plane: if it were the
bottleneck, its share would show it); and the plain-Python chain's CPU microseconds per report, step by step,
as bench_chain.py splits it (decode, validate, hashes, GeoIP, jurisdiction, routed record, its check, Avro
encoding; the least and the median of `--passes` passes, the set-up frozen out of the collector as a worker's is).
`--profile` re-runs the whole pipeline under cProfile and prints the time of each stage and the top functions;
`--stages` runs it once and prints the CPU of each fused stage's bundles and what is spent outside them
(cProfile inflates Python-heavy steps several times; this does not).

Measured on 2026-12-02 on main 1231fd7 (2 cores shared with other work, load average 5-10), 20,000 reports:
whole pipeline 577 reports/s in one process, 471/s in two; trivial Beam pipeline 15,948/s (ratio 0.04);
plain-Python loop 3,615/s wall (277 us a report); plain chain CPU, best of 5 passes over 5,000 reports:
decode 14.6, validate 27.1, hashes 39.4, GeoIP 16.5, jurisdiction 3.2, routed record 9.8 = 110.6 us a report.
Later that day (bounded file sinks grouping lists per key and bundle; bounded stages yielding WindowedValues),
20,000 reports, load average 6-7: 718 reports/s in one process (834 CPU-s per million) against main's 471
(1,037) run just after; in 2 processes 353/s (1,295 CPU-s per million: the runner process 282, the workers
1,013) against main's 481 (1,606). Fixed cost, measured apart at 1,000 reports: 5.2 CPU-s in one process,
13.2 in two (starting the workers, and each of ~50 stages run as a bundle per worker), so below ~100,000
reports the 2-process run pays more than it gains, and a loaded machine leaves it no second core.
Later still (branch batch4 against main 0d5d6a5 alternating, 20,000 reports, load average 6.9-9.1): one
process 797 and 1,000 CPU-s per million against 901 and 963, 2 processes 1,394 and 1,374 against 1,239 and
1,311 (noise); the whole run alone, alternating at load 6.0-7.2, 780 and 889 CPU-s per million against
967 and 1,038; outside the stages' bundles (`--stages`) 184 and 186 us a report against 271 and 268; fixed
cost at 1,000 reports 10.5-11.0 CPU-s in two processes against 12.6-12.8 (one dead-letter sink, not six).
On 2026-12-04 (stop 40, idle machine, 100,000 reports): 4,807 and 5,051 reports/s in 2 processes (338 and
349 CPU-s per million, the runner process 54 and 56), 3,638-3,797/s in one (258-268 CPU-s per million),
after the groupings' records were made smaller and deflated; the stop began at 3,560 and 3,649/s in 2.
On 2026-12-05 (stop 41, load average 1.3-1.6): 5,345 and 5,269 reports/s in 2 processes (309 and 312 CPU-s
per million, the runner 50 and 48), 4,198 and 4,202 in one (230 and 232), against 5,073 and 3,846 (324 and
254) at the stop's start: records packed for a grouping without the load-back check (`json_exact`), and
the launcher collecting its old generation rarely.
On 2026-12-05 (stop 42, load average 0.6-2.0): 5,894 reports/s in 2 processes (287 CPU-s per million, the
runner 38), 4,664 in one (210), against 5,177 median of 5 in 2 at the stop's start: each record packed for
a grouping deflated against its schema's example record (a report 1,027 -> 466 bytes), bundle rows and
event-time stamping without Beam Timestamps in between.
On 2026-12-05 (stop 43, load average 0.7-1.9): 5,628 reports/s in 2 processes (290 CPU-s per million, the
runner 43), 4,713 in one (206), on Dask 2,862 (575; 1,101 at stop 42); alternating with the stop's start in
2 processes, 5,691-6,069 -> 6,159-6,490 reports/s: reports stamped as WindowedValues at their event micros,
keying steps reading the micros from the WindowedValue, and on Dask the ParDos between groupings fused, the
combines lifted and the global-window groupings without a WindowedValue per value.
On 2026-12-05 (stop 44, a slower machine: trivial 46,831/s where stop 43 had 66,653, load average 1.3),
100,000 reports: 4,725 reports/s in 2 processes (371 CPU-s per million), 3,455 in one (282); the grouping floor
21,585/s in 2 processes (71 CPU-s per million), 0.46 of trivial: the whole pipeline is 0.22 of its floor.

    .venv/bin/python benchmarks/bench_batch_replay.py                 # 200,000 reports (~2 KB each)
    .venv/bin/python benchmarks/bench_batch_replay.py --count 20000 --profile
    .venv/bin/python benchmarks/bench_batch_replay.py --count 10000 --ladder   # CPU us each step adds
    .venv/bin/python benchmarks/bench_batch_replay.py --count 20000 --stages   # CPU us of each fused stage
    .venv/bin/python benchmarks/bench_batch_replay.py --count 20000 --dask 2   # also on a Dask LocalCluster

The input is generated first (SyntheticConfig.for_benchmark: 3 files per report with provided hashes,
all valid, no repeats), not timed, and kept in --workdir for the next run.
"""
import argparse
import cProfile
import gc
import itertools
import json
import os
import pathlib
import pstats
import resource
import shutil
import statistics
import sys
import time
import zlib

import apache_beam as beam
from apache_beam import coders
from apache_beam.options.pipeline_options import PipelineOptions

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.options import TiplineOptions  # noqa: E402
from pipelines.tipline_pipeline import run  # noqa: E402
from transforms.reports.validation import decode_message  # noqa: E402
from transforms.plumbing.packed_records import pack_deflated  # noqa: E402
from transforms.reports.enrichment import enrich_and_route  # noqa: E402
from transforms.demo.synthetic import SyntheticConfig, generate_messages  # noqa: E402
from bench_chain import (AVRO_STEP, CHAIN_STEPS, HASH_BATCH, MAX_MESSAGE_BYTES, Chain,  # noqa: E402
                         micros_per_report, print_figures as print_chain)


def input_file(workdir, count):
    """The JSONL of `count` benchmark reports, generated once per count."""
    path = workdir / f"reports-{count}.jsonl"
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        with partial.open("wb") as handle:
            for message in generate_messages(SyntheticConfig.for_benchmark(count)):
                handle.write(message + b"\n")
        partial.rename(path)
        print(f"generated {path} in {time.perf_counter() - started:.0f} s (not timed)", flush=True)
    return path


def cpu_seconds_apart():
    """(user + sys seconds of this process, of its ended, waited-for children): the DirectRunner's
    multi_processing workers are such children once the run is over, and this process is the runner
    (it holds every grouping's buffers and the gRPC data plane)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


class Cpu(float):
    """CPU seconds of a run's process tree, with the runner's (`own`) and the workers' (`workers`) apart."""

    def __new__(cls, own, workers):
        cpu = super().__new__(cls, own + workers)
        cpu.own, cpu.workers = own, workers
        return cpu


def timed(function, *args):
    """(wall seconds, CPU seconds of the process tree as a `Cpu`, result) of `function(*args)`."""
    started, (own, children) = time.perf_counter(), cpu_seconds_apart()
    result = function(*args)
    own_after, children_after = cpu_seconds_apart()
    return time.perf_counter() - started, Cpu(own_after - own, children_after - children), result


def direct_runner_args(workers):
    """The DirectRunner's arguments for `workers` worker processes (none: in this process)."""
    return ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)] if workers > 1 else []


def whole_pipeline(path, out, workers=1, dask_workers=0):
    """`run()` (the `tipline run` entry point) over the file, in one process or in `workers` worker
    processes (`--direct_running_mode multi_processing`), or on a Dask LocalCluster of `dask_workers`
    processes (`--runner dask`); returns (seconds, CPU seconds, summary)."""
    shutil.rmtree(out, ignore_errors=True)
    engine = ["--runner", "dask", "--dask-workers", str(dask_workers)] if dask_workers else direct_runner_args(workers)
    return timed(run, ["--source", "files", "--input", str(path), "--output", str(out), "--demo-data"] + engine)


START_UP_REPORTS = 200


def start_up_costs(path, workdir, workers, head=START_UP_REPORTS):
    """(seconds, CPU seconds) of the whole pipeline over the file's first `head` reports, in one process and
    in `workers` (None for 1): what a run costs before its reports do (building and translating the
    pipeline, starting worker processes, each stage's first bundle; this process's imports are already
    paid), measured apart so a long run's rate can be read without it."""
    small = workdir / f"reports-head-{head}.jsonl"
    with path.open("rb") as lines, small.open("wb") as handle:
        handle.writelines(itertools.islice(lines, head))
    out = workdir / "start-up-out"
    alone = whole_pipeline(small, out)[:2]
    return alone, (whole_pipeline(small, out, workers)[:2] if workers > 1 else None)


def trivial_pipeline(path):
    """(seconds, CPU seconds) for read -> json.loads -> count on the same runner."""
    def read_parse_count():
        with beam.Pipeline(options=PipelineOptions([])) as pipeline:
            _ = (pipeline
                 | beam.io.ReadFromText(str(path), coder=coders.BytesCoder())
                 | beam.Map(json.loads)
                 | beam.combiners.Count.Globally())
    seconds, cpu, _ = timed(read_parse_count)
    return seconds, cpu


def _packed_by_report_id(line):
    report = decode_message(line, 1 << 20)
    return report["reportId"], pack_deflated(report, "report", json_exact=True)


def _packed_again(grouped):
    key, packed = grouped
    for value in packed:
        yield key, value


def _as_sighting(grouped):
    key, packed = grouped
    for _ in packed:
        yield key, (0, 1 << 62, "esp", "US-CA")


DESTINATIONS = 100


def _by_destination(grouped):
    """Each record keyed as the routed files sink keys it: (destination, label), one of ~100 destinations."""
    key, packed = grouped
    destination = f"{zlib.crc32(key.encode()) % DESTINATIONS:02d}"
    for value in packed:
        yield (destination, "unwindowed"), value


def grouping_floor_pipeline(path, workers):
    """(seconds, CPU seconds) of the groupings the whole pipeline makes of every report, with none of its
    work between them, in `workers` processes: read -> decode -> pack -> by reportId (the report, packed as
    dedup packs it) -> by signature (a packed record of the same size, as bundle stamping groups the routed
    record) -> by bundle (a sighting), and by destination (the packed record again, where the routed files sink
    groups each routed record's Avro datum, ~950 bytes to the packed ~470). Each report has keys of its own,
    as in this input (no repeats). The other sinks' groupings and the combines are left out and the datum is
    smaller, so this is an upper bound on what the whole pipeline can reach on this runner however cheap its
    own work becomes."""
    def read_and_group():
        with beam.Pipeline(options=PipelineOptions(direct_runner_args(workers))) as pipeline:
            by_signature = (pipeline
                            | beam.io.ReadFromText(str(path), coder=coders.BytesCoder())
                            | "ByReportId" >> beam.Map(_packed_by_report_id)
                            | "GroupByReportId" >> beam.GroupByKey()
                            | "BySignature" >> beam.FlatMap(_packed_again)
                            | "GroupBySignature" >> beam.GroupByKey())
            bundles = (by_signature
                       | "ByBundle" >> beam.FlatMap(_as_sighting)
                       | "GroupByBundle" >> beam.GroupByKey())
            files = (by_signature
                     | "ByDestination" >> beam.FlatMap(_by_destination)
                     | "GroupByDestination" >> beam.GroupByKey())
            _ = (bundles, files) | beam.Flatten() | beam.combiners.Count.Globally()
    seconds, cpu, _ = timed(read_and_group)
    return seconds, cpu


def plain_python_loop(path):
    """Seconds for parse + hashes + geo + jurisdiction + routed record, report by report, with no Beam; the
    parts made once beforehand, as bench_chain.py's `Chain` makes them."""
    chain = Chain()
    started = time.perf_counter()
    with path.open("rb") as handle:
        batch = []
        for line in handle:
            report = decode_message(line.rstrip(b"\n"), MAX_MESSAGE_BYTES)
            chain.validator.validate(report)
            batch.append(report)
            if len(batch) == HASH_BATCH:
                enrich_and_route(batch, chain.matcher, chain.locator, chain.rules)
                batch = []
        enrich_and_route(batch, chain.matcher, chain.locator, chain.rules)
    return time.perf_counter() - started


def chain_step_micros(path, count, passes):
    """bench_chain.py's split of the plain-Python chain ({step: [CPU us a report of each pass]}) over the
    file's first `count` reports, with the set-up frozen out of the garbage collector as a worker's first
    reference load freezes it (`reference_files.out_of_the_collector`). Measured before the pipelines run:
    after them each step costs ~7% more here (the same code over a heap they left behind), and full
    collections would walk what they left, which no worker holds."""
    with path.open("rb") as handle:
        lines = [line.rstrip(b"\n") for _, line in zip(range(count), handle)]
    chain = Chain()
    gc.collect()
    gc.freeze()
    try:
        return micros_per_report(lines, passes, chain)
    finally:
        gc.unfreeze()


def own_work_micros(chain):
    """CPU us a report of the chain's work that the grouping floor does not do already (it decodes each
    message): validating to the routed record's check, and its Avro encoding; medians of the passes."""
    return sum(statistics.median(chain[name]) for name in (*CHAIN_STEPS[1:], AVRO_STEP))


def floor_plus_own_work(floor_seconds, floor_cpu_per_million, own_micros):
    """(seconds, CPU-s per million) of the grouping floor with the chain's own work added, the cores used as
    the floor used them: the most the whole pipeline could reach if nothing else it does cost anything."""
    cpu = floor_cpu_per_million + own_micros
    return floor_seconds * cpu / floor_cpu_per_million, cpu


def rest_budget(ratio, trivial_seconds, floor_seconds, floor_cpu_per_million, bound_cpu):
    """CPU-s per million reports the rest of the pipeline may cost for the whole to reach `ratio` of the trivial
    pipeline, the cores used as the floor used them (negative: out of reach however cheap the rest)."""
    return floor_cpu_per_million * (trivial_seconds / ratio) / floor_seconds - bound_cpu


def print_ladder(micros, cpu, count):
    print(f"\n{count} reports, load average {os.getloadavg()[0]:.1f}; step ladder, CPU us a report each step adds "
          f"(in-process DirectRunner, least of the runs; the empty pipeline {cpu[0]:.1f} CPU-s):")
    for name, value in micros.items():
        print(f"  {name:24s} {value:8.1f}")
    print(f"  {'total':24s} {sum(micros.values()):8.1f}")


LADDER_STEPS = ("read+parse", "dedup", "hashes", "geo+jurisdiction", "routed records", "bundle ids",
                "routed files", "trends", "bundles+alerts")


def ladder_pipeline(path, out, steps):
    """CPU seconds of the tipline pipeline's first `steps` steps (LADDER_STEPS) over the file, its last
    output counted; built from the same stages with the same options as `build_pipeline` (takedown notices
    and the dead-letter files left out)."""
    from transforms.alerts import SpikeAlerts
    from transforms.bundles import BundleRepeats, StampBundleIds
    from transforms.dedup import DedupRedeliveries
    from transforms.geo import EnrichGeo
    from transforms.hashes import EnrichHashes
    from transforms.jurisdiction import AssignJurisdiction
    from transforms.parse import ParseReports
    from transforms.read import ReadReports
    from transforms.route import BuildRoutedRecords, RouteToSinks
    from transforms.trends import TrendCounts
    from pipelines.tipline_pipeline import ALERT_WINDOW_SECONDS, reference_sources

    shutil.rmtree(out, ignore_errors=True)
    argv = ["--source", "files", "--input", str(path), "--output", str(out), "--demo-data"]
    opts = PipelineOptions(argv).view_as(TiplineOptions)
    lateness, gap = int(opts.allowed_lateness_hours * 3600), opts.bundle_gap_hours * 3600
    rungs = [
        lambda p: (p | ReadReports("files", opts.input_pattern, max_message_bytes=opts.max_message_bytes)
                   | ParseReports(opts.max_message_bytes, max_files=opts.max_files_per_report,
                                  max_clock_skew_hours=opts.max_clock_skew_hours))[0],
        lambda reports: reports | DedupRedeliveries(opts.dedup_horizon_hours),
        lambda reports: (reports | EnrichHashes(opts.resolved_hash_banks(), opts.resolved_negative_hash_banks(),
                                                opts.bank_refresh_seconds))[0],
        lambda reports: (((reports | EnrichGeo(opts.resolved_city_db(), None, None, opts.bank_refresh_seconds))[0]
                          | AssignJurisdiction())[0]),
        lambda reports: (reports | BuildRoutedRecords(reference_sources(opts), opts.bank_refresh_seconds))[0],
        lambda records: records | StampBundleIds(gap, lateness, opts.output_dir),
        lambda records: records | RouteToSinks(opts.output_dir, opts.window_minutes * 60, lateness),
        lambda routed: (routed, routed | TrendCounts(opts.output_dir, lateness))[0],
        lambda routed: (routed, routed | BundleRepeats(opts.output_dir, gap, lateness),
                        routed | SpikeAlerts(opts.output_dir, ALERT_WINDOW_SECONDS, lateness))[0],
    ]

    def build_and_run():
        with beam.Pipeline(options=PipelineOptions([])) as pipeline:
            value = pipeline if steps else pipeline | beam.Create([b""])  # 0 steps: Beam's own fixed cost
            for rung in rungs[:steps]:
                value = rung(value)
            _ = value | beam.combiners.Count.Globally()
    return timed(build_and_run)[1]


def ladder_micros(path, out, count, passes):
    """CPU microseconds per report that each step of the pipeline adds to its prefix (least of `passes`
    runs of each prefix): {step: us}."""
    cpu = [min(ladder_pipeline(path, out, steps) for _ in range(passes)) for steps in range(len(LADDER_STEPS) + 1)]
    return {name: (cpu[index + 1] - cpu[index]) / count * 1e6 for index, name in enumerate(LADDER_STEPS)}, cpu


STAGE_OF_MODULE = {  # a module's stage is its own name (transforms/<stage>.py) unless named here
    "windowed_files": "file sinks", "event_windows": "windowed counts", "local_windows": "windowed counts",
    "notices": "takedown notices", "dead_letters": "dead letters",
}


def profile(path, out, top):
    """The whole pipeline under cProfile: inclusive time of each stage's DoFn methods, then top functions."""
    shutil.rmtree(out, ignore_errors=True)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(run, ["--source", "files", "--input", str(path), "--output", str(out), "--demo-data"])
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    print(f"\nprofile: whole pipeline {total:.1f} s under cProfile (inclusive time of tipline's DoFn methods):")
    for name, seconds in stage_times(stats):
        print(f"  {seconds:7.2f} s  {100 * seconds / total:5.1f}%  {name}")
    print(f"\ntop {top} functions by own time:")
    stats.sort_stats("tottime").print_stats(top)


def stage_times(stats):
    """Inclusive seconds of the process/finish_bundle/teardown methods defined in transforms/, by stage.

    Only outermost entries count (a method called from another counted method is skipped)."""
    ours = f"{REPO / 'transforms'}/"  # not Beam's apache_beam/transforms/

    counted = {}
    for (filename, _, function), (_, _, _, cumulative, callers) in stats.stats.items():
        module = pathlib.Path(filename).stem
        if not filename.startswith(ours) or function not in ("process", "finish_bundle", "teardown"):
            continue
        nested = any(caller[0].startswith(ours) and caller[2] in ("process", "finish_bundle") for caller in callers)
        if not nested:
            stage = STAGE_OF_MODULE.get(module, module)
            counted[stage] = counted.get(stage, 0) + cumulative
    return sorted(counted.items(), key=lambda item: -item[1])


def fused_stage_seconds(path, out):
    """The whole pipeline in one process, with the CPU seconds of each fused stage's bundles (the FnApiRunner
    runs a stage as a bundle over its input): (total CPU seconds, {stage: seconds}), a stage named by the
    composites (two levels) of its steps. What is not in a bundle is building, translating and the runner's
    grouping buffers. Measured by wrapping the SDK worker's `BundleProcessor.process_bundle` for this run."""
    from apache_beam.runners.worker import bundle_processor

    original, spent = bundle_processor.BundleProcessor.process_bundle, {}

    def timed_bundle(processor, *args, **kwargs):
        began = time.process_time()
        try:
            return original(processor, *args, **kwargs)
        finally:
            steps = {"/".join(transform.unique_name.split("/")[:2])
                     for transform in processor.process_bundle_descriptor.transforms.values()
                     if "/" in transform.unique_name}
            stage = ", ".join(sorted(steps))
            spent[stage] = spent.get(stage, 0.0) + time.process_time() - began

    bundle_processor.BundleProcessor.process_bundle = timed_bundle
    try:
        shutil.rmtree(out, ignore_errors=True)
        total = timed(run, ["--source", "files", "--input", str(path), "--output", str(out), "--demo-data"])[1]
    finally:
        bundle_processor.BundleProcessor.process_bundle = original
    return total, spent


def print_fused_stages(total, spent, count, top=12):
    in_bundles = sum(spent.values())
    print(f"\nfused stages, CPU us a report (one process, {count} reports, load average {os.getloadavg()[0]:.1f}): "
          f"whole run {total / count * 1e6:.0f}, in bundles {in_bundles / count * 1e6:.0f}, outside them (building, "
          f"translating, grouping buffers) {(total - in_bundles) / count * 1e6:.0f}")
    for stage, seconds in sorted(spent.items(), key=lambda item: -item[1])[:top]:
        print(f"  {seconds / count * 1e6:7.0f}  {stage[:150]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000, help="reports to replay")
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("/tmp/tipline-bench-batch"))
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="also run the whole pipeline in this many worker processes (1: skip)")
    parser.add_argument("--dask", type=int, default=0, metavar="WORKERS",
                        help="also run the whole pipeline on a Dask LocalCluster of this many worker processes")
    parser.add_argument("--profile", action="store_true", help="also profile the whole pipeline by stage")
    parser.add_argument("--top", type=int, default=25, help="functions listed by --profile")
    parser.add_argument("--chain-count", type=int, default=5000, help="reports in each pass of the chain's split")
    parser.add_argument("--passes", type=int, default=5, help="passes of the chain's split")
    parser.add_argument("--ladder", action="store_true",
                        help="only the step ladder: CPU us a report each step adds to the pipeline before it")
    parser.add_argument("--ladder-passes", type=int, default=2, help="runs of each prefix in the ladder (least kept)")
    parser.add_argument("--stages", action="store_true",
                        help="only the fused stages: CPU us a report of each stage's bundles in one whole run")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = input_file(args.workdir, args.count)
    out = args.workdir / "out"
    if args.ladder:
        print_ladder(*ladder_micros(path, out, args.count, args.ladder_passes), args.count)
        return
    if args.stages:
        print_fused_stages(*fused_stage_seconds(path, out), args.count)
        return
    chain = chain_step_micros(path, min(args.count, args.chain_count), args.passes)  # before any run: see there
    whole, whole_cpu, summary = whole_pipeline(path, out)
    parallel, parallel_cpu, parallel_summary = (whole_pipeline(path, out, args.workers) if args.workers > 1
                                                else (None, None, None))
    on_dask = whole_pipeline(path, out, dask_workers=args.dask) if args.dask else None
    trivial, trivial_cpu = trivial_pipeline(path)
    start_up, parallel_start_up = start_up_costs(path, args.workdir, args.workers)
    floor, floor_cpu = grouping_floor_pipeline(path, args.workers)
    loop = plain_python_loop(path)
    rate = lambda seconds: args.count / seconds
    per_million = lambda cpu: cpu / args.count * 1e6
    print(f"\n{args.count} reports, {path.stat().st_size / 1e6:.0f} MB, os.cpu_count() = {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)")
    print(f"whole pipeline          {whole:7.1f} s  {rate(whole):8.0f} reports/s  {per_million(whole_cpu):8.0f} CPU-s "
          f"per million reports  (813-856 reports/s when the goal was set)  routed {summary['routed']}, "
          f"reconciled {summary['reconciled']}")
    if parallel:
        print(f"  in {args.workers} processes     {parallel:7.1f} s  {rate(parallel):8.0f} reports/s  "
              f"{per_million(parallel_cpu):8.0f} CPU-s per million reports  (--direct_running_mode multi_processing; "
              f"target >= 5,000 reports/s on 2 cores; 1,092-1,403 when it was set)  routed {parallel_summary['routed']}, "
              f"reconciled {parallel_summary['reconciled']}")
        print(f"                          of which the runner process {per_million(parallel_cpu.own):8.0f}, "
              f"the worker processes {per_million(parallel_cpu.workers):8.0f} CPU-s per million reports")
    if on_dask:
        seconds, cpu, dask_summary = on_dask
        print(f"  on Dask, {args.dask} workers {seconds:7.1f} s  {rate(seconds):8.0f} reports/s  {per_million(cpu):8.0f} "
              f"CPU-s per million reports  (--runner dask, a LocalCluster)  routed {dask_summary['routed']}, "
              f"reconciled {dask_summary['reconciled']}")
    print(f"start-up, {START_UP_REPORTS} reports   {start_up[0]:7.1f} s wall {start_up[1]:5.1f} CPU-s in one process"
          + (f", {parallel_start_up[0]:.1f} s wall {parallel_start_up[1]:.1f} CPU-s in {args.workers}; the rate past "
             f"it, in {args.workers}: {(args.count - START_UP_REPORTS) / (parallel - parallel_start_up[0]):.0f} "
             "reports/s"
             if parallel else "")
          + "  (building and translating, worker processes, each stage's first bundle; this process imported once)")
    print(f"trivial Beam pipeline   {trivial:7.1f} s  {rate(trivial):8.0f} reports/s  {per_million(trivial_cpu):8.0f} "
          "CPU-s per million reports  (read -> parse -> count)")
    print(f"grouping floor          {floor:7.1f} s  {rate(floor):8.0f} reports/s  {per_million(floor_cpu):8.0f} "
          f"CPU-s per million reports  (read -> decode -> pack -> the 4 groupings of every report, no work between; "
          f"{args.workers} process(es))")
    own = own_work_micros(chain)
    bound, bound_cpu = floor_plus_own_work(floor, per_million(floor_cpu), own)
    print(f"floor + own work        {bound:7.1f} s  {rate(bound):8.0f} reports/s  {bound_cpu:8.0f} CPU-s per million "
          f"reports  (the floor plus the chain's {own:.0f} us a report past decoding, incl. its "
          "check and Avro encoding, at the floor's use of the cores: if nothing else cost anything)")
    print(f"plain-Python loop       {loop:7.1f} s  {rate(loop):8.0f} reports/s  (parse+hashes+geo+assign+record, wall)")
    best = min(whole, parallel or whole)
    best_cpu = parallel_cpu if parallel and parallel <= whole else whole_cpu
    print(f"whole / trivial Beam    {trivial / best:7.2f}  (target >= 0.2, 0.05 when it was set; the faster whole-pipeline run)")
    print(f"floor / trivial Beam    {trivial / floor:7.2f}  (the most the whole pipeline could reach on this runner)")
    print(f"floor + own / trivial   {trivial / bound:7.2f}  (the most this design could reach: the groupings and the "
          "chain alone)")
    print(f"whole / grouping floor  {floor / best:7.2f}")
    print(f"the rest                {per_million(best_cpu) - bound_cpu:7.0f} CPU-s per million reports  (the faster "
          "run's less the floor and own work: unpacking after the groupings, the sinks, trends, bundles, alerts, "
          "notices, Beam's steps between)")
    print(f"budget for the rest     {rest_budget(0.2, trivial, floor, per_million(floor_cpu), bound_cpu):7.0f} "
          "CPU-s per million reports  (what the rest could cost at 0.2 of trivial, the cores used as the floor "
          "used them; negative: 0.2 is out of this design's reach)")
    print(f"whole / plain Python    {loop / best:7.2f}")
    print()
    print_chain(chain, min(args.count, args.chain_count))
    if args.profile:
        profile(path, out, args.top)


if __name__ == "__main__":
    main()
