"""WriteWindowedFiles: a folder per destination, a file per window pane, late panes never overwrite,
re-runs never duplicate (content-addressed names)."""
import datetime
import functools
import io
import json
import pathlib
import random
import tracemalloc

import apache_beam as beam
import fastavro
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from schemas.tables import BUNDLE_SCHEMA
from tests.test_avro_files import varied_records
from transforms.plumbing.direct_runner import count_every_bundle
from transforms.plumbing.windowed_files import (GROUPED_AS_LINES, GROUPED_ENCODED, GROUPED_PACKED, AvroSink,
                                               JsonLinesSink, ParquetSink, WriteWindowedFiles, record_line)

HOUR = 3600


def read_tree(root):
    """{relative folder: sorted records} of every JSON Lines file below root."""
    found = {}
    for path in pathlib.Path(root).rglob("*.jsonl"):
        folder = str(path.parent.relative_to(root))
        found.setdefault(folder, []).extend(json.loads(line) for line in path.read_text().splitlines())
    return {folder: sorted(records, key=lambda r: r["id"]) for folder, records in found.items()}


def write(p, elements, root):
    return (p | elements | WriteWindowedFiles(
        str(root), destination=lambda r: f"dest={r['dest']}", sink=JsonLinesSink, suffix=".jsonl"))


def test_each_destination_gets_its_own_folder_and_one_file_per_window(tmp_path):
    records = [{"id": 1, "dest": "GB"}, {"id": 2, "dest": "US-WA"}, {"id": 3, "dest": "GB"}]
    times = [10, 20, HOUR + 5]
    with TestPipeline() as p:
        write(p, beam.Create([TimestampedValue(r, t) for r, t in zip(records, times)]), tmp_path)
    assert read_tree(tmp_path) == {"dest=GB": [records[0], records[2]], "dest=US-WA": [records[1]]}
    names = sorted(path.name for path in (tmp_path / "dest=GB").glob("*.jsonl"))
    assert [name[:35] for name in names] == [
        "19700101T000000Z--19700101T010000Z-",
        "19700101T010000Z--19700101T020000Z-"]


def run_batch(records, root):
    """Runs `records` (all at t=10) into root; returns the run's `files_already_written` count."""
    p = beam.Pipeline()
    write(p, beam.Create([TimestampedValue(r, 10) for r in records]), root)
    return already_written(p.run())


def run_stream(root):
    """An on-time pane then a late one (within the allowed lateness) for one destination and window."""
    stream = (TestStream()
              .add_elements([TimestampedValue({"id": 1, "dest": "GB"}, 10)])
              .advance_watermark_to(HOUR + 60)
              .add_elements([TimestampedValue({"id": 2, "dest": "GB"}, 20)])  # late, within lateness
              .advance_watermark_to_infinity())
    count_every_bundle()  # the streaming DirectRunner would otherwise keep one bundle's counts per step
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = TestPipeline(options=options)
    write(p, stream, root)
    return already_written(p.run())


def already_written(result):
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_name("files_already_written"))["counters"]
    return sum(counter.committed for counter in found)


def names(root):
    return sorted(str(path.relative_to(root)) for path in pathlib.Path(root).rglob("*") if path.is_file())


def test_a_late_pane_is_written_beside_the_on_time_pane(tmp_path):
    assert run_stream(tmp_path) == 0
    assert read_tree(tmp_path) == {"dest=GB": [{"id": 1, "dest": "GB"}, {"id": 2, "dest": "GB"}]}
    assert len(list((tmp_path / "dest=GB").glob("*.jsonl"))) == 2


def test_a_replayed_stream_skips_both_panes(tmp_path):
    run_stream(tmp_path)
    written = names(tmp_path)
    assert run_stream(tmp_path) == 2
    assert names(tmp_path) == written
    assert read_tree(tmp_path) == {"dest=GB": [{"id": 1, "dest": "GB"}, {"id": 2, "dest": "GB"}]}


