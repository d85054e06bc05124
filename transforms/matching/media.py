"""Media hashing: a reported file's bytes to every signal's hash, decoding the image once.

Exact digests cover the raw bytes, image or not. Perceptual hashes need a decoded picture: when every
perceptual signal names the draft size it tolerates (pHash, dHash: 128 px; PDQ: 512 px), and a JPEG is
decoded at reduced scale with `Image.draft` once per distinct size, which is what makes hashing cheap
(decoding at 128 px for pHash costs less than resampling a full decode); other formats are decoded once. Anything wrong with the
media (too big, a decompression bomb, not an image) raises `UnhashableMedia` with a short reason that
never contains the bytes or where they came from.
"""
import base64
import binascii
import io
import warnings

from apache_beam.io.filesystems import FileSystems
from PIL import Image

MAX_MEDIA_BYTES = 25 * 2**20
MAX_PIXELS = 40_000_000
DRAFT_SIZE = (128, 128)  # enough for the 32x32 pHash / 9x8 dHash resample: hash unchanged (FIELD-NOTES)
_DRAFT_MODES = {DRAFT_SIZE: "L"}  # grey is all pHash / dHash read; larger drafts (PDQ) keep colour


class UnhashableMedia(Exception):
    """Media that cannot be hashed; str() is a short reason safe to store and log."""


def media_bytes(file, max_bytes=MAX_MEDIA_BYTES):
    """The file's media bytes from `content` (base64) or `contentUri`, or None when it has neither."""
    if file.get("content"):
        return _decoded_content(file["content"], max_bytes)
    if file.get("contentUri"):
        return _read_uri(file["contentUri"], max_bytes)
    return None


def _decoded_content(content, max_bytes):
    if len(content) * 3 // 4 > max_bytes:
        raise UnhashableMedia(f"media larger than {max_bytes} bytes")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise UnhashableMedia("content is not valid base64") from None


def _read_uri(uri, max_bytes):
    try:
        with FileSystems.open(uri) as handle:
            data = handle.read(max_bytes + 1)
    except Exception as error:  # any filesystem's failure; the URI itself must not reach the reason
        raise UnhashableMedia(f"media not readable ({type(error).__name__})") from None
    if len(data) > max_bytes:
        raise UnhashableMedia(f"media larger than {max_bytes} bytes")
    return data


def hash_media(data, signals):
    """[(signal, hex)] for each signal that yields a hash; UnhashableMedia when the image part fails.

    Exact digests are returned through the exception too (`error.hashes`), so non-image bytes still match.
    """
    exact = [(signal, signal.hash_bytes(data)) for signal in signals if not signal.perceptual]
    perceptual = [signal for signal in signals if signal.perceptual]
    if not perceptual:
        return exact
    try:
        images = {}
        for size in sorted({signal.draft_size for signal in perceptual}, reverse=True):
            first = next(iter(images.values()), None)
            images[size] = first if first is not None and first.format != "JPEG" else decode_image(data, draft=size)
        hashes = [(signal, signal.hash_image(images[signal.draft_size])) for signal in perceptual]
    except UnhashableMedia as error:
        error.hashes = exact
        raise
    return exact + [(signal, value) for signal, value in hashes if value is not None]


def decode_image(data, draft=None):
    """The decoded first frame, refusing decompression bombs before they are decoded.

    `draft` (a (width, height), or True for DRAFT_SIZE) lets a JPEG decode at the smallest DCT scale that
    still covers that size; other formats ignore it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise UnhashableMedia(f"image too large ({width}x{height} pixels)")
            if draft and image.format == "JPEG":
                size = DRAFT_SIZE if draft is True else tuple(draft)
                image.draft(_DRAFT_MODES.get(size, "RGB"), size)
            image.load()
    except UnhashableMedia:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnhashableMedia("image refused as a decompression bomb") from None
    except Image.UnidentifiedImageError:
        raise UnhashableMedia("not a recognised image format") from None
    except Exception as error:  # decoders raise many types on corrupt input (OSError, SyntaxError, ...)
        raise UnhashableMedia(f"image could not be decoded ({type(error).__name__})") from None
    return image
