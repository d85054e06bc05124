"""STAND-IN for Google Cloud Storage: a real Beam `FileSystem` for the `fakegcs://` scheme over a local folder.

GCS itself cannot be reached from the project's machines. This filesystem behaves like an object store as
Beam sees one (no directories, prefix listing, `scheme://bucket/object` paths) so that everything tipline
reads through `FileSystems` with a `gs://` path — reference files, inputs — takes the same non-local code
path here. Importing this module registers the scheme (Beam finds FileSystem subclasses by their scheme);
objects live under $TIPLINE_FAKEGCS_ROOT/<bucket>/<object>.
"""
import os

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "fakegcs"
PREFIX = SCHEME + "://"
ROOT_ENV = "TIPLINE_FAKEGCS_ROOT"


def local_path(url):
    """The file behind a fakegcs:// URL."""
    if not url.startswith(PREFIX):
        raise ValueError(f"not a {PREFIX} path: {url!r}")
    return os.path.join(os.environ[ROOT_ENV], url[len(PREFIX):])


def url_of(path):
    return PREFIX + os.path.relpath(path, os.environ[ROOT_ENV]).replace(os.sep, "/")


class StandInGCSFileSystem(FileSystem):
    """Object-store semantics over a folder: each operation maps URLs to files, hands them to Beam's
    LocalFileSystem, and maps results back to URLs."""

    def __init__(self, pipeline_options):
        super().__init__(pipeline_options)
        self.local = LocalFileSystem(pipeline_options)

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(path.strip("/") for path in paths)])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def has_dirs(self):
        return False

    def mkdirs(self, path):
        """Object stores have no folders: nothing to make."""

    def _url_dirname(self, url_or_path):
        return url_or_path.rpartition("/")[0]

    def _list(self, dir_or_prefix):
        """Every object whose URL starts with the prefix, at any depth (an object store's listing)."""
        prefix = local_path(dir_or_prefix)
        top = prefix if os.path.isdir(prefix) else os.path.dirname(prefix)
        try:
            for folder, _, files in os.walk(top):
                for name in files:
                    path = os.path.join(folder, name)
                    if path.startswith(prefix):
                        yield FileMetadata(url_of(path), os.path.getsize(path), os.path.getmtime(path))
        except OSError as error:
            raise BeamIOError("List operation failed", {dir_or_prefix: error})

    def create(self, path, *args, **kwargs):
        os.makedirs(os.path.dirname(local_path(path)), exist_ok=True)
        return self.local.create(local_path(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return self.local.open(local_path(path), *args, **kwargs)

    def copy(self, source_file_names, destination_file_names):
        for destination in destination_file_names:
            os.makedirs(os.path.dirname(local_path(destination)), exist_ok=True)
        self.local.copy([local_path(p) for p in source_file_names], [local_path(p) for p in destination_file_names])

    def rename(self, source_file_names, destination_file_names):
        for destination in destination_file_names:
            os.makedirs(os.path.dirname(local_path(destination)), exist_ok=True)
        self.local.rename([local_path(p) for p in source_file_names], [local_path(p) for p in destination_file_names])

    def exists(self, path):
        return self.local.exists(local_path(path))

    def size(self, path):
        return self.local.size(local_path(path))

    def last_updated(self, path):
        return self.local.last_updated(local_path(path))

    def checksum(self, path):
        return self.local.checksum(local_path(path))

    def metadata(self, path):
        found = self.local.metadata(local_path(path))
        return FileMetadata(path, found.size_in_bytes, found.last_updated_in_seconds)

    def delete(self, paths):
        self.local.delete([local_path(p) for p in paths])

    def report_lineage(self, path, lineage):
        """Nothing to report for a stand-in."""
