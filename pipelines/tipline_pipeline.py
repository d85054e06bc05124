"""The tipline pipeline: read, parse, dedup, enrich, assign, route, count, dead-letter.

    tipline run                                   # embedded demo: synthetic stream, demo bank and GeoIP db
    tipline run --source files --input 'reports/*.jsonl' --geoip-city-db GeoIP2-City.mmdb --hash-bank bank.parquet
    tipline run --check ...                       # preflight only: what the run would read and write
    python -m pipelines.tipline_pipeline --help   # the same entry point

Flags are strict: one neither tipline nor Beam knows is an error; tipline's `--a-b` flags also take Beam's
spelling `--a_b`. `--source files` and `pubsub` need `--geoip-city-db` and `--hash-bank` (or
`--no-hash-banks`), or `--demo-data`. `--debug` shows the traceback of a failure.
"""
import argparse
import functools
import logging
import os
import sys
import uuid
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.options.pipeline_options import (DirectOptions, FlinkRunnerOptions, GoogleCloudOptions,
                                                  PipelineOptions, PortableOptions, SetupOptions,
                                                  SparkRunnerOptions, StandardOptions, WorkerOptions)

from pipelines.batch_progress import add_taps, run_with_progress
from pipelines.errors import UsageError, first_line, run_command
from pipelines.options import DASK_RUNNER_NAMES, DaskEngineOptions, TiplineOptions, check_arguments
from pipelines.preflight import format_reference, preflight
from pipelines.streaming import local_streaming_options, run_for
from pipelines.submission import submission_lines
from pipelines.summary import format_summary, summarize, write_summary
from transforms.alerts import SpikeAlerts
from transforms.bundles import BundleRepeats, StampBundleIds
from transforms.dead_letters import (WriteDeadLetters, gather_side_stage_failures,
                                     take_gathered_side_stage_failures)
from transforms.dedup import DedupRedeliveries
from transforms.geo import EnrichGeo
from pipelines.bank_tools import video_matching
from transforms.hashes import EnrichHashes
from transforms.jurisdiction import AssignJurisdiction
from transforms.notices import WriteTakedownNotices
from transforms.parse import ParseReports
from transforms.plumbing.direct_runner import collect_the_old_generation_rarely
from transforms.plumbing.construction import memoize_construction_lookups
from transforms.plumbing.logs import keep_elements_out_of_logs
from transforms.plumbing.metrics import read_counters
from transforms.plumbing.route_topics import PublishRoutedToTopics
from transforms.plumbing.windowed_files import OWNER_ONLY, remove_stale_temporaries
from transforms.read import ReadReports
from transforms.reports.reference_versions import ReferenceSources
from transforms.reports.routed_record import json_ready
from transforms.route import BuildRoutedRecords, RouteToSinks, routed_report_ids
from transforms.trends import TrendCounts


LOCAL_RUNNERS = (None, "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner")
ALERT_WINDOW_SECONDS = 3600  # spike alerts share the hourly grid of the trend tables


def synthetic_config(opts):
    from transforms.demo.synthetic import SyntheticConfig

    return SyntheticConfig(count=opts.synthetic_count, seed=opts.synthetic_seed, hours=opts.synthetic_hours)


def reference_sources(opts):
    """The reference files the enrichment stages read, which each routed record names (`decidedWith`)."""
    return ReferenceSources(opts.resolved_city_db(), opts.geoip_asn_db, opts.geoip_anonymous_db,
                            tuple(opts.resolved_hash_banks()), tuple(opts.resolved_negative_hash_banks()))


def build_pipeline(p, opts, messages=None):
    """Adds every stage to `p`; returns the named outputs (for tests and callers that add more).

    `messages` replaces the source (tests feed a TestStream); they are then stamped with their event time
    as `opts.source` would stamp them."""
    lateness = int(opts.allowed_lateness_hours * 3600)
    gather_side_stage_failures(p)  # every stage's dead letters through one sink, written last
    if messages is None:
        messages = p | "ReadReports" >> ReadReports(
            opts.source, opts.input_pattern, opts.subscription,
            synthetic_config(opts) if opts.source == "synthetic" else None, opts.max_message_bytes)
    reports, parse_failures = messages | "ParseReports" >> ParseReports(
        opts.max_message_bytes, stamp_event_time=opts.source != "pubsub", max_files=opts.max_files_per_report,
        max_clock_skew_hours=opts.max_clock_skew_hours)
    unique = reports | "DedupRedeliveries" >> DedupRedeliveries(
        opts.dedup_horizon_hours, already_routed=functools.partial(routed_report_ids, opts.output_dir),
        state=opts.dedup_state)
    hashed, hash_failures = unique | "EnrichHashes" >> EnrichHashes(
        opts.resolved_hash_banks(), opts.resolved_negative_hash_banks(), opts.bank_refresh_seconds,
        media_roots=opts.media_roots, video=video_matching(opts))
    located, geo_failures = hashed | "EnrichGeo" >> EnrichGeo(
        opts.resolved_city_db(), opts.geoip_asn_db, opts.geoip_anonymous_db, opts.bank_refresh_seconds)
    assigned, assign_failures = located | "AssignJurisdiction" >> AssignJurisdiction()
    records, route_failures = assigned | "BuildRoutedRecords" >> BuildRoutedRecords(
        reference_sources(opts), opts.bank_refresh_seconds)
    bundle_gap = opts.bundle_gap_hours * 3600
    stamped = records | "StampBundleIds" >> StampBundleIds(bundle_gap, lateness, opts.output_dir)
    routed = stamped | "RouteToSinks" >> RouteToSinks(opts.output_dir, opts.window_minutes * 60, lateness)
    if opts.route_topic_template:
        _ = (routed
             | "InstantsAsText" >> beam.Map(json_ready)
             | "PublishRoutedToTopics" >> PublishRoutedToTopics(opts.route_topic_template, opts.create_route_topics))
    trends = routed | "TrendCounts" >> TrendCounts(opts.output_dir, lateness)
    bundles = routed | "BundleRepeats" >> BundleRepeats(opts.output_dir, bundle_gap, lateness)
    alerts = routed | "SpikeAlerts" >> SpikeAlerts(opts.output_dir, ALERT_WINDOW_SECONDS, lateness)
    notices = assigned | "TakedownNotices" >> WriteTakedownNotices(
        opts.output_dir, opts.geoip_asn_db, opts.resolved_city_db())
    dead_letters = (
        (parse_failures, hash_failures, geo_failures, assign_failures, route_failures)
        | "CollectDeadLetters" >> beam.Flatten())
    _ = dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
        opts.output_dir, side_stage_letters=take_gathered_side_stage_failures(p))
    return {"messages": messages, "parsed": reports, "reports": unique, "routed": routed, "trends": trends,
            "bundles": bundles, "alerts": alerts, "notices": notices, "dead_letters": dead_letters}


