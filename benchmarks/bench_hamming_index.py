"""Hamming index throughput, recall and memory against numpy brute force and faiss.

    .venv/bin/python benchmarks/bench_hamming_index.py [--size 10000000] [--queries 20000]

Random codes stand in for a bank (the hard case: no clustering to exploit). Half the queries are codes
from the bank with 0..radius bits flipped (planted neighbours, every distance up to the boundary), half
are fresh random codes. Recall is checked against a brute-force scan on a sample of queries.
"""
import argparse
import os
import resource
import time

import numpy as np

from transforms.matching.hamming_index import HammingIndex

CASES = (("pHash 64-bit", 64, 8), ("PDQ 256-bit", 256, 31))


def random_codes(rng, count, words):
    return rng.integers(0, np.iinfo(np.uint64).max, size=(count, words), dtype=np.uint64, endpoint=True)


def planted_queries(rng, codes, count, radius):
    """Codes from the bank with exactly 0..radius random bits flipped, cycling through the distances."""
    picks = rng.integers(0, len(codes), size=count)
    queries = codes[picks].copy()
    bits = codes.shape[1] * 64
    for row in range(count):
        for bit in rng.choice(bits, size=row % (radius + 1), replace=False):
            queries[row, bit // 64] ^= np.uint64(1) << np.uint64(63 - bit % 64)
    return queries


def brute_force(codes, queries, radius):
    """(query, code) pairs within radius by XOR + popcount over the whole bank, one query at a time."""
    pairs = set()
    for row, query in enumerate(queries):
        distances = np.bitwise_count(codes ^ query).sum(axis=1, dtype=np.int64)
        pairs.update((row, int(hit)) for hit in np.flatnonzero(distances <= radius))
    return pairs


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def faiss_rate(codes, queries, radius):
    """Queries/s of faiss IndexBinaryFlat.range_search on one thread, or None without faiss."""
    try:
        import faiss
    except ImportError:
        print("  faiss: not installed (.venv/bin/pip install faiss-cpu), skipped")
        return None
    faiss.omp_set_num_threads(1)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 64)
    index.add(codes.astype(">u8").view(np.uint8).reshape(len(codes), -1))
    as_bytes = queries.astype(">u8").view(np.uint8).reshape(len(queries), -1)
    _, seconds = timed(index.range_search, as_bytes, radius + 1)  # faiss: distance < radius argument
    return len(queries) / seconds


def run_case(label, bits, radius, size, query_count, sample, rng, repeats=3):
    words = bits // 64
    print(f"\n== {label}, {size:,} codes, radius {radius}")
    codes = random_codes(rng, size, words)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index, build_seconds = timed(HammingIndex, codes, radius)
    print(f"  build: {build_seconds:.1f} s; index arrays {index.nbytes() / 2**20:,.0f} MiB "
          f"(codes alone {codes.nbytes / 2**20:,.0f} MiB); peak RSS growth "
          f"{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 2**10:,.0f} MiB")
    queries = np.concatenate([planted_queries(rng, codes, query_count // 2, radius),
                              random_codes(rng, query_count - query_count // 2, words)])
    index.search(queries[:10])  # compile
    runs = []
    for _ in range(repeats):
        (rows, ids, _), seconds = timed(index.search, queries)
        runs.append(query_count / seconds)
    rate = max(runs)
    print(f"  index: {rate:,.0f} queries/s best of {repeats} ({1e6 / rate:.1f} us/query; runs "
          f"{', '.join(f'{run:,.0f}' for run in runs)}), {len(rows):,} hits; load average {os.getloadavg()[0]:.2f}")
    sample_rows = np.concatenate([np.arange(sample // 2), query_count // 2 + np.arange(sample // 2)])
    expected, brute_seconds = timed(brute_force, codes, queries[sample_rows], radius)
    sample_of = {int(row): position for position, row in enumerate(sample_rows)}
    found = {(sample_of[int(r)], int(i)) for r, i in zip(rows, ids) if int(r) in sample_of}
    recall = len(found & expected) / max(1, len(expected))
    print(f"  recall vs brute force on {len(sample_rows)} queries: {recall:.2%} "
          f"({len(expected)} true pairs, {len(found - expected)} extra)")
    brute_rate = len(sample_rows) / brute_seconds
    print(f"  numpy brute force: {brute_rate:,.1f} queries/s -> index is {rate / brute_rate:,.0f}x faster")
    faiss_queries = queries[sample_rows]
    faiss = faiss_rate(codes, faiss_queries, radius)
    if faiss:
        print(f"  faiss IndexBinaryFlat: {faiss:,.1f} queries/s -> index is {rate / faiss:,.0f}x faster")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--recall-sample", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the queries; best reported")
    parser.add_argument("--only", choices=[case[0].split()[0].lower() for case in CASES])
    args = parser.parse_args()
    print(f"cpu_count={os.cpu_count()} (index search runs on one thread)")
    rng = np.random.default_rng(7)
    for label, bits, radius in CASES:
        if args.only in (None, label.split()[0].lower()):
            run_case(label, bits, radius, args.size, args.queries, args.recall_sample, rng, args.repeats)


if __name__ == "__main__":
    main()
