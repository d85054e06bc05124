"""TrendCounts: event-time windowed counts analysts query, as Hive-partitioned Parquet under `<output>/trends/`.

Two window kinds, hourly fixed windows and 24-hour windows sliding hourly, and one table per kind and
dimension: `hourly_total`, `hourly_by_jurisdiction`, `hourly_by_country`, `hourly_by_incident_type`,
`hourly_by_esp`, `hourly_by_match_class`, `hourly_by_annotation` (a report counts once under each report
annotation it carries), and the same seven `sliding24h_...` tables. A table per dimension
rather than one wide table grouped by every dimension, because `users` and `bundles` count distinct
values: they do not add up across rows, so a wide table could not be rolled up to one dimension.

Counts: `reports`, `files`, `users` (distinct reported users, an ESP's user id being unique only within
that ESP) and `bundles` (distinct bundle ids), both counted by 64-bit digest (exact barring a digest
collision: transforms/plumbing/distinct.py). Rows carry no IP addresses, user ids or media.

How it is computed: routed records are first combined per hour and dimension value into partial tallies
(each report lands in exactly one partial per dimension), then the few partials are merged into hourly and
sliding windows, so a report is not copied into 24 windows. Streaming: discarding hourly panes, then
accumulating panes per table window; late reports within the allowed lateness fire each window again with
its full total, and every row names its pane, so the latest pane per window and dimension value is the
right total (on the DirectRunner both steps keep one merged accumulator per window instead of Beam's
grouping: transforms/plumbing/local_windows.py). An hour's partials are one `ReportTable`: each record's
user and bundle digests once, and per dimension value its rows, made into tallies when the hour fires.
Reports later than that are dropped by the runner; they are counted as `trend_input_reports -
trend_counted_reports` (Beam metrics), exact once the run is drained. Batch: the
same hourly partials (CombinePerKeyAndWindow, transforms/plumbing/event_windows.py: one on-time pane), then
each dimension value's timeline gives its hourly and sliding rows in one pass.

What one record or row can make fail (a record without a field a dimension reads, a value the table's
column cannot hold) fails alone: each record's keys and tally are made in a guarded step before any
combine, rows are made and written guarded, and the failure is a side-stage dead letter `stage=trends`
(transforms/dead_letters.py); the report stays routed.
"""
import array
import collections
import functools

import apache_beam as beam
import numpy as np
from apache_beam.transforms import window

from schemas.tables import DIMENSIONS, TABLES, TOTAL, table_name
from transforms.dead_letters import FAILURES, WriteSideStageFailures, failed
from transforms.plumbing.event_windows import (ON_TIME_PANE, CombinePerKeyAndWindow, KeyedTableCombineFn,
                                              TallyCombineFn, combine_in_event_windows, in_window,
                                              late_firing_windows, local_forms, pane_columns, utc)
from transforms.plumbing.distinct import EMPTY, DistinctDigests, digest64, pair_digest64, sorted_distinct
from transforms.plumbing.metrics import counter
from transforms.plumbing.row_log import RowLog
from transforms.plumbing.windowed_files import GROUPED_AS_LINES, ParquetSink, WriteWindowedFiles

STAGE = "trends"
HOUR = 3600
DAY = 24 * HOUR
WINDOW_KINDS = {
    "hourly": window.FixedWindows(HOUR),
    "sliding24h": window.SlidingWindows(DAY, HOUR),
}


SINGLE_VALUED = DIMENSIONS[:-1]
ANNOTATION = DIMENSIONS[-1]


def dimension_values(record):
    """The value of each single-valued dimension for a routed record (country may be None: unlocated)."""
    return (record["jurisdiction"], record["location"]["countryCode"], record["incidentType"],
            record["espId"], record["matchSummary"])


