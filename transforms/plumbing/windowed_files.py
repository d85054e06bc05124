"""Windowed, per-destination file output shared by every sink (routed, trends, dead letters, ...).

Files are content-addressed, so a replay of the same input into the same output writes nothing twice:
each pane of a destination's window becomes one file `<destination>/<window>-<digest><suffix>`, the digest
taken over its sorted records. It is written under a hidden temporary name (`.<digest>-<uuid>.tmp`, which
neither a `*.parquet`/`*.avro` glob nor Hadoop/Spark, which skip hidden files, pick up) and renamed; a final name that
exists already (an earlier run wrote these very records) is skipped and counted as `files_already_written`.
A late pane holds other records, so it gets its own name beside the on-time pane's file.

A record the sink cannot encode (a value a Parquet column cannot hold, a string no UTF-8 writer takes) is
refused alone: when a file's write fails, each of its records is encoded by itself in memory; the refused
ones go to the `refused` output as (record, (type, repr(error), None)) and the rest are written under the digest of
what the file then holds. When every record encodes (an OSError is storage's, never a record's), the failure
was the filesystem's: the run stops.
"""
import contextlib
import csv
import datetime
import functools
import hashlib
import io
import json
import os
import uuid

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import trigger, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas import avro_schema
from transforms.plumbing.avro_files import AvroContainerWriter, compile_encoder, schema_json_bytes
from transforms.plumbing.direct_runner import on_the_direct_runner
from transforms.plumbing.event_windows import fixed_window, group_in_batches, in_global_window, window_start_seconds
from transforms.plumbing.local_windows import HeldAsIs, keyed_for_local_windows
from transforms.plumbing.metrics import counter
from transforms.plumbing.packed_records import DeflatedBytesListCoder, pack, unpack

DEFAULT_ALLOWED_LATENESS_SECONDS = 24 * 3600
OWNER_ONLY = 0o077  # files 0600, folders 0700 on local disks
# The global window ends a day before the end of time; with this lateness it outlives even a watermark at
# the end of time, so what a timer emits while a stream drains (a spike alert) is still written.
GLOBAL_WINDOW_NEVER_CLOSES = Duration(seconds=2 * 24 * 3600)
DIGEST_CHARS = 20  # 80 bits of SHA-256: no two panes of one destination and window collide in practice


@functools.lru_cache(maxsize=4096)
def window_label(win):
    """`20261123T100000Z--20261123T110000Z` (ISO 8601 basic, UTC) for an event-time window; `unwindowed` for
    the global one. No `:` in it: Hadoop and Spark refuse file names that hold one."""
    if isinstance(win, window.GlobalWindow):
        return "unwindowed"
    try:
        start = win.start.to_utc_datetime().strftime("%Y%m%dT%H%M%SZ")
        end = win.end.to_utc_datetime().strftime("%Y%m%dT%H%M%SZ")
    except (OverflowError, ValueError):
        return "undated"
    return f"{start}--{end}"


def record_line(record):
    """A canonical byte form of a record: equal records give equal lines, whatever their key order.

    It only names and orders a file's records, so orjson (~6x faster) may write NaN as null; what it cannot
    write at all (integers past 64 bits, lone surrogates, sets) falls back to the json module. orjson's
    bytes keep the 4 KB buffer they were written in, and a line is held until its pane fires (a streaming
    drain fires every bundle row at once), so the line is copied to its own size: ~0.4 KB, +0.16 µs."""
    try:
        return bytes(memoryview(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)))
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(record, sort_keys=True, default=repr, ensure_ascii=False).encode("utf-8", "surrogatepass")


