"""Media hashing: a reported file's bytes to every signal's hash, decoding the image once.

Exact digests cover the raw bytes, image or not. Perceptual hashes need a decoded picture: when every
perceptual signal names the draft size it tolerates (pHash, dHash: 128 px; PDQ: 512 px), and a JPEG is
decoded at reduced scale with `Image.draft` once per distinct size, which is what makes hashing cheap
(decoding at 128 px for pHash costs less than resampling a full decode); other formats are decoded once. Anything wrong with the
media (too big, a decompression bomb, not an image) raises `UnhashableMedia` with a short reason that
never contains the bytes or where they came from.

A `contentUri` comes from a provider, so it is read only inside the configured media roots
(`--media-root`: the quarantine store the intake writes to), and only as a regular file with a read
timeout: otherwise a report could make the pipeline hash the worker's own files (a hash oracle), read
any bucket its service account sees, or hang on a FIFO. Decoding is bounded by pixels actually decoded
(after JPEG draft scaling), per file and per report, and reading plus decoding by time per report: a tiny
lossless WebP can declare 40 Mpx, and decode cost follows pixels, not bytes.
"""
import base64
import binascii
import io
import os
import stat
import threading
import time
import urllib.parse
import warnings

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from PIL import Image

MAX_MEDIA_BYTES = 25 * 2**20
MAX_PIXELS = 40_000_000  # declared size: anything larger is refused from its header
MAX_DECODED_PIXELS_PER_FILE = 16_000_000  # pixels decoded (after draft scaling) for one file, all drafts
MAX_DECODED_PIXELS_PER_REPORT = 64_000_000
MAX_MEDIA_SECONDS_PER_REPORT = 30.0  # reading contentUris and decoding, all files of a report
READ_TIMEOUT_SECONDS = 30.0
DRAFT_SIZE = (128, 128)  # enough for the 32x32 pHash / 9x8 dHash resample: hash unchanged (FIELD-NOTES)
_DRAFT_MODES = {DRAFT_SIZE: "L"}  # grey is all pHash / dHash read; larger drafts (PDQ) keep colour
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class UnhashableMedia(Exception):
    """Media that cannot be hashed; str() is a short reason safe to store and log."""


class MediaRoots:
    """Where a `contentUri` may point: local folders (symlinks resolved) and Beam filesystem prefixes.

    Built from `--media-root` values: a folder, `file:///folder`, or a prefix such as `gs://bucket/quarantine`.
    """

    def __init__(self, roots=()):
        self.folders, self.prefixes = [], []
        for root in roots:
            if _is_local(root):
                self.folders.append(os.path.realpath(_local_path(root)))
            else:
                self.prefixes.append(root.rstrip("/") + "/")

    @classmethod
    def of(cls, roots):
        """`roots` as MediaRoots (already one, or an iterable of `--media-root` values)."""
        return roots if isinstance(roots, cls) else cls(roots or ())

    def __bool__(self):
        return bool(self.folders or self.prefixes)

    def holds_folder_path(self, real_path):
        return any(os.path.commonpath([real_path, folder]) == folder for folder in self.folders)

    def holds_prefix_uri(self, uri):
        return any(uri.startswith(prefix) for prefix in self.prefixes)


def check_media_roots(roots):
    """Fails at start-up on a media root that cannot be one (ValueError naming the root; the options layer
    adds the flag)."""
    for root in roots or ():
        if not _is_local(root):
            scheme_end = root.index("://") + 3
            if not root[scheme_end:].strip("/"):
                raise ValueError(f"{root}: names no bucket or folder")
            continue
        try:
            path = _local_path(root)
        except UnhashableMedia:
            raise ValueError(f"{root}: not a local file:// URI") from None
        if not os.path.isdir(path):
            raise ValueError(f"{root}: not a folder")
        if os.path.realpath(path) == os.path.realpath(os.sep):
            raise ValueError(f"{root}: the filesystem root would let reports read any file")


def media_bytes(file, roots, max_bytes=MAX_MEDIA_BYTES, timeout_seconds=READ_TIMEOUT_SECONDS, budget=None):
    """The file's media bytes from `content` (base64) or `contentUri` (read only inside `roots`, a
    MediaRoots or `--media-root` values), or None when it has neither; UnhashableMedia with the reason.

    A read is charged to `budget` (the report's MediaBudget), and not tried once its time is spent."""
    if file.get("content"):
        return _decoded_content(file["content"], max_bytes)
    if file.get("contentUri"):
        read = lambda: read_media_uri(file["contentUri"], roots, max_bytes, timeout_seconds)  # noqa: E731
        return read() if budget is None else budget.timed(read)
    return None


