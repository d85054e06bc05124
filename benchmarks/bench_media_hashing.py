"""Media hashing throughput on one core, decoding included, on ~100 KB generated JPEGs.

    .venv/bin/python benchmarks/bench_media_hashing.py [--images 200]

Also measures how far PDQ moves when a JPEG is decoded at reduced scale (PdqSignal drafts to >= 512 px,
which leaves 800 px images at full scale; the 1600 px line shows the drift where drafting applies).
"""
import argparse
import io
import os
import time

from PIL import Image

from transforms.matching.media import DRAFT_SIZE, decode_image, hash_media
from transforms.matching.signals import Md5Signal, PdqSignal, PHashSignal, Sha1Signal
from transforms.demo.synthetic_images import encode_jpeg, make_image

SETS = (("pHash", (PHashSignal,)), ("pHash+PDQ+MD5+SHA-1", (PHashSignal, PdqSignal, Md5Signal, Sha1Signal)))


def sample_jpegs(count, size=800, quality=90):
    return [encode_jpeg(make_image(seed, size=size), quality) for seed in range(count)]


def rate(images, signals, repeats=3):
    """Best of `repeats` passes, after one warm-up image (first calls pay imports, e.g. scipy's ~0.4 s)."""
    hash_media(images[0], signals)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for data in images:
            hash_media(data, signals)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def pdq_draft_drift(images, scale):
    """Max and mean PDQ distance between full decoding and draft decoding at `scale`."""
    distances = []
    for data in images:
        full = PdqSignal.hash_image(decode_image(data))
        drafted = Image.open(io.BytesIO(data))
        drafted.draft("RGB", (scale, scale))
        small = PdqSignal.hash_image(drafted.convert("RGB"))
        if full and small:
            distances.append(PdqSignal.distance(full, small))
    return max(distances), sum(distances) / len(distances)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    images = sample_jpegs(args.images)
    print(f"cpu_count={os.cpu_count()}; {len(images)} JPEGs, mean {sum(map(len, images)) / len(images) / 1024:.0f} KB, "
          f"{Image.open(io.BytesIO(images[0])).size[0]} px square; pHash draft target {DRAFT_SIZE}; "
          f"load average {os.getloadavg()[0]:.2f}")
    rates = {label: rate(images, signals) for label, signals in SETS}
    for label, value in rates.items():
        print(f"  {label:<22} {value:7.0f} images/s ({1000 / value:.1f} ms/image)")
    print(f"  ratio pHash-only / all four: {rates['pHash'] / rates['pHash+PDQ+MD5+SHA-1']:.1f}x")
    for scale in (128, 256, 512):
        worst, mean = pdq_draft_drift(images[:50], scale)
        print(f"  PDQ drift if drafted to >= {scale}px: max {worst} bits, mean {mean:.1f} (threshold 31)")
    large = sample_jpegs(20, size=1600)
    worst, mean = pdq_draft_drift(large, 512)
    print(f"  PDQ drift on 1600 px JPEGs drafted to >= 512px (what PdqSignal does): max {worst} bits, mean {mean:.1f}")


if __name__ == "__main__":
    main()
