"""EnrichHashes and its core, HashMatcher, on real images, real bank files and a real TestPipeline."""
import base64
import os
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import FixedWindows, GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.streaming import local_streaming_options
from tests.conftest import example_report
from transforms.dedup import DedupRedeliveries
from transforms.plumbing.direct_runner import install_local_streaming_support
from transforms.hashes import EnrichHashes, MatchHashBatches
from transforms.location.jurisdiction_rules import priority_of
from transforms.matching.banks import BankEntry, write_bank
from transforms.matching.matcher import HashMatcher
from transforms.matching.signals import Md5Signal, PHashSignal
from transforms.demo.synthetic_images import encode_jpeg, make_image, variant


def image_bytes(seed, quality=85):
    return encode_jpeg(make_image(seed), quality)


def report_with(report_id, *files):
    report = example_report()
    report["reportId"] = report_id
    blank = {**report["files"][0], "contentUri": None, "content": None, "originalFileHashes": None}
    report["files"] = [{**blank, "fileId": f"f-{n}", **file} for n, file in enumerate(files, start=1)]
    return report


def content(data):
    return {"content": base64.b64encode(data).decode("ascii")}


@pytest.fixture
def banks(tmp_path):
    known = PHashSignal.hash_image(make_image(1))
    positive = str(tmp_path / "bank.csv")
    write_bank([BankEntry(PHashSignal, known, "demo", "series-1", "ext-1"),
                BankEntry(Md5Signal, "0" * 32, "demo", "zeros", None),
                BankEntry(PHashSignal, PHashSignal.hash_image(make_image(2)), "demo", "series-2", None)], positive)
    negative = str(tmp_path / "negative.parquet")
    write_bank([BankEntry(PHashSignal, PHashSignal.hash_image(make_image(2)), "benign", "meme", None)], negative)
    return positive, negative


def summary_of(enriched):
    return enriched["reportId"], enriched["_hashes"]["matchSummary"]


def test_pipeline_known_new_no_media_negative_unhashable_and_bad_provided_hash(banks):
    positive, negative = banks
    reports = [
        report_with("known", content(variant(make_image(1), "resize", random.Random(5)))),
        report_with("new", content(image_bytes(3))),
        report_with("no-media"),
        report_with("benign", content(image_bytes(2))),
        report_with("broken", content(b"GIF89a not really an image")),
        report_with("bad-provided", {"originalFileHashes": [{"hashType": "FOO", "value": "ab"},
                                                            {"hashType": "pHash", "value": "xyz"}]}),
        report_with("provided-md5", {"originalFileHashes": [{"hashType": "md5", "value": "0" * 32}]}),
    ]
    with TestPipeline() as pipeline:
        enriched, dead = pipeline | beam.Create(reports) | EnrichHashes([positive], [negative])
        assert_that(enriched | "Summaries" >> beam.Map(summary_of), equal_to([
            ("known", "known"), ("new", "new"), ("no-media", "no_media"), ("benign", "known_benign"),
            ("broken", "new"), ("bad-provided", "no_media"), ("provided-md5", "known")]), label="Summaries")
        assert_that(dead, equal_to([]), label="NoDeadLetters")


def test_matcher_file_records(banks):
    positive, negative = banks
    matcher = HashMatcher.from_banks([positive], [negative])
    known, broken, bad, benign = matcher.enrich_reports([
        report_with("a", content(image_bytes(1, quality=60))),
        report_with("b", content(b"\x00" * 100)),
        report_with("c", {"originalFileHashes": [{"hashType": "SHA-1", "value": "nothex"}]}),
        report_with("d", content(image_bytes(2)))])
    file = known["files"][0]
    assert set(file) == {"fileId", "mediaStatus", "mediaError", "hashes", "video", "matches", "benignMatch"}
    assert file["video"] is None and file["benignMatch"] is None  # an image has no vPDQ frames
    assert file["mediaStatus"] == "hashed" and file["mediaError"] is None
    assert {h["signalType"] for h in file["hashes"]} == {"MD5", "SHA1", "PHASH", "PDQ"}
    assert [(m["bank"], m["label"], m["externalId"], m["signalType"]) for m in file["matches"]] == [
        ("demo", "series-1", "ext-1", "PHASH")]
    assert 0 <= file["matches"][0]["distance"] <= 8
    broken_file = broken["files"][0]
    assert broken_file["mediaStatus"] == "unhashable" and broken_file["mediaError"] == "not a recognised image format"
    assert {h["signalType"] for h in broken_file["hashes"]} == {"MD5", "SHA1"}
    assert bad["files"][0]["mediaStatus"] == "no_media" and "SHA1" in bad["files"][0]["mediaError"]
    assert benign["files"][0]["matches"] == [] and benign["matchSummary"] == "known_benign"
    assert benign["files"][0]["benignMatch"] == {"bank": "benign", "label": "meme", "externalId": None,
                                                 "signalType": "PHASH", "distance": 0}


