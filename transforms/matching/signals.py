"""Signal types: what a hash is, how to compute it, how to compare two of them.

Modelled on python-threatexchange's `SignalType`: one small class per kind of hash holding its name,
validator, hasher, distance and default match threshold, and a registry from the free-text `hashType`
producers send (MD5, SHA-1, sha256, PDQ, ...) to the class. Every value travels as lowercase hex.
"""
import functools
import hashlib
import json
import re
from typing import NamedTuple

import imagehash
import numpy as np
from PIL import Image


HEX_DIGITS = "0123456789abcdef"
# hex digits only: deleting them from the ASCII bytes leaves nothing (one table pass in C; str.strip with
# these characters searched them for each character, an eighth of matching a report's hashes)
HEX_BYTES = HEX_DIGITS.encode("ascii")


class SignalType:
    """A kind of hash. Exact types match on equality, perceptual types within a Hamming radius."""

    name = ""
    hex_length = 0
    default_threshold = 0
    perceptual = False
    video = False

    @classmethod
    def validate(cls, value):
        """The value as canonical lowercase hex; ValueError when it is not a hash of this type."""
        text = str(value).strip().lower()
        if len(text) != cls.hex_length or not text.isascii() or text.encode("ascii").translate(None, HEX_BYTES):
            raise ValueError(f"invalid {cls.name} hash: expected {cls.hex_length} hex characters")
        return text

    @classmethod
    def distance(cls, left, right):
        """Number of differing bits for perceptual types; 0 (equal) or 1 (different) for exact types."""
        if cls.perceptual:
            return (int(left, 16) ^ int(right, 16)).bit_count()
        return int(left != right)

    @classmethod
    def compare(cls, left, right, threshold=None):
        """(match, distance) of two validated hashes."""
        distance = cls.distance(left, right)
        return distance <= (cls.default_threshold if threshold is None else threshold), distance


class ExactSignal(SignalType):
    """A cryptographic digest of the raw bytes: any change to the file changes it."""

    algorithm = ""

    @classmethod
    def hash_bytes(cls, data):
        return hashlib.new(cls.algorithm, data).hexdigest()


class PerceptualSignal(SignalType):
    """A hash of how an image looks, robust to re-encoding and resizing."""

    perceptual = True
    bits = 64
    draft_size = (128, 128)  # the JPEG draft target: enough for the 32x32 pHash / 9x8 dHash resample

    @classmethod
    def hash_image(cls, image):
        """The hex hash of a decoded PIL image, or None when the image is too flat to hash reliably."""
        raise NotImplementedError


class Md5Signal(ExactSignal):
    name, hex_length, algorithm = "MD5", 32, "md5"


class Sha1Signal(ExactSignal):
    name, hex_length, algorithm = "SHA1", 40, "sha1"


class Sha256Signal(ExactSignal):
    name, hex_length, algorithm = "SHA256", 64, "sha256"


def _dct_rows(size, keep):
    """The first `keep` rows of the unnormalised DCT-II matrix (scipy.fftpack.dct's default, type 2)."""
    n = np.arange(size)
    return 2.0 * np.cos(np.pi * np.arange(keep)[:, None] * (2 * n[None, :] + 1) / (2 * size))


_PHASH_SIZE, _PHASH_KEEP = 32, 8
_PHASH_DCT = _dct_rows(_PHASH_SIZE, _PHASH_KEEP)
_PHASH_WEIGHTS = 1 << np.arange(63, -1, -1, dtype=np.uint64)


class PHashSignal(PerceptualSignal):
    """imagehash's 64-bit DCT hash; 8 of 64 bits is its usual near-duplicate radius.

    Same steps as `imagehash.phash` (grey, LANCZOS to 32x32, 2-D DCT-II, low 8x8 above their median), but
    only the 8x8 low frequencies are computed, as two small matrix products: scipy's per-call overhead was
    most of the hash's cost. Bit-identical to `str(imagehash.phash(image))` on the images tests check."""

    name, hex_length, default_threshold = "PHASH", 16, 8

    @classmethod
    def hash_image(cls, image):
        grey = image if image.mode == "L" else image.convert("L")
        pixels = np.asarray(grey.resize((_PHASH_SIZE, _PHASH_SIZE), Image.Resampling.LANCZOS), dtype=np.float64)
        low = np.round(_PHASH_DCT @ pixels @ _PHASH_DCT.T, 6)  # flat images: exact zeros, as scipy gives
        bits = (low > np.median(low)).ravel()
        return f"{int(_PHASH_WEIGHTS[bits].sum()):016x}"


class DHashSignal(PerceptualSignal):
    """imagehash's 64-bit gradient hash. Threshold 10: on 30 generated pictures, JPEG/resize/crop/PNG
    variants measured at most 6 bits away and unrelated pictures at least 20; tests/test_signals.py re-checks."""

    name, hex_length, default_threshold = "DHASH", 16, 10

    @classmethod
    def hash_image(cls, image):
        return str(imagehash.dhash(image))


