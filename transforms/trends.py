"""TrendCounts: event-time windowed counts analysts query, written as Parquet under `<output>/trends/`.

Hourly fixed windows of routed reports by jurisdiction, country, incident type and match class. Late
reports (within the allowed lateness) fire the window again with the accumulated total; each row names
its pane, so a query that keeps the latest pane per window gets the right totals.
Rows carry no IP addresses, user identifiers or media: only the dimensions below and counts.
"""
import functools

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms.windowed_files import ParquetSink, WriteWindowedFiles

HOURLY_TABLE = "reports_hourly"
DIMENSIONS = ("jurisdiction", "country", "incident_type", "match_class")

TREND_SCHEMA = pa.schema([
    ("window_start", pa.timestamp("us", tz="UTC")),
    ("window_end", pa.timestamp("us", tz="UTC")),
    ("jurisdiction", pa.string()),
    ("country", pa.string()),
    ("incident_type", pa.string()),
    ("match_class", pa.string()),
    ("reports", pa.int64()),
    ("pane_index", pa.int64()),
    ("pane_timing", pa.string()),
])


def trend_key(record):
    """The dimensions a routed record is counted under."""
    return (record["jurisdiction"], record["location"]["countryCode"], record["incidentType"], record["matchSummary"])


class _TrendRowFn(beam.DoFn):
    def process(self, keyed_count, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        key, count = keyed_count
        yield {
            "window_start": win.start.to_utc_datetime(has_tz=True),
            "window_end": win.end.to_utc_datetime(has_tz=True),
            **dict(zip(DIMENSIONS, key)),
            "reports": count,
            "pane_index": pane.index,
            "pane_timing": PaneInfoTiming.to_string(pane.timing),
        }


def partition_folder(table):
    """`<table>/dt=YYYY-MM-DD`: Hive-style partitions by the window's UTC date."""
    return lambda row: f"{table}/dt={row['window_start']:%Y-%m-%d}"


class TrendCounts(beam.PTransform):
    """Counts routed records per hour and dimension; writes `trends/reports_hourly/dt=.../*.parquet`."""

    def __init__(self, output_dir, allowed_lateness_seconds=24 * 3600):
        super().__init__()
        self.output_dir = output_dir
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(self, routed_records):
        rows = (
            routed_records
            | "KeyByDimensions" >> beam.Map(lambda record: (trend_key(record), 1))
            | "HourlyWindows" >> beam.WindowInto(
                window.FixedWindows(3600),
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=Duration(seconds=self.allowed_lateness_seconds))
            | "Count" >> beam.CombinePerKey(sum)
            | "ToRow" >> beam.ParDo(_TrendRowFn()))
        _ = rows | "WriteTrendFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/trends",
            destination=partition_folder(HOURLY_TABLE),
            sink=functools.partial(ParquetSink, TREND_SCHEMA),
            suffix=".parquet",
            allowed_lateness_seconds=self.allowed_lateness_seconds)
        return rows
