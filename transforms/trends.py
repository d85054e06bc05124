"""TrendCounts: event-time windowed counts analysts query, as Hive-partitioned Parquet under `<output>/trends/`.

Two window kinds, hourly fixed windows and 24-hour windows sliding hourly, and one table per kind and
dimension: `hourly_total`, `hourly_by_jurisdiction`, `hourly_by_country`, `hourly_by_incident_type`,
`hourly_by_esp`, `hourly_by_match_class`, and the same six `sliding24h_...` tables. A table per dimension
rather than one wide table grouped by every dimension, because `users` and `bundles` count distinct
values: they do not add up across rows, so a wide table could not be rolled up to one dimension.

Counts: `reports`, `files`, `users` (distinct reported users, an ESP's user id being unique only within
that ESP) and `bundles` (distinct bundle ids). Rows carry no IP addresses, user ids or media.

How it is computed: routed records are first combined per hour and dimension value into partial tallies
(discarding panes: each report lands in exactly one partial per dimension), then the few partials are
merged into hourly and sliding windows (accumulating panes), so a report is not copied into 24 windows. Late reports within the allowed lateness
fire each window again with its full total; every row names its pane, so the latest pane per window and
dimension value is the right total. Reports later than that are dropped by the runner; they are counted
as `trend_input_reports - trend_counted_reports` (Beam metrics), which is exact once the run is drained.
"""
import datetime
import functools

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms.dead_letters import METRICS_NAMESPACE
from transforms.windowed_files import ParquetSink, WriteWindowedFiles

HOUR = 3600
DAY = 24 * HOUR
WINDOW_KINDS = {
    "hourly": window.FixedWindows(HOUR),
    "sliding24h": window.SlidingWindows(DAY, HOUR),
}
DIMENSIONS = ("jurisdiction", "country", "incident_type", "esp", "match_class")
TOTAL = "total"
COUNTS = ("reports", "files", "users", "bundles")

TIMESTAMP = pa.timestamp("us", tz="UTC")


def table_name(kind, dimension):
    return f"{kind}_{TOTAL}" if dimension == TOTAL else f"{kind}_by_{dimension}"


def table_schema(dimension):
    """window bounds, the dimension column (none for totals), the four counts, the pane."""
    dimension_columns = [] if dimension == TOTAL else [(dimension, pa.string())]
    return pa.schema(
        [("window_start", TIMESTAMP), ("window_end", TIMESTAMP)] + dimension_columns
        + [(count, pa.int64()) for count in COUNTS]
        + [("pane_index", pa.int64()), ("pane_timing", pa.string())])


TABLES = {table_name(kind, dimension): table_schema(dimension)
          for kind in WINDOW_KINDS for dimension in (TOTAL,) + DIMENSIONS}