def line_record(line):
    """The record of a `record_line` (of a record that survives JSON unchanged: only JSON types)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # the json module's line: a lone surrogate in a string
        return json.loads(line.decode("utf-8", "surrogatepass"))


def digest_of(sorted_lines):
    return hashlib.sha256(b"\n".join(sorted_lines)).hexdigest()[:DIGEST_CHARS]


def digest_of_encoded(sorted_encodings):
    """The digest of records grouped as their sink's encodings (`GROUPED_ENCODED`), each length-prefixed:
    an encoding may hold any byte."""
    digest = hashlib.sha256()
    for encoded in sorted_encodings:
        digest.update(len(encoded).to_bytes(4, "big"))
        digest.update(encoded)
    return digest.hexdigest()[:DIGEST_CHARS]


def content_order(records):
    """(digest, records in canonical order): the same records in any arrival order give the same digest."""
    lines = sorted((record_line(record), index) for index, record in enumerate(records))
    return digest_of([line for line, _ in lines]), [records[index] for _, index in lines]


def content_order_of_lines(lines):
    """`content_order` for records grouped as their lines: the same digest and order, records decoded."""
    lines = sorted(lines)
    return digest_of(lines), [line_record(line) for line in lines]


def remove_stale_temporaries(output_dir):
    """Removes the hidden `.<digest>-<uuid>.tmp` files a killed run left under `output_dir`; returns how many.

    A run's own temporaries live only while one file is written, so at the start of a run every one found
    is another run's leftover (readers skip them meanwhile: Hive-style readers ignore names starting with a
    dot). A run still writing into the same output would see its rename fail and retry the bundle."""
    pattern = FileSystems.join(output_dir, "**", ".*.tmp")
    stale = [metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list]
    if stale:
        FileSystems.delete(stale)
    return len(stale)


REFUSED = "refused"
MAX_LABELS_HELD = 10_000  # window labels a keying step keeps (a year of hourly windows)
# How records cross a sink's grouping (WriteWindowedFiles says which to use when)
GROUPED_PACKED = "packed"
GROUPED_AS_LINES = "lines"
GROUPED_ENCODED = "encoded"


class _GroupedForm:
    """How a sink's records cross its grouping: what a record is keyed as (`of`), a pane's digest and write
    order (`ordered`), how a sink writes one (`writer`); and, for the forms whose records a sink may refuse
    as they are written, the digest of those a refusal left (`digest`) and what a refused one is (`refused`)."""

    refused_when_written = True

    def writer(self, sink):
        return sink.write

    def digest(self, records):
        return content_order(records)[0]

    def refused(self, record):
        return record


class _Packed(_GroupedForm):
    """Records packed (packed_records.py): any types."""

    def of(self, record):
        return pack(record)

    def ordered(self, grouped):
        return content_order([unpack(packed) for packed in grouped])


class _Lines(_GroupedForm):
    """Records as their canonical lines (JSON types only), decoded to be written."""

    def of(self, record):
        return record_line(record)

    def ordered(self, grouped):
        return content_order_of_lines(grouped)


class _WrittenAsGrouped:
    """A form whose grouped bytes are written as they are: sorted, and digested by `digest`."""

    def ordered(self, grouped):
        ordered = sorted(grouped)
        return self.digest(ordered), ordered


class _LinesTheSinkReads(_WrittenAsGrouped, _Lines):
    """Lines a sink parses itself (`reads_lines`): nothing is decoded here; a line the sink refuses is
    refused as its record."""

    digest = staticmethod(digest_of)

    def writer(self, sink):
        return sink.write_line

    def refused(self, line):
        return line_record(line)


class _Encoded(_WrittenAsGrouped, _GroupedForm):
    """Each record as its sink's encoding (`encoded`), made as it is keyed, where a refusal is made: one sink
    (and its encoder) for every record."""

    refused_when_written = False
    digest = staticmethod(digest_of_encoded)

    def __init__(self, sink):
        self.of = sink().encoded

    def writer(self, sink):
        return sink.write_encoded


def grouped_form(grouped_as, sink):
    """The form `grouped_as` names, for the records of `sink` (a factory of sinks)."""
    if grouped_as == GROUPED_ENCODED:
        return _Encoded(sink)
    if grouped_as == GROUPED_AS_LINES:
        return _LinesTheSinkReads() if getattr(sink(), "reads_lines", False) else _Lines()
    return _Packed()


class _KeyByDestinationAndLabel(beam.DoFn):
    """Keys each element by (destination, label of its fixed event-time window of `label_seconds`, or
    `unlabelled`); an element no folder can be named for is refused alone.

    Batch labels every element (`unlabelled` = "unwindowed") so one grouping in the global window does the
    work of a windowed one (transforms/plumbing/event_windows.py). Streaming leaves the label None, to be read
    from the pane's window, unless `label_seconds` names files flushed by processing time as a batch run
    names them."""

    def __init__(self, destination, grouped_as, sink, label_seconds, unlabelled):
        self.destination = destination
        self.grouped_as = grouped_as
        self.sink = sink
        self.label_seconds = label_seconds
        self.unlabelled = unlabelled

    def setup(self):
        self.form = grouped_form(self.grouped_as, self.sink)
        self.labels = {}

    def label_of(self, micros):
        """The label of the fixed window holding the instant `micros`, made once per window: a worker's records fall in
        few windows, and a label costs an IntervalWindow, two datetimes and two strftime calls (~6 µs)."""
        start = window_start_seconds(micros, self.label_seconds)
        label = self.labels.get(start)
        if label is None:
            if len(self.labels) >= MAX_LABELS_HELD:
                self.labels.clear()
            label = self.labels[start] = window_label(fixed_window(micros, self.label_seconds))
        return label

    def process(self, element, stamped=beam.DoFn.WindowedValueParam):
        label = self.label_of(stamped.timestamp_micros) if self.label_seconds else self.unlabelled
        try:
            yield (self.destination(element), label), self.form.of(element)
        except Exception as error:
            yield beam.pvalue.TaggedOutput(REFUSED, (element, (type(error), repr(error), None)))


class _WriteContentAddressedFn(beam.DoFn):
    """((destination, label), records) of one pane -> one file named by its window and its records' digest;
    records the sink cannot encode -> the `refused` output. The records arrive packed (packed_records.py),
    as their JSON lines or as the sink's encodings (`grouped_as`)."""

    def __init__(self, path, sink, suffix, grouped_as):
        self.path = path
        self.sink = sink
        self.suffix = suffix
        self.grouped_as = grouped_as
        self.already_written = counter("files_already_written")
        self.refused = counter("records_refused_by_sinks")

    def setup(self):
        os.umask(OWNER_ONLY)  # workers may be other processes than the one that ran `tipline run`
        self.folders = set()
        self.form = grouped_form(self.grouped_as, self.sink)

    def process(self, keyed, win=beam.DoFn.WindowParam):
        (destination, label), records = keyed
        records = list(records)
        if not records:
            return
        folder = FileSystems.join(self.path, destination)
        self.ensure_folder(folder)
        label = label or window_label(win)
        digest, ordered = self.form.ordered(records)
        try:
            yield from self.write_unless_written(ordered, digest, folder, label)
        except IOError:
            if not self.form.refused_when_written:
                raise
            accepted, refusals = self.refusals(ordered)
            if not refusals:
                raise  # every record encodes: the filesystem failed
            for refusal in refusals:
                self.refused.inc()
                yield beam.pvalue.TaggedOutput(REFUSED, refusal)
            if accepted:
                yield from self.write_unless_written(accepted, self.form.digest(accepted), folder, label)

    def write_unless_written(self, ordered, digest, folder, label):
        final = FileSystems.join(folder, f"{label}-{digest}{self.suffix}")
        if FileSystems.exists(final):  # an earlier run (or attempt) wrote these very records
            self.already_written.inc()
            return
        self.write_then_rename(ordered, FileSystems.join(folder, f".{digest}-{uuid.uuid4().hex}.tmp"), final)
        yield final

    def refusals(self, records):
        """(records the sink encodes alone, [(record, (type, repr(error), None)) of those it refuses]), in memory;
        a record the sink takes as its line is refused as the line's record."""
        accepted, refusals = [], []
        for record in records:
            try:
                sink = self.sink()
                sink.open(io.BytesIO())
                self.form.writer(sink)(record)
                sink.flush()
            except OSError:  # storage failing, not this record: the write's own error stops the run
                accepted.append(record)
            except Exception as error:  # whatever else the sink raises on this record alone is the record's
                refusals.append((self.form.refused(record), (type(error), repr(error), None)))
            else:
                accepted.append(record)
        return accepted, refusals

    def ensure_folder(self, folder):
        """Once per worker and folder: a remote filesystem's existence check costs a request."""
        if folder not in self.folders:
            if not FileSystems.exists(folder):
                try:
                    FileSystems.mkdirs(folder)
                except IOError:  # another worker made it first
                    pass
            self.folders.add(folder)

    def write_then_rename(self, records, temporary, final):
        """Raises (the bundle is retried, then the run stops) rather than lose a file: a reader never sees
        a partial file under a final name. Records grouped as the sink's encodings are written as such."""
        try:
            with FileSystems.create(temporary) as handle:
                sink = self.sink()
                sink.open(handle)
                write = self.form.writer(sink)
                for record in records:
                    write(record)
                sink.flush()
            FileSystems.rename([temporary], [final])
        except Exception as error:
            with contextlib.suppress(Exception):  # the temporary may not exist; the error below is what matters
                FileSystems.delete([temporary])
            raise IOError(f"{final} was not written: is the sink folder writable? ({error})") from error


