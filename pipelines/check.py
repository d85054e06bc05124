"""`tipline check [run options]`: what a launch would use, looked at without running anything.

Builds the job graph for the given options and runner (translated, not run), then opens every reference
file through Beam's FileSystems exactly as a worker does (a remote file is staged to local disk, checked by
size and digest) and prints what it found: each GeoIP database with its type and build date, each hash
bank with its rows per signal, every file with its size and SHA-256. A file that cannot be used stops it
with one line naming its flag (exit 2), before any worker starts.
"""
import collections
import datetime
import os
import sys

import apache_beam as beam
import maxminddb
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from pipelines.options import DATABASE_FLAGS, TiplineOptions, naming_the_flag
from transforms.location.geoip import GeoIPDatabaseError, open_reader
from transforms.matching.banks import read_bank
from transforms.plumbing.reference_files import recorded_digest, sha256_of, stage


def graph_line(argv):
    """Builds the pipeline for these options without running it; one line saying what was built."""
    from pipelines.tipline_pipeline import build_pipeline

    options = PipelineOptions(argv)
    options.view_as(SetupOptions).save_main_session = False
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    pipeline = beam.Pipeline(runner="DirectRunner", options=options)
    build_pipeline(pipeline, options.view_as(TiplineOptions))
    transforms = pipeline.to_runner_api().components.transforms
    return f"graph: {len(transforms)} transforms built for {runner} (not run)"


def digest_of(path):
    """The SHA-256 of a staged file (recorded when it was copied), else of the local file itself."""
    return recorded_digest(path) or sha256_of(path)


def database_line(kind, path):
    try:
        reader = open_reader(path, kind)
    except GeoIPDatabaseError as error:
        raise naming_the_flag(error) from None
    try:
        metadata = reader.metadata()
        built = datetime.datetime.fromtimestamp(metadata.build_epoch, datetime.timezone.utc).date()
        local = stage(path)
        return (f"{DATABASE_FLAGS[kind]} {path}: {metadata.database_type}, built {built.isoformat()}, "
                f"{os.path.getsize(local):,} bytes, sha256 {digest_of(local)}")
    finally:
        reader.close()


def bank_line(flag, path):
    try:
        entries = read_bank(path)
        local = stage(path)
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None
    by_signal = collections.Counter(entry.signal.name for entry in entries)
    signals = ", ".join(f"{name} {count:,}" for name, count in sorted(by_signal.items())) or "no rows"
    return (f"{flag} {path}: {len(entries):,} rows ({signals}), {os.path.getsize(local):,} bytes, "
            f"sha256 {digest_of(local)}")


def reference_lines(opts):
    """One line per reference file, in flag order; raises ValueError naming the flag of a bad one."""
    databases = (("city", opts.resolved_city_db()), ("asn", opts.geoip_asn_db), ("anonymous", opts.geoip_anonymous_db))
    lines = [database_line(kind, path) for kind, path in databases if path]
    lines += [bank_line("--hash-bank", path) for path in opts.resolved_hash_banks()]
    lines += [bank_line("--negative-hash-bank", path) for path in opts.resolved_negative_hash_banks()]
    return lines


def check(argv):
    """Prints the graph line and every reference file's line; exit code 0, or 2 naming what is wrong."""
    opts = PipelineOptions(argv).view_as(TiplineOptions)
    try:
        for line in reference_lines(opts):
            print(line)
        print(graph_line(argv))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as error:
        print(f"tipline check: {error}", file=sys.stderr)
        return 2
    return 0


def register(subparsers):
    """Lists `tipline check` in `tipline --help`; `pipelines.cli` hands it the arguments unparsed, as for run."""
    subparsers.add_parser("check", add_help=False,
                          help="build the job graph and open every reference file, without running "
                               "(takes tipline run's options)")
