"""Routed records to Avro: µs per record for the way main 1231fd7 encoded them and for the new path, in one run.

    .venv/bin/python benchmarks/bench_routed_avro.py                 # 20,000 records, 5 rounds
    .venv/bin/python benchmarks/bench_routed_avro.py --profile       # and the top functions of the new path

The records are real routed records: the batch benchmark's synthetic reports (SyntheticConfig.for_benchmark:
3 files with provided hashes each) through the project's enrichment chain (hashes, GeoIP, jurisdiction) and
`to_routed_record`, with the demo run's `decidedWith`: what the file sink encodes (each record alone, when it
keys it to its file). Not timed: building them.

- baseline: main's path, reproduced here: the nested-closure validator's check (RouteToSinks; main's
  `compile_validator`, kept as `compile_nested_validator`) then fastavro's `Writer.write` per record into a
  deflate container (AvroSink);
- new: the straight-line check (`compile_validator`, made once; BuildRoutedRecords' `RoutedRecordCheck` also skips a
  `decidedWith` value it has checked before, as these records share theirs), then the sink's
  compiled encoder and container writer (transforms/plumbing/avro_files.py);
- the sink's encoding alone, each way, and the ratio (wall time); then the new path's CPU time, the issue's
  "Avro encoding <= 20 µs on one core" figure (on a loaded machine wall time also counts waiting for a core).

Both files are decoded with fastavro and must give the same records (asserted), and the same ones again
when written twice (the new path's bytes are deterministic). Prints the load average: the figures of a
shared machine are noisy; min and median over the rounds are printed.
"""
import argparse
import cProfile
import io
import os
import pathlib
import pstats
import statistics
import sys
import time

import fastavro

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipelines.options import TiplineOptions  # noqa: E402
from pipelines.tipline_pipeline import reference_sources  # noqa: E402
from schemas import avro_schema  # noqa: E402
from transforms.demo.synthetic import SyntheticConfig, generate_messages  # noqa: E402
from transforms.location.geoip import GeoLocator  # noqa: E402
from transforms.location.jurisdiction_rules import JurisdictionRules  # noqa: E402
from transforms.matching.matcher import HashMatcher  # noqa: E402
from transforms.reports.avro_validation import compile_nested_validator, compile_validator  # noqa: E402
from transforms.reports.enrichment import with_hashes, with_location, with_routing  # noqa: E402
from transforms.reports.reference_versions import decided_with  # noqa: E402
from transforms.reports.routed_record import now_micros, to_routed_record  # noqa: E402
from transforms.reports.validation import ReportValidator, decode_message  # noqa: E402
from transforms.route import ROUTED_SINK  # noqa: E402

HASH_BATCH = 64  # EnrichHashes' batch size


def routed_records(count):
    """`count` routed records as the Avro sink receives them."""
    opts = PipelineOptions([]).view_as(TiplineOptions)
    validator = ReportValidator()
    matcher = HashMatcher.from_banks(opts.resolved_hash_banks(), opts.resolved_negative_hash_banks())
    locator = GeoLocator(opts.resolved_city_db())
    rules = JurisdictionRules.load()
    decided = decided_with(reference_sources(opts))
    reports = [decode_message(message, 1 << 20) for message in generate_messages(SyntheticConfig.for_benchmark(count))]
    for report in reports:
        validator.validate(report)
    records = []
    for start in range(0, len(reports), HASH_BATCH):
        for report in with_hashes(reports[start:start + HASH_BATCH], matcher):
            records.append(to_routed_record(with_routing(with_location(report, locator), rules), now_micros(), decided))
    return records


def baseline_encoding(records, schema):
    """main's AvroSink: fastavro's Writer, one `write` per record, deflate."""
    handle = io.BytesIO()
    writer = fastavro.write.Writer(handle, schema, codec="deflate")
    for record in records:
        writer.write(record)
    writer.flush()
    return handle.getvalue()


def new_encoding(records):
    """The AvroSink of this branch, as the file sink drives it."""
    handle = io.BytesIO()
    sink = ROUTED_SINK()
    sink.open(handle)
    for record in records:
        sink.write(record)
    sink.flush()
    return handle.getvalue()


def checked(records, check):
    for record in records:
        check(record)


def timed(function, rounds, count, clock=time.perf_counter):
    """µs per record of each round, by `clock` (wall time by default; `time.process_time` for CPU time)."""
    figures = []
    for _ in range(rounds):
        started = clock()
        function()
        figures.append((clock() - started) / count * 1e6)
    return figures


def line(name, figures):
    return f"{name:<44} min {min(figures):7.1f}  median {statistics.median(figures):7.1f} µs/record"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print the top functions of the new path")
    args = parser.parse_args()

    print(f"building {args.count} routed records (not timed) ...", flush=True)
    records = routed_records(args.count)
    schema = avro_schema("routed_report")
    old_check, new_check = compile_nested_validator(schema), compile_validator(schema)
    count = len(records)

    old_file, new_file = baseline_encoding(records, schema), new_encoding(records)
    old_records = list(fastavro.reader(io.BytesIO(old_file)))
    assert old_records == list(fastavro.reader(io.BytesIO(new_file))), "the two paths decode differently"
    assert new_encoding(records) == new_file, "the new path's bytes are not deterministic"

    old_check_figures = timed(lambda: checked(records, old_check), args.rounds, count)
    new_check_figures = timed(lambda: checked(records, new_check), args.rounds, count)
    old_figures = timed(lambda: baseline_encoding(records, schema), args.rounds, count)
    new_figures = timed(lambda: new_encoding(records), args.rounds, count)
    print(f"{count} records, {os.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"file size: baseline {len(old_file) / count:.0f} bytes/record, new {len(new_file) / count:.0f}")
    print(line("baseline schema check (nested closures)", old_check_figures))
    print(line("new schema check (straight-line)", new_check_figures))
    print(line("baseline Avro encoding (fastavro Writer)", old_figures))
    print(line("new Avro encoding (compiled encoder)", new_figures))
    old_total = [c + o for c, o in zip(old_check_figures, old_figures)]
    new_total = [c + n for c, n in zip(new_check_figures, new_figures)]
    print(line("baseline check + encoding", old_total))
    print(line("new check + encoding", new_total))
    print(f"ratio baseline/new, encoding: {statistics.median(old_figures) / statistics.median(new_figures):.1f}x "
          f"(medians); check + encoding: {statistics.median(old_total) / statistics.median(new_total):.1f}x")
    new_cpu = timed(lambda: new_encoding(records), args.rounds, count, time.process_time)
    print(line("new Avro encoding, CPU time (the 20 µs goal)", new_cpu)
          + "  (wall time above includes waiting for a core on a shared machine)")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(new_encoding, records)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