class Tally:
    """Partial counts of a set of reports: reports, files, and distinct users and bundles as 64-bit digests
    (transforms/plumbing/distinct.py), so no user or bundle id stays in the pipeline's state and a window
    holds 8 bytes a distinct one."""
    __slots__ = ("reports", "files", "users", "bundles")

    def __init__(self, reports=0, files=0, users=None, bundles=None):
        self.reports, self.files = reports, files
        self.users = users if users is not None else DistinctDigests()
        self.bundles = bundles if bundles is not None else DistinctDigests()

    def add(self, counted):
        """Counts in one record's `counted(record)`."""
        files, user, bundle = counted
        self.reports += 1
        self.files += files
        if user is not None:
            self.users.add(user)
        if bundle is not None:
            self.bundles.add(bundle)
        return self

    def merge(self, other):
        self.reports += other.reports
        self.files += other.files
        self.users.update(other.users)
        self.bundles.update(other.bundles)
        return self

    def counts(self):
        return {"reports": self.reports, "files": self.files, "users": len(self.users), "bundles": len(self.bundles)}

    def counted_parts(self):
        """(reports, files, user digests, bundle digests): what `merged_tally` takes from a partial."""
        return self.reports, self.files, self.users.digests(), self.bundles.digests()

    def as_tally(self):
        """A partial as a Tally (a `KeyRows` makes one): this one."""
        return self

    def __reduce__(self):
        return Tally, (self.reports, self.files, self.users, self.bundles)

    def __eq__(self, other):
        return isinstance(other, (Tally, KeyRows)) and self.__reduce__() == other.__reduce__()


def counted(record):
    """What a record adds to a tally: (its files, its user's digest or None, its bundle's digest or None).
    A user id is unique only within its ESP, so the user is the (ESP, id) pair."""
    user = (record.get("reportedUser") or {}).get("espIdentifier")
    bundle = record.get("bundleId")
    return (len(record.get("files") or []), pair_digest64(record["espId"], user) if user else None,
            digest64(bundle) if bundle else None)


class ReportTable:
    """One window's records as columns (user and bundle digests, whether each has one), and per dimension key
    its rows and files: what `Tally`s per key would count, each record held once.

    Why: a record counts under ~6 dimension keys, and a Tally per key holds its user's and bundle's digests
    in each, ~12 digests (~90-116 bytes) a record for the window and its lateness; here ~27 (16 for the
    digests, 2 flags, a row per key as its gap from the key's last row, mostly one byte:
    transforms/plumbing/row_log.py). When the window's pane fires, each key's partial is a `KeyRows` of
    this table, the same tally as `KeyedCombineFn(TallyCombineFn(Tally))` gives (tests/test_trend_partials.py
    compares them); from then on the table holds still, and taking a record in is refused."""
    __slots__ = ("users", "bundles", "has_user", "has_bundle", "keys", "fired")

    def __init__(self):
        self.users, self.bundles = array.array("q"), array.array("q")
        self.has_user, self.has_bundle = bytearray(), bytearray()
        self.keys = {}  # key -> [rows (a RowLog), files]
        self.fired = False

    def add(self, keys, counted):
        if self.fired:
            raise RuntimeError("a fired window's table is shared by its partials: it takes no more records")
        files, user, bundle = counted
        row = len(self.users)
        self.users.append(user if user is not None else 0)
        self.bundles.append(bundle if bundle is not None else 0)
        self.has_user.append(user is not None)
        self.has_bundle.append(bundle is not None)
        for key in keys:
            held = self._held(key)
            held[0].append(row)
            held[1] += files

    def _held(self, key):
        """The key's [rows, files], made empty when it has none yet."""
        held = self.keys.get(key)
        if held is None:
            held = self.keys[key] = [RowLog(), 0]
        return held

    def merge(self, other):
        """Appends `other`'s records, its rows moved past this table's."""
        if self.fired:
            raise RuntimeError("a fired window's table is shared by its partials: it takes no more records")
        offset = len(self.users)
        self.users.extend(other.users)
        self.bundles.extend(other.bundles)
        self.has_user.extend(other.has_user)
        self.has_bundle.extend(other.has_bundle)
        for key, (rows, files) in other.keys.items():
            held = self._held(key)
            held[0].extend_moved(rows, offset)
            held[1] += files

    def by_key(self):
        """{key: KeyRows} of the records each key holds; the table holds still from here on."""
        self.fired = True
        return {key: KeyRows(self, key) for key in self.keys}

    def counted_parts_of(self, key):
        """(reports, files, user digests, bundle digests) of the key's records (digests repeat)."""
        rows, files = self.keys[key]
        at = rows.rows()
        users = np.frombuffer(self.users, dtype=np.int64)[at]
        bundles = np.frombuffer(self.bundles, dtype=np.int64)[at]
        return (len(at), files, users[np.frombuffer(self.has_user, dtype=np.bool_)[at]],
                bundles[np.frombuffer(self.has_bundle, dtype=np.bool_)[at]])