def test_a_rerun_skips_the_files_it_already_wrote(tmp_path):
    records = [{"id": 1, "dest": "GB"}, {"id": 2, "dest": "GB"}, {"id": 3, "dest": "SE"}]
    assert run_batch(records, tmp_path) == 0
    written = names(tmp_path)
    assert run_batch(list(reversed(records)), tmp_path) == 2  # same records, other order: same names
    assert names(tmp_path) == written  # and no temporary file left behind
    assert read_tree(tmp_path) == {"dest=GB": records[:2], "dest=SE": records[2:]}


def test_other_records_for_the_same_window_get_a_file_of_their_own(tmp_path):
    run_batch([{"id": 1, "dest": "GB"}], tmp_path)
    assert run_batch([{"id": 1, "dest": "GB"}, {"id": 2, "dest": "GB"}], tmp_path) == 0
    assert len(names(tmp_path)) == 2  # a replay of a different pane is not mistaken for the first one


class _FailingSink(JsonLinesSink):
    """A sink whose storage fails mid-file (a full disk, a lost connection)."""

    def write(self, record):
        raise OSError("No space left on device")


def test_a_failed_write_stops_the_run_and_leaves_no_partial_file(tmp_path):
    with pytest.raises(Exception, match="was not written: is the sink folder writable"):  # noqa: PT011
        with beam.Pipeline() as p:
            _ = (p | beam.Create([TimestampedValue({"id": 1, "dest": "GB"}, 10)])
                 | WriteWindowedFiles(str(tmp_path), destination=lambda r: f"dest={r['dest']}",
                                      sink=_FailingSink, suffix=".jsonl"))
    assert names(tmp_path) == []  # neither a final file nor the temporary one


@pytest.mark.parametrize("streaming", [False, True])
def test_json_records_grouped_as_lines_give_the_same_files_as_grouped_as_dicts(tmp_path, streaming):
    records = [{"id": n, "dest": "GB" if n % 2 else "US-WA", "name": "snow \u2603 \U0001F600", "big": 2 ** 63 - n,
                "nested": {"flags": [True, None, False], "text": "line\nbreak"}} for n in range(40)]
    timestamped = [TimestampedValue(record, 60 * record["id"]) for record in records]
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = streaming
    for as_lines in (False, True):
        with TestPipeline(options=options) as p:
            source = (TestStream().add_elements(timestamped).advance_watermark_to_infinity() if streaming
                      else beam.Create(timestamped))
            _ = p | source | WriteWindowedFiles(
                str(tmp_path / str(as_lines)), destination=lambda r: f"dest={r['dest']}", sink=JsonLinesSink,
                suffix=".jsonl", grouped_as=GROUPED_AS_LINES if as_lines else GROUPED_PACKED)
    as_dicts, as_lines = ({str(path.relative_to(tmp_path / flag)): path.read_bytes()
                           for path in (tmp_path / flag).rglob("*.jsonl")} for flag in ("False", "True"))
    assert as_dicts == as_lines and len(as_dicts) == 2
    assert read_tree(tmp_path / "True") == {"dest=GB": records[1::2], "dest=US-WA": records[0::2]}


def write_routed(tmp_path, name, records, streaming, grouped_as=GROUPED_ENCODED):
    """Routed records (all in one hour) into `tmp_path / name` by jurisdiction as Avro; the refused ones."""
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = streaming
    timestamped = [TimestampedValue(record, 60 + index) for index, record in enumerate(records)]
    with TestPipeline(options=options) as p:
        source = (TestStream().add_elements(timestamped).advance_watermark_to_infinity() if streaming
                  else beam.Create(timestamped))
        _, refused = p | source | WriteWindowedFiles(
            str(tmp_path / name), destination=lambda r: f"jurisdiction={r['jurisdiction']}",
            sink=lambda: AvroSink("routed_report"), suffix=".avro", grouped_as=grouped_as, with_refusals=True)
        _ = refused | beam.Map(lambda refusal: (tmp_path / name / "refused").write_text(
            refusal[0]["reportId"] + " " + refusal[1][1]))
    return {str(path.relative_to(tmp_path / name)): path.read_bytes() for path in (tmp_path / name).rglob("*.avro")}


