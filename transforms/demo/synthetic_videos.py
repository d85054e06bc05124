"""Benign, clearly synthetic videos for the demo stream, the demo bank and the tests, made with PyAV.

A video of a seed is a sequence of scenes of SCENE_SECONDS each; a scene is one synthetic picture
(`synthetic_images.make_image`) seen through a window that pans slowly across it, so consecutive frames
move but a frame sampled a fraction of a second off stays close. `encode_video` writes frames in a given
container and codec at a given bit rate and size; `VideoVariant` describes the re-encodings files go
through between platforms (lower bit rate, half resolution, another container/codec, a trimmed clip).
"""
import dataclasses
import fractions
import functools
import io
import random

import av
import numpy as np
from PIL import Image, ImageDraw

from transforms.demo.synthetic_images import make_image

SCENE_SECONDS = 2.0
PAN_PIXELS_PER_SECOND = 2  # of the 256 px scene picture: slow enough that frames 1 s apart stay near
SCENE_SIDE, WINDOW_SIDE = 256, 208
# (container format, codec, pixel format): what the PyAV wheels can write here
FORMATS = {
    "mp4": ("mp4", "libx264", "yuv420p"),
    "mp4-mpeg4": ("mp4", "mpeg4", "yuv420p"),
    "webm": ("webm", "libvpx", "yuv420p"),
    "mkv": ("matroska", "libx264", "yuv420p"),
    "avi": ("avi", "mpeg4", "yuv420p"),
    "gif": ("gif", None, None),  # animated GIF, written with Pillow
}


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """What to draw and how to encode it."""

    seed: object
    seconds: float = 6.0
    fps: int = 10
    size: tuple = (160, 120)
    format: str = "mp4"
    bit_rate: int = 400_000
    start: float = 0.0  # a trimmed clip starts here in the original's time
    keyframe_seconds: float = 1.0
    encoder_options: tuple = ()  # (name, value) pairs for the encoder, e.g. (("preset", "veryfast"),)


@functools.lru_cache(maxsize=64)
def _scene_picture(seed, scene):
    """A synthetic picture with opaque shapes drawn over it: detail enough for PDQ quality >= 50."""
    picture = make_image(f"video:{seed}:{scene}", SCENE_SIDE)
    rng = random.Random(f"video-shapes:{seed}:{scene}")
    draw = ImageDraw.Draw(picture)
    for _ in range(12):
        x, y, extent = rng.uniform(0, SCENE_SIDE), rng.uniform(0, SCENE_SIDE), rng.uniform(20, 70)
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + extent, y + extent * 0.8), fill=colour)
    return np.asarray(picture)


def frame_at(seed, seconds, size):
    """The RGB frame of video `seed` at `seconds`, `size` (width, height)."""
    scene = int(seconds // SCENE_SECONDS)
    offset = int((seconds - scene * SCENE_SECONDS) * PAN_PIXELS_PER_SECOND)
    picture = _scene_picture(seed, scene)
    window = picture[offset:offset + WINDOW_SIDE, offset:offset + WINDOW_SIDE]
    return np.asarray(Image.fromarray(window).resize(size, Image.Resampling.BILINEAR))


def encode_video(spec):
    """The bytes of the video `spec` describes."""
    frames = [frame_at(spec.seed, spec.start + number / spec.fps, spec.size)
              for number in range(round(spec.seconds * spec.fps))]
    container_format, codec, pixel_format = FORMATS[spec.format]
    if codec is None:
        return _encode_gif(frames, spec.fps)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=spec.fps)
        stream.width, stream.height = spec.size
        stream.pix_fmt = pixel_format
        stream.bit_rate = spec.bit_rate
        stream.gop_size = max(1, round(spec.keyframe_seconds * spec.fps))
        stream.time_base = fractions.Fraction(1, spec.fps)
        stream.options = dict(spec.encoder_options)
        for number, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = number
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _encode_gif(frames, fps):
    buffer = io.BytesIO()
    images = [Image.fromarray(pixels) for pixels in frames]
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return buffer.getvalue()


VARIANT_KINDS = ("low_bitrate", "half_size", "other_format", "trimmed", "gif")


def variant_spec(original, kind, rng):
    """The spec of a re-encoding of `original` of `kind` (VARIANT_KINDS), drawn with `rng`."""
    if kind == "low_bitrate":
        return dataclasses.replace(original, bit_rate=original.bit_rate // 4)
    if kind == "half_size":
        width, height = original.size
        return dataclasses.replace(original, size=(width // 2 // 2 * 2, height // 2 // 2 * 2))
    if kind == "other_format":
        others = [name for name in FORMATS if name not in (original.format, "gif")]
        return dataclasses.replace(original, format=others[rng.randrange(len(others))])
    if kind == "trimmed":
        start = rng.uniform(0.1, 0.3) * original.seconds
        return dataclasses.replace(original, start=original.start + start,
                                   seconds=rng.uniform(0.4, 0.6) * original.seconds)
    if kind == "gif":
        return dataclasses.replace(original, format="gif")
    raise ValueError(f"unknown video variant {kind!r}; expected one of {VARIANT_KINDS}")
