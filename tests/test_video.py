"""vPDQ: decoding and sampling real videos made with PyAV, the text forms, the index and the matcher."""
import base64
import dataclasses
import io
import random

import av
import numpy as np
import pytest

from transforms.demo.synthetic_images import encode_png
from transforms.demo.synthetic_videos import SCENE_SECONDS, VideoSpec, encode_video, frame_at, variant_spec
from transforms.matching import code_search
from transforms.matching.banks import BankEntry, BankFileError, BankIndexes, entry_from_row
from transforms.matching.matcher import HashMatcher, VideoMatching
from transforms.matching.media import UnhashableMedia
from transforms.matching.signals import PdqSignal, VPdqFeature, VPdqSignal
from transforms.matching.video import VideoLimits, hash_video, is_video
from transforms.matching.video_index import VideoIndex

ORIGINAL = VideoSpec("known-1", seconds=8.0, fps=10, size=(192, 144), bit_rate=600_000)


@pytest.fixture(scope="module")
def original_bytes():
    return encode_video(ORIGINAL)


@pytest.fixture(scope="module")
def matcher(original_bytes):
    entry = BankEntry(VPdqSignal, VPdqSignal.to_text(hash_video(original_bytes).features), "videos", "series-1", "v1")
    return HashMatcher(BankIndexes([entry]))


def file_record(matcher, data):
    return matcher.enrich_report({"files": [{"fileId": "f", "content": base64.b64encode(data).decode()}]})


def test_frames_are_sampled_once_a_second_with_number_time_and_quality(original_bytes):
    hashes = hash_video(original_bytes)
    assert [f.timestamp for f in hashes.features] == [float(t) for t in range(8)]
    assert [f.frame_number for f in hashes.features] == [10 * t for t in range(8)]
    assert all(f.quality >= 50 for f in hashes.features)
    assert hashes.duration_seconds == pytest.approx(8.0, abs=0.2)
    assert hashes.summary() == {"signalType": "VPDQ", "frames": 8, "durationSeconds": hashes.summary()["durationSeconds"]}


def test_a_sampled_frame_hashes_like_the_same_picture_as_an_image(original_bytes):
    """Frame 3 s of the video is the picture frame_at(3 s) drew, through H.264: PDQ stays close."""
    frame = hash_video(original_bytes).features[3]
    picture_hash, _ = PdqSignal.hash_pixels(frame_at(ORIGINAL.seed, 3.0, ORIGINAL.size))
    assert PdqSignal.distance(frame.pdq_hex, picture_hash) <= 20


def test_seeking_between_keyframes_samples_the_same_frames_as_decoding_every_frame():
    dense = encode_video(dataclasses.replace(ORIGINAL, keyframe_seconds=1.0))
    sparse = encode_video(dataclasses.replace(ORIGINAL, keyframe_seconds=100.0))  # one keyframe: no seeking
    assert [f.frame_number for f in hash_video(dense).features] == [f.frame_number for f in hash_video(sparse).features]


def test_a_finer_interval_samples_more_frames(original_bytes):
    assert len(hash_video(original_bytes, interval=0.5).features) == 16


def test_consecutive_identical_frames_collapse_into_the_first():
    still = encode_video(dataclasses.replace(ORIGINAL, seed="still", format="gif"))
    features = hash_video(still).features
    assert all(a.pdq_hex != b.pdq_hex for a, b in zip(features, features[1:]))


@pytest.mark.parametrize("kind", ["low_bitrate", "half_size", "other_format", "gif"])
def test_re_encodings_match_with_both_percentages(matcher, kind):
    spec = variant_spec(ORIGINAL, kind, random.Random(kind))
    record = file_record(matcher, encode_video(spec))
    file = record["files"][0]
    assert record["matchSummary"] == "known", (spec, file)
    match = next(m for m in file["matches"] if m["signalType"] == "VPDQ")
    assert (match["bank"], match["label"], match["externalId"]) == ("videos", "series-1", "v1")
    assert match["queryMatchPercent"] >= 80 and match["bankMatchPercent"] >= 80
    assert file["video"]["frames"] >= 6 and file["mediaStatus"] == "hashed"
    assert {type(match[field]) for field in ("queryMatchPercent", "bankMatchPercent")} == {float}  # not numpy's


