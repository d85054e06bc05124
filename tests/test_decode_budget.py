"""Decoding is bounded by the pixels really decoded, per file and per report, and by time per report."""
import base64
import hashlib
import io

import pytest
from PIL import Image

from tests.conftest import example_report
from transforms.demo.packaged import packaged
from transforms.demo.synthetic_images import encode_jpeg, encode_png, make_image
from transforms.matching import media
from transforms.matching.matcher import HashMatcher
from transforms.matching.media import MediaBudget, UnhashableMedia, decode_image, hash_media
from transforms.matching.signals import Md5Signal, PdqSignal, PHashSignal, Sha1Signal

ALL = (Md5Signal, Sha1Signal, PHashSignal, PdqSignal)
# A flat grey 6300x6300 lossless WebP in 38 bytes (PIL: Image.new("L", (6300, 6300), 200), saved with
# lossless=True, method=0): under the 40 Mpx declared limit, and ~3-10 s to decode here.
TINY_HUGE_WEBP = base64.b64decode("UklGRh4AAABXRUJQVlA4TBEAAAAvm9gmBgdQ5CIXuf+BiOh/AAA=")


def report_with_files(contents):
    report = example_report()
    template = {**report["files"][0], "contentUri": None, "originalFileHashes": None}
    report["files"] = [{**template, "fileId": f"f{n}", "content": base64.b64encode(data).decode()}
                       for n, data in enumerate(contents)]
    return report


def test_a_tiny_file_declaring_40_mpx_is_refused_before_decoding_and_keeps_its_digests():
    assert Image.open(io.BytesIO(TINY_HUGE_WEBP)).size == (6300, 6300) and len(TINY_HUGE_WEBP) < 100
    with pytest.raises(UnhashableMedia) as caught:
        hash_media(TINY_HUGE_WEBP, ALL)
    assert str(caught.value) == "decoding 6300x6300 pixels exceeds the file's budget (16000000 pixels left)"
    assert dict(caught.value.hashes)[Md5Signal] == hashlib.md5(TINY_HUGE_WEBP).hexdigest()


def test_thirty_of_them_in_one_report_are_all_refused_and_the_report_is_still_enriched():
    matcher = HashMatcher.from_banks([packaged("demo-bank.csv")])
    files = matcher.enrich_report(report_with_files([TINY_HUGE_WEBP] * 30))["files"]
    assert {(file["mediaStatus"], file["mediaError"]) for file in files} == {
        ("unhashable", "decoding 6300x6300 pixels exceeds the file's budget (16000000 pixels left)")}
    assert all({h["signalType"] for h in file["hashes"]} == {"MD5", "SHA1"} for file in files)


def test_a_jpeg_is_charged_the_pixels_its_draft_decodes_not_its_declared_size():
    """A 4800x4800 JPEG (23 Mpx declared, over the per-file budget) decodes at 1/8 scale for both drafts."""
    data = encode_jpeg(Image.new("RGB", (4800, 4800), (90, 120, 150)), 80)
    budget = MediaBudget()
    hashes = dict(hash_media(data, ALL, budget))
    assert PHashSignal in hashes
    assert budget.pixels_left == media.MAX_DECODED_PIXELS_PER_REPORT - 2 * 600 * 600
    with pytest.raises(UnhashableMedia, match="exceeds the file's budget"):
        decode_image(data)  # no draft: the full 4800x4800 would be decoded


def test_the_files_of_one_report_share_its_pixel_budget(monkeypatch):
    monkeypatch.setattr(media, "MAX_DECODED_PIXELS_PER_REPORT", 2 * 256 * 256 + 100)
    images = [encode_png(make_image(seed, size=256)) for seed in (1, 2, 3)]
    matcher = HashMatcher.from_banks([packaged("demo-bank.csv")])
    first, second, third = matcher.enrich_report(report_with_files(images))["files"]
    assert first["mediaStatus"] == second["mediaStatus"] == "hashed"
    assert (third["mediaStatus"], third["mediaError"]) == (
        "unhashable", "the report's decode budget is spent (256x256 pixels needed, 100 left)")
    assert {h["signalType"] for h in third["hashes"]} == {"MD5", "SHA1"}
    again = matcher.enrich_report(report_with_files(images[2:]))["files"][0]
    assert again["mediaStatus"] == "hashed"  # the next report has a budget of its own


def test_a_report_stops_decoding_once_its_time_budget_is_spent(monkeypatch):
    monkeypatch.setattr(media, "MAX_MEDIA_SECONDS_PER_REPORT", 1e-9)  # any real decode takes longer
    images = [encode_png(make_image(seed, size=64)) for seed in (1, 2)]
    matcher = HashMatcher.from_banks([packaged("demo-bank.csv")])
    first, second = matcher.enrich_report(report_with_files(images))["files"]
    assert first["mediaStatus"] == "hashed"
    assert (second["mediaStatus"], second["mediaError"]) == ("unhashable", "the report's media time budget is spent")


def test_reading_counts_against_the_report_time_budget_and_stops_further_reads(monkeypatch, tmp_path):
    """A slow store cannot hold one report for read timeout x files: once the time is spent, nothing is read."""
    monkeypatch.setattr(media, "MAX_MEDIA_SECONDS_PER_REPORT", 1e-9)  # any real read takes longer
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(encode_png(make_image(5, size=64)))
    report = example_report()
    template = {**report["files"][0], "content": None, "originalFileHashes": None}
    report["files"] = [{**template, "fileId": name, "contentUri": str(tmp_path / name)} for name in ("a.png", "b.png")]
    matcher = HashMatcher.from_banks([packaged("demo-bank.csv")], media_roots=[str(tmp_path)])
    read_not_decoded, not_read = matcher.enrich_report(report)["files"]
    spent = ("unhashable", "the report's media time budget is spent")
    assert (read_not_decoded["mediaStatus"], read_not_decoded["mediaError"]) == spent
    assert {h["signalType"] for h in read_not_decoded["hashes"]} == {"MD5", "SHA1"}
    assert (not_read["mediaStatus"], not_read["mediaError"], not_read["hashes"]) == (*spent, [])
