"""Incident bundles: one deterministic signature per report, ids stamped before routing, bundle records."""
import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from tests.test_trends import at, routed_record
from transforms.bundles import BundleRepeats, StampBundleIds, bundle_id, window_start_seconds
from transforms.reports.signatures import content_signature, record_signature, report_signature

HOUR = 3600


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


def test_an_enriched_report_and_its_routed_record_get_the_same_signature():
    report = {"reportId": "r1", "batchedReport": None, "_hashes": {"files": [results(hashes=[("SHA1", "d1")])]}}
    assert report_signature(report) == record_signature(routed_record("r1", hashes=[("SHA1", "d1")])) == "sha1:d1"


def test_bundle_ids_are_deterministic_per_signature_and_window():
    start = window_start_seconds(Timestamp(2 * HOUR + 59), HOUR)
    assert start == 2 * HOUR
    assert bundle_id("md5:aa", start) == bundle_id("md5:aa", 2 * HOUR)
    assert bundle_id("md5:aa", start) != bundle_id("md5:aa", 3 * HOUR) != bundle_id("md5:bb", 3 * HOUR)
    assert window_start_seconds(Timestamp(-1), HOUR) == -HOUR


def enriched(report_id, esp, user, jurisdiction, hashes=(), matches=(), batched=None):
    """An enriched report as StampBundleIds sees it, plus what the routed record needs."""
    return {"reportId": report_id, "batchedReport": {"reason": batched} if batched else None,
            "_hashes": {"files": [results(hashes, matches)]},
            "_test": dict(esp=esp, user=user, jurisdiction=jurisdiction, hashes=hashes, matches=matches, batched=batched)}


def as_routed(report):
    return routed_record(report["reportId"], bundle=report.get("_bundleId"), **report["_test"])


def bundle_summary(bundle):
    return (bundle["signature"], bundle["signature_kind"], bundle["reports"], bundle["users"], bundle["esps"],
            tuple(bundle["jurisdictions"]), bundle["first_seen"].minute, bundle["last_seen"].minute)


def test_reports_sharing_a_signature_in_a_window_form_one_bundle_whose_id_they_carry(tmp_path):
    reports = [
        at(60, enriched("r1", "esp-1", "user-secret-1", "GB", matches=[("ncmec", "e-1")])),
        at(300, enriched("r2", "esp-1", "user-secret-1", "US-WA", hashes=[("PDQ", "0f")], matches=[("ncmec", "e-1")])),
        at(600, enriched("r3", "esp-2", "user-secret-1", "GB", matches=[("ncmec", "e-1")])),
        at(900, enriched("r4", "esp-2", None, "DE", hashes=[("MD5", "aa")])),
        at(1200, enriched("r5", "esp-3", "user-secret-5", "DE", matches=[("ncmec", "e-1")], batched="VIRAL_POTENTIAL_MEME")),
        at(1500, enriched("r6", "esp-3", "user-secret-6", "DE", hashes=[("PDQ", "0f")])),  # no signature
        at(HOUR + 60, enriched("r7", "esp-1", "user-secret-7", "GB", matches=[("ncmec", "e-1")])),
    ]
    with TestPipeline() as p:
        stamped = p | beam.Create(reports) | StampBundleIds(HOUR)
        bundles = stamped | beam.Map(as_routed) | BundleRepeats(str(tmp_path), HOUR)
        assert_that(bundles | beam.Map(bundle_summary), equal_to([
            ("bank:ncmec:e-1", "bank_entry", 3, 2, 2, ("GB", "US-WA"), 1, 10),
            ("md5:aa", "exact_hash", 1, 0, 1, ("DE",), 15, 15),
            ("esp-batch:r5", "esp_batch", 1, 1, 1, ("DE",), 20, 20),
            ("bank:ncmec:e-1", "bank_entry", 1, 1, 1, ("GB",), 1, 1),
        ]), label="bundles")
        stamped_ids = stamped | "StampedIds" >> beam.Map(lambda r: (r["reportId"], r.get("_bundleId")))
        expected_ids = [("r1", bundle_id("bank:ncmec:e-1", 0)), ("r2", bundle_id("bank:ncmec:e-1", 0)),
                        ("r3", bundle_id("bank:ncmec:e-1", 0)), ("r4", bundle_id("md5:aa", 0)),
                        ("r5", bundle_id("esp-batch:r5", 0)), ("r6", None),
                        ("r7", bundle_id("bank:ncmec:e-1", HOUR))]
        assert_that(stamped_ids, equal_to(expected_ids), label="stamps")
        assert_that(bundles | "BundleIds" >> beam.Map(lambda b: b["bundle_id"]),
                    equal_to(sorted({i for _, i in expected_ids if i})), label="ids")
    files = list((tmp_path / "bundles").rglob("*.parquet"))
    assert {path.parent.name for path in files} == {"dt=1970-01-01"}
    assert sum(pq.read_table(path).num_rows for path in files) == 4
    assert not any(b"user-secret" in path.read_bytes() or b"203.0.113" in path.read_bytes() for path in files)
