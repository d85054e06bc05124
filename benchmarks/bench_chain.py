"""The plain-Python chain of tipline's own work, CPU µs a report, step by step, with no Beam.

The steps are what the stages run, in their order and batching (EnrichHashes' batches of 64): decode the
message, validate it (ParseReports), hashes and bank matches (EnrichHashes), GeoIP (EnrichGeo),
jurisdiction (AssignJurisdiction), the routed record and its schema check (BuildRoutedRecords), and the routed
record's Avro encoding (the sink's compiled encoder, AvroSink). Readers, banks and caches are made once, as a
worker makes them, and one unmeasured pass warms them. The issue's goals: the chain (decode to
routed record) <= 50 µs a report on one core, Avro encoding <= 20 µs.

    .venv/bin/python benchmarks/bench_chain.py                    # 5,000 reports, 7 passes
    .venv/bin/python benchmarks/bench_chain.py --profile          # and the top functions of one pass
    .venv/bin/python benchmarks/bench_chain.py --gc-freeze        # and again with the set-up frozen

The reports are the batch benchmark's (SyntheticConfig.for_benchmark: 3 files per report with provided
hashes, all valid, no repeats), generated in memory first, not timed. CPU time (time.process_time) of this
process only; the least and the median of the passes are printed with the load average: figures on a
shared machine are noisy.
"""
import argparse
import cProfile
import gc
import os
import pathlib
import pstats
import statistics
import sys
import time

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
from transforms.plumbing.avro_files import compile_encoder  # noqa: E402
from transforms.reports.enrichment import with_hashes, with_location, with_routing  # noqa: E402
from transforms.reports.reference_versions import decided_with  # noqa: E402
from transforms.reports.routed_record import RoutedRecordCheck, now_micros, to_routed_record  # noqa: E402
from transforms.reports.validation import ReportValidator, decode_message  # noqa: E402

HASH_BATCH = 64  # EnrichHashes' batch size
CHAIN_STEPS = ("decode", "validate", "hashes", "geoip", "jurisdiction", "routed record", "routed check")
AVRO_STEP = "avro encoding"
MAX_MESSAGE_BYTES = 1 << 20


class Chain:
    """The chain's parts, made once as a worker makes them, and its steps as functions of a batch."""

    def __init__(self):
        opts = PipelineOptions([]).view_as(TiplineOptions)
        self.validator = ReportValidator()
        self.matcher = HashMatcher.from_banks(opts.resolved_hash_banks(), opts.resolved_negative_hash_banks())
        self.locator = GeoLocator(opts.resolved_city_db())
        self.rules = JurisdictionRules.load()
        self.decided = decided_with(reference_sources(opts))
        self.check_routed = RoutedRecordCheck()  # BuildRoutedRecords' check
        self.encode = compile_encoder(avro_schema("routed_report"), repeated=("decidedWith",))  # ROUTED_SINK's
        self.routed_at = now_micros()

    def steps(self):
        """(name, function of the previous step's batch) in the chain's order."""
        def validated(reports):
            for report in reports:
                self.validator.validate(report)
            return reports

        def checked(records):
            for record in records:
                self.check_routed(record)
            return records

        def encoded(records):
            block = bytearray()
            for record in records:
                self.encode(block, record)
            return records

        return (
            ("decode", lambda lines: [decode_message(line, MAX_MESSAGE_BYTES) for line in lines]),
            ("validate", validated),
            ("hashes", lambda reports: with_hashes(reports, self.matcher)),
            ("geoip", lambda reports: [with_location(report, self.locator) for report in reports]),
            ("jurisdiction", lambda reports: [with_routing(report, self.rules) for report in reports]),
            ("routed record", lambda reports: [to_routed_record(report, self.routed_at, self.decided)
                                               for report in reports]),
            ("routed check", checked),
            (AVRO_STEP, encoded))


def one_pass(steps, messages):
    """CPU seconds of each step over all `messages`, batch by batch."""
    spent = {name: 0.0 for name, _ in steps}
    for start in range(0, len(messages), HASH_BATCH):
        value = messages[start:start + HASH_BATCH]
        for name, step in steps:
            began = time.process_time()
            value = step(value)
            spent[name] += time.process_time() - began
    return spent


def micros_per_report(messages, passes, chain):
    """{step: [CPU µs a report of each pass]}, after one pass unmeasured (JIT-compiled index searches,
    lookup caches: a worker's steady state)."""
    steps = chain.steps()
    one_pass(steps, messages)
    micros = {name: [] for name, _ in steps}
    for _ in range(passes):
        for name, seconds in one_pass(steps, messages).items():
            micros[name].append(seconds / len(messages) * 1e6)
    return micros


def print_figures(micros, count):
    print(f"{count} reports, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (shared machine: other work slows every figure)")
    print("plain-Python chain, CPU µs a report (least / median of the passes):")
    for name in CHAIN_STEPS:
        print(f"  {name:15s} {min(micros[name]):7.1f} / {statistics.median(micros[name]):7.1f}")
    for label, names in (("chain", CHAIN_STEPS[:-1]), ("chain + check", CHAIN_STEPS)):
        totals = [sum(values) for values in zip(*(micros[name] for name in names))]
        print(f"  {label:15s} {min(totals):7.1f} / {statistics.median(totals):7.1f}"
              + ("  (target <= 50; 200-260 when it was set)" if label == "chain" else ""))
    print(f"  {AVRO_STEP:15s} {min(micros[AVRO_STEP]):7.1f} / {statistics.median(micros[AVRO_STEP]):7.1f}"
          "  (target <= 20, 80-115 when it was set; the sink's encoder, without deflate)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000, help="reports in each pass")
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="also print the top functions of one pass")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--gc-freeze", action="store_true",
                        help="also measure with gc.freeze() after set-up: the readers, banks and modules (~287,000 here) "
                             "then leave the collector's full passes, as a worker's first reference load does "
                             "(reference_files.out_of_the_collector)")
    args = parser.parse_args()
    messages = list(generate_messages(SyntheticConfig.for_benchmark(args.count)))
    chain = Chain()
    print_figures(micros_per_report(messages, args.passes, chain), len(messages))
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
        print(f"\nwith gc.freeze() after set-up ({gc.get_freeze_count()} objects frozen):")
        print_figures(micros_per_report(messages, args.passes, chain), len(messages))
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(one_pass, chain.steps(), messages)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