def _decoded_content(content, max_bytes):
    if len(content) * 3 // 4 > max_bytes:
        raise UnhashableMedia(f"media larger than {max_bytes} bytes")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise UnhashableMedia("content is not valid base64") from None


def read_media_uri(uri, roots, max_bytes=MAX_MEDIA_BYTES, timeout_seconds=READ_TIMEOUT_SECONDS):
    """The bytes at `uri` if it lies inside a media root and is a regular file; UnhashableMedia otherwise.

    The reason never holds the URI. Nothing outside the roots is opened, not even to see if it exists."""
    roots = MediaRoots.of(roots)
    if not roots:
        raise UnhashableMedia("media URI not read: no --media-root is configured")
    if not isinstance(uri, str) or "\x00" in uri:
        raise UnhashableMedia("media URI is not a path")
    if _is_local(uri):
        return _read_local(_checked_local_path(uri), roots, max_bytes, timeout_seconds)
    _refuse_dot_segments(uri.split("://", 1)[1])
    if not roots.holds_prefix_uri(uri):
        raise UnhashableMedia("media URI is outside the media roots (--media-root)")
    return _with_timeout(lambda: _read_beam_file(uri, max_bytes), timeout_seconds)


def _is_local(uri):
    scheme = FileSystems.get_scheme(uri)
    return scheme is None or scheme == "file"


def _local_path(uri):
    """The path of a plain path or a `file://` URI (host empty or localhost, percent-decoded)."""
    if not uri.lower().startswith("file:"):
        return uri
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise UnhashableMedia("media URI names a host other than localhost")
    return urllib.parse.unquote(parts.path)


def _checked_local_path(uri):
    path = _local_path(uri)
    if "\x00" in path or not os.path.isabs(path):
        raise UnhashableMedia("media URI is not an absolute path")
    _refuse_dot_segments(path)
    return path


def _refuse_dot_segments(path):
    if ".." in path.replace("\\", "/").split("/"):
        raise UnhashableMedia("media URI has a '..' segment")


def _read_local(path, roots, max_bytes, timeout_seconds):
    """Reads a local file inside the roots: symlinks resolved first, the resolved file opened without
    following links or blocking (a FIFO opens at once and is then refused), and checked again once open."""
    real_path = os.path.realpath(path)
    if not roots.holds_folder_path(real_path):
        raise UnhashableMedia("media URI is outside the media roots (--media-root)")
    try:
        descriptor = os.open(real_path, _OPEN_FLAGS)
    except OSError as error:
        raise UnhashableMedia(f"media not readable ({type(error).__name__})") from None
    try:
        _check_opened(descriptor, roots, max_bytes)
        os.set_blocking(descriptor, True)
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    return _with_timeout(lambda: _read_and_close(handle, max_bytes), timeout_seconds)


def _check_opened(descriptor, roots, max_bytes):
    """The opened file must be a regular file within the size limit, still inside the roots (a path
    component swapped for a symlink after `realpath` is caught here, where /proc shows what was opened)."""
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        raise UnhashableMedia("media URI is not a regular file")
    if status.st_size > max_bytes:
        raise UnhashableMedia(f"media larger than {max_bytes} bytes")
    opened = f"/proc/self/fd/{descriptor}"
    if os.path.exists(opened) and not roots.holds_folder_path(os.readlink(opened)):
        raise UnhashableMedia("media URI is outside the media roots (--media-root)")


def _read_and_close(handle, max_bytes):
    with handle:
        return _bounded(handle.read(max_bytes + 1), max_bytes)


def _read_beam_file(uri, max_bytes):
    """A Beam filesystem object, never decompressed by its extension (a `.gz` name must not inflate)."""
    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            data = handle.read(max_bytes + 1)
    except Exception as error:  # any filesystem's failure; the URI itself must not reach the reason
        raise UnhashableMedia(f"media not readable ({type(error).__name__})") from None
    return _bounded(data, max_bytes)


def _bounded(data, max_bytes):
    if len(data) > max_bytes:
        raise UnhashableMedia(f"media larger than {max_bytes} bytes")
    return data