@pytest.mark.parametrize("seed", range(4))
def test_trimmed_clips_match_and_cover_their_share_of_the_original(matcher, seed):
    rng = random.Random(seed)
    start, length = rng.uniform(0.0, 0.5) * ORIGINAL.seconds, rng.uniform(0.1, 0.9) * ORIGINAL.seconds
    length = max(min(length, ORIGINAL.seconds - start), 1.0)
    clip = encode_video(dataclasses.replace(ORIGINAL, start=start, seconds=length, format="webm"))
    file = file_record(matcher, clip)["files"][0]
    [match] = [m for m in file["matches"] if m["signalType"] == "VPDQ"]
    assert match["queryMatchPercent"] >= 80
    scenes = int((start + length) // SCENE_SECONDS) - int(start // SCENE_SECONDS) + 1  # 2 banked frames each
    assert 0 < match["bankMatchPercent"] <= 100 * 2 * scenes / 8
    assert match["segments"][0]["start"] == 0.0


def test_a_bank_share_threshold_keeps_short_clips_out(original_bytes):
    entry = BankEntry(VPdqSignal, VPdqSignal.to_text(hash_video(original_bytes).features), "videos")
    strict = HashMatcher(BankIndexes([entry]), video=VideoMatching(bank_match_percent=90.0))
    clip = encode_video(dataclasses.replace(ORIGINAL, start=2.0, seconds=3.0))
    assert file_record(strict, clip)["matchSummary"] == "new"
    assert file_record(strict, original_bytes)["matchSummary"] == "known"


@pytest.mark.parametrize("seed", ["unrelated-1", "unrelated-2", "unrelated-3"])
def test_unrelated_videos_do_not_match(matcher, seed):
    record = file_record(matcher, encode_video(dataclasses.replace(ORIGINAL, seed=seed)))
    assert record["files"][0]["matches"] == [] and record["matchSummary"] == "new"


def test_frames_matching_a_banked_image_are_reported_with_their_times(original_bytes):
    picture = frame_at(ORIGINAL.seed, 4.0, (256, 192))
    image_hash, _ = PdqSignal.hash_pixels(picture)
    matcher = HashMatcher(BankIndexes([BankEntry(PdqSignal, image_hash, "images", None, "still-4")]))
    file = file_record(matcher, original_bytes)["files"][0]
    [match] = file["matches"]
    assert (match["signalType"], match["externalId"]) == ("PDQ", "still-4")
    assert any(s["start"] <= 4.0 <= s["end"] for s in match["segments"])
    assert 0 < match["queryMatchPercent"] < 100


def test_a_negative_bank_video_suppresses_the_match(original_bytes):
    entry = BankEntry(VPdqSignal, VPdqSignal.to_text(hash_video(original_bytes).features), "videos")
    benign = BankEntry(VPdqSignal, entry.value, "benign")
    matcher = HashMatcher(BankIndexes([entry]), BankIndexes([benign]))
    record = file_record(matcher, encode_video(dataclasses.replace(ORIGINAL, bit_rate=150_000)))
    assert record["files"][0]["matches"] == [] and record["files"][0]["video"]["frames"] > 0
    assert record["files"][0]["benignMatch"]["bank"] == "benign" and record["matchSummary"] == "known_benign"


def test_exact_hashes_of_a_video_match_too(original_bytes):
    record = file_record(HashMatcher(BankIndexes([])), original_bytes)
    assert {h["signalType"] for h in record["files"][0]["hashes"]} == {"MD5", "SHA1"}
    assert record["matchSummary"] == "new"


# -- the text forms -------------------------------------------------------------------------------

FEATURES = [VPdqFeature(0, "f" * 64, 100, 0.0), VPdqFeature(30, "0" * 63 + "1", 77, 1.0)]


def test_text_form_round_trips_and_reads_python_threatexchange_signal_strings():
    text = VPdqSignal.to_text(FEATURES)
    assert text == f"0,{'f' * 64},100,0.000\n30,{'0' * 63}1,77,1.000"
    assert VPdqSignal.parse(text) == FEATURES
    threatexchange = f'["{"f" * 64},100,0.0", "{"0" * 63}1,77,1.0"]'
    assert [(f.pdq_hex, f.quality, f.timestamp) for f in VPdqSignal.parse(threatexchange)] == [
        (f.pdq_hex, f.quality, f.timestamp) for f in FEATURES]


@pytest.mark.parametrize("value", ["", "0,abc,100,0", f"0,{'f' * 64},101,0", f"0,{'f' * 64},90", "[1, 2", "{}"])
def test_a_bad_vpdq_row_names_the_file_and_line(value):
    with pytest.raises(BankFileError, match=r"bank\.csv line 3: invalid VPDQ hash"):
        entry_from_row({"hash_type": "VPDQ", "hash_value": value, "bank": "b"}, "bank.csv", "line 3")


def test_a_provided_vpdq_hash_is_ignored_with_a_note():
    report = {"files": [{"fileId": "f", "originalFileHashes": [{"hashType": "VPDQ", "value": VPdqSignal.to_text(FEATURES)}]}]}
    file = HashMatcher(BankIndexes([])).enrich_report(report)["files"][0]
    assert file["hashes"] == [] and "computed from the video" in file["mediaError"]


# -- the index ------------------------------------------------------------------------------------

def random_video(rng, frames, base=None):
    """Frames of a random walk through PDQ space: neighbours 16 bits apart, like slowly moving video."""
    code = base if base is not None else rng.getrandbits(256)
    features = []
    for number in range(frames):
        features.append(VPdqFeature(number, f"{code:064x}", 100, float(number)))
        for bit in rng.sample(range(256), 16):
            code ^= 1 << bit
    return features


def brute_force(query, banked, query_percent, bank_percent):
    """The reference's brute-force matcher: per banked video, both shares, from all frame pairs."""
    found = []
    query = VPdqSignal.matchable(query)
    for number, video in enumerate(banked):
        video = VPdqSignal.matchable(video)
        close = np.array([[PdqSignal.distance(q.pdq_hex, b.pdq_hex) <= 31 for b in video] for q in query])
        shares = 100.0 * close.any(axis=1).mean(), 100.0 * close.any(axis=0).mean()
        if close.any() and shares[0] >= query_percent and shares[1] >= bank_percent:
            found.append((number, round(shares[0], 2), round(shares[1], 2)))
    return found


@pytest.mark.parametrize("searched", ["scanned", "through the multi-index"])
@pytest.mark.parametrize("thresholds", [(80.0, 0.0), (50.0, 30.0), (0.0, 0.0)])
def test_the_index_finds_what_brute_force_finds(thresholds, searched, monkeypatch):
    monkeypatch.setattr(code_search, "SCAN_CODES", {64: 0, 256: 1 << 20 if searched == "scanned" else 0})
    rng = random.Random(7)
    banked = [random_video(rng, rng.randint(1, 40)) for _ in range(60)]
    entries = [BankEntry(VPdqSignal, VPdqSignal.to_text(video), "b", None, str(n)) for n, video in enumerate(banked)]
    index = VideoIndex(entries)
    assert isinstance(index._index, code_search.ScannedCodes) == (searched == "scanned")
    queries = [banked[n][rng.randint(0, 5):][:rng.randint(1, 30)] for n in range(0, 60, 3)]
    queries = [[f._replace(pdq_hex=f"{int(f.pdq_hex, 16) ^ (1 << rng.randrange(256)):064x}") for f in q] for q in queries]
    queries += [random_video(rng, 10) for _ in range(5)]
    for query in queries:
        expected = brute_force(query, banked, *thresholds)
        found = [(int(entry.external_id), round(match.query_match_percent, 2), round(match.bank_match_percent, 2))
                 for entry, match in index.search([query], *thresholds)[0]]
        assert sorted(found) == expected


# -- hostile and broken files ----------------------------------------------------------------------

def test_what_is_and_is_not_a_video(original_bytes):
    assert is_video(original_bytes)
    assert is_video(encode_video(dataclasses.replace(ORIGINAL, format="gif", seconds=2)))
    assert not is_video(encode_png(__import__("PIL.Image").Image.new("RGB", (8, 8))))
    assert not is_video(b"plain text")


@pytest.mark.parametrize("limits, reason", [
    (VideoLimits(max_bytes=1000), "video larger than 1000 bytes"),
    (VideoLimits(max_seconds=5), "video longer than 5 s"),
    (VideoLimits(max_pixels=100 * 100), "video frames too large (192x144 pixels)"),
    (VideoLimits(max_sampled_frames=3), "video has more than 3 sampled frames"),
    (VideoLimits(max_decode_seconds=0), "video decode took longer than 0 s"),
])
def test_a_video_past_a_limit_is_unhashable_with_the_reason(original_bytes, limits, reason):
    with pytest.raises(UnhashableMedia) as raised:
        hash_video(original_bytes, limits=limits)
    assert str(raised.value) == reason


def test_a_file_without_a_video_stream_is_unhashable_and_still_reported():
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        for _ in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    record = file_record(HashMatcher(BankIndexes([])), buffer.getvalue())
    file = record["files"][0]
    assert (file["mediaStatus"], file["mediaError"]) == ("unhashable", "no video stream")
    assert {h["signalType"] for h in file["hashes"]} == {"MD5", "SHA1"} and record["matchSummary"] == "new"


def test_truncated_and_corrupted_videos_never_raise_anything_but_unhashable(original_bytes, matcher):
    rng = random.Random(3)
    broken = [original_bytes[:cut] for cut in (16, 200, 2000, len(original_bytes) // 2, len(original_bytes) - 10)]
    for _ in range(25):
        data = bytearray(original_bytes)
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(48, len(data))] = rng.randrange(256)
        broken.append(bytes(data))
    broken.append(b"\x00\x00\x00\x18ftypisom" + bytes(rng.randrange(256) for _ in range(3000)))
    for data in broken:
        file = file_record(matcher, data)["files"][0]
        assert file["mediaStatus"] in ("hashed", "unhashable")
        assert file["mediaStatus"] == "hashed" or file["mediaError"]
