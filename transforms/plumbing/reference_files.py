"""Reference files (GeoIP databases, hash banks) from any Beam filesystem, staged once per worker on local disk.

Why: maxminddb memory-maps a local file, so a `gs://` database cannot be opened where it lies, and reading a
bank from object storage in every DoFn instance repeats the download. `stage(path)` copies a remote file to
a cache folder on the worker's disk the first time any process of the worker asks for it, and hands every
later caller the same copy:

- the copy is named after the source path and its (size, last-updated) pair, so a rewritten source is a
  new copy (the refresh rule of the banks) and an unchanged one is reused;
- it is written to a hidden temporary name and renamed: a reader never sees half a file;
- it is checked: its size against the source's metadata, and a SHA-256 of its bytes recorded beside it,
  recomputed whenever the copy is reused, so a truncated or altered cache is fetched again;
- a file lock makes concurrent processes of one worker wait for one download instead of each making one.

Local paths, `file://` URIs and `packaged:NAME` are returned as local paths without copying.
"""
import contextlib
import dataclasses
import fcntl
import gc
import hashlib
import logging
import os
import tempfile
import time
import urllib.parse

from apache_beam.io.filesystems import FileSystems

from transforms.demo.packaged import resolve

CACHE_ENV = "TIPLINE_REFERENCE_CACHE"
CHUNK_BYTES = 1 << 20


class ReferenceFileError(ValueError):
    """A reference file that cannot be found, read or staged, with its path and why."""


@dataclasses.dataclass(frozen=True)
class SourceFile:
    path: str
    size: int
    updated: float


def cache_dir():
    """Where staged copies live: $TIPLINE_REFERENCE_CACHE, else a folder in the system temp dir."""
    return os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "tipline-reference")


def is_remote(path):
    """True for a path some non-local Beam filesystem serves (gs://, s3://, a test scheme...)."""
    return isinstance(path, str) and "://" in path and FileSystems.get_scheme(path) not in (None, "file")


def local_path(path):
    """`file:///folder/x` as `/folder/x` (open() and maxminddb take paths, not URIs); other paths unchanged."""
    if isinstance(path, str) and path.startswith("file://"):
        parsed = urllib.parse.urlsplit(path)
        if parsed.netloc in ("", "localhost"):
            return urllib.parse.unquote(parsed.path)
    return path


def describe_source(path):
    """Size and last-updated time of exactly one file behind `path` (any Beam filesystem)."""
    try:
        metadata = FileSystems.match([path])[0].metadata_list
    except Exception as error:  # BeamIOError and each filesystem's own errors
        raise ReferenceFileError(f"{path}: cannot be listed: {error}") from None
    if len(metadata) != 1:
        raise ReferenceFileError(f"{path}: expected one file, found {len(metadata)}")
    found = metadata[0]
    return SourceFile(path, found.size_in_bytes, found.last_updated_in_seconds)


