"""Windowed, per-destination file output shared by every sink (routed, trends, dead letters, ...).

Built on `fileio.WriteToFiles`; adds what its stock naming lacks for this pipeline: a folder per
destination (`jurisdiction=US-WA/`), event-time window bounds in file names, and a token per firing so
a late pane never overwrites the on-time pane's file (Beam's sink does not pass pane indexes yet).
"""
import io
import json
import os
import uuid

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from schemas import avro_schema

DEFAULT_ALLOWED_LATENESS_SECONDS = 24 * 3600
OWNER_ONLY = 0o077  # files 0600, folders 0700 on local disks
# Beam's default (20) spills every record past the 20th destination of a bundle into a windowed shuffle,
# which costs far more per record than an open file: a window of reports touches ~150 jurisdictions.
MAX_OPEN_FILES_PER_BUNDLE = 1024


def window_label(win):
    """`2026-11-23T10:00:00--2026-11-23T11:00:00` for an event-time window; `unwindowed` for the global one."""
    if isinstance(win, window.GlobalWindow):
        return "unwindowed"
    try:
        start = win.start.to_utc_datetime().strftime("%Y-%m-%dT%H:%M:%S")
        end = win.end.to_utc_datetime().strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, ValueError):
        return "undated"
    return f"{start}--{end}"


def windowed_file_naming(suffix):
    """File names `<destination>/<window>-<firing token>-<shard>-of-<shards><suffix>`."""

    def name(win, pane, shard_index, total_shards, compression, destination):
        token = uuid.uuid4().hex[:12]
        return f"{destination}/{window_label(win)}-{token}-{shard_index:05d}-of-{total_shards:05d}{suffix}"

    return name


def require_written(result, path):
    """Fails the bundle (so the runner retries, then stops with this error) when a file is missing after the
    move step: the stock step logs a failed rename at debug level only, which would lose the records."""
    final = FileSystems.join(path, result.file_name)
    if not FileSystems.exists(final):
        raise IOError(f"{final} was not written: is the sink folder writable?")
    return result


class _EnsureDestinationFolder(beam.DoFn):
    """Creates `<path>/<destination>/` once per worker: the stock move step only creates `<path>`,
    and a rename into a missing folder would be logged at debug level and lost."""

    def __init__(self, path, destination):
        self.path = path
        self.destination = destination

    def setup(self):
        os.umask(OWNER_ONLY)  # workers may be other processes than the one that ran `tipline run`
        self.created = set()

    def process(self, element):
        folder = self.destination(element)
        if folder not in self.created:
            target = FileSystems.join(self.path, folder)
            if not FileSystems.exists(target):
                try:
                    FileSystems.mkdirs(target)
                except IOError:  # another worker made it first
                    pass
            self.created.add(folder)
        yield element


class WriteWindowedFiles(beam.PTransform):
    """Windows elements by event time and writes one file set per window and destination.

    With `window_seconds=None` (for records without a trustworthy event time, such as unparseable
    messages) elements stay in the global window: a bounded run writes one file set at its end, an
    unbounded one a file set every `flush_seconds` of processing time, and the rest when the input ends.
    """

    def __init__(self, path, destination, sink, suffix, window_seconds=3600,
                 allowed_lateness_seconds=DEFAULT_ALLOWED_LATENESS_SECONDS, shards=1, flush_seconds=60):
        super().__init__()
        self.path = path
        self.destination = destination
        self.sink = sink
        self.suffix = suffix
        self.window_seconds = window_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.shards = shards
        self.flush_seconds = flush_seconds

    def windowing(self, bounded):
        """Batch input has no late data, so it keeps Beam's default trigger (and its fast grouping)."""
        if self.window_seconds is None and bounded:
            return beam.WindowInto(window.GlobalWindows())
        if bounded:
            return beam.WindowInto(window.FixedWindows(self.window_seconds))
        if self.window_seconds is None:
            return beam.WindowInto(
                window.GlobalWindows(),
                trigger=trigger.AfterWatermark(early=trigger.AfterProcessingTime(self.flush_seconds)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING)
        return beam.WindowInto(
            window.FixedWindows(self.window_seconds),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
            allowed_lateness=Duration(seconds=self.allowed_lateness_seconds))

    def expand(self, elements):
        written = (
            elements
            | "Window" >> self.windowing(elements.is_bounded)
            | "EnsureFolders" >> beam.ParDo(_EnsureDestinationFolder(self.path, self.destination))
            | "Write" >> fileio.WriteToFiles(
                path=self.path,
                destination=self.destination,
                sink=lambda _destination: self.sink(),
                file_naming=windowed_file_naming(self.suffix),
                shards=self.shards,
                max_writers_per_bundle=MAX_OPEN_FILES_PER_BUNDLE))
        return written | "CheckWritten" >> beam.Map(require_written, self.path)


class JsonLinesSink(fileio.FileSink):
    """One JSON object per line."""

    def open(self, fh):
        self._fh = fh

    def write(self, record):
        self._fh.write(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        self._fh.write(b"\n")

    def flush(self):
        self._fh.flush()


class AvroSink(fileio.FileSink):
    """Avro container files with a schema from `schemas/` (deflate-compressed)."""

    def __init__(self, schema_name):
        self.schema_name = schema_name

    def open(self, fh):
        self._writer = fastavro.write.Writer(fh, avro_schema(self.schema_name), codec="deflate")

    def write(self, record):
        self._writer.write(record)

    def flush(self):
        self._writer.flush()


class ParquetSink(fileio.FileSink):
    """Parquet files: rows are buffered per file and written as one table when the file closes.

    `arrow_schema` is a `pyarrow.Schema`, or a function of a row giving it (when a destination's rows
    share a schema that depends on the destination); keys outside the schema are not written.
    """

    def __init__(self, arrow_schema):
        self.arrow_schema = arrow_schema

    def open(self, fh):
        self._fh = fh
        self._rows = []

    def write(self, record):
        self._rows.append(record)

    def flush(self):
        if self._rows:
            schema = self.arrow_schema(self._rows[0]) if callable(self.arrow_schema) else self.arrow_schema
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(self._rows, schema=schema), buffer)
            self._fh.write(buffer.getvalue())
        self._rows = []
