"""Batch replay: contract reports from JSON Lines through the whole pipeline (`tipline run --source files`).

Prints reports/s for the whole pipeline (in one process, then in `--workers` processes), for a trivial
Beam pipeline over the same file (read -> parse -> count: the floor Beam itself sets) and for the plain-Python enrichment loop over the same reports (the
work with no Beam at all), their ratios, and os.cpu_count(). `--profile` re-runs the whole pipeline
under cProfile and prints the time of each stage and the top functions.

    .venv/bin/python benchmarks/bench_batch_replay.py                 # 200,000 reports (~2 KB each)
    .venv/bin/python benchmarks/bench_batch_replay.py --count 20000 --profile

The input is generated first (SyntheticConfig.for_benchmark: 3 files per report with provided hashes,
all valid, no repeats), not timed, and kept in --workdir for the next run.
"""
import argparse
import cProfile
import json
import os
import pathlib
import pstats
import shutil
import sys
import time

import apache_beam as beam
from apache_beam import coders
from apache_beam.options.pipeline_options import PipelineOptions

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.options import TiplineOptions  # noqa: E402
from pipelines.tipline_pipeline import run  # noqa: E402
from transforms.location.geoip import GeoLocator  # noqa: E402
from transforms.matching.matcher import HashMatcher  # noqa: E402
from transforms.location.jurisdiction_rules import JurisdictionRules  # noqa: E402
from transforms.reports.validation import ReportValidator, decode_message  # noqa: E402
from transforms.reports.enrichment import enrich_and_route  # noqa: E402
from transforms.demo.synthetic import SyntheticConfig, generate_messages  # noqa: E402

HASH_BATCH = 64  # EnrichHashes' batch size


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


def whole_pipeline(path, out, workers=1):
    """Seconds for `run()` (the `tipline run` entry point) over the file, in one process or in `workers`
    worker processes (`--direct_running_mode multi_processing`); returns (seconds, summary)."""
    shutil.rmtree(out, ignore_errors=True)
    parallel = ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)] if workers > 1 else []
    started = time.perf_counter()
    summary = run(["--source", "files", "--input", str(path), "--output", str(out), "--demo-data"] + parallel)
    return time.perf_counter() - started, summary


def trivial_pipeline(path):
    """Seconds for read -> json.loads -> count on the same runner."""
    started = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions([])) as pipeline:
        _ = (pipeline
             | beam.io.ReadFromText(str(path), coder=coders.BytesCoder())
             | beam.Map(json.loads)
             | beam.combiners.Count.Globally())
    return time.perf_counter() - started


def plain_python_loop(path):
    """Seconds for parse + hashes + geo + jurisdiction + routed record, report by report, with no Beam."""
    opts = PipelineOptions([]).view_as(TiplineOptions)
    validator = ReportValidator()
    matcher = HashMatcher.from_banks(opts.resolved_hash_banks(), opts.resolved_negative_hash_banks())
    locator = GeoLocator(opts.resolved_city_db())
    rules = JurisdictionRules.load()
    started = time.perf_counter()
    with path.open("rb") as handle:
        batch = []
        for line in handle:
            report = decode_message(line.rstrip(b"\n"), 1 << 20)
            validator.validate(report)
            batch.append(report)
            if len(batch) == HASH_BATCH:
                enrich_and_route(batch, matcher, locator, rules)
                batch = []
        enrich_and_route(batch, matcher, locator, rules)
    return time.perf_counter() - started




STAGE_OF_MODULE = {
    "parse_reports": "parse", "avro_validation": "parse/route: schema checks", "dedup": "dedup",
    "enrich_hashes": "hashes", "hash_matching": "hashes", "hash_banks": "hashes", "hamming_index": "hashes",
    "signals": "hashes", "media_hashing": "hashes", "enrich_geo": "geo", "geo": "geo",
    "assign_jurisdiction": "jurisdiction", "jurisdiction": "jurisdiction", "route": "route",
    "windowed_files": "file sinks", "trends": "trends", "takedown_notices": "takedown notices",
    "dead_letters": "dead letters", "bundle_repeats": "bundles",
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
    counted = {}
    for (filename, _, function), (_, _, _, cumulative, callers) in stats.stats.items():
        module = pathlib.Path(filename).stem
        if "/transforms/" not in filename or function not in ("process", "finish_bundle", "teardown"):
            continue
        nested = any("/transforms/" in caller[0] and caller[2] in ("process", "finish_bundle") for caller in callers)
        if not nested:
            stage = STAGE_OF_MODULE.get(module, module)
            counted[stage] = counted.get(stage, 0) + cumulative
    return sorted(counted.items(), key=lambda item: -item[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000, help="reports to replay")
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("/tmp/tipline-bench-batch"))
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="also run the whole pipeline in this many worker processes (1: skip)")
    parser.add_argument("--profile", action="store_true", help="also profile the whole pipeline by stage")
    parser.add_argument("--top", type=int, default=25, help="functions listed by --profile")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = input_file(args.workdir, args.count)
    out = args.workdir / "out"
    whole, summary = whole_pipeline(path, out)
    parallel, parallel_summary = whole_pipeline(path, out, args.workers) if args.workers > 1 else (None, None)
    trivial = trivial_pipeline(path)
    loop = plain_python_loop(path)
    rate = lambda seconds: args.count / seconds
    print(f"\n{args.count} reports, {path.stat().st_size / 1e6:.0f} MB, os.cpu_count() = {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)")
    print(f"whole pipeline          {whole:7.1f} s  {rate(whole):8.0f} reports/s  (target >= 10,000)  "
          f"routed {summary['routed']}, reconciled {summary['reconciled']}")
    if parallel:
        print(f"  in {args.workers} processes     {parallel:7.1f} s  {rate(parallel):8.0f} reports/s  "
              f"(--direct_running_mode multi_processing)  routed {parallel_summary['routed']}, "
              f"reconciled {parallel_summary['reconciled']}")
    print(f"trivial Beam pipeline   {trivial:7.1f} s  {rate(trivial):8.0f} reports/s  (read -> parse -> count)")
    print(f"plain-Python loop       {loop:7.1f} s  {rate(loop):8.0f} reports/s  (parse+hashes+geo+assign+record)")
    best = min(whole, parallel or whole)
    print(f"whole / trivial Beam    {trivial / best:7.2f}  (target >= 0.3; the faster whole-pipeline run)")
    print(f"whole / plain Python    {loop / best:7.2f}")
    if args.profile:
        profile(path, out, args.top)


if __name__ == "__main__":
    main()
