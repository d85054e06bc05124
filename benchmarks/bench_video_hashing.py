"""vPDQ hashing throughput on one core, decoding included, on generated 720p H.264 videos.

    .venv/bin/python benchmarks/bench_video_hashing.py [--seconds 30] [--reference]

Prints seconds of video hashed per second at 1 frame/s (goal >= 30x real time) and frames/s when every
frame is sampled, for videos with a keyframe every second and every 250 frames (x264's default), next to
the reference `vpdq` package's own hasher on the same files when it is installed (it builds against
FFmpeg's development packages: see the README), and how far our frame hashes are from the reference's.
"""
import argparse
import os
import pathlib
import tempfile
import time

from transforms.demo.synthetic_videos import VideoSpec, encode_video
from transforms.matching.banks import BankEntry
from transforms.matching.signals import PdqSignal, VPdqFeature, VPdqSignal
from transforms.matching.video import VideoLimits, hash_video
from transforms.matching.video_index import VideoIndex

FPS = 30
UNLIMITED = VideoLimits(max_decode_seconds=3600)


def sample_videos(seconds, folder):
    """{label: path} of 720p H.264 MP4s: a keyframe every second, and every 250 frames."""
    videos = {}
    for label, keyframe_seconds in (("keyframe every 1 s", 1.0), ("keyframe every 250 frames", 250 / FPS)):
        spec = VideoSpec("bench-720p", seconds=seconds, fps=FPS, size=(1280, 720), bit_rate=2_500_000,
                         keyframe_seconds=keyframe_seconds, encoder_options=(("preset", "veryfast"),))
        path = pathlib.Path(folder) / f"{label.replace(' ', '-')}.mp4"
        path.write_bytes(encode_video(spec))
        videos[label] = path
    return videos


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def ours(path, interval):
    data = path.read_bytes()
    return timed(lambda: hash_video(data, interval, UNLIMITED))


def reference(path, interval):
    import vpdq
    features, seconds = timed(lambda: vpdq.computeHash(str(path), seconds_per_hash=interval, thread_count=1))
    return [VPdqFeature(f.frame_number, f.hex, f.quality, f.timestamp) for f in features], seconds


def agreement(our_features, reference_features):
    """(max, mean) PDQ distance between our frame and the reference's frame of the same number, and the
    vPDQ match percentages of ours as the query against the reference's as the banked video."""
    theirs = {f.frame_number: f.pdq_hex for f in reference_features}
    distances = [PdqSignal.distance(f.pdq_hex, theirs[f.frame_number]) for f in our_features if f.frame_number in theirs]
    index = VideoIndex([BankEntry(VPdqSignal, VPdqSignal.to_text(reference_features), "reference")])
    matches = index.search([our_features], 0.0, 0.0)[0]
    shares = (matches[0][1].query_match_percent, matches[0][1].bank_match_percent) if matches else (0.0, 0.0)
    return (max(distances), sum(distances) / len(distances), len(distances)) if distances else (None, None, 0), shares


def reference_available():
    try:
        import vpdq  # noqa: F401  (the reference, optional)
    except ImportError as error:
        return f"not installed ({error}); `pip install vpdq==0.2.5` builds it against FFmpeg's -dev packages"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each test video")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, decoder threads included
    missing = reference_available()
    with tempfile.TemporaryDirectory() as folder:
        videos = sample_videos(args.seconds, folder)
        print(f"cpu_count={os.cpu_count()}, pinned to 1 core; {args.seconds:g} s 720p H.264 videos at {FPS} frames/s; "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"reference vpdq: {'installed' if not missing else missing}")
        ours(videos["keyframe every 1 s"], 1.0)  # warm-up: numba's first call compiles
        for label, path in videos.items():
            size = path.stat().st_size / 2**20
            hashes, seconds = ours(path, 1.0)
            features = hashes.features
            every_hashes, every_seconds = ours(path, 1 / FPS)
            every = [None] * every_hashes.sampled_frames
            line = (f"{label} ({size:.1f} MiB): 1 frame/s: {args.seconds / seconds:.1f}x real time "
                    f"({hashes.sampled_frames} frames in {seconds:.2f} s); every frame: {len(every) / every_seconds:.0f} frames/s")
            if not missing:
                ref, ref_seconds = reference(path, 1.0)
                ref_every, ref_every_seconds = reference(path, 0)
                (worst, mean, pairs), shares = agreement(features, ref)
                line += (f"\n    reference vpdq: 1 frame/s {args.seconds / ref_seconds:.1f}x real time "
                         f"(ours {ref_seconds / seconds:.2f}x its speed); every frame {len(ref_every) / ref_every_seconds:.0f} frames/s "
                         f"(ours {(len(every) / every_seconds) / (len(ref_every) / ref_every_seconds):.2f}x)"
                         f"\n    ours vs reference, same frame numbers ({pairs}): PDQ distance max {worst}, mean {mean:.1f}; "
                         f"ours as query vs reference banked: {shares[0]:.0f}% / {shares[1]:.0f}%")
            print(line)


if __name__ == "__main__":
    main()