def avro_records(files):
    """{folder: records sorted by reportId} of Avro `files` ({relative path: bytes})."""
    found = {}
    for path, data in files.items():
        found.setdefault(path.split("/")[0], []).extend(fastavro.reader(io.BytesIO(data)))
    return {folder: sorted(records, key=lambda r: r["reportId"]) for folder, records in found.items()}


@pytest.mark.parametrize("streaming", [False, True])
def test_records_grouped_as_avro_datums_give_the_same_files_in_any_arrival_order(tmp_path, streaming):
    records = varied_records(40)
    shuffled = random.Random(5).sample(records, len(records))
    as_datums = write_routed(tmp_path, "arrived", records, streaming)
    assert write_routed(tmp_path, "shuffled", shuffled, streaming) == as_datums  # names and bytes
    assert len(as_datums) == 3  # GB, US-CA-LA, UNKNOWN: one file each
    as_packed = write_routed(tmp_path, "packed", records, streaming, grouped_as=GROUPED_PACKED)
    assert avro_records(as_datums) == avro_records(as_packed)  # the same records, read back
    assert sum(len(found) for found in avro_records(as_datums).values()) == len(records)


def test_a_record_the_avro_encoder_refuses_is_refused_alone_when_keyed(tmp_path):
    records = varied_records(6)
    records[2] = {**records[2], "victimCount": "many"}  # not an int
    files = write_routed(tmp_path, "out", records, streaming=False)
    refused_id, error = (tmp_path / "out" / "refused").read_text().split(" ", 1)
    assert refused_id == records[2]["reportId"] and error
    written = [record["reportId"] for found in avro_records(files).values() for record in found]
    assert sorted(written) == sorted(record["reportId"] for index, record in enumerate(records) if index != 2)


def bundle_rows(count):
    """Bundle rows (schemas/tables.py) with the values a JSON line could change: microseconds, instants before
    1970, nulls, empty and non-ASCII lists, a key outside the schema."""
    utc = datetime.timezone.utc
    rows = []
    for n in range(count):
        first = datetime.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=utc) + datetime.timedelta(hours=n, microseconds=n)
        rows.append({"bundle_id": f"bnd-{n:024x}", "signature": f"md5:{n:032x}" if n % 3 else f"bank:ncmec:é-{n}",
                     "signature_kind": "exact_hash", "window_start": first, "window_end": first + datetime.timedelta(days=1),
                     "first_seen": first, "last_seen": first + datetime.timedelta(seconds=n),
                     "reports": n + 1, "users": None if n % 4 == 0 else n, "esps": 1,
                     "jurisdictions": [] if n % 5 == 0 else ["GB", "US-CA-LA", "Ünknown"][: 1 + n % 3],
                     "pane_index": 0, "pane_timing": "ON_TIME", "dest": "a" if n % 2 else "b", "not_in_schema": {"x": n}})
    return rows


