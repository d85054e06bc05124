"""Incident bundles: one deterministic signature per report, ids stamped on routed records that stay the same
for a whole incident, bundle records; the same in batch and streaming."""
import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from tests.test_trends import at, routed_record, streaming_pipeline
from transforms.bundles import BundleRepeats, StampBundleIds, bundle_id, next_incident
from transforms.reports.signatures import content_signature, record_signature

HOUR = 3600
MICROS = 1_000_000


def results(hashes=(), matches=()):
    return {"hashes": [{"signalType": signal, "value": value, "source": "provided"} for signal, value in hashes],
            "matches": [{"bank": bank, "externalId": entry, "label": None, "signalType": "PDQ", "distance": 4}
                        for bank, entry in matches]}


def test_a_bank_entry_wins_over_exact_hashes_and_the_smallest_wins_within_a_class():
    files = [results(hashes=[("MD5", "AA")]), results(hashes=[("PDQ", "ff00")], matches=[("ncmec", "e-9"), ("iwf", "e-2")])]
    assert content_signature(files, None, "r1") == "bank:iwf:e-2"
    assert content_signature([results(hashes=[("SHA256", "BB"), ("MD5", "cc")])], None, "r1") == "md5:cc"


def test_exact_hash_types_are_normalised_and_unmatched_perceptual_hashes_do_not_bundle():
    assert content_signature([results(hashes=[("sha-256", "AbC")])], None, "r") == "sha256:abc"
    assert content_signature([results(hashes=[("PDQ", "ff00"), ("PHASH", "01")])], None, "r") is None
    assert content_signature([results(matches=[("ncmec", None)])], None, "r") is None  # no entry to name
    assert content_signature([], None, "r") is None


def test_an_esp_batched_report_is_a_bundle_of_its_own():
    files = [results(hashes=[("MD5", "aa")], matches=[("ncmec", "e-1")])]
    assert content_signature(files, "VIRAL_POTENTIAL_MEME", "r-7") == "esp-batch:r-7"


def test_a_routed_record_gets_the_signature_of_its_files():
    assert record_signature(routed_record("r1", hashes=[("SHA1", "d1")])) == "sha1:d1"


def test_a_report_within_the_gap_of_the_last_one_continues_its_incident():
    gap = 24 * HOUR * MICROS
    incident = next_incident(None, 0, gap)
    assert incident == (0, 0)
    incident = next_incident(incident, 23 * HOUR * MICROS, gap)
    incident = next_incident(incident, 46 * HOUR * MICROS, gap)  # 23 h after the last one: still the same
    assert incident == (0, 46 * HOUR * MICROS)
    assert next_incident(incident, 70 * HOUR * MICROS, gap) == (70 * HOUR * MICROS,) * 2  # 24 h of quiet: a new one
    assert bundle_id("md5:aa", 0) == bundle_id("md5:aa", 0) != bundle_id("md5:aa", 1) != bundle_id("md5:bb", 1)


def record(report_id, esp, user, jurisdiction, hashes=(), matches=(), batched=None):
    """A routed record as StampBundleIds sees it: built by BuildRoutedRecords, no bundle id yet."""
    return routed_record(report_id, esp=esp, user=user, jurisdiction=jurisdiction, hashes=hashes, matches=matches,
                         batched=batched)


def bundle_summary(bundle):
    return (bundle["signature"], bundle["signature_kind"], bundle["reports"], bundle["users"], bundle["esps"],
            tuple(bundle["jurisdictions"]), bundle["first_seen"].minute, bundle["last_seen"].minute)


def test_reports_sharing_a_signature_in_a_window_form_one_bundle_whose_id_they_carry(tmp_path):
    reports = [
        at(60, record("r1", "esp-1", "user-secret-1", "GB", matches=[("ncmec", "e-1")])),
        at(300, record("r2", "esp-1", "user-secret-1", "US-WA", hashes=[("PDQ", "0f")], matches=[("ncmec", "e-1")])),
        at(600, record("r3", "esp-2", "user-secret-1", "GB", matches=[("ncmec", "e-1")])),
        at(900, record("r4", "esp-2", None, "DE", hashes=[("MD5", "aa")])),
        at(1200, record("r5", "esp-3", "user-secret-5", "DE", matches=[("ncmec", "e-1")], batched="VIRAL_POTENTIAL_MEME")),
        at(1500, record("r6", "esp-3", "user-secret-6", "DE", hashes=[("PDQ", "0f")])),  # no signature
        at(2 * HOUR + 60, record("r7", "esp-1", "user-secret-7", "GB", matches=[("ncmec", "e-1")])),  # gap > 1 h
    ]
    with TestPipeline() as p:
        stamped = p | beam.Create(reports) | StampBundleIds(HOUR)
        bundles = stamped | BundleRepeats(str(tmp_path), HOUR)
        assert_that(bundles | beam.Map(bundle_summary), equal_to([
            ("bank:ncmec:e-1", "bank_entry", 3, 2, 2, ("GB", "US-WA"), 1, 10),
            ("md5:aa", "exact_hash", 1, 0, 1, ("DE",), 15, 15),
            ("esp-batch:r5", "esp_batch", 1, 1, 1, ("DE",), 20, 20),
            ("bank:ncmec:e-1", "bank_entry", 1, 1, 1, ("GB",), 1, 1),
        ]), label="bundles")
        stamped_ids = stamped | "StampedIds" >> beam.Map(lambda r: (r["reportId"], r.get("bundleId")))
        entry = "bank:ncmec:e-1"
        expected_ids = [("r1", bundle_id(entry, 60 * MICROS)), ("r2", bundle_id(entry, 60 * MICROS)),
                        ("r3", bundle_id(entry, 60 * MICROS)), ("r4", bundle_id("md5:aa", 900 * MICROS)),
                        ("r5", bundle_id("esp-batch:r5", 1200 * MICROS)), ("r6", None),
                        ("r7", bundle_id(entry, (2 * HOUR + 60) * MICROS))]
        assert_that(stamped_ids, equal_to(expected_ids), label="stamps")
        assert_that(bundles | "BundleIds" >> beam.Map(lambda b: b["bundle_id"]),
                    equal_to(sorted({i for _, i in expected_ids if i})), label="ids")
    files = list((tmp_path / "bundles").rglob("*.parquet"))
    assert {path.parent.name for path in files} == {"dt=1970-01-01"}
    assert sum(pq.read_table(path).num_rows for path in files) == 4
    assert not any(b"user-secret" in path.read_bytes() or b"203.0.113" in path.read_bytes() for path in files)