def test_a_file_suppressed_by_a_negative_bank_is_known_benign_p3_not_new_p2(banks):
    """Known benign content is no sign of an unidentified victim; a new file beside it still is."""
    positive, negative = banks
    matcher = HashMatcher.from_banks([positive], [negative])
    alone, beside_new = (dict(report, _hashes=matcher.enrich_report(report)) for report in (
        report_with("benign", content(image_bytes(2))),
        report_with("benign+new", content(image_bytes(2)), content(image_bytes(3)))))
    assert priority_of(alone) == ("P3", "media matches known benign content (a negative-bank entry) only")
    assert alone["_hashes"]["matchSummary"] == "known_benign"
    assert beside_new["_hashes"]["matchSummary"] == "new" and priority_of(beside_new)[0] == "P2"


def test_unreadable_uri_is_unhashable_without_the_uri(banks, tmp_path):
    matcher = HashMatcher.from_banks([banks[0]], media_roots=[str(tmp_path)])
    missing = str(tmp_path / "secret-name.jpg")
    file = matcher.enrich_report(report_with("x", {"contentUri": missing}))["files"][0]
    assert file["mediaStatus"] == "unhashable" and "secret-name" not in file["mediaError"]
    on_disk = tmp_path / "ok.jpg"
    on_disk.write_bytes(image_bytes(1))
    assert matcher.enrich_report(report_with("y", {"contentUri": str(on_disk)}))["matchSummary"] == "known"


def test_one_failing_report_is_dead_lettered_alone(banks):
    """A report whose files cannot even be iterated fails alone; its batch-mates still come through."""
    positive, _ = banks
    reports = [report_with("good", content(image_bytes(1))), dict(report_with("bad"), files=[None])]
    with TestPipeline() as pipeline:
        enriched, dead = pipeline | beam.Create(reports) | EnrichHashes([positive])
        assert_that(enriched | "Ids" >> beam.Map(lambda r: r["reportId"]), equal_to(["good"]), label="Good")
        assert_that(dead | "Dead" >> beam.Map(lambda d: (d["stage"], d["reportId"])),
                    equal_to([("enrich_hashes", "bad")]), label="Dead")


def test_banks_refresh_without_restart(tmp_path):
    bank = str(tmp_path / "bank.csv")
    write_bank([BankEntry(Md5Signal, "0" * 32, "demo", None, None)], bank)
    fn = MatchHashBatches([bank], [], refresh_seconds=0)
    fn.setup()
    report = report_with("r", content(image_bytes(7)))
    assert [r.value["_hashes"]["matchSummary"] for r in one_bundle(fn, report)] == ["new"]
    write_bank([BankEntry(PHashSignal, PHashSignal.hash_image(make_image(7)), "fresh", None, None)], bank)
    os.utime(bank, (1, 1))  # a different mtime even within the same second
    assert [r.value["_hashes"]["matchSummary"] for r in one_bundle(fn, report)] == ["known"]


def one_bundle(fn, *reports):
    """What `fn` emits for a bundle of these reports (each at time 0 in the global window)."""
    fn.start_bundle()
    emitted = [out for report in reports
               for out in fn.process(report, WindowedValue(report, Timestamp(0), (GlobalWindow(),)))]
    return emitted + list(fn.finish_bundle())



def check_hourly_counts_after_a_watermark_jump(enrich, expected):
    """Per-hour report counts when a stream's reports are released by the dedup as the watermark jumps to
    the end (a finished or drained stream), with `enrich` between the dedup and the hourly window."""
    install_local_streaming_support()
    start = Timestamp.from_rfc3339("2026-11-23T10:00:00Z")
    reports = [TimestampedValue(report_with(f"r{n}", content(image_bytes(n))), start + 60 * n) for n in range(3)]
    with beam.Pipeline(options=local_streaming_options([])) as pipeline:
        counts = (pipeline
                  | TestStream().add_elements(reports).advance_watermark_to_infinity()
                  | DedupRedeliveries()
                  | "Enrich" >> enrich
                  | beam.WindowInto(FixedWindows(3600))
                  | beam.Map(lambda report: ("reports", 1))
                  | beam.CombinePerKey(sum))
        assert_that(counts, equal_to(expected))


def test_each_report_keeps_its_event_time_through_the_batch_where_batch_elements_loses_it(tmp_path):
    """Why EnrichHashes batches by itself: behind Beam's BatchElements (a bundle's batch stamped at the end
    of the global window) the same reports come too late for their window and are dropped."""
    bank = str(tmp_path / "bank.csv")
    write_bank([BankEntry(Md5Signal, "0" * 32, "demo", None, None)], bank)
    enriched_only = beam.ptransform_fn(lambda reports: (reports | EnrichHashes([bank]))[0])
    check_hourly_counts_after_a_watermark_jump(enriched_only(), [("reports", 3)])
    check_hourly_counts_after_a_watermark_jump(
        beam.Map(lambda report, ts=beam.DoFn.TimestampParam: (report, ts))
        | beam.BatchElements(min_batch_size=1, max_batch_size=64)
        | beam.FlatMap(lambda batch: [TimestampedValue(report, ts) for report, ts in batch]), [])