def write_bundle_rows(root, rows, grouped_as):
    """The rows as Parquet bundle files by `dest`; {relative path: bytes} and the refused rows."""
    refused_path = root / "refused.jsonl"
    with TestPipeline() as p:
        _, refused = (p | beam.Create([TimestampedValue(row, 60) for row in rows])
                      | WriteWindowedFiles(str(root), destination=lambda r: f"dest={r['dest']}",
                                           sink=functools.partial(ParquetSink, BUNDLE_SCHEMA), suffix=".parquet",
                                           window_seconds=24 * HOUR, grouped_as=grouped_as, with_refusals=True))
        _ = refused | beam.Map(lambda refusal: open(refused_path, "a").write(refusal[0]["bundle_id"] + "\n"))
    files = {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*.parquet")}
    return files, sorted(refused_path.read_text().split()) if refused_path.exists() else []


def test_parquet_rows_grouped_as_lines_give_the_same_files_as_rows_grouped_packed(tmp_path):
    rows = bundle_rows(60)
    as_lines, refused = write_bundle_rows(tmp_path / "lines", rows, GROUPED_AS_LINES)
    assert (as_lines, refused) == write_bundle_rows(tmp_path / "packed", rows, GROUPED_PACKED)  # names and bytes
    assert len(as_lines) == 2 and refused == []
    read_back = sorted((row for data in as_lines.values() for row in pq.read_table(io.BytesIO(data)).to_pylist()),
                       key=lambda row: row["bundle_id"])
    expected = [{name: row[name] for name in BUNDLE_SCHEMA.names} for row in rows]
    assert [{**row, "jurisdictions": row["jurisdictions"] or []} for row in read_back] == expected


def test_parquet_lines_arrow_will_not_parse_are_written_from_rows_and_a_row_parquet_refuses_is_refused_alone(tmp_path):
    rows = bundle_rows(8)
    rows[1]["reports"] = 2 ** 70  # past 64 bits: its line is the json module's, Arrow refuses the whole file
    rows[3]["esps"] = "many"  # not an int64: refused by Arrow's reader and by the rows' path alike
    rows[5]["window_end"] = "2026-11-23T10:00:00.5+00:00"  # text already: read as the instant it names
    lines_files, lines_refused = write_bundle_rows(tmp_path / "lines", rows, GROUPED_AS_LINES)
    packed_files, packed_refused = write_bundle_rows(tmp_path / "packed", [dict(row, window_end=None) if n == 5 else row
                                                                          for n, row in enumerate(rows)], GROUPED_PACKED)
    assert lines_refused == packed_refused == [rows[1]["bundle_id"], rows[3]["bundle_id"]]
    written = {row["bundle_id"]: row for data in lines_files.values() for row in pq.read_table(io.BytesIO(data)).to_pylist()}
    assert sorted(written) == sorted(row["bundle_id"] for n, row in enumerate(rows) if n not in (1, 3))
    assert written[rows[5]["bundle_id"]]["window_end"] == datetime.datetime(2026, 11, 23, 10, 0, 0, 500_000,
                                                                             tzinfo=datetime.timezone.utc)


def test_parquet_lines_are_parsed_by_arrow_not_decoded_row_by_row(monkeypatch):
    import transforms.plumbing.windowed_files as windowed_files

    rows = bundle_rows(30)
    lines = sorted(windowed_files.record_line(row) for row in rows)
    expected = ParquetSink(BUNDLE_SCHEMA).table_of_rows([windowed_files.line_record(line) | {
        name: value for name, value in row.items() if isinstance(value, datetime.datetime)}
        for line, row in zip(lines, sorted(rows, key=windowed_files.record_line))])
    monkeypatch.setattr(windowed_files, "with_timestamps", lambda row, schema: pytest.fail("decoded row by row"))
    table = ParquetSink(BUNDLE_SCHEMA).table_of_lines(lines)
    assert table.equals(expected) and table.schema.equals(BUNDLE_SCHEMA, check_metadata=True)


def test_a_keying_step_labels_each_record_as_its_fixed_window_names_it_with_labels_made_once(monkeypatch):
    import transforms.plumbing.windowed_files as windowed_files
    from apache_beam.transforms import window
    from apache_beam.utils.timestamp import Timestamp

    monkeypatch.setattr(windowed_files, "MAX_LABELS_HELD", 5)
    keying = windowed_files._KeyByDestinationAndLabel(lambda r: "d", GROUPED_AS_LINES, JsonLinesSink, HOUR, None)
    keying.setup()
    instants = range(-3 * HOUR * 10**6, 9 * HOUR * 10**6, 7 * 60 * 10**6)
    for micros in [*instants, *instants[::-1]]:
        assert keying.label_of(micros) == windowed_files.window_label(
            window.FixedWindows(HOUR).assign(window.WindowFn.AssignContext(Timestamp(micros=micros)))[0])
        assert len(keying.labels) <= 5
    assert keying.label_of(-1) == "19691231T230000Z--19700101T000000Z"


def test_a_held_line_takes_about_its_own_size_not_the_buffer_it_was_written_in():
    """Lines wait in a sink's grouping until their pane fires (a streaming drain fires every bundle row at
    once); orjson's output would keep its 4 KB writing buffer per line."""
    rows = bundle_rows(500)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        lines = [record_line(row) for row in rows]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    written = sum(map(len, lines))
    assert held < 2 * written, f"{held} bytes held for {written} bytes of lines"
