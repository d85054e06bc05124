"""WriteWindowedFiles: a folder per destination, a file set per window, late panes never overwrite."""
import json
import pathlib

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from transforms.windowed_files import JsonLinesSink, WriteWindowedFiles

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
    assert [name[:41] for name in names] == [
        "1970-01-01T00:00:00--1970-01-01T01:00:00-",
        "1970-01-01T01:00:00--1970-01-01T02:00:00-"]


def test_a_late_pane_is_written_beside_the_on_time_pane(tmp_path):
    stream = (TestStream()
              .add_elements([TimestampedValue({"id": 1, "dest": "GB"}, 10)])
              .advance_watermark_to(HOUR + 60)
              .add_elements([TimestampedValue({"id": 2, "dest": "GB"}, 20)])  # late, within lateness
              .advance_watermark_to_infinity())
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        write(p, stream, tmp_path)
    assert read_tree(tmp_path) == {"dest=GB": [{"id": 1, "dest": "GB"}, {"id": 2, "dest": "GB"}]}
    assert len(list((tmp_path / "dest=GB").glob("*.jsonl"))) == 2