def _with_timeout(read, timeout_seconds):
    """`read()`, or UnhashableMedia once `timeout_seconds` pass (a hung read is left to its daemon thread)."""
    outcome = {}

    def target():
        try:
            outcome["data"] = read()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="tipline-media-read", daemon=True)
    thread.start()
    thread.join(timeout_seconds)
    if thread.is_alive():
        raise UnhashableMedia(f"media read timed out after {timeout_seconds:g} s")
    if "error" in outcome:
        if isinstance(outcome["error"], UnhashableMedia):
            raise outcome["error"]
        raise UnhashableMedia(f"media not readable ({type(outcome['error']).__name__})")
    return outcome["data"]


class MediaBudget:
    """What one report may still spend on its media: pixels decoded, and seconds reading and decoding.

    `for_file()` gives each file its own pixel budget, whose spending is charged to the report too."""

    def __init__(self, pixels=None, seconds=None, report=None):
        self.pixels_left = MAX_DECODED_PIXELS_PER_REPORT if pixels is None else pixels
        self.seconds_left = MAX_MEDIA_SECONDS_PER_REPORT if seconds is None else seconds
        self.report = report

    def for_file(self):
        return MediaBudget(MAX_DECODED_PIXELS_PER_FILE, 0, report=self)

    def charge_pixels(self, width, height):
        """Called before decoding `width` x `height` pixels; raises when the file or its report cannot afford them."""
        pixels = width * height
        if self.report is None:
            self.check_time_left()
            if pixels > self.pixels_left:
                raise UnhashableMedia(f"the report's decode budget is spent ({width}x{height} pixels needed, "
                                      f"{self.pixels_left} left)")
        else:
            if pixels > self.pixels_left:
                raise UnhashableMedia(f"decoding {width}x{height} pixels exceeds the file's budget "
                                      f"({self.pixels_left} pixels left)")
            self.report.charge_pixels(width, height)
        self.pixels_left -= pixels

    def check_time_left(self):
        if self.report is not None:
            return self.report.check_time_left()
        if self.seconds_left <= 0:
            raise UnhashableMedia("the report's media time budget is spent")

    def charge_seconds(self, seconds):
        if self.report is None:
            self.seconds_left -= seconds
        else:
            self.report.charge_seconds(seconds)

    def timed(self, work):
        """`work()` if time is left, its duration charged."""
        self.check_time_left()
        started = time.monotonic()
        try:
            return work()
        finally:
            self.charge_seconds(time.monotonic() - started)


def hash_media(data, signals, budget=None):
    """[(signal, hex)] for each signal that yields a hash; UnhashableMedia when the image part fails.

    Decoding is charged to `budget` (a report's MediaBudget; a fresh one when None). Exact digests are
    returned through the exception too (`error.hashes`), so non-image bytes still match.
    """
    exact = [(signal, signal.hash_bytes(data)) for signal in signals if not signal.perceptual]
    perceptual = [signal for signal in signals if signal.perceptual]
    if not perceptual:
        return exact
    file_budget = (budget or MediaBudget()).for_file()
    try:
        images = {}
        for size in sorted({signal.draft_size for signal in perceptual}, reverse=True):
            first = next(iter(images.values()), None)
            images[size] = (first if first is not None and first.format != "JPEG"
                            else decode_image(data, draft=size, budget=file_budget))
        hashes = [(signal, signal.hash_image(images[signal.draft_size])) for signal in perceptual]
    except UnhashableMedia as error:
        error.hashes = exact
        raise
    return exact + [(signal, value) for signal, value in hashes if value is not None]


def decode_image(data, draft=None, budget=None):
    """The decoded first frame, refusing decompression bombs and over-budget images before they are decoded.

    `draft` (a (width, height), or True for DRAFT_SIZE) lets a JPEG decode at the smallest DCT scale that
    still covers that size; other formats ignore it. The size after drafting, the pixels the decoder will
    really produce, is charged to `budget` (a file's MediaBudget; a fresh one when None), then the time."""
    budget = budget or MediaBudget().for_file()
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
            budget.charge_pixels(*image.size)
            budget.timed(image.load)
    except UnhashableMedia:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnhashableMedia("image refused as a decompression bomb") from None
    except Image.UnidentifiedImageError:
        raise UnhashableMedia("not a recognised image format") from None
    except Exception as error:  # decoders raise many types on corrupt input (OSError, SyntaxError, ...)
        raise UnhashableMedia(f"image could not be decoded ({type(error).__name__})") from None
    return image
