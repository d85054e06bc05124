"""Video hashing: a video's bytes to its vPDQ frames (PDQ of frames sampled at a fixed interval).

Containers are decoded with PyAV (FFmpeg in its wheels); animated GIF, WebP and PNG with Pillow, which
knows their frame durations. A frame is taken at each multiple of the interval (the first frame shown at
or after it), hashed with the project's PDQ, and kept with its number, time and quality; consecutive
identical hashes collapse into the first. Where the keyframes allow it the decoder seeks to the keyframe
before the next sample instead of decoding every frame in between, so cost follows the sampled frames.

Limits keep a hostile file from hurting the worker: bytes, duration, frame size, sampled frames and
decode time. A file past one, truncated to nothing, without a video stream or not decodable raises
`UnhashableMedia` with a short reason (never the bytes or where they came from).

PyAV is imported by the first container decoded (~40 ms with its FFmpeg libraries, which a run over reports
without video, and every command line tool, need not pay).
"""
import bisect
import dataclasses
import io
import math
import time
import warnings

import numpy as np
from PIL import Image, ImageSequence

from transforms.matching.media import MAX_PIXELS, UnhashableMedia
from transforms.matching.signals import PdqSignal, VPdqFeature

AV_TIME_BASE = 1_000_000  # FFmpeg's unit of a container's duration (PyAV's av.time_base)
HASH_SIDE = 512  # frames are scaled to fit 512 px before PDQ, as JPEGs are drafted to 512 px for images
_ISO_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"jxl "}


@dataclasses.dataclass(frozen=True)
class VideoLimits:
    """What one video may cost; past any of these the file is unhashable."""

    max_bytes: int = 200 * 2**20
    max_seconds: float = 4 * 3600
    max_pixels: int = MAX_PIXELS
    max_sampled_frames: int = 20_000
    max_decode_seconds: float = 120.0
    max_animation_frames: int = 100_000  # frames an animated image may list, sampled or not


@dataclasses.dataclass
class VideoHashes:
    """A video's vPDQ frames and its duration; only counts ever leave the worker."""

    features: list
    duration_seconds: float
    sampled_frames: int = 0  # frames hashed, before consecutive repeats collapsed

    def summary(self):
        return {"signalType": "VPDQ", "frames": len(self.features),
                "durationSeconds": round(self.duration_seconds, 3)}