def viral_reports():
    """md5:aa every 50 minutes for 30 hours (one incident); md5:bb at hour 0 and again 25 hours later (two)."""
    reports = [at(minute * 60, record(f"v{minute}", f"esp-{index % 3}", f"user-{index % 7}", ["GB", "IN"][index % 2],
                                       hashes=[("MD5", "aa")])) for index, minute in enumerate(range(0, 30 * 60, 50))]
    reports += [at(600, record("b1", "esp-1", None, "GB", hashes=[("MD5", "bb")])),
                at(25 * HOUR + 600, record("b2", "esp-1", None, "GB", hashes=[("MD5", "bb")]))]
    return reports


def stamp_and_bundle(p, reports, tmp_path):
    stamped = reports | StampBundleIds(24 * HOUR)
    bundles = stamped | BundleRepeats(str(tmp_path), 24 * HOUR)
    return (stamped | "Ids" >> beam.Map(lambda r: (r["reportId"], r.get("bundleId"))),
            bundles | "Summaries" >> beam.Map(lambda b: (b["bundle_id"], b["signature"], b["reports"], b["users"],
                                                         b["esps"], tuple(b["jurisdictions"]), b["first_seen"],
                                                         b["last_seen"], b["window_start"], b["window_end"])))


def hour_by_hour(reports):
    """A stream that delivers each hour's reports, then moves the watermark past that hour."""
    stream = TestStream()
    for hour in range(32):
        stream = stream.add_elements([r for r in reports if hour * HOUR <= r.timestamp.micros / MICROS < (hour + 1) * HOUR])
        stream = stream.advance_watermark_to((hour + 1) * HOUR)
    return stream.advance_watermark_to_infinity()


def test_a_30_hour_viral_repeat_is_one_bundle_with_one_id_in_batch_and_in_streaming(tmp_path):
    import datetime

    reports = viral_reports()
    viral = [r.value["reportId"] for r in reports if r.value["reportId"].startswith("v")]
    first, last = 0, int(viral[-1][1:]) * 60
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    expected_bundles = [
        (bundle_id("md5:aa", 0), "md5:aa", len(viral), 21, 3, ("GB", "IN"), epoch, epoch + datetime.timedelta(seconds=last),
         epoch, epoch + datetime.timedelta(seconds=last + 24 * HOUR)),
        (bundle_id("md5:bb", 600 * MICROS), "md5:bb", 1, 0, 1, ("GB",), epoch + datetime.timedelta(seconds=600),
         epoch + datetime.timedelta(seconds=600), epoch + datetime.timedelta(seconds=600),
         epoch + datetime.timedelta(seconds=600 + 24 * HOUR)),
        (bundle_id("md5:bb", (25 * HOUR + 600) * MICROS), "md5:bb", 1, 0, 1, ("GB",),
         *[epoch + datetime.timedelta(seconds=25 * HOUR + 600)] * 3, epoch + datetime.timedelta(seconds=49 * HOUR + 600)),
    ]
    expected_ids = [(report_id, bundle_id("md5:aa", first)) for report_id in viral] + [
        ("b1", bundle_id("md5:bb", 600 * MICROS)), ("b2", bundle_id("md5:bb", (25 * HOUR + 600) * MICROS))]
    assert last > 29 * HOUR
    for form in ("batch", "streaming"):
        if form == "batch":
            with TestPipeline() as p:
                ids, bundles = stamp_and_bundle(p, p | beam.Create(reports), tmp_path / form)
                assert_that(ids, equal_to(expected_ids), label="ids")
                assert_that(bundles, equal_to(expected_bundles), label="bundles")
        else:
            with streaming_pipeline() as p:
                ids, bundles = stamp_and_bundle(p, p | hour_by_hour(reports), tmp_path / form)
                assert_that(ids, equal_to(expected_ids), label="ids")
                assert_that(bundles, equal_to(expected_bundles), label="bundles")
    written = {form: sorted(str(path.relative_to(tmp_path / form)) for path in (tmp_path / form).rglob("*.parquet"))
               for form in ("batch", "streaming")}
    assert written["batch"] == written["streaming"] and len(written["batch"]) == 3
