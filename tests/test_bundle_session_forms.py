"""The streaming bundle rows in their two forms (Beam's session windows, a key per bundle; bundles in buckets of
packed sightings, for the DirectRunner) are the same rows, panes and timestamps, late sightings included."""
import hashlib
import pickle

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from hypothesis import given, strategies as st

from tests.test_dedup_state_forms import collected, pipeline_of
from tests.test_trends import at
from transforms.bundles import BundleRepeats, bundle_id, packed_sighting, sessions_of, unpacked_sighting
from transforms.plumbing.distinct import pair_digest64

HOUR = 3600


def signature_of(name):
    return f"md5:{hashlib.md5(name.encode()).hexdigest()}"


def bundle_named(name):
    """Bundles a-c with ids as `bundle_id` makes them (packed in the bucketed form's state); d with an id it
    did not make (held pickled there)."""
    return name if name == "d" else bundle_id(signature_of(name), 0)


def sighting(name, seconds, user, jurisdiction="GB"):
    """A keyed sighting as `_KeyByBundleFn` makes it, at its event time."""
    micros = seconds * 1_000_000
    return at(seconds, ((bundle_named(name), signature_of(name)),
                        (micros, pair_digest64("esp-1", user), "esp-1", jurisdiction)))


def sighting_stream():
    """Gap 1 h, lateness 1 h: sessions firing on time, a late sighting joining a fired session, a late one
    opening a session whose end has passed, one whose window expired (dropped), one after a bundle's
    session was forgotten, and a silence longer than the gap."""
    return (TestStream().advance_watermark_to(0)
            .add_elements([sighting("a", 0, "u1"), sighting("a", 1800, "u2"), sighting("b", 100, "u1"),
                           sighting("c", 5000, "u3")])
            .advance_watermark_to(2 * HOUR)
            .add_elements([sighting("a", 600, "u1", "US"), sighting("b", 7000, "u4"), sighting("d", 1000, "u5")])
            .advance_watermark_to(3 * HOUR)
            .add_elements([sighting("a", 200, "u9"), sighting("a", 9000, "u6"), sighting("c", 6000, "u3")])
            .advance_watermark_to(6 * HOUR)
            .add_elements([sighting("c", 4 * HOUR, "u7")])
            .advance_watermark_to_infinity())


def row_fields(row, timestamp=beam.DoFn.TimestampParam):
    return (row["bundle_id"], row["window_start"].timestamp(), row["window_end"].timestamp(),
            row["first_seen"].timestamp(), row["last_seen"].timestamp(), row["reports"], row["users"], row["esps"],
            tuple(row["jurisdictions"]), row["pane_index"], row["pane_timing"], timestamp.micros)


def bundle_rows(form, buckets=1024):
    @pipeline_of(streaming=True)
    def build(p):
        repeats = BundleRepeats("unused", HOUR, allowed_lateness_seconds=HOUR)
        keyed = p | sighting_stream()
        rows, _ = (repeats.bundles_in_sessions(keyed) if form == "sessions"
                   else repeats.bundles_in_buckets(keyed, buckets))
        return rows | beam.Map(row_fields)
    return collected(build)


@pytest.mark.parametrize("buckets", [1, 3, 1024])
def test_the_bucketed_form_writes_the_rows_of_beams_session_windows(buckets):
    sessions = bundle_rows("sessions")
    assert bundle_rows("buckets", buckets) == sessions
    by_bundle = {}
    for row in sessions:
        by_bundle.setdefault(row[0], []).append(row)
    of_a = sorted(by_bundle[bundle_named("a")], key=lambda row: (row[1], row[9]))
    assert [(row[1], row[5], row[9], row[10]) for row in of_a] == [
        (0, 2, 0, "ON_TIME"), (0, 3, 1, "LATE"),  # a late sighting joins the fired session: an accumulating pane
        (9000, 1, 0, "ON_TIME")]  # a session after a silence longer than the gap
    of_d = by_bundle[bundle_named("d")]
    assert [(row[5], row[9], row[10]) for row in of_d] == [(1, 0, "LATE")]  # opened behind the watermark


def test_sessions_chain_times_less_than_the_gap_apart():
    assert sessions_of([0, 5, 10, 30, 39], 10) == [(0, 10), (30, 39)]


texts = st.text(max_size=40)
signatures = st.one_of(texts, st.builds(lambda kind, digest: f"{kind}:{digest.hex()}", texts, st.binary(max_size=300)))
bundle_ids = st.one_of(texts, st.builds(bundle_id, signatures, st.integers(0, 2**62)))


@given(bundle_ids, signatures, st.integers(-2**63, 2**63 - 1), st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)),
       st.one_of(texts, st.integers()), texts)
def test_a_packed_sighting_unpacks_to_itself(bundle, signature, micros, user, esp, jurisdiction):
    packed = packed_sighting(((bundle, signature), (micros, user, esp, jurisdiction)))
    assert unpacked_sighting(packed) == (bundle, signature, micros, user, esp, jurisdiction)


def test_a_sighting_packs_to_about_half_its_pickle():
    signature = signature_of("a")
    sighting = (bundle_id(signature, 0), signature, 1_764_755_000_000_000, pair_digest64("esp-1", "u1"), "esp-1",
                "US-CA")
    packed = packed_sighting((sighting[:2], sighting[2:]))
    assert unpacked_sighting(packed) == sighting
    assert len(packed) < 0.6 * len(pickle.dumps(sighting, pickle.HIGHEST_PROTOCOL))