def fingerprint(paths):
    """(path, size, last updated) of each file: cheap to re-check, changes when a file is rewritten."""
    found = []
    for path in paths:
        metadata = FileSystems.match([local_path(resolve(path))])[0].metadata_list
        found.extend((m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in metadata)
    return tuple(found)


def stage(path):
    """A local file path holding the content of `path`; remote files are copied once per worker."""
    local = local_path(resolve(path))
    if not is_remote(local):
        return local
    source = describe_source(local)
    folder = cache_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    target = os.path.join(folder, _copy_name(source))
    with _locked(target + ".lock"):
        if not _valid_copy(target, source.size):
            _copy(source, target)
    return target


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def recorded_digest(local_path):
    """The SHA-256 recorded when a remote file was staged (None for a file that was never staged)."""
    try:
        with open(local_path + ".sha256", encoding="ascii") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def _copy_name(source):
    """<digest of the path>-<digest of size and update time>-<base name>: one name per version of a file."""
    base = source.path.rstrip("/").rsplit("/", 1)[-1]
    return f"{_path_key(source.path)}-{_version_key(source)}-{base}"


def _path_key(path):
    return hashlib.sha256(path.encode()).hexdigest()[:12]


def _version_key(source):
    return hashlib.sha256(f"{source.size}:{source.updated!r}".encode()).hexdigest()[:12]


def _valid_copy(target, size):
    """An existing copy of the right size whose bytes still have the digest recorded when it was made."""
    if not os.path.isfile(target) or os.path.getsize(target) != size:
        return False
    return recorded_digest(target) == sha256_of(target)


def _copy(source, target):
    """Downloads to a hidden temporary file, checks its size, records its digest, renames it into place."""
    folder = os.path.dirname(target)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".staging-")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(handle, "wb") as out, FileSystems.open(source.path, compression_type="uncompressed") as src:
            for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        if size != source.size:
            raise ReferenceFileError(f"{source.path}: copied {size} bytes, the filesystem lists {source.size}")
        with open(target + ".sha256", "w", encoding="ascii") as record:
            record.write(digest.hexdigest())
        os.replace(temporary, target)
    except ReferenceFileError:
        raise
    except Exception as error:
        raise ReferenceFileError(f"{source.path}: cannot be copied to {folder}: {error}") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    _remove_older_copies(source, folder)


def _remove_older_copies(source, folder):
    """Drops earlier versions of the same source (an open memory map keeps its data until it is closed)."""
    same_source = _path_key(source.path) + "-"
    current = f"{same_source}{_version_key(source)}-"
    for name in os.listdir(folder):
        if name.startswith(same_source) and not name.startswith(current) and not name.endswith(".lock"):
            os.remove(os.path.join(folder, name))


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on a file, shared by every process and thread of the machine."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_frozen_in_this_process = False


def out_of_the_collector(built):
    """`built`; the first time in a process, with every object alive then moved out of the garbage
    collector's passes (`gc.freeze`).

    A bank index or GeoIP reader is hundreds of thousands of long-lived objects that each full collection
    would walk again while reports are processed: frozen, the plain-Python chain costs ~15% less CPU a
    report (`bench_chain.py --gc-freeze`: 74.6 -> 63.0 us least, 90.8 -> 72.3 us median). Only the first
    load freezes: a frozen object that later becomes cyclic garbage is never collected, so later loads (a
    refresh) would each keep what was alive around them."""
    global _frozen_in_this_process
    if not _frozen_in_this_process:
        _frozen_in_this_process = True
        gc.collect()
        gc.freeze()
    return built


class RefreshedOnChange:
    """A worker-wide object built from reference files (a bank index, GeoIP readers), held through a DoFn's
    `Shared` handle and acquired again, under a new tag, when any of its files changes: checked at most
    every `refresh_seconds`. A rebuild that fails keeps the last good object, logged and counted, and is
    tried again when the files change again."""

    def __init__(self, shared, paths, build, refresh_seconds, reloads, reload_failures, what):
        self.shared = shared
        self.paths = [path for path in paths if path]
        self.build = build
        self.refresh_seconds = refresh_seconds
        self.reloads = reloads
        self.reload_failures = reload_failures
        self.what = what
        self.checked_at = time.monotonic()
        self.fingerprint = fingerprint(self.paths)
        self.current = self._acquire(self.fingerprint)

    def _acquire(self, found):
        return self.shared.acquire(lambda: out_of_the_collector(self.build()), tag=repr((self.paths, found)))

    def get(self):
        """The object for the files as they were at the last check."""
        if time.monotonic() - self.checked_at >= self.refresh_seconds:
            self._refresh()
        return self.current

    def _refresh(self):
        self.checked_at = time.monotonic()
        found = fingerprint(self.paths)
        if found == self.fingerprint:
            return
        self.fingerprint = found
        try:
            self.current = self._acquire(found)
        except Exception as error:  # keep serving with the last good files rather than fail every element
            self.reload_failures.inc()
            logging.error("%s reload failed, keeping the previous ones: %s", self.what, error)
            return
        self.reloads.inc()
