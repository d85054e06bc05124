"""DedupRedeliveries: the event-time semantics of redelivery dedup, pinned with TestStream."""
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from transforms.dedup import DedupRedeliveries

HOUR = 3600


def report(report_id, event_time, copy=0):
    return TimestampedValue({"reportId": report_id, "copy": copy}, event_time)


def streaming_pipeline():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(options=options)


def test_redeliveries_within_the_horizon_are_dropped_the_copy_batch_keeps_kept():
    """Copies 0 and 1 of "a" share their event time: copy 1, the smaller digest, is kept (as batch keeps it),
    though copy 0 arrived first."""
    stream = (TestStream()
              .advance_watermark_to(0)
              .add_elements([report("a", 10), report("b", 20)])
              .add_elements([report("a", 10, copy=1)])       # redelivered at once
              .advance_watermark_to(HOUR - 1)
              .add_elements([report("b", 20, copy=1)])       # late (behind the watermark) but within horizon
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        kept = p | stream | DedupRedeliveries(horizon_hours=1) | beam.Map(lambda r: (r["reportId"], r["copy"]))
        assert_that(kept, equal_to([("a", 1), ("b", 0)]))


def test_duplicates_across_window_boundaries_are_still_duplicates():
    stream = (TestStream()
              .add_elements([report("a", HOUR - 1)])
              .advance_watermark_to(HOUR + 10)
              .add_elements([report("a", HOUR - 1, copy=1), report("c", HOUR + 5)])
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        kept = p | stream | DedupRedeliveries(horizon_hours=2) | beam.Map(lambda r: (r["reportId"], r["copy"]))
        assert_that(kept, equal_to([("a", 0), ("c", 0)]))


def test_a_redelivery_after_the_horizon_has_passed_is_not_recognised():
    """The documented limit: state is kept only until the watermark passes event time + horizon (here the
    event time is later than the clock, so the horizon starts there)."""
    soon = int(time.time()) + HOUR
    stream = (TestStream()
              .add_elements([report("a", soon)])
              .advance_watermark_to(soon + 2 * HOUR)
              .add_elements([report("a", soon, copy=1)])
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        kept = p | stream | DedupRedeliveries(horizon_hours=1) | beam.Map(lambda r: (r["reportId"], r["copy"]))
        assert_that(kept, equal_to([("a", 0), ("a", 1)]))


def test_a_report_older_than_the_horizon_is_remembered_for_the_horizon_after_it_arrives():
    """A backlog report (event time days behind the clock, so behind a live stream's watermark) redelivered
    soon after was routed twice: its forget timer was already due when it was first seen."""
    now = int(time.time())
    stream = (TestStream()
              .advance_watermark_to(now)
              .add_elements([report("old", now - 9 * 24 * HOUR)])
              .advance_watermark_to(now + 60)
              .add_elements([report("old", now - 9 * 24 * HOUR, copy=1)])
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        kept = p | stream | DedupRedeliveries(horizon_hours=1) | beam.Map(lambda r: (r["reportId"], r["copy"]))
        assert_that(kept, equal_to([("old", 0)]))


def test_batch_keeps_the_earliest_copy_then_the_smallest_digest_whatever_the_order():
    """Copies 0 and 1 share the earliest event time; copy 1's canonical JSON has the smaller SHA-256."""
    copies = [report("a", 5, copy=2), report("a", 3, copy=1), report("a", 3, copy=0), report("b", 1)]
    for order in (copies, copies[::-1]):
        with TestPipeline() as p:
            kept = p | beam.Create(order) | DedupRedeliveries() | beam.Map(lambda r: (r["reportId"], r["copy"]))
            assert_that(kept, equal_to([("a", 1), ("b", 0)]))


def test_reports_the_output_holds_already_are_dropped_as_duplicates():
    with TestPipeline() as p:
        kept = (p | beam.Create([report("a", 0), report("b", 0), report("b", 0, 1)])
                | DedupRedeliveries(already_routed=lambda: {"b"}) | beam.Map(lambda r: r["reportId"]))
        assert_that(kept, equal_to(["a"]))


def test_batch_dedups_over_the_whole_input():
    with TestPipeline() as p:
        kept = (p | beam.Create([report("a", 0), report("a", 0, 1), report("b", 5 * HOUR), report("a", 0, 2)])
                | DedupRedeliveries(horizon_hours=1) | beam.Map(lambda r: r["reportId"]))
        assert_that(kept, equal_to(["a", "b"]))


def test_batch_keeps_each_reports_event_time():
    with TestPipeline() as p:
        kept = (p | beam.Create([report("a", 7 * HOUR), report("a", 7 * HOUR, 1)])
                | DedupRedeliveries(horizon_hours=1)
                | beam.Map(lambda r, ts=beam.DoFn.TimestampParam: (r["reportId"], ts.micros // 10**6)))
        assert_that(kept, equal_to([("a", 7 * HOUR)]))