class KeyRows:
    """One key's partial in a fired window's `ReportTable`: the Tally of its records, made when asked.

    Why: streaming, the hourly windows and the sliding windows' periods hold each hour's partials for a day
    and two days past its end. A Tally per key holds a record's user and bundle digests once per key it
    counts under (~12 digests, ~96 bytes a record); the KeyRows of an hour share its table (~26 bytes a
    record). Pickled (a production runner's state, a batch grouping) it is that Tally."""
    __slots__ = ("table", "key")

    def __init__(self, table, key):
        self.table, self.key = table, key

    @property
    def reports(self):
        """The key's record count, read from its rows alone (no digests gathered)."""
        return len(self.table.keys[self.key][0])

    def counted_parts(self):
        return self.table.counted_parts_of(self.key)

    def as_tally(self):
        return merged_tally([self])

    def counts(self):
        return self.as_tally().counts()

    def __reduce__(self):
        return self.as_tally().__reduce__()

    def __eq__(self, other):
        return self.as_tally() == other


def merged_tally(partials):
    """A new Tally of every partial (KeyRows or Tally) taken together; none of them is changed."""
    reports, files, users, bundles = gathered(partials)
    return Tally(reports, files, DistinctDigests(users), DistinctDigests(bundles))


def merged_counts(partials):
    """The counts of every partial taken together, as `merged_tally(partials).counts()` gives them, with no
    Tally kept: a window's pane is a row's counts, made one key at a time."""
    reports, files, users, bundles = gathered(partials)
    return {"reports": reports, "files": files, "users": len(sorted_distinct(users)),
            "bundles": len(sorted_distinct(bundles))}


def gathered(partials):
    """(reports, files, user digests, bundle digests) of the partials together; digests repeat."""
    reports = files = 0
    users, bundles = [], []
    for partial in partials:
        more_reports, more_files, more_users, more_bundles = partial.counted_parts()
        reports, files = reports + more_reports, files + more_files
        users.append(more_users)
        bundles.append(more_bundles)
    return (reports, files, np.concatenate(users) if users else EMPTY,
            np.concatenate(bundles) if bundles else EMPTY)


MOST_PARTIALS = 8


class TalliesCombineFn(beam.CombineFn):
    """Combines hourly partials into windows, keeping the partials as they come: an hour's KeyRows share its
    table, so its hourly window and the period the sliding windows read (transforms/plumbing/local_windows.py)
    each add a reference, not a copy of its digests. A pane is its counts, made when it fires (a Tally per
    key, all of an hour's made at once as its panes fire, would be a peak of ~200 bytes a record). A late pane of
    the hourly partials comes per late bundle; past MOST_PARTIALS, all but the first (the on-time one, as a
    rule) are merged into one Tally, so a trickle of late reports does not grow a list."""

    def create_accumulator(self):
        return []

    def add_input(self, partials, partial):
        partials.append(partial)
        if len(partials) > MOST_PARTIALS:
            partials[1:] = [merged_tally(partials[1:])]
        return partials

    def merge_accumulators(self, accumulators):
        return [partial for partials in accumulators for partial in partials]

    def extract_output(self, partials):
        return merged_counts(partials)