class WriteWindowedFiles(beam.PTransform):
    """Windows elements by event time and writes one file per window pane and destination.

    With `window_seconds=None` (for records without a trustworthy event time, such as unparseable
    messages) elements stay in the global window: a bounded run writes one file at its end, an
    unbounded one a file every `flush_seconds` of processing time, and the rest when the input ends.
    `label_seconds` then still names (and splits) an unbounded run's files by each record's fixed event-time
    window of that size, as a bounded run with `window_seconds=label_seconds` names them: a stream flushed
    by processing time so that no late record is dropped (routed reports) and a batch backfill name their
    files alike.

    How the records cross the grouping (`grouped_as`), each moved and copied by a runner as bytes, far faster
    than as dicts: `GROUPED_PACKED` (the default: transforms/plumbing/packed_records.py), so that a row with
    datetimes is pickled once rather than through Beam's dict coder, which pickles each datetime apart;
    `GROUPED_AS_LINES` for records of JSON types only (no datetimes, NaN or 64-bit overflow), as their
    canonical JSON lines, or for any records of a sink that parses those lines itself (`reads_lines`:
    ParquetSink, against its Arrow schema, datetimes as ISO 8601 text; NaN would be written as null);
    `GROUPED_ENCODED` for a sink that encodes a record alone (`encoded(record)`, then
    `write_encoded(encoding)`: an Avro datum), encoded once when keyed, so a record the sink refuses is refused
    there, a file's records are ordered and digested as their encodings, and nothing is decoded after the
    grouping.

    Returns the paths written; with `with_refusals=True`, `(paths, refused)`, `refused` holding
    (record, (type, repr(error), None)) for each record the sink could not encode (else such a record stops the run).
    """

    def __init__(self, path, destination, sink, suffix, window_seconds=3600,
                 allowed_lateness_seconds=DEFAULT_ALLOWED_LATENESS_SECONDS, flush_seconds=60, grouped_as=GROUPED_PACKED,
                 with_refusals=False, label_seconds=None):
        super().__init__()
        self.label_seconds = label_seconds
        self.with_refusals = with_refusals
        self.grouped_as = grouped_as
        self.path = path
        self.destination = destination
        self.sink = sink
        self.suffix = suffix
        self.window_seconds = window_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.flush_seconds = flush_seconds

    def streaming_windowing(self):
        """Fixed windows firing on time and per late element; or, unwindowed, a flush every few seconds."""
        if self.window_seconds is None:
            return beam.WindowInto(
                window.GlobalWindows(),
                trigger=trigger.AfterWatermark(early=trigger.AfterProcessingTime(self.flush_seconds),
                                               late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=GLOBAL_WINDOW_NEVER_CLOSES)
        return beam.WindowInto(
            window.FixedWindows(self.window_seconds),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
            allowed_lateness=Duration(seconds=self.allowed_lateness_seconds))

    def expand(self, elements):
        flushed_locally = (not elements.is_bounded and self.window_seconds is None
                           and on_the_direct_runner(elements.pipeline))
        if elements.is_bounded:
            keyed = (in_global_window(elements)
                     | "KeyByDestinationAndWindow" >> beam.ParDo(_KeyByDestinationAndLabel(
                         self.destination, self.grouped_as, self.sink, self.window_seconds, unlabelled="unwindowed")
                     ).with_outputs(REFUSED, main="keyed"))
        else:
            keyed = (elements
                     | "Window" >> (beam.WindowInto(window.GlobalWindows()) if flushed_locally
                                    else self.streaming_windowing())
                     | "KeyByDestination" >> beam.ParDo(_KeyByDestinationAndLabel(
                         self.destination, self.grouped_as, self.sink,
                         self.label_seconds if self.window_seconds is None else None, unlabelled=None)
                     ).with_outputs(REFUSED, main="keyed"))
        if elements.is_bounded:
            grouping = group_in_batches(DeflatedBytesListCoder())  # every grouped form is bytes
        else:
            grouping = _FlushedEvery(self.flush_seconds) if flushed_locally else beam.GroupByKey()
        written = (keyed.keyed
                   | "GroupPane" >> grouping
                   | "WriteFiles" >> beam.ParDo(
                       _WriteContentAddressedFn(self.path, self.sink, self.suffix, self.grouped_as)
                   ).with_outputs(REFUSED, main="paths"))
        refused = ((keyed[REFUSED] | "UnwindowUnkeyable" >> beam.WindowInto(window.GlobalWindows()),
                    written[REFUSED] | "UnwindowUnwritable" >> beam.WindowInto(window.GlobalWindows()))
                   | "Refused" >> beam.Flatten())
        if self.with_refusals:
            return written.paths, refused
        _ = refused | "StopOnRefusal" >> beam.Map(_stop_on_refusal)
        return written.paths


class _FlushEveryFn(beam.DoFn):
    """Streaming on the DirectRunner, for files outside event-time windows (`window_seconds=None`): the
    panes of `streaming_windowing`'s processing-time trigger and a GroupByKey, ((destination, label), records
    keyed since the last flush), every `flush_seconds` after a flush's first record and when the input ends,
    from one state value holding the records under their keys. The flush follows the wall clock, as the
    local source does: a TestStream's processing time does not move it (its files flush when it ends).

    Why: the DirectRunner's grouping behind that trigger keeps every (destination, label) key it has seen
    for the whole run, and per buffered record a WindowedValue and an entry of the trigger's state (a 5-minute
    soak at 200 reports/s held ~45,000 entries, 11 MB, in 1,219 keys, growing by the hour labels)."""
    PENDING = ReadModifyWriteStateSpec("pending", HeldAsIs())  # {(destination, label): [records]}
    FLUSH = TimerSpec("flush", TimeDomain.REAL_TIME)
    END = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, flush_seconds):
        self.flush_seconds = flush_seconds

    def process(self, element, pending=beam.DoFn.StateParam(PENDING), flush=beam.DoFn.TimerParam(FLUSH),
                end=beam.DoFn.TimerParam(END)):
        _, (key, record) = element
        held = pending.read()
        if held is None:  # the first record since the last flush
            held = {}
            flush.set(Timestamp.now() + Duration(seconds=self.flush_seconds))
            end.set(window.GlobalWindow().max_timestamp())
        held.setdefault(key, []).append(record)
        pending.write(held)

    @on_timer(FLUSH)
    def on_flush(self, pending=beam.DoFn.StateParam(PENDING), end=beam.DoFn.TimerParam(END)):
        end.clear()
        yield from self.flushed(pending)

    @on_timer(END)
    def on_end(self, pending=beam.DoFn.StateParam(PENDING), flush=beam.DoFn.TimerParam(FLUSH)):
        flush.clear()
        yield from self.flushed(pending)

    @staticmethod
    def flushed(pending):
        held = pending.read() or {}
        pending.clear()
        return list(held.items())


