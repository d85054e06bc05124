"""What a fired hour of trend partials costs a streaming job while its windows wait out their lateness.

    .venv/bin/python benchmarks/bench_trend_state.py                 # 50,000 records, 3 late bundles
    .venv/bin/python benchmarks/bench_trend_state.py --records 200000 --late-bundles 20

Streaming, the hourly windows hold each hour's partials for a day past the hour, and the sliding windows'
periods (transforms/plumbing/local_windows.py) for two days. This builds one hour's records (dimension keys
like the routed records', users and bundles mostly distinct), fires them as the hourly partials do (an
on-time table, then `--late-bundles` small late ones), adds every key's partials to an hourly window's and
a period's accumulator, and prints the traced bytes a record those accumulators hold (with what they keep
alive), the peak above that while every key's pane of both fires (held at once, as a timer's output
bundle holds them), and the CPU of making the partials, adding them and making each pane's counts.
Baseline, in the same run: the partials as one Tally per key, merged into Tally accumulators (the form
before KeyRows). Prints figures, never asserts.
"""
import argparse
import gc
import os
import random
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transforms.trends import ReportTable, TalliesCombineFn, Tally, merged_tally  # noqa: E402

JURISDICTIONS = [f"US-{n}" for n in range(61)] + [f"C{n}" for n in range(120)]
COUNTRIES = [f"C{n}" for n in range(120)] + [None]
INCIDENTS = [f"incident-{n}" for n in range(8)]
ESPS = [f"esp-{n}" for n in range(40)]
MATCHES = ["known", "new", "no_media"]
ANNOTATIONS = [f"A{n}" for n in range(10)]


def hour_of_records(count, seed=7):
    """(keys, counted) records as `keys_and_tally` makes them: the total and six dimensions."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        keys = (("total", None), ("jurisdiction", rng.choice(JURISDICTIONS)), ("country", rng.choice(COUNTRIES)),
                ("incidentType", rng.choice(INCIDENTS)), ("espId", rng.choice(ESPS)),
                ("matchSummary", rng.choice(MATCHES)))
        keys += tuple(("annotation", name) for name in sorted(rng.sample(ANNOTATIONS, rng.choice((0, 0, 1, 2)))))
        user = rng.getrandbits(63) if rng.random() < 0.9 else None
        out.append((keys, (rng.randint(0, 3), user, rng.getrandbits(63))))
    return out


def fired(records, late_bundles):
    """The hourly partials' panes: {key: partial} of the on-time table, then of each late bundle's."""
    late = max(1, len(records) // 100) if late_bundles else 0
    cuts = [0, len(records) - late * late_bundles] + [len(records) - late * n for n in range(late_bundles - 1, -1, -1)]
    panes = []
    for start, end in zip(cuts, cuts[1:]):
        table = ReportTable()
        for keys, counted in records[start:end]:
            table.add(keys, counted)
        panes.append(table.by_key())
    return panes


class TallyAccumulators:
    """The baseline: each partial as one Tally, merged into a Tally accumulator per window."""

    def create_accumulator(self):
        return Tally()

    def add_input(self, tally, partial):
        return tally.merge(partial)

    def extract_output(self, tally):
        return Tally().merge(tally)  # a pane: a copy of the accumulator (the row took its counts)


def windows_over(form, records, late_bundles):
    """An hourly window's and a period's accumulators over the hour's partials: {window: {key: accumulator}}."""
    panes = fired(records, late_bundles)
    if isinstance(form, TallyAccumulators):
        panes = [{key: merged_tally([partial]) for key, partial in pane.items()} for pane in panes]
    windows = {"hourly": {}, "period": {}}
    for pane in panes:
        for key, partial in pane.items():
            for accumulators in windows.values():
                accumulators[key] = form.add_input(accumulators.get(key) or form.create_accumulator(), partial)
    return windows


def fire_panes(form, windows):
    """Every key's pane of both windows, held at once as a timer's output bundle holds them."""
    return [form.extract_output(accumulator) for accumulators in windows.values()
            for accumulator in accumulators.values()]


def counts_of(panes):
    return [pane if isinstance(pane, dict) else pane.counts() for pane in panes]


def firing_peak_bytes(form, records, late_bundles):
    """Traced bytes at the peak of firing every key's pane of both windows, above what they held before."""
    windows = windows_over(form, records, late_bundles)
    gc.collect()
    tracemalloc.start()
    panes = fire_panes(form, windows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del panes
    return peak


def held_bytes(form, records, late_bundles):
    """Traced bytes the two windows' accumulators hold (and keep alive)."""
    gc.collect()
    tracemalloc.start()
    windows = windows_over(form, records, late_bundles)
    gc.collect()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del windows
    return size


def cpu_seconds(form, records, late_bundles):
    """CPU seconds (untraced) of firing the partials, holding them and making each window's pane."""
    began = time.process_time()
    counts_of(fire_panes(form, windows_over(form, records, late_bundles)))
    return time.process_time() - began


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--late-bundles", type=int, default=3)
    args = parser.parse_args()
    records = hour_of_records(args.records)
    print(f"one hour: {args.records:,} records, {args.late_bundles} late bundles of 1% each; an hourly window "
          f"and a sliding period hold its partials")
    figures = {}
    for name, form in (("Tally per key (baseline)", TallyAccumulators()), ("KeyRows", TalliesCombineFn())):
        size = held_bytes(form, records, args.late_bundles)
        peak = firing_peak_bytes(form, records, args.late_bundles)
        seconds = min(cpu_seconds(form, records, args.late_bundles) for _ in range(3))
        figures[name] = size
        print(f"  {name:26s} {size / args.records:6.1f} bytes a record held ({size / 1e6:.1f} MB), "
              f"{peak / args.records:6.1f} more at the panes' firing; partials, windows and panes "
              f"{seconds * 1e3:.0f} ms CPU (least of 3)")
    baseline, now = figures.values()
    print(f"  ratio held, KeyRows / baseline: {now / baseline:.2f}")


if __name__ == "__main__":
    main()