def dimension_keys(record):
    """The (dimension, value) keys a record counts under: the total, each single-valued dimension's value,
    then each distinct report annotation (so annotation rows do not add up to the total)."""
    annotations = tuple((ANNOTATION, value) for value in sorted(set(record.get("reportAnnotations") or ())))
    return ((TOTAL, None),) + tuple(zip(SINGLE_VALUED, dimension_values(record))) + annotations


_INPUT = counter("trend_input_reports")


def keys_and_tally(record):
    """(the record's dimension keys, what it adds to a tally): one element per record, not one per
    dimension. The keys are hashed here, so a value no grouping could hold fails with its record, not
    inside a combine. A record keyed is counted here too (`trend_input_reports`), not by a step of its own."""
    keys = dimension_keys(record)
    hash(keys)
    keyed = keys, counted(record)
    _INPUT.inc()
    return keyed


def already_keyed(keys_and_value):
    return keys_and_value


def sliding_day_counts(hourly):
    """{window start: counts} of every 24-hour window sliding hourly that holds one of `hourly`'s hours.

    Slides once over the hours: a report, file, user or bundle enters with its hour and leaves 24 hours
    later, so distinct counts cost the size of the sets, not 24 unions per window."""
    hours = sorted(hourly)
    starts = sorted({hour - back * HOUR for hour in hours for back in range(DAY // HOUR)})
    users, bundles = collections.Counter(), collections.Counter()
    reports = files = entered = left = 0
    for start in starts:
        while entered < len(hours) and hours[entered] < start + DAY:
            tally = hourly[hours[entered]]
            reports, files = reports + tally.reports, files + tally.files
            users.update(tally.users.digests().tolist())
            bundles.update(tally.bundles.digests().tolist())
            entered += 1
        while hours[left] < start:
            tally = hourly[hours[left]]
            reports, files = reports - tally.reports, files - tally.files
            forget(users, tally.users.digests().tolist())
            forget(bundles, tally.bundles.digests().tolist())
            left += 1
        yield start, {"reports": reports, "files": files, "users": len(users), "bundles": len(bundles)}


def forget(counter, items):
    """Takes one hour's `items` out of a sliding window's `counter`, dropping those no other hour holds."""
    for item in items:
        remaining = counter[item] - 1
        if remaining:
            counter[item] = remaining
        else:
            del counter[item]


class _TimelineRowsFn(beam.DoFn):
    """Batch: a (dimension, value)'s hourly tallies -> its hourly rows and its sliding 24-hour rows."""

    def process(self, timeline):
        (dimension, value), hour_tallies = timeline
        # one partial per hour (a bounded run's panes are on time), a KeyRows where no grouping pickled it
        hourly = {hour: partial.as_tally() for hour, partial in hour_tallies}
        for hour, tally in hourly.items():
            yield in_window(trend_row("hourly", dimension, value, tally.counts(), hour, hour + HOUR, ON_TIME_PANE),
                            hour, HOUR)
        for start, counts in sliding_day_counts(hourly):
            yield in_window(trend_row("sliding24h", dimension, value, counts, start, start + DAY, ON_TIME_PANE),
                            start, DAY)


def trend_row(kind, dimension, value, counts, start, end, pane):
    """A row of table (kind, dimension): window bounds (Timestamps or epoch seconds), counts, pane columns."""
    row = {"table": table_name(kind, dimension), "window_start": utc(start), "window_end": utc(end)}
    if dimension != TOTAL:
        row[dimension] = value
    row.update(counts)
    row.update(pane)
    return row


class _CountCountedFn(beam.DoFn):
    """Counts the reports that reached an hourly window (each is in exactly one total partial)."""

    def __init__(self):
        self.counted = counter("trend_counted_reports")

    def process(self, partial):
        dimension, _ = partial.key
        if dimension == TOTAL:
            self.counted.inc(partial.value.reports)
        yield partial


def timeline_entry(partial):
    """Batch: an hourly partial -> ((dimension, value), (hour, tally)) for the dimension value's timeline."""
    return partial.key, (partial.start, partial.value)


class _TrendRowFn(beam.DoFn):
    def __init__(self, kind):
        self.kind = kind

    def process(self, keyed, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        try:
            (dimension, value), counts = keyed
            row = trend_row(self.kind, dimension, value, counts, win.start, win.end, pane_columns(pane))
        except Exception as error:  # one window's row: its failure is a dead letter, the others are written
            yield failed(keyed, error)
            return
        yield row


def schema_of_row(row):
    """The Parquet schema of the table a trend row belongs to."""
    return TABLES[row["table"]]


def partition_folder(row):
    """`<table>/dt=YYYY-MM-DD`: Hive-style partitions by the window's UTC start date."""
    return f"{row['table']}/dt={row['window_start'].date().isoformat()}"


class TrendCounts(beam.PTransform):
    """Writes the trend tables of routed records under `<output>/trends/`; returns every row (with `table`)."""

    def __init__(self, output_dir, allowed_lateness_seconds=24 * 3600, local=None):
        super().__init__()
        self.output_dir = output_dir
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.local = local  # the local state forms (None: on the DirectRunner)

    def expand(self, routed_records):
        tallied, tally_failures = routed_records | "KeysAndTally" >> beam.Map(
            keys_and_tally).with_exception_handling()
        partials = (
            tallied
            | "HourlyPartials" >> CombinePerKeyAndWindow(
                already_keyed, TallyCombineFn(Tally), HOUR, self.allowed_lateness_seconds, accumulate=False,
                local=self.local, keyed_combine_fn=KeyedTableCombineFn(ReportTable))
            | "CountCounted" >> beam.ParDo(_CountCountedFn()))
        rows, row_failures = (self.batch_rows(partials) if routed_records.is_bounded
                              else self.streaming_rows(partials))
        all_rows = rows | "AllTables" >> beam.Flatten()
        _, refused = all_rows | "WriteTrendFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/trends",
            destination=partition_folder,
            sink=functools.partial(ParquetSink, schema_of_row),
            suffix=".parquet",
            window_seconds=DAY,  # one file per table, day and firing: hourly files would be tiny and many
            allowed_lateness_seconds=self.allowed_lateness_seconds,
            with_refusals=True,
            grouped_as=GROUPED_AS_LINES)  # parsed by Arrow against the table's schema (ParquetSink)
        _ = (tally_failures, refused, *row_failures) | "WriteFailures" >> WriteSideStageFailures(
            self.output_dir, STAGE)
        return all_rows

    def batch_rows(self, partials):
        """Each dimension value's timeline of hourly partials gives its hourly and sliding rows at once."""
        rows, failures = (partials
                          | "TimelineEntries" >> beam.Map(timeline_entry)
                          | "Timelines" >> beam.GroupByKey()
                          | "TimelineRows" >> beam.ParDo(_TimelineRowsFn()).with_exception_handling())
        return [rows], [failures]

    def streaming_rows(self, partials):
        """Accumulating panes per table window over the hourly partials, re-fired by late data."""
        keyed = partials | "PerDimension" >> beam.Map(lambda partial: (partial.key, partial.value))
        local = local_forms(partials.pipeline, self.local)
        if local:
            # one local state for every window: re-windowed, as the partials are in their hours' windows
            keyed = keyed | "Unwindow" >> beam.WindowInto(window.GlobalWindows())
        rows, failures = [], []
        for kind, window_fn in WINDOW_KINDS.items():
            # on the DirectRunner one accumulator per key and window, or per key and period for the sliding
            # windows (local_windows.py): Beam's grouping there would hold every hourly partial, for every
            # window, for the whole run
            made = (combine_in_event_windows(keyed, kind.capitalize(), window_fn, TalliesCombineFn(),
                                             self.allowed_lateness_seconds, accumulate=True, local=local)
                    | f"{kind.capitalize()}Rows" >> beam.ParDo(_TrendRowFn(kind)).with_outputs(FAILURES, main="rows"))
            rows.append(made.rows | f"{kind.capitalize()}FileWindows" >> late_firing_windows(
                window.FixedWindows(DAY), self.allowed_lateness_seconds, accumulate=False))
            failures.append(made[FAILURES])
        return rows, failures