class _FlushedEvery(beam.PTransform):
    def __init__(self, flush_seconds):
        super().__init__()
        self.flush_seconds = flush_seconds

    def expand(self, keyed):
        return (keyed
                | "UnderOneKey" >> beam.Map(keyed_for_local_windows)
                | "FlushEvery" >> beam.ParDo(_FlushEveryFn(self.flush_seconds)))


def _stop_on_refusal(refusal):
    """Without a place for refused records, one stops the run (as before refusals had an output)."""
    _, (error_type, error, _) = refusal
    raise IOError(f"a record could not be written: {error_type.__name__}: {error}")


class JsonLinesSink(fileio.FileSink):
    """One JSON object per line."""

    def open(self, fh):
        self._fh = fh

    def write(self, record):
        self._fh.write(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        self._fh.write(b"\n")

    def flush(self):
        self._fh.flush()


class CsvSink(fileio.FileSink):
    """CSV with a header row, the given columns in order (for a person to read; JSON Lines for machines)."""

    def __init__(self, columns):
        self.columns = columns

    def open(self, fh):
        self._fh = fh
        self._text = io.StringIO()
        self._writer = csv.DictWriter(self._text, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()

    def write(self, record):
        self._writer.writerow(record)

    def flush(self):
        self._fh.write(self._text.getvalue().encode("utf-8"))
        self._text = io.StringIO()
        self._writer = csv.DictWriter(self._text, fieldnames=self.columns, extrasaction="ignore")


@functools.lru_cache(maxsize=None)
def _schema_and_encoder(schema_name, repeated):
    """(schema, its header bytes, its compiled encoder), made once per process."""
    schema = avro_schema(schema_name)
    return schema, schema_json_bytes(schema), compile_encoder(schema, repeated)


class AvroSink(fileio.FileSink):
    """Avro container files with a schema from `schemas/` (deflate-compressed), for records already checked
    against it (BuildRoutedRecords checks each, so a bad one is a dead letter): encoded by the schema's compiled
    encoder (transforms/plumbing/avro_files.py), about 5x faster than fastavro's Writer, and byte-identical
    for the same records."""

    def __init__(self, schema_name, repeated=()):
        self.schema_name = schema_name
        self.repeated = tuple(repeated)  # top-level fields mostly equal from record to record (compile_encoder)

    def open(self, fh):
        schema, schema_json, encode = _schema_and_encoder(self.schema_name, self.repeated)
        self._writer = AvroContainerWriter(fh, schema, encode, schema_json=schema_json)

    def write(self, record):
        self._writer.write(record)

    def encoded(self, record):
        """The record's Avro datum alone (`GROUPED_ENCODED`): the same bytes `write` puts in a block."""
        datum = bytearray()
        _schema_and_encoder(self.schema_name, self.repeated)[2](datum, record)
        return bytes(datum)

    def write_encoded(self, datum):
        self._writer.write_datum(datum)

    def flush(self):
        self._writer.close()


class ParquetSink(fileio.FileSink):
    """Parquet files: rows are buffered per file and written as one table when the file closes.

    `arrow_schema` is a `pyarrow.Schema`, or a function of a row giving it (when a destination's rows
    share a schema that depends on the destination); keys outside the schema are not written.

    Rows grouped as their record lines (`GROUPED_AS_LINES`, datetimes as ISO 8601 text) are written from the
    lines (`write_line`): Arrow's JSON reader parses them against the schema in C++, ~5x less CPU than
    unpickling rows and `Table.from_pylist` (2.5 -> 0.5 s for 100,000 bundle rows), and the file is
    byte-identical. Lines Arrow will not parse (a lone surrogate, an integer past 64 bits) are decoded in
    Python, their timestamp fields read back from their text, and written as rows.
    """
    reads_lines = True

    def __init__(self, arrow_schema):
        self.arrow_schema = arrow_schema

    def open(self, fh):
        self._fh = fh
        self._rows = []
        self._lines = []

    def write(self, record):
        self._rows.append(record)

    def write_line(self, line):
        """A row as its `record_line`."""
        self._lines.append(line)

    def flush(self):
        table = self.table_of_lines(self._lines) if self._lines else self.table_of_rows(self._rows)
        if table is not None:
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            self._fh.write(buffer.getvalue())
        self._rows, self._lines = [], []

    def schema_of(self, row):
        return self.arrow_schema(row) if callable(self.arrow_schema) else self.arrow_schema

    def table_of_rows(self, rows):
        return pa.Table.from_pylist(rows, schema=self.schema_of(rows[0])) if rows else None

    def table_of_lines(self, lines):
        schema = self.schema_of(line_record(lines[0]))
        options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        blocks = pa_json.ReadOptions(block_size=max(1 << 20, 2 * max(map(len, lines))))  # a line within one block
        try:
            parsed = pa_json.read_json(io.BytesIO(b"\n".join(lines)), parse_options=options, read_options=blocks)
            return pa.Table.from_arrays(parsed.select(schema.names).combine_chunks().columns, schema=schema)
        except (pa.ArrowException, KeyError):  # KeyError: a schema column Arrow did not give back
            return pa.Table.from_pylist([with_timestamps(line_record(line), schema) for line in lines], schema=schema)


def with_timestamps(row, schema):
    """A row decoded from its line with its timestamp fields' ISO 8601 text read back as datetimes."""
    for schema_field in schema:
        value = row.get(schema_field.name)
        if isinstance(value, str) and pa.types.is_timestamp(schema_field.type):
            row[schema_field.name] = datetime.datetime.fromisoformat(value)
    return row
