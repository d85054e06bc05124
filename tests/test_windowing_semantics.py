"""End-to-end event-time semantics of dedup -> bundle stamp -> trends and bundles, pinned with TestStream.

Each stream feeds routed records through `DedupRedeliveries`, `StampBundleIds`, then `TrendCounts`
and `BundleRepeats` (allowed lateness 2 h), and asserts what an analyst would read: the latest pane.
"""
import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from tests.test_trends import at, routed_record, streaming_pipeline
from transforms.bundles import BundleRepeats, StampBundleIds, bundle_id
from transforms.dedup import DedupRedeliveries
from transforms.trends import TrendCounts

HOUR = 3600
LATENESS = 2 * HOUR


def report(report_id, hashes=(("MD5", "ab"),), **fields):
    """A routed record, as the stamp step receives it (dedup reads its reportId as it reads a report's)."""
    return routed_record(report_id, hashes=hashes, **fields)


def stages(p, stream, tmp_path):
    records = p | stream | DedupRedeliveries(horizon_hours=6) | StampBundleIds(HOUR, LATENESS)
    rows = records | TrendCounts(str(tmp_path), allowed_lateness_seconds=LATENESS)
    bundles = records | BundleRepeats(str(tmp_path), HOUR, allowed_lateness_seconds=LATENESS)
    return rows, bundles


def panes(table):
    """(window start hour, reports, pane timing) of every pane of one trend table."""
    return lambda rows: (rows | f"Only {table}" >> beam.Filter(lambda row: row["table"] == table)
                         | f"Panes {table}" >> beam.Map(
                             lambda row: (row["window_start"].hour, row["reports"], row["pane_timing"])))


def test_on_time_late_too_late_out_of_order_and_redelivered_reports(tmp_path):
    stream = (TestStream()
              .add_elements([at(1800, report("b")), at(600, report("a"))])            # out of order, on time
              .add_elements([at(600, report("a"))])                                   # redelivered at once
              .advance_watermark_to(HOUR + 60)                                        # hour 0 fires on time
              .add_elements([at(1200, report("c")), at(HOUR + 30, report("d"))])     # c late within lateness
              .add_elements([at(600, report("a"))])                                   # redelivered late: still a duplicate
              .advance_watermark_to(HOUR + LATENESS + 120)                            # hour 0 expires
              .add_elements([at(1500, report("e"))])                                  # too late: dropped by the runner
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        rows, bundles = stages(p, stream, tmp_path)
        assert_that(panes("hourly_total")(rows), equal_to([
            (0, 2, "ON_TIME"), (0, 3, "LATE"), (1, 1, "ON_TIME")]), label="hourly")
        # one incident (gap 1 h): a, b, then c and d (late for the stamp, within the gap of b) close when the
        # watermark passes d + 1 h; e, too late for its hour's trend window, is within the incident's lateness
        assert_that(bundles | beam.Map(lambda b: (b["window_start"].hour, b["reports"], b["pane_timing"])),
                    equal_to([(0, 4, "ON_TIME"), (0, 5, "LATE")]), label="bundles")


def test_a_redelivery_in_another_window_counts_once_and_a_bundle_spans_the_window_edge(tmp_path):
    stream = (TestStream()
              .add_elements([at(HOUR - 10, report("a")), at(HOUR + 10, report("b"))])   # one hash across the edge
              .add_elements([at(HOUR - 10, report("a"))])                               # a copy of a, same event time
              .advance_watermark_to(2 * HOUR + 60)
              .add_elements([at(2 * HOUR + 5, report("a"))])                            # a again, wrong event time
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        rows, bundles = stages(p, stream, tmp_path)
        assert_that(panes("hourly_total")(rows), equal_to([(0, 1, "ON_TIME"), (1, 1, "ON_TIME")]), label="hourly")
        assert_that(bundles | beam.Map(lambda b: (b["bundle_id"], b["reports"], b["first_seen"].minute)),
                    equal_to([(bundle_id("md5:ab", (HOUR - 10) * 1_000_000), 2, 59)]), label="bundles")


def test_trend_totals_reconcile_with_the_routed_records_and_sliding_windows_sum_the_hours(tmp_path):
    records = [at(hour * HOUR + minute * 60, report(f"r{hour}-{minute}", jurisdiction=jurisdiction, esp=esp,
                                                   hashes=(("MD5", f"{minute % 3}"),)))
               for hour in range(0, 30, 3) for minute, jurisdiction, esp in
               [(1, "GB", "esp-1"), (7, "US-WA", "esp-2"), (8, "GB", "esp-2"), (20, "UNKNOWN", "esp-1")]]
    with TestPipeline() as p:
        rows, _ = stages(p, beam.Create(records), tmp_path)
        latest = (rows | "LatestOnly" >> beam.Filter(lambda row: row["pane_timing"] != "LATE")
                  | "WholeRun" >> beam.WindowInto(window.GlobalWindows()))
        by_jurisdiction = (latest | beam.Filter(lambda row: row["table"] == "hourly_by_jurisdiction")
                           | beam.Map(lambda row: (row["jurisdiction"], row["reports"])) | beam.CombinePerKey(sum))
        routed = (p | "Routed" >> beam.Create(records) | beam.Map(lambda r: (r["jurisdiction"], 1))
                  | "CountRouted" >> beam.CombinePerKey(sum))
        assert_that(by_jurisdiction, equal_to([("GB", 20), ("US-WA", 10), ("UNKNOWN", 10)]), label="trends")
        assert_that(routed, equal_to([("GB", 20), ("US-WA", 10), ("UNKNOWN", 10)]), label="routed")
        sliding = (latest | beam.Filter(lambda row: row["table"] == "sliding24h_total")
                   | beam.Map(lambda row: (int(row["window_start"].timestamp()) // HOUR, row["reports"])))
        # [0h, 24h) covers hours 0, 3, ..., 21: 8 x 4 reports; [6h, 30h) covers 6 ... 27: 8 x 4
        assert_that(sliding | beam.Filter(lambda t: t[0] in (0, 6, 27)), equal_to([(0, 32), (6, 32), (27, 4)]),
                    label="sliding")
