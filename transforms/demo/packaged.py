"""`packaged:NAME`: a data file shipped in the tipline package (transforms/demo/data), found where it is installed.

Why: a path resolved to an absolute file on the launching machine does not exist on a Dataflow worker.
The pipeline graph carries only `packaged:demo-city.mmdb`; each reader resolves it, on whichever machine
it runs, against that machine's installed copy of the package (shipped by `--setup_file`).
"""
from importlib import resources

PREFIX = "packaged:"


class PackagedDataError(ValueError):
    """A `packaged:` path that names no shipped file."""


def packaged(name):
    """The portable path of a file in transforms/demo/data."""
    return PREFIX + name


def is_packaged(path):
    return isinstance(path, str) and path.startswith(PREFIX)


def resolve(path):
    """A local file path for `packaged:NAME`; any other path (local, gs://, ...) unchanged."""
    if not is_packaged(path):
        return path
    name = path[len(PREFIX):]
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise PackagedDataError(f"{path!r}: a packaged data file is a plain file name, e.g. packaged:demo-city.mmdb")
    resource = resources.files(__package__).joinpath("data", name)
    if not resource.is_file():
        raise PackagedDataError(f"{path!r}: no such file in the installed package (transforms/demo/data/{name})")
    return str(resource)
