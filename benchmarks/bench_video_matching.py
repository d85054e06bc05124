"""vPDQ matching: 60-frame query videos against 1M banked video frames, on one core.

    .venv/bin/python benchmarks/bench_video_matching.py [--banked-frames 1000000] [--queries 300]

Banked videos are random walks through PDQ space (60 frames each, neighbouring frames 16 bits apart, like a
slowly moving scene); queries are copies of banked videos with a few bits of noise per frame (they match)
and unrelated walks (they do not). Prints queries/s (goal >= 200) next to numpy brute force measured in the
same run, the index's build time and memory, and recall against brute force on a sample of queries.
"""
import argparse
import os
import random
import time

import numpy as np

from transforms.matching.banks import BankEntry
from transforms.matching.code_search import codes_from_hex
from transforms.matching.signals import VPdqFeature, VPdqSignal
from transforms.matching.video_index import VideoIndex

FRAMES_PER_VIDEO = 60
STEP_BITS = 16


def walk(rng, frames, start=None):
    code = rng.getrandbits(256) if start is None else start
    features = []
    for number in range(frames):
        features.append(VPdqFeature(number, f"{code:064x}", 100, float(number)))
        for bit in rng.sample(range(256), STEP_BITS):
            code ^= 1 << bit
    return features


def noisy(rng, features, bits=6):
    out = []
    for feature in features:
        code = int(feature.pdq_hex, 16)
        for bit in rng.sample(range(256), bits):
            code ^= 1 << bit
        out.append(feature._replace(pdq_hex=f"{code:064x}"))
    return out


def brute_force(all_codes, video_of_frame, counts, query):
    """Matched (video, query %, bank %) by comparing every query frame with every banked frame (numpy)."""
    query_codes = codes_from_hex([f.pdq_hex for f in VPdqSignal.matchable(query)], 256)
    close = np.zeros((len(query_codes), len(all_codes)), dtype=bool)
    for row, code in enumerate(query_codes):
        close[row] = np.bitwise_count(all_codes ^ code).sum(axis=1) <= 31
    videos = {}
    for row, frame in zip(*np.nonzero(close)):
        query_rows, bank_frames = videos.setdefault(int(video_of_frame[frame]), (set(), set()))
        query_rows.add(row)
        bank_frames.add(frame)
    return sorted((video, round(100 * len(q) / len(query_codes), 2), round(100 * len(b) / counts[video], 2))
                  for video, (q, b) in videos.items() if 100 * len(q) / len(query_codes) >= 80)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banked-frames", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--recall-sample", type=int, default=5)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rng = random.Random(2026)
    videos = [walk(rng, FRAMES_PER_VIDEO) for _ in range(args.banked_frames // FRAMES_PER_VIDEO)]
    entries = [BankEntry(VPdqSignal, VPdqSignal.to_text(video), "bench", None, str(n)) for n, video in enumerate(videos)]
    print(f"cpu_count={os.cpu_count()}, pinned to 1 core; {len(videos)} banked videos, "
          f"{len(videos) * FRAMES_PER_VIDEO} frames; load average {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    index = VideoIndex(entries)
    build = time.perf_counter() - start
    print(f"index build (parsing the bank text included) {build:.1f} s, {index._index.nbytes() / 2**20:.0f} MiB")
    copies = [noisy(rng, videos[rng.randrange(len(videos))]) for _ in range(args.queries)]
    unrelated = [walk(rng, FRAMES_PER_VIDEO) for _ in range(args.queries)]
    index.search(copies[:2])  # warm-up: numba compiles on first call
    for label, queries in (("copies of banked videos", copies), ("unrelated videos", unrelated)):
        start = time.perf_counter()
        found = [index.search([query])[0] for query in queries]
        seconds = time.perf_counter() - start
        matched = sum(bool(hits) for hits in found)
        print(f"{label}: {len(queries) / seconds:,.0f} queries/s one at a time ({matched}/{len(queries)} matched)")
        start = time.perf_counter()
        index.search(queries)
        print(f"    batched: {len(queries) / (time.perf_counter() - start):,.0f} queries/s")
    frames = codes_from_hex([f.pdq_hex for query in copies for f in query], 256)
    start = time.perf_counter()
    index._index.search(frames)
    lookups = len(frames) / (time.perf_counter() - start)
    print(f"baseline, same run: the PDQ index alone, {lookups:,.0f} frame lookups/s = "
          f"{lookups / FRAMES_PER_VIDEO:,.0f} {FRAMES_PER_VIDEO}-frame queries/s if grouping the hits cost nothing")
    all_codes = index._index.codes
    sample = copies[:args.recall_sample] + unrelated[:1]
    start = time.perf_counter()
    expected = [brute_force(all_codes, index.frame_video, index.frame_counts, query) for query in sample]
    brute = len(sample) / (time.perf_counter() - start)
    got = [sorted((int(e.external_id), round(m.query_match_percent, 2), round(m.bank_match_percent, 2))
                  for e, m in index.search([query])[0]) for query in sample]
    print(f"numpy brute force: {brute:.2f} queries/s; recall on {len(sample)} queries vs brute force: "
          f"{'100%' if got == expected else 'MISMATCH'}")


if __name__ == "__main__":
    main()
