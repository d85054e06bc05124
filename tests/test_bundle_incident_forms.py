"""The streaming incident stamping in its two forms (one key per signature; signatures in buckets of packed
records, for the DirectRunner) gives every report the same bundle id, out of order and forgetting included."""
import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream

from tests.test_bundle_repeats import HOUR, record
from tests.test_dedup_state_forms import collected, pipeline_of
from tests.test_trends import at
from transforms.bundles import (INCIDENT_RECORD, _KeyBySignatureBucketFn, _SplitBySignatureFn, _StampIncidentsFn,
                                _StampIncidentsInBucketFn, bundle_id, incident_offset, digest_of, held_half)


def report(report_id, seconds, content):
    return at(seconds, record(report_id, "esp-1", None, "GB", hashes=[("MD5", content)]))


def incident_stream():
    """Gap 1 h, lateness 1 h (kept 2 h after an incident's last report): out of order, a silence longer than
    the gap (a new incident), and long enough to be forgotten."""
    return (TestStream().advance_watermark_to(0)
            .add_elements([report("a1", 0, "aa"), report("b1", 100, "bb"), report("a2", 1800, "aa")])
            .advance_watermark_to(3600)
            .add_elements([report("a3", 600, "aa"), report("c1", 3700, "cc"), report("b2", 2 * HOUR, "bb")])
            .advance_watermark_to(3 * HOUR)
            .add_elements([report("b3", 2 * HOUR + 1000, "bb"), report("a4", 3 * HOUR + 20, "aa")])
            .advance_watermark_to(9 * HOUR)
            .add_elements([report("c2", 4000, "cc"), report("a5", 9 * HOUR + 5, "aa")])
            .advance_watermark_to_infinity())


def stamped_ids(form, buckets):
    @pipeline_of(streaming=True)
    def build(p):
        signed = (p | incident_stream() | beam.ParDo(_SplitBySignatureFn()).with_outputs(
            _SplitBySignatureFn.UNSIGNED, "failures", main="signed")).signed
        if form == "per-key":
            out = signed | beam.ParDo(_StampIncidentsFn(HOUR, HOUR))
        else:
            out = (signed | beam.ParDo(_KeyBySignatureBucketFn(buckets))
                   | beam.ParDo(_StampIncidentsInBucketFn(HOUR, HOUR)))
        return out | beam.Map(lambda r: (r["reportId"], r["bundleId"]))
    return collected(build)


@pytest.mark.parametrize("buckets", [1, 2, 1024])
def test_the_bucketed_form_stamps_what_the_per_key_form_stamps(buckets):
    per_key = stamped_ids("per-key", buckets)
    assert stamped_ids("bucketed", buckets) == per_key
    ids = dict(per_key)
    assert ids["a1"] == ids["a2"] == ids["a3"] == bundle_id("md5:aa", 0)
    assert ids["a4"] == bundle_id("md5:aa", (3 * HOUR + 20) * 1_000_000)  # more than the gap after a2
    assert ids["c2"] == bundle_id("md5:cc", 4000 * 1_000_000)  # c1 forgotten: a new incident, late as it is
    assert ids["b3"] == ids["b2"] != ids["b1"]


def test_a_digest_is_found_only_at_a_record_start():
    digests = [held_half(digest_of(f"md5:{i}")) for i in range(5)]
    packed = b"".join(INCIDENT_RECORD.pack(digest, i, i) for i, digest in enumerate(digests))
    assert [incident_offset(packed, digest) for digest in digests] == [i * INCIDENT_RECORD.size for i in range(5)]
    straddling = packed[INCIDENT_RECORD.size - 4:INCIDENT_RECORD.size + 4]
    assert incident_offset(packed, straddling) == -1
    assert incident_offset(packed, held_half(digest_of("md5:5"))) == -1