class PdqSignal(PerceptualSignal):
    """Meta's 256-bit PDQ. Hashes with quality below 50 are too unreliable to match (PDQ's own advice);
    31 is PDQ's published confident-match distance. Hex follows ThreatExchange (first bit most significant)."""

    name, hex_length, default_threshold, bits = "PDQ", 64, 31, 256
    # JPEGs decode at the smallest DCT scale that keeps >= 512 px: 800 px images are not reduced (0 bits),
    # 1100-2200 px images measured max 6 bits, mean ~2 from a full decode (threshold 31), 5-10x faster
    draft_size = (512, 512)
    min_quality = 50

    @classmethod
    def hash_image(cls, image):
        value, quality = cls.hash_pixels(np.asarray(image.convert("RGB") if image.mode != "RGB" else image))
        if quality < cls.min_quality:
            return None
        return value

    @classmethod
    def hash_pixels(cls, pixels):
        """(hex, quality) of an RGB uint8 array, whatever the quality (vPDQ keeps it per frame)."""
        from transforms.matching.pdq_pixels import pdq_hash  # numba (~0.15 s): imported by the first image hashed
        return pdq_hash(pixels)


class VPdqFeature(NamedTuple):
    """One sampled video frame: its number, PDQ hash (hex), PDQ quality and time in seconds."""

    frame_number: int
    pdq_hex: str
    quality: int
    timestamp: float


class VPdqSignal(SignalType):
    """Meta's vPDQ: a video as the PDQ hashes of frames sampled at a fixed interval.

    Its value is text, one frame per line, `frame_number,pdq_hex,quality,timestamp` (what the reference
    `vpdq` tools print). python-threatexchange's signal string (a JSON list of `"pdq_hex,quality,timestamp"`)
    is read too, its frames numbered in order. Matching is per video (`transforms/matching/video_index.py`):
    a query matches when `query_match_percent` of its frames are within `frame_threshold` of some banked
    frame, and it covers at least `bank_match_percent` of the banked video's frames.
    """

    name = "VPDQ"
    video = True
    frame_threshold = 31
    min_quality = 50
    query_match_percent = 80.0
    bank_match_percent = 0.0
    timestamp_decimals = 3

    @classmethod
    def validate(cls, value):
        return cls.to_text(cls.parse(value))

    @classmethod
    def parse(cls, value):
        """The features of a vPDQ value in either text form; ValueError naming the bad frame."""
        text = str(value).strip()
        if not text:
            raise ValueError("invalid VPDQ hash: no frames")
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                raise ValueError("invalid VPDQ hash: not a JSON list of frames") from None
            if not isinstance(items, list):
                raise ValueError("invalid VPDQ hash: not a JSON list of frames")
            lines = [f"{number},{item}" for number, item in enumerate(items)]
        else:
            lines = [line for line in re.split(r"[\r\n;]+", text) if line.strip()]
        return [cls._feature(line, number) for number, line in enumerate(lines, start=1)]

    @classmethod
    def _feature(cls, line, number):
        parts = [part.strip() for part in str(line).split(",")]
        try:
            frame, pdq_hex, quality, timestamp = parts
            feature = VPdqFeature(int(frame), PdqSignal.validate(pdq_hex), int(quality), float(timestamp))
        except (ValueError, TypeError):
            raise ValueError(f"invalid VPDQ hash: frame {number} is not frame,pdq_hex,quality,timestamp") from None
        if not 0 <= feature.quality <= 100 or feature.timestamp < 0 or feature.frame_number < 0:
            raise ValueError(f"invalid VPDQ hash: frame {number} has a quality or time out of range")
        return feature

    @classmethod
    def to_text(cls, features):
        return "\n".join(f"{f.frame_number},{f.pdq_hex},{f.quality},{f.timestamp:.{cls.timestamp_decimals}f}"
                         for f in features)

    @classmethod
    def matchable(cls, features):
        """The frames matching uses, as the reference does: quality >= 50, each distinct hash once."""
        seen, kept = set(), []
        for feature in features:
            if feature.quality >= cls.min_quality and feature.pdq_hex not in seen:
                seen.add(feature.pdq_hex)
                kept.append(feature)
        return kept


SIGNAL_TYPES = (Md5Signal, Sha1Signal, Sha256Signal, PHashSignal, DHashSignal, PdqSignal, VPdqSignal)
_BY_NAME = {signal.name: signal for signal in SIGNAL_TYPES}


_SPELLING_MARKS = re.compile(r"[\s_\-]")
_ALIASES = {"PDQHASH": "PDQ", "PERCEPTUALHASH": "PHASH", "DIFFERENCEHASH": "DHASH", "VIDEOPDQ": "VPDQ"}


def canonical_hash_type(hash_type):
    """'sha-1', 'SHA_1', ' Sha1 ' -> 'SHA1': producers spell hash types freely."""
    return _canonical_spelling(str(hash_type))


@functools.lru_cache(maxsize=1024)
def _canonical_spelling(text):
    """Cached: every routed file's hashes are respelled again by the bundle, trend and alert stages."""
    return _SPELLING_MARKS.sub("", text).upper()


def signal_for(hash_type):
    """The signal type for a producer's `hashType`; KeyError naming it when unknown."""
    try:
        return _signal_spelled(str(hash_type))
    except KeyError:
        raise KeyError(f"unknown hash type {hash_type!r}") from None


@functools.lru_cache(maxsize=1024)
def _signal_spelled(text):
    """Cached: every provided hash of every file names its type (an unknown one raises, so is not kept)."""
    name = _canonical_spelling(text)
    return _BY_NAME[_ALIASES.get(name, name)]