def is_video(data):
    """True for a video container or an animated image: the files vPDQ hashes instead of PDQ."""
    head = data[:16]
    if head[4:8] == b"ftyp":
        return head[8:12] not in _ISO_IMAGE_BRANDS
    if head[:4] in (b"\x1a\x45\xdf\xa3", b"OggS", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3") or head[:3] == b"FLV":
        return True
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return True
    if len(data) > 188 * 2 and data[0] == data[188] == data[376] == 0x47:
        return True  # MPEG transport stream: a sync byte every 188 bytes
    return _is_animated_image(data)


def _is_animated_image(data):
    if not (data[:6] in (b"GIF87a", b"GIF89a") or data[:8] == b"\x89PNG\r\n\x1a\n"
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(getattr(Image.open(io.BytesIO(data)), "is_animated", False))
    except Exception:  # a broken image is the image path's to report
        return False


def hash_video(data, interval=1.0, limits=VideoLimits()):
    """The `VideoHashes` of a video or animated image; UnhashableMedia with a short reason otherwise."""
    if len(data) > limits.max_bytes:
        raise UnhashableMedia(f"video larger than {limits.max_bytes} bytes")
    deadline = time.monotonic() + limits.max_decode_seconds
    if _is_animated_image(data):
        hashed, duration = _animation_frames(data, interval, limits, deadline)
    else:
        hashed, duration = _container_frames(data, interval, limits, deadline)
    features = collapse_repeats(hashed)
    if not features:
        raise UnhashableMedia("no decodable video frames")
    return VideoHashes(features, max(duration, features[-1].timestamp), len(hashed))


def _hashed(frames, limits):
    """VPdqFeature per sampled (frame number, time, RGB array), each hashed as it comes so only hashes
    are kept, counting samples against the limit."""
    for count, (number, timestamp, pixels) in enumerate(frames, start=1):
        if count > limits.max_sampled_frames:
            raise UnhashableMedia(f"video has more than {limits.max_sampled_frames} sampled frames")
        pdq_hex, quality = PdqSignal.hash_pixels(pixels)
        yield VPdqFeature(number, pdq_hex, int(quality), round(timestamp, 3))


def collapse_repeats(features):
    """Consecutive frames with the same hash kept once, as the first of the run."""
    kept = []
    for feature in features:
        if not kept or kept[-1].pdq_hex != feature.pdq_hex:
            kept.append(feature)
    return kept


def _container_frames(data, interval, limits, deadline):
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except Exception as error:  # av.FFmpegError mostly; any failure to open is the file's, not the worker's
        raise UnhashableMedia(f"not a decodable video ({type(error).__name__})") from None
    with container:
        if not container.streams.video:
            raise UnhashableMedia("no video stream")
        stream = container.streams.video[0]
        _check_frame_size(stream.codec_context.width, stream.codec_context.height, limits)
        duration = _duration(container, stream)
        if duration > limits.max_seconds:
            raise UnhashableMedia(f"video longer than {limits.max_seconds:g} s")
        try:
            hashed = list(_hashed(_sampled_container_frames(container, stream, interval, limits, deadline), limits))
        except UnhashableMedia:
            raise
        except Exception as error:  # FFmpeg's errors, and whatever else a hostile stream provokes in PyAV
            raise UnhashableMedia(f"video could not be decoded ({type(error).__name__})") from None
    return hashed, duration


def _duration(container, stream):
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / AV_TIME_BASE
    return 0.0


def _check_frame_size(width, height, limits):
    if (width or 0) * (height or 0) > limits.max_pixels:
        raise UnhashableMedia(f"video frames too large ({width}x{height} pixels)")


def _sampled_container_frames(container, stream, interval, limits, deadline):
    """(frame number, seconds, RGB array) at each multiple of `interval`, seeking between keyframes."""
    keyframes = _keyframe_times(container, stream, limits, deadline)
    rate = float(stream.average_rate or stream.guessed_rate or 0) or None
    start = keyframes[0] if keyframes else 0.0
    target, position, decoded = start, -math.inf, None
    while True:
        keyframe = keyframes[bisect.bisect_right(keyframes, target + 1e-6) - 1] if keyframes else None
        if decoded is None or (keyframe is not None and keyframe > position + 1e-6):
            container.seek(int(round((keyframe if keyframe is not None else start) / stream.time_base)),
                           stream=stream, backward=True, any_frame=False)
            decoded = _decoded_frames(container, stream, limits, deadline)
        frame = _first_frame_at(decoded, target, rate)
        if frame is None:
            return
        seconds, pixels_of = frame
        position = seconds
        yield (round((seconds - start) * rate) if rate else 0), seconds - start, pixels_of()
        target = start + (math.floor((seconds - start) / interval + 1e-6) + 1) * interval


def _keyframe_times(container, stream, limits, deadline):
    """Times of the stream's keyframes, read from packets without decoding them (sorted, distinct)."""
    times = set()
    for count, packet in enumerate(container.demux(stream)):
        if count % 256 == 0 and time.monotonic() > deadline:
            raise UnhashableMedia(f"video decode took longer than {limits.max_decode_seconds:g} s")
        if packet.is_keyframe and packet.pts is not None:
            times.add(float(packet.pts * stream.time_base))
    return sorted(times)


def _decoded_frames(container, stream, limits, deadline):
    """(seconds, lazy RGB array) of each decoded frame, in presentation order, within the limits."""
    for frame in container.decode(stream):
        if time.monotonic() > deadline:
            raise UnhashableMedia(f"video decode took longer than {limits.max_decode_seconds:g} s")
        _check_frame_size(frame.width, frame.height, limits)
        if frame.time is not None and frame.time > limits.max_seconds:
            raise UnhashableMedia(f"video longer than {limits.max_seconds:g} s")
        yield frame.time, (lambda frame=frame: _rgb(frame))


def _first_frame_at(decoded, target, rate):
    """The first decoded frame shown at or after `target` (frames without a time count by the rate)."""
    for seconds, pixels_of in decoded:
        if seconds is None:
            return (target, pixels_of) if rate else None
        if seconds >= target - 1e-6:
            return seconds, pixels_of
    return None


def _rgb(frame):
    width, height = _fitted(frame.width, frame.height)
    return frame.to_ndarray(format="rgb24", width=width, height=height)


def _fitted(width, height):
    scale = min(1.0, HASH_SIDE / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _animation_frames(data, interval, limits, deadline):
    """Hashed sampled frames of an animated GIF/WebP/PNG by its frame durations, and its total duration."""
    durations = []
    try:
        hashed = list(_hashed(_animation_samples(data, interval, limits, deadline, durations), limits))
    except UnhashableMedia:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnhashableMedia("animation refused as a decompression bomb") from None
    except Exception as error:  # Pillow raises many types on corrupt frames
        raise UnhashableMedia(f"animation could not be decoded ({type(error).__name__})") from None
    return hashed, sum(durations) / 1000


def _animation_samples(data, interval, limits, deadline, durations):
    """(frame number, seconds, RGB array) of the frame shown at each multiple of `interval`; appends every
    frame's duration (ms) to `durations`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        _check_frame_size(*image.size, limits)
        if getattr(image, "n_frames", 1) > limits.max_animation_frames:
            raise UnhashableMedia(f"animation has more than {limits.max_animation_frames} frames")
        elapsed, target = 0, 0  # in milliseconds, as the formats store durations
        step, longest = round(interval * 1000), round(limits.max_seconds * 1000)
        for number, frame in enumerate(ImageSequence.Iterator(image)):
            if time.monotonic() > deadline:
                raise UnhashableMedia(f"video decode took longer than {limits.max_decode_seconds:g} s")
            shown_for = max(int(frame.info.get("duration") or 0), 0)
            if elapsed + shown_for > target or (shown_for == 0 and elapsed >= target):
                shown_at = max(elapsed, target)
                yield number, shown_at / 1000, np.asarray(frame.convert("RGB").resize(_fitted(*frame.size)))
                target = (shown_at // step + 1) * step
            elapsed += shown_for
            durations.append(shown_for)
            if elapsed > longest:
                raise UnhashableMedia(f"video longer than {limits.max_seconds:g} s")