def print_help():
    """`tipline run --help`: tipline's own options, then the Beam options most runs need."""
    parser = argparse.ArgumentParser(prog="tipline run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for options_class in (TiplineOptions, StandardOptions, DirectOptions, DaskEngineOptions, GoogleCloudOptions,
                          WorkerOptions, SetupOptions, PortableOptions, FlinkRunnerOptions, SparkRunnerOptions):
        group = parser.add_argument_group(options_class.__name__)
        options_class._add_argparse_args(group)
    parser.print_help()


def new_run_id():
    """Sortable and unique: the UTC start time and a random suffix."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def run(argv=None):
    """Runs the pipeline to the end on a local runner and returns the summary (also written to
    <output>/summaries/<run id>.json and <output>/summary.json); on a remote runner, submits the job and
    returns None; with --check, only checks and returns the reference data. Misconfiguration raises
    UsageError before anything runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print_help()
        return None
    check_arguments(argv)
    memoize_construction_lookups()  # before the first view of the options: every runner's pipeline is built here
    os.umask(OWNER_ONLY)
    keep_elements_out_of_logs()
    opts = PipelineOptions(argv).view_as(TiplineOptions)
    reference = preflight(opts)
    if opts.check_only:
        print(format_reference(reference))
        print("preflight passed: every database, bank and the output folder checked; nothing was run")
        return reference
    if reference["demo_data"]:
        print(f"tipline run: using the embedded synthetic demo data for {', '.join(reference['demo_data'])} "
              "(not for real reports)", file=sys.stderr, flush=True)
    run_id = new_run_id()
    bounded_local_stream = opts.source == "pubsub" and opts.duration
    options = local_streaming_options(argv) if bounded_local_stream else PipelineOptions(argv)
    options.view_as(SetupOptions).save_main_session = False
    if opts.source == "pubsub":
        options.view_as(StandardOptions).streaming = True
    runner = options.view_as(StandardOptions).runner
    if runner in LOCAL_RUNNERS + DASK_RUNNER_NAMES:  # what a killed local run left is cleared first
        removed = remove_stale_temporaries(opts.output_dir)
        if removed:
            logging.warning("removed %d temporary files a killed run left under %s", removed, opts.output_dir)
    if runner in DASK_RUNNER_NAMES:  # batch on Dask distributed: counted from the outputs (no metrics there)
        from pipelines.dask_engine import run_on_dask  # Dask and distributed: imported by a Dask run only
        return report_summary(run_on_dask(options, opts), opts.output_dir, run_id, reference)
    pipeline = beam.Pipeline(options=options)
    try:
        outputs = build_pipeline(pipeline, opts)
    except ValueError as error:  # Beam validates names and patterns as the graph is built
        raise UsageError(first_line(error)) from error
    if runner not in LOCAL_RUNNERS:  # Dataflow, Flink, Spark: submitted; the counts live in the runner's metrics
        print("\n".join(submission_lines(runner, pipeline.run(), options)))
        return None
    if bounded_local_stream:
        result = run_for(pipeline, opts.subscription, opts.duration, run_id)
    elif options.view_as(StandardOptions).streaming:
        result = pipeline.run()
        result.wait_until_finish()
    else:
        in_process = options.view_as(DirectOptions).direct_running_mode != "multi_processing"
        if in_process:
            add_taps(outputs, run_id)
        collect_the_old_generation_rarely()  # this process holds every grouping's buffers as Python objects
        result = run_with_progress(pipeline, run_id, in_process)
    return report_summary(summarize(read_counters(result)), opts.output_dir, run_id, reference)


def report_summary(summary, output_dir, run_id, reference):
    """Writes <output>/summaries/<run id>.json and <output>/summary.json with the run's reference data,
    prints the summary; returns it."""
    summary = {**summary, "run_id": run_id, "reference_data": reference}
    path = write_summary(summary, output_dir)
    print(format_summary(summary))
    print(format_reference(reference))
    print(f"summary: {path}")
    return summary


def run_and_report(argv):
    """`tipline run`: the run, with its exit code (errors are reported by `run_command`)."""
    run(argv)
    return 0


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(run_command("tipline run", run_and_report, sys.argv[1:]))