def utc(moment):
    """A Beam Timestamp or epoch seconds as an aware UTC datetime."""
    seconds = moment.micros / 1e6 if isinstance(moment, Timestamp) else moment
    return datetime.datetime.fromtimestamp(0, datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def pane_columns(pane):
    """Which firing a row comes from: the latest pane_index per window is the total to use."""
    return {"pane_index": pane.index, "pane_timing": PaneInfoTiming.to_string(pane.timing)}


def late_firing_windows(window_fn, allowed_lateness_seconds, accumulate, bounded=False):
    """Event-time windows that fire when the watermark passes, then once per late element.

    Bounded input has no late data: it keeps Beam's default trigger, and so the runner's fast combining.
    """
    if bounded:
        return beam.WindowInto(window_fn)
    return beam.WindowInto(
        window_fn,
        trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
        accumulation_mode=(trigger.AccumulationMode.ACCUMULATING if accumulate
                           else trigger.AccumulationMode.DISCARDING),
        allowed_lateness=Duration(seconds=allowed_lateness_seconds))


def dimension_values(record):
    """The value of each dimension for a routed record (country may be None: unlocated)."""
    return (record["jurisdiction"], record["location"]["countryCode"], record["incidentType"],
            record["espId"], record["matchSummary"])


class Tally:
    """Partial counts of a set of reports; user and bundle sets stay inside the pipeline."""
    __slots__ = ("reports", "files", "users", "bundles")

    def __init__(self, reports=0, files=0, users=None, bundles=None):
        self.reports, self.files = reports, files
        self.users, self.bundles = users or set(), bundles or set()

    @classmethod
    def of(cls, record):
        user = (record.get("reportedUser") or {}).get("espIdentifier")
        bundle = record.get("bundleId")
        return cls(1, len(record.get("files") or []),
                   {(record["espId"], user)} if user else set(), {bundle} if bundle else set())

    def merge(self, other):
        self.reports += other.reports
        self.files += other.files
        self.users |= other.users
        self.bundles |= other.bundles
        return self

    def counts(self):
        return {"reports": self.reports, "files": self.files, "users": len(self.users), "bundles": len(self.bundles)}

    def __reduce__(self):
        return Tally, (self.reports, self.files, self.users, self.bundles)

    def __eq__(self, other):
        return isinstance(other, Tally) and self.__reduce__() == other.__reduce__()


class MergeTallies(beam.CombineFn):
    def create_accumulator(self):
        return Tally()

    def add_input(self, acc, tally):
        return acc.merge(tally)

    def merge_accumulators(self, accs):
        merged = Tally()
        for acc in accs:
            merged.merge(acc)
        return merged

    def extract_output(self, acc):
        return acc


def per_dimension(record):
    """The record's tally under the total and under each dimension's value."""
    tally = Tally.of(record)
    yield (TOTAL, None), tally
    for dimension, value in zip(DIMENSIONS, dimension_values(record)):
        yield (dimension, value), tally


class _CountCountedFn(beam.DoFn):
    """Counts the reports that reached an hourly window (each is in exactly one total partial)."""

    def __init__(self):
        self.counted = Metrics.counter(METRICS_NAMESPACE, "trend_counted_reports")

    def process(self, keyed):
        (dimension, _), tally = keyed
        if dimension == TOTAL:
            self.counted.inc(tally.reports)
        yield keyed


class _TrendRowFn(beam.DoFn):
    def __init__(self, kind):
        self.kind = kind

    def process(self, keyed, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        (dimension, value), tally = keyed
        row = {"table": table_name(self.kind, dimension),
               "window_start": utc(win.start), "window_end": utc(win.end)}
        if dimension != TOTAL:
            row[dimension] = value
        row.update(tally.counts())
        row.update(pane_columns(pane))
        yield row


def schema_of_row(row):
    """The Parquet schema of the table a trend row belongs to."""
    return TABLES[row["table"]]


def partition_folder(row):
    """`<table>/dt=YYYY-MM-DD`: Hive-style partitions by the window's UTC start date."""
    return f"{row['table']}/dt={row['window_start']:%Y-%m-%d}"


class TrendCounts(beam.PTransform):
    """Writes the trend tables of routed records under `<output>/trends/`; returns every row (with `table`)."""

    def __init__(self, output_dir, allowed_lateness_seconds=24 * 3600):
        super().__init__()
        self.output_dir = output_dir
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(self, routed_records):
        bounded = routed_records.is_bounded
        partials = (
            routed_records
            | "CountInput" >> beam.Map(_count_input)
            | "KeyByDimensions" >> beam.FlatMap(per_dimension)
            | "HourlyPartials" >> late_firing_windows(
                window.FixedWindows(HOUR), self.allowed_lateness_seconds, accumulate=False, bounded=bounded)
            | "CombinePartials" >> beam.CombinePerKey(MergeTallies())
            | "CountCounted" >> beam.ParDo(_CountCountedFn()))
        rows = [
            partials
            | f"{kind.capitalize()}Windows" >> late_firing_windows(
                window_fn, self.allowed_lateness_seconds, accumulate=True, bounded=bounded)
            | f"{kind.capitalize()}Combine" >> beam.CombinePerKey(MergeTallies())
            | f"{kind.capitalize()}Rows" >> beam.ParDo(_TrendRowFn(kind))
            | f"{kind.capitalize()}FileWindows" >> late_firing_windows(
                window.FixedWindows(DAY), self.allowed_lateness_seconds, accumulate=False, bounded=bounded)
            for kind, window_fn in WINDOW_KINDS.items()]
        all_rows = rows | "AllTables" >> beam.Flatten()
        _ = all_rows | "WriteTrendFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/trends",
            destination=partition_folder,
            sink=functools.partial(ParquetSink, schema_of_row),
            suffix=".parquet",
            window_seconds=DAY,  # one file per table, day and firing: hourly files would be tiny and many
            allowed_lateness_seconds=self.allowed_lateness_seconds)
        return all_rows


_INPUT = Metrics.counter(METRICS_NAMESPACE, "trend_input_reports")


def _count_input(record):
    _INPUT.inc()
    return record
