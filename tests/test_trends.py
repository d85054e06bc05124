"""TrendCounts: hourly and sliding 24-hour tables per dimension, distinct users and bundles, panes."""

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from schemas.tables import TABLES
from transforms.trends import TrendCounts

HOUR = 3600


def routed_record(report_id, jurisdiction="GB", country="GB", esp="esp-1", user="user-1", match="new",
                  files=1, bundle=None, hashes=(), matches=(), batched=None, incident_type="Online Enticement",
                  annotations=()):
    """A hand-made routed record (schemas/routed_report.avsc) with the fields the stages read."""
    return {
        "reportId": report_id, "espId": esp, "incidentType": incident_type, "matchSummary": match,
        "jurisdiction": jurisdiction, "location": {"countryCode": country, "ip": "203.0.113.9"},
        "reportedUser": {"espIdentifier": user, "screenName": "screen"} if user else None,
        "batchedReason": batched, "bundleId": bundle, "reportAnnotations": list(annotations),
        "files": [{"fileId": f"{report_id}-f{index}", "mediaStatus": "hashed",
                   "hashes": [{"signalType": signal, "value": value, "source": "provided"} for signal, value in hashes],
                   "matches": [{"bank": bank, "externalId": entry, "label": None, "signalType": "PDQ", "distance": 3}
                               for bank, entry in matches]}
                  for index in range(files)],
    }


def at(event_time, record):
    return TimestampedValue(record, event_time)


def streaming_pipeline():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(options=options)


def counter(result, name):
    found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(item.committed if item.committed is not None else item.attempted for item in found)


def pick(table, *columns):
    """Rows of one table as tuples of (window start hour, *columns)."""
    return lambda rows: (rows | f"Pick {table} {columns}" >> beam.Filter(lambda row: row["table"] == table)
                         | f"Tuple {table} {columns}" >> beam.Map(
                             lambda row: (row["window_start"].hour,) + tuple(row[c] for c in columns)))


def test_hourly_counts_reports_files_distinct_users_and_bundles_per_dimension(tmp_path):
    records = [
        at(10, routed_record("a", esp="esp-1", user="u1", files=2, bundle="b1")),
        at(20, routed_record("b", esp="esp-1", user="u1", files=1, bundle="b1")),
        at(30, routed_record("c", esp="esp-2", user="u1", files=0, bundle="b2")),   # same id, other ESP: another user
        at(40, routed_record("d", jurisdiction="US-WA", country="US", user=None, match="known")),
        at(HOUR + 5, routed_record("e")),
    ]
    p = TestPipeline()
    rows = p | beam.Create(records) | TrendCounts(str(tmp_path))
    assert_that(pick("hourly_total", "reports", "files", "users", "bundles")(rows),
                equal_to([(0, 4, 4, 2, 2), (1, 1, 1, 1, 0)]), label="total")
    assert_that(pick("hourly_by_jurisdiction", "jurisdiction", "reports", "users")(rows),
                equal_to([(0, "GB", 3, 2), (0, "US-WA", 1, 0), (1, "GB", 1, 1)]), label="jurisdiction")
    assert_that(pick("hourly_by_esp", "esp", "reports", "files")(rows),
                equal_to([(0, "esp-1", 3, 4), (0, "esp-2", 1, 0), (1, "esp-1", 1, 1)]), label="esp")
    assert_that(pick("hourly_by_match_class", "match_class", "reports")(rows),
                equal_to([(0, "new", 3), (0, "known", 1), (1, "new", 1)]), label="match")
    result = p.run()
    result.wait_until_finish()
    assert counter(result, "trend_input_reports") == counter(result, "trend_counted_reports") == 5


def test_a_report_counts_once_under_each_of_its_annotations_and_not_at_all_without_one(tmp_path):
    records = [at(10, routed_record("a", annotations=["sextortion", "spam", "sextortion"])),
               at(20, routed_record("b", annotations=["sextortion"])),
               at(30, routed_record("c"))]
    with TestPipeline() as p:
        rows = p | beam.Create(records) | TrendCounts(str(tmp_path))
        assert_that(pick("hourly_by_annotation", "annotation", "reports")(rows),
                    equal_to([(0, "sextortion", 2), (0, "spam", 1)]), label="annotation")
        assert_that(pick("hourly_total", "reports")(rows), equal_to([(0, 3)]), label="total")


def test_every_table_is_written_hive_partitioned_with_its_own_columns_and_no_identifiers(tmp_path):
    with TestPipeline() as p:
        _ = p | beam.Create([at(10, routed_record("a", user="user-secret-77", annotations=["sextortion"]))]) | TrendCounts(
            str(tmp_path))
    trends = tmp_path / "trends"
    assert {path.name for path in trends.iterdir() if not path.name.startswith(".")} == set(TABLES)
    by_country = pq.read_table(next((trends / "hourly_by_country").rglob("*.parquet")))
    assert by_country.schema.names == ["window_start", "window_end", "country", "reports", "files", "users",
                                       "bundles", "pane_index", "pane_timing"]
    assert str(by_country.schema.field("window_start").type) == "timestamp[us, tz=UTC]"
    assert {path.parent.name for path in (trends / "hourly_total").rglob("*.parquet")} == {"dt=1970-01-01"}
    for path in trends.rglob("*.parquet"):
        data = path.read_bytes()
        assert b"user-secret-77" not in data and b"203.0.113.9" not in data


def test_sliding_24h_windows_sum_the_hours_they_cover():
    records = [at(hour * HOUR + 1, routed_record(f"r{hour}")) for hour in (0, 5, 23, 24, 30)]
    with TestPipeline() as p:
        rows = p | beam.Create(records) | TrendCounts("/tmp/unused-" + __name__)
        totals = (rows | beam.Filter(lambda row: row["table"] == "sliding24h_total")
                  | beam.Map(lambda row: (int(row["window_start"].timestamp()) // HOUR, row["reports"])))
        # [0h, 24h) holds hours 0, 5, 23; [1h, 25h) 5, 23, 24; [6h, 30h) 23, 24; [7h, 31h) 23, 24, 30
        assert_that(totals | beam.Filter(lambda t: t[0] in (0, 1, 6, 7, 30)),
                    equal_to([(0, 3), (1, 3), (6, 2), (7, 3), (30, 1)]))


def test_late_reports_fire_again_with_the_accumulated_total(tmp_path):
    stream = (TestStream()
              .add_elements([at(10, routed_record("a")), at(20, routed_record("b"))])
              .advance_watermark_to(HOUR + 60)
              .add_elements([at(30, routed_record("c"))])  # late but within the allowed lateness
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        rows = p | stream | TrendCounts(str(tmp_path), allowed_lateness_seconds=2 * HOUR)
        assert_that(pick("hourly_total", "reports", "pane_index", "pane_timing")(rows),
                    equal_to([(0, 2, 0, "ON_TIME"), (0, 3, 1, "LATE")]))
