"""The tipline pipeline: read, parse, dedup, enrich, assign, route, count, dead-letter.

    tipline run                                   # embedded demo: synthetic stream, demo bank and GeoIP db
    tipline run --source files --input 'reports/*.jsonl' --geoip-city-db GeoIP2-City.mmdb --hash-bank bank.parquet
    python -m pipelines.tipline_pipeline --help   # the same entry point
"""
import argparse
import functools
import logging
import os
import sys
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, SetupOptions,
                                                  StandardOptions)

from pipelines.options import TiplineOptions
from pipelines.streaming import local_streaming_options, run_for
from pipelines.summary import format_summary, summarize, write_summary
from transforms.alerts import SpikeAlerts
from transforms.bundles import BundleRepeats, StampBundleIds
from transforms.dead_letters import WriteDeadLetters
from transforms.dedup import DedupRedeliveries
from transforms.geo import EnrichGeo
from transforms.hashes import EnrichHashes
from transforms.jurisdiction import AssignJurisdiction
from transforms.location.geoip import check_databases
from transforms.matching.media import check_media_roots
from transforms.notices import WriteTakedownNotices
from transforms.parse import ParseReports
from transforms.plumbing.logs import keep_elements_out_of_logs
from transforms.plumbing.metrics import NAMESPACE, read_counters
from transforms.plumbing.route_topics import PublishRoutedToTopics
from transforms.plumbing.windowed_files import OWNER_ONLY, remove_stale_temporaries
from transforms.read import ReadReports
from transforms.route import RouteToSinks, routed_report_ids
from transforms.trends import TrendCounts


LOCAL_RUNNERS = (None, "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner")
BUNDLE_WINDOW_SECONDS = 3600  # bundles and spike alerts share the hourly grid of the trend tables


def synthetic_config(opts):
    from transforms.demo.synthetic import SyntheticConfig

    return SyntheticConfig(count=opts.synthetic_count, seed=opts.synthetic_seed, hours=opts.synthetic_hours)


def build_pipeline(p, opts, messages=None):
    """Adds every stage to `p`; returns the named outputs (for tests and callers that add more).

    `messages` replaces the source (tests feed a TestStream); they are then stamped with their event time
    as `opts.source` would stamp them."""
    lateness = int(opts.allowed_lateness_hours * 3600)
    if messages is None:
        messages = p | "ReadReports" >> ReadReports(
            opts.source, opts.input_pattern, opts.subscription,
            synthetic_config(opts) if opts.source == "synthetic" else None, opts.max_message_bytes)
    reports, parse_failures = messages | "ParseReports" >> ParseReports(
        opts.max_message_bytes, stamp_event_time=opts.source != "pubsub", max_files=opts.max_files_per_report,
        max_clock_skew_hours=opts.max_clock_skew_hours)
    unique = reports | "DedupRedeliveries" >> DedupRedeliveries(
        opts.dedup_horizon_hours, already_routed=functools.partial(routed_report_ids, opts.output_dir))
    hashed, hash_failures = unique | "EnrichHashes" >> EnrichHashes(
        opts.resolved_hash_banks(), opts.resolved_negative_hash_banks(), opts.bank_refresh_seconds,
        media_roots=opts.media_roots)
    located, geo_failures = hashed | "EnrichGeo" >> EnrichGeo(
        opts.resolved_city_db(), opts.geoip_asn_db, opts.geoip_anonymous_db)
    assigned, assign_failures = located | "AssignJurisdiction" >> AssignJurisdiction()
    stamped = assigned | "StampBundleIds" >> StampBundleIds(BUNDLE_WINDOW_SECONDS)
    routed, route_failures = stamped | "RouteToSinks" >> RouteToSinks(
        opts.output_dir, opts.window_minutes * 60, lateness)
    if opts.route_topic_template:
        _ = routed | "PublishRoutedToTopics" >> PublishRoutedToTopics(
            opts.route_topic_template, opts.create_route_topics)
    trends = routed | "TrendCounts" >> TrendCounts(opts.output_dir, lateness)
    bundles = routed | "BundleRepeats" >> BundleRepeats(opts.output_dir, BUNDLE_WINDOW_SECONDS, lateness)
    alerts = routed | "SpikeAlerts" >> SpikeAlerts(opts.output_dir, BUNDLE_WINDOW_SECONDS, lateness)
    notices = assigned | "TakedownNotices" >> WriteTakedownNotices(
        opts.output_dir, opts.geoip_asn_db, opts.resolved_city_db())
    dead_letters = (
        (parse_failures, hash_failures, geo_failures, assign_failures, route_failures)
        | "CollectDeadLetters" >> beam.Flatten())
    _ = dead_letters | "WriteDeadLetters" >> WriteDeadLetters(opts.output_dir)
    return {"reports": unique, "routed": routed, "trends": trends, "bundles": bundles, "alerts": alerts,
            "notices": notices, "dead_letters": dead_letters}


def print_help():
    """`tipline run --help`: tipline's own options, then the Beam options most runs need."""
    parser = argparse.ArgumentParser(prog="tipline run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for options_class in (TiplineOptions, StandardOptions, DirectOptions):
        group = parser.add_argument_group(options_class.__name__)
        options_class._add_argparse_args(group)
    parser.print_help()


def run(argv=None):
    """Runs the pipeline to the end on a local runner and returns the summary (also written to
    <output>/summary.json); on a remote runner, submits the job and returns None."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print_help()
        return None
    os.umask(OWNER_ONLY)
    keep_elements_out_of_logs()
    opts = PipelineOptions(argv).view_as(TiplineOptions)
    bounded_local_stream = opts.source == "pubsub" and opts.duration
    options = local_streaming_options(argv) if bounded_local_stream else PipelineOptions(argv)
    options.view_as(SetupOptions).save_main_session = False
    if opts.source == "pubsub":
        options.view_as(StandardOptions).streaming = True
    runner = options.view_as(StandardOptions).runner
    if runner in LOCAL_RUNNERS:  # elsewhere the databases are read on the workers, maybe from gs://
        check_databases(opts.resolved_city_db(), opts.geoip_asn_db, opts.geoip_anonymous_db)
        try:
            check_media_roots(opts.media_roots)
        except ValueError as error:
            print(f"tipline run: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        removed = remove_stale_temporaries(opts.output_dir)
        if removed:
            logging.warning("removed %d temporary files a killed run left under %s", removed, opts.output_dir)
    if opts.uses_demo_data():
        logging.info("using the embedded demo data (synthetic GeoIP database and hash bank)")
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, opts)
    if runner not in LOCAL_RUNNERS:  # Dataflow, Flink, Spark: submitted; the counts live in the runner's metrics
        result = pipeline.run()
        print(f"submitted to {runner}; counts are in the runner's metrics under the '{NAMESPACE}' namespace")
        return None
    if bounded_local_stream:
        result = run_for(pipeline, opts.subscription, opts.duration, uuid.uuid4().hex)
    else:
        result = pipeline.run()
        result.wait_until_finish()
    summary = summarize(read_counters(result))
    path = write_summary(summary, opts.output_dir)
    print(format_summary(summary))
    print(f"summary: {path}")
    return summary


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    run()
