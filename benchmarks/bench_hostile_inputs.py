"""What hostile sizes cost: one long line through the files source, and a tiny huge image through hashing.

    .venv/bin/python benchmarks/bench_hostile_inputs.py [--line-mb 12] [--big-line-mb 50] [--lines 100000]

Baselines measured in the same run: Beam's ReadFromText source on the same long line (it holds and
re-grows the line; only at --line-mb, since 50 MB takes minutes) and decoding the same WebP without a
budget (what every file cost before).
"""
import argparse
import base64
import os
import tempfile
import time

from apache_beam import coders
from apache_beam.io import ReadFromText
from apache_beam.io.range_trackers import OffsetRangeTracker

from transforms.matching.media import MediaBudget, UnhashableMedia, decode_image, hash_media
from transforms.matching.signals import Md5Signal, PdqSignal, PHashSignal, Sha1Signal
from transforms.plumbing.bounded_lines import _BoundedLinesSource

LIMIT = 10 * 1024 * 1024
TINY_HUGE_WEBP = base64.b64decode("UklGRh4AAABXRUJQVlA4TBEAAAAvm9gmBgdQ5CIXuf+BiOh/AAA=")  # 6300x6300, 38 bytes
SIGNALS = (Md5Signal, Sha1Signal, PHashSignal, PdqSignal)


def seconds_to_read(source, path):
    start = time.perf_counter()
    count = sum(1 for _ in source.read_records(path, OffsetRangeTracker(0, os.path.getsize(path))))
    return time.perf_counter() - start, count


def write_file(folder, name, long_line_bytes, short_lines):
    path = os.path.join(folder, name)
    with open(path, "wb") as handle:
        handle.write(b'{"pad": "' + b"A" * long_line_bytes + b'"}\n' if long_line_bytes else b"")
        handle.write((b'{"reportId": "r", "pad": "' + b"s" * 900 + b'"}\n') * short_lines)
    return path


def bench_lines(args, folder):
    ours = lambda path: _BoundedLinesSource(path, LIMIT)  # noqa: E731
    theirs = lambda path: ReadFromText(path, coder=coders.BytesCoder())._source  # noqa: E731
    long_path = write_file(folder, "long.jsonl", args.line_mb * 10**6, 0)
    our_long, _ = seconds_to_read(ours(long_path), long_path)
    their_long, _ = seconds_to_read(theirs(long_path), long_path)
    print(f"one {args.line_mb} MB line: ReadFromText source {their_long:.2f} s, bounded lines {our_long:.3f} s "
          f"({their_long / our_long:.0f}x faster)")
    big_path = write_file(folder, "big.jsonl", args.big_line_mb * 10**6, 0)
    our_big, _ = seconds_to_read(ours(big_path), big_path)
    print(f"one {args.big_line_mb} MB line: bounded lines {our_big:.3f} s (ReadFromText not run: minutes)")
    short_path = write_file(folder, "short.jsonl", 0, args.lines)
    our_short, count = seconds_to_read(ours(short_path), short_path)
    their_short, their_count = seconds_to_read(theirs(short_path), short_path)
    assert count == their_count == args.lines
    print(f"{args.lines} lines of ~1 KB: ReadFromText source {args.lines / their_short:,.0f} lines/s, "
          f"bounded lines {args.lines / our_short:,.0f} lines/s (ratio {their_short / our_short:.2f})")


def bench_webp():
    start = time.perf_counter()
    decode_image(TINY_HUGE_WEBP, budget=MediaBudget(pixels=10**9))
    unbounded = time.perf_counter() - start
    start = time.perf_counter()
    try:
        hash_media(TINY_HUGE_WEBP, SIGNALS)
    except UnhashableMedia as error:
        reason = str(error)
    bounded = time.perf_counter() - start
    print(f"38-byte 6300x6300 lossless WebP: decoded without a budget {unbounded:.2f} s; with the budget "
          f"{bounded * 1000:.2f} ms ({reason})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--line-mb", type=int, default=12)
    parser.add_argument("--big-line-mb", type=int, default=50)
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    print(f"cpu_count={os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        bench_lines(args, folder)
    bench_webp()


if __name__ == "__main__":
    main()
