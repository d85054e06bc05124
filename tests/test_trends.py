"""TrendCounts: hourly counts per dimension, late reports re-fire the window with accumulated totals."""
import pathlib

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from transforms.trends import TrendCounts

HOUR = 3600


def record(jurisdiction, country, event_time, match="new"):
    return TimestampedValue({"jurisdiction": jurisdiction, "location": {"countryCode": country},
                             "incidentType": "Child Sex Tourism", "matchSummary": match}, event_time)


def row_summary(row):
    return (row["window_start"].hour, row["jurisdiction"], row["reports"], row["pane_timing"])


def test_batch_counts_per_hour_and_dimension_and_writes_partitioned_parquet(tmp_path):
    with TestPipeline() as p:
        rows = (p | beam.Create([record("GB", "GB", 10), record("GB", "GB", 20), record("US-WA", "US", 30),
                                 record("GB", "GB", HOUR + 1)])
                | TrendCounts(str(tmp_path)))
        assert_that(rows | beam.Map(row_summary), equal_to([
            (0, "GB", 2, "ON_TIME"), (0, "US-WA", 1, "ON_TIME"), (1, "GB", 1, "ON_TIME")]))
    files = sorted(pathlib.Path(tmp_path, "trends", "reports_hourly").rglob("*.parquet"))
    assert {path.parent.name for path in files} == {"dt=1970-01-01"}
    table = pq.read_table(files[0].parent).to_pylist()
    assert sum(row["reports"] for row in table) == 4
    assert set(table[0]) == {"window_start", "window_end", "jurisdiction", "country", "incident_type",
                             "match_class", "reports", "pane_index", "pane_timing"}


def test_late_reports_fire_again_with_the_accumulated_total(tmp_path):
    stream = (TestStream()
              .add_elements([record("GB", "GB", 10), record("GB", "GB", 20)])
              .advance_watermark_to(HOUR + 60)
              .add_elements([record("GB", "GB", 30)])  # late but within the allowed lateness
              .advance_watermark_to_infinity())
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        rows = p | stream | TrendCounts(str(tmp_path))
        assert_that(rows | beam.Map(lambda row: (row["reports"], row["pane_index"], row["pane_timing"])),
                    equal_to([(2, 0, "ON_TIME"), (3, 1, "LATE")]))
