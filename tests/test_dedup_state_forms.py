"""The two streaming state forms of DedupRedeliveries (per-key for Dataflow, bucketed for the local runner)
against each other, against Beam's `DeduplicatePerKey`, and against the batch choice of copy."""
import json
import tempfile
import time

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.utils.timestamp import Duration

from tests.test_dedup import HOUR, report, streaming_pipeline
from transforms.dedup import (RECORD_BYTES, DedupRedeliveries, forget_expired, remember, remembers,
                              digest_of)

FORMS = ("per-key", "bucketed")


class _AppendTo(beam.DoFn):
    """Appends each element (JSON) to a file: the runner runs a pickled copy, so a list would stay empty."""

    def __init__(self, path):
        self.path = path

    def process(self, element):
        with open(self.path, "a") as handle:
            handle.write(json.dumps(element) + "\n")


def collected(build):
    """Sorted elements of the PCollection `build(pipeline)` gives, after the pipeline has run."""
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as handle:
        with (streaming_pipeline() if build.streaming else TestPipeline()) as p:
            _ = build(p) | beam.ParDo(_AppendTo(handle.name))
        return sorted(tuple(json.loads(line)) if isinstance(json.loads(line), list) else json.loads(line)
                      for line in open(handle.name))


def pipeline_of(streaming):
    def wrap(build):
        build.streaming = streaming
        return build
    return wrap


def kept_copies(stream, state, horizon_hours=1, buckets=4):
    """(reportId, copy) of what the streaming dedup keeps from `stream`, in state form `state`."""
    @pipeline_of(streaming=True)
    def build(p):
        return (p | stream | DedupRedeliveries(horizon_hours, state=state, buckets=buckets)
                | beam.Map(lambda r: (r["reportId"], r["copy"])))
    return collected(build)


def batch_copies(reports):
    @pipeline_of(streaming=False)
    def build(p):
        return p | beam.Create(reports) | DedupRedeliveries() | beam.Map(lambda r: (r["reportId"], r["copy"]))
    return collected(build)


def distinct_ids_stream(now):
    """Reports whose reportIds are each seen once or redelivered within the horizon (identical copies), and
    one redelivered after the horizon: what DeduplicatePerKey decides by reportId alone."""
    return (TestStream()
            .advance_watermark_to(now)
            .add_elements([report("a", now + 10), report("b", now + 20), report("c", now + 30)])
            .add_elements([report("a", now + 10)])
            .advance_watermark_to(now + 40)
            .add_elements([report("b", now + 20), report("d", now + 50)])
            .advance_watermark_to(now + 3 * HOUR)
            .add_elements([report("a", now + 10), report("e", now + 3 * HOUR + 5)])
            .advance_watermark_to_infinity())


def test_both_forms_drop_what_beams_deduplicate_per_key_drops():
    now = int(time.time())

    @pipeline_of(streaming=True)
    def with_beams_dedup(p):
        return (p | distinct_ids_stream(now) | beam.Map(lambda r: (r["reportId"], r))
                | DeduplicatePerKey(event_time_duration=Duration(seconds=HOUR)) | beam.Keys())
    beam_ids = collected(with_beams_dedup)
    for state in FORMS:
        assert [rid for rid, _ in kept_copies(distinct_ids_stream(now), state)] == sorted(beam_ids), state
    assert sorted(beam_ids) == ["a", "a", "b", "c", "d", "e"]


@pytest.mark.parametrize("state", FORMS)
def test_copies_in_either_order_and_at_different_event_times_keep_what_batch_keeps(state):
    """Copy 1 (earliest event time) of "x"; copies 0 and 1 of "y" tie on time (the smaller digest wins);
    copy 2 of "z" is earlier but arrives after the watermark passed copy 0: a late duplicate."""
    copies = [report("x", 50, copy=0), report("x", 40, copy=1), report("y", 60, copy=0), report("y", 60, copy=1)]
    expected = batch_copies(copies)
    assert expected[0] == ("x", 1)
    for order in (copies, copies[::-1]):
        stream = (TestStream().advance_watermark_to(0).add_elements(order)
                  .advance_watermark_to(100).add_elements([report("z", 120, copy=0)])
                  .advance_watermark_to(200).add_elements([report("z", 110, copy=2), report("x", 10, copy=3)])
                  .advance_watermark_to_infinity())
        assert kept_copies(stream, state) == expected + [("z", 0)]


def test_the_two_forms_agree_on_a_mixed_stream():
    now = int(time.time())
    stream = lambda: (TestStream().advance_watermark_to(now)  # noqa: E731
                      .add_elements([report(f"r{i % 7}", now + i, copy=i) for i in range(30)])
                      .advance_watermark_to(now + 15)
                      .add_elements([report(f"r{i % 5}", now + 20 - i, copy=100 + i) for i in range(10)])
                      .advance_watermark_to(now + 2 * HOUR)
                      .add_elements([report("r1", now + 1, copy=999)])
                      .advance_watermark_to_infinity())
    per_key, bucketed = kept_copies(stream(), "per-key"), kept_copies(stream(), "bucketed", buckets=3)
    assert per_key == bucketed
    assert [rid for rid, _ in per_key] == sorted([f"r{i}" for i in range(7)] + ["r1"])


def test_packed_records_remember_forget_in_expiry_order_and_never_match_across_records():
    ids = [digest_of(f"id-{i}") for i in range(50)]
    seen = b""
    for i, digest in enumerate(ids):
        seen = remember(seen, digest, 1000 + (i * 37) % 50)
    assert len(seen) == 50 * RECORD_BYTES
    assert all(remembers(seen, digest) for digest in ids)
    assert not remembers(seen, digest_of("id-50"))
    straddling = seen[RECORD_BYTES - 8:RECORD_BYTES + 8]  # the end of one record and the start of the next
    assert not remembers(seen, straddling)
    kept = forget_expired(seen, 1024)
    assert {digest for i, digest in enumerate(ids) if remembers(kept, digest)} == {
        digest for i, digest in enumerate(ids) if 1000 + (i * 37) % 50 > 1024}


def test_an_unknown_state_form_is_refused_naming_the_flag():
    with pytest.raises(ValueError, match="--dedup-state"):
        with streaming_pipeline() as p:
            _ = p | TestStream().add_elements([report("a", 1)]) | DedupRedeliveries(state="sharded")
