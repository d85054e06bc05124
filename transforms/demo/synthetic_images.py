"""Benign, clearly synthetic pictures for the demo stream and the demo hash bank.

Each seed draws a colour field of low-frequency cosine waves with random signs (the very
coefficients pHash thresholds, so different seeds get far-apart pHashes and re-encodings keep theirs),
faint circles, rectangles and lines on top, and a little noise. `variant` re-encodes a picture the way files drift
between platforms (JPEG quality, resizing, a slight crop, PNG) without moving its pHash far.
"""
import io
import random

import numpy as np
from PIL import Image, ImageDraw

VARIANT_KINDS = ("jpeg", "resize", "crop", "png")
MAX_CROP = 0.03
SHAPE_OPACITY = 0.3  # opaque shapes would move the pHash bits that crops then flip
HASH_SIDE = 8  # imagehash.phash keeps the 8x8 lowest DCT frequencies of a 32x32 thumbnail


def make_image(seed, size=256):
    """The deterministic synthetic RGB picture of `seed`, `size` pixels square."""
    rng = random.Random(f"synthetic-image:{seed}")
    background = Image.fromarray(_wave_field(rng, size), "RGB")
    shapes = background.copy()
    _draw_shapes(ImageDraw.Draw(shapes), rng, size)
    image = Image.blend(background, shapes, SHAPE_OPACITY)
    return Image.fromarray(_add_noise(np.asarray(image), rng), "RGB")


def _wave_field(rng, size):
    """A colour field made of the 63 lowest non-constant 2-D cosine waves, half added and half
    subtracted: the pHash bits are then those signs, far from the hash's median threshold."""
    signs = [1] * (HASH_SIDE * HASH_SIDE // 2 - 1) + [-1] * (HASH_SIDE * HASH_SIDE // 2)
    rng.shuffle(signs)
    weights = np.zeros((HASH_SIDE, HASH_SIDE), dtype=np.float32)
    weights.flat[1:] = [sign * rng.uniform(0.6, 1.0) for sign in signs]
    t = np.pi * (np.arange(size, dtype=np.float32) + 0.5) / size
    waves = np.cos(np.outer(np.arange(HASH_SIDE), t))
    field = waves.T @ weights @ waves
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    dark, light = _random_colour(rng, 0, 90), _random_colour(rng, 165, 255)
    blend = field[:, :, None]
    return (dark * (1 - blend) + light * blend).astype(np.uint8)


def _draw_shapes(draw, rng, size):
    """Circles, rectangles and lines in random places and colours."""
    for _ in range(rng.randint(3, 6)):
        x0, y0 = rng.uniform(-0.1, 0.8) * size, rng.uniform(-0.1, 0.8) * size
        extent = rng.uniform(0.2, 0.5) * size
        box = (x0, y0, x0 + extent, y0 + extent * rng.uniform(0.6, 1.4))
        colour = tuple(int(c) for c in _random_colour(rng, 0, 255))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    for _ in range(rng.randint(1, 4)):
        points = [(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(2)]
        colour = tuple(int(c) for c in _random_colour(rng, 0, 255))
        draw.line(points, fill=colour, width=max(1, size // rng.randint(30, 80)))


def _add_noise(pixels, rng):
    """Mild seeded pixel noise, so the picture is plainly computer-made and compresses like a photo."""
    noise = np.random.default_rng(rng.getrandbits(32)).integers(-6, 7, pixels.shape, dtype=np.int16)
    return np.clip(pixels.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _random_colour(rng, low, high):
    return np.array([rng.randint(low, high) for _ in range(3)], dtype=np.float32)


def encode_jpeg(image, quality):
    """The JPEG bytes of `image` at `quality` (1-95)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(image):
    """The lossless PNG bytes of `image`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def variant(image, kind, rng):
    """Encoded bytes of a re-encoding of `image` (`kind` in VARIANT_KINDS) whose pHash stays close."""
    if kind == "jpeg":
        return encode_jpeg(image, rng.randint(35, 90))
    if kind == "resize":
        scale = rng.uniform(0.5, 0.9)
        side = max(16, round(image.width * scale))
        return encode_jpeg(image.resize((side, side), Image.Resampling.BILINEAR), rng.randint(60, 90))
    if kind == "crop":
        return encode_jpeg(_slight_crop(image, rng), rng.randint(60, 90))
    if kind == "png":
        return encode_png(image)
    raise ValueError(f"unknown variant kind {kind!r}; expected one of {VARIANT_KINDS}")


def _slight_crop(image, rng):
    """`image` with at most MAX_CROP of its width and of its height cut off, split between the edges."""
    width, height = image.size
    cut_x, cut_y = rng.uniform(0, MAX_CROP) * width, rng.uniform(0, MAX_CROP) * height
    left, top = rng.uniform(0, cut_x), rng.uniform(0, cut_y)
    return image.crop((round(left), round(top), round(width - cut_x + left), round(height - cut_y + top)))
