"""Videos end to end: `tipline bank build --signal vpdq`, `tipline match --videos`, and the pipeline routing
reports whose videos are re-encoded, resized, re-containered or trimmed copies of banked ones."""
import base64
import collections
import dataclasses
import json

import fastavro
import pytest

from pipelines.cli import main
from pipelines.tipline_pipeline import run as run_pipeline
from tests.conftest import example_report
from transforms.demo.packaged import packaged
from transforms.demo.synthetic import SyntheticConfig, synthetic_report
from transforms.demo.synthetic_videos import VideoSpec, encode_video
from transforms.matching.matcher import HashMatcher
from transforms.matching.banks import read_bank
from transforms.matching.signals import VPdqSignal

KNOWN = {"known-a": VideoSpec("known-a", seconds=6.0), "known-b": VideoSpec("known-b", seconds=6.0, format="webm")}


def tipline(*argv):
    """The `tipline` command through its entry point: one-line errors and exit codes included."""
    return main(list(argv))


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    folder = tmp_path_factory.mktemp("known")
    for name, spec in KNOWN.items():
        (folder / f"{name}.{'webm' if spec.format == 'webm' else 'mp4'}").write_bytes(encode_video(spec))
    (folder / "notes.txt").write_text("not a video")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100)
    path = str(folder / "bank.csv")
    assert tipline("bank", "build", "--signal", "vpdq", "--videos", str(folder), "--out", path,
                   "--label", "demo-video") == 0
    return path


QUERIES = {
    "low-bitrate.mp4": dataclasses.replace(KNOWN["known-a"], bit_rate=100_000),
    "half-size.mkv": dataclasses.replace(KNOWN["known-a"], size=(80, 60), format="mkv"),
    "other-codec.avi": dataclasses.replace(KNOWN["known-b"], format="avi"),
    "trimmed.mp4": dataclasses.replace(KNOWN["known-b"], start=1.5, seconds=3.0),
    "unrelated.mp4": VideoSpec("unrelated"),
}


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    folder = tmp_path_factory.mktemp("queries")
    for name, spec in QUERIES.items():
        (folder / name).write_bytes(encode_video(spec))
    return folder


def test_bank_build_writes_one_vpdq_row_per_video(bank, capsys):
    entries = read_bank(bank)
    assert [(e.signal.name, e.external_id, e.label) for e in entries] == [
        ("VPDQ", "known-a", "demo-video"), ("VPDQ", "known-b", "demo-video")]
    frames = VPdqSignal.parse(entries[0].value)
    assert [f.timestamp for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_bank_build_refuses_vpdq_of_images(tmp_path, capsys):
    assert tipline("bank", "build", "--signal", "vpdq", "--images", str(tmp_path), "--out", str(tmp_path / "b.csv")) == 2
    assert "--videos" in capsys.readouterr().err


def test_match_videos_as_json_lines(bank, queries, capsys):
    capsys.readouterr()
    assert tipline("match", "--bank", bank, "--videos", str(queries), "--json") == 0
    lines = {json.loads(line)["path"].rsplit("/", 1)[1]: json.loads(line) for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(QUERIES)
    expected = {"low-bitrate.mp4": "known-a", "half-size.mkv": "known-a", "other-codec.avi": "known-b",
                "trimmed.mp4": "known-b"}
    for name, external_id in expected.items():
        [match] = lines[name]["matches"]
        assert (match["signalType"], match["externalId"], match["label"]) == ("VPDQ", external_id, "demo-video")
        assert match["queryMatchPercent"] >= 80 and match["segments"]
    assert lines["trimmed.mp4"]["matches"][0]["bankMatchPercent"] < 100
    assert lines["unrelated.mp4"]["matches"] == []
    assert lines["unrelated.mp4"]["video"]["frames"] == 6


def test_match_listing_shows_both_percentages(bank, queries, capsys):
    capsys.readouterr()
    tipline("match", "--bank", bank, "--videos", str(queries), "--vpdq-bank-match-percent", "90")
    listing = capsys.readouterr().out
    assert "query 100%  bank 100%" in listing
    assert "trimmed.mp4" in listing and listing.split("trimmed.mp4")[1].split("\n")[4] == "  no match"


def test_a_threshold_out_of_range_stops_with_the_flag_named(bank, queries, capsys):
    assert tipline("match", "--bank", bank, "--videos", str(queries), "--vpdq-query-match-percent", "180") == 2
    err = capsys.readouterr().err
    assert err.startswith("tipline match: error: ") and "--vpdq-query-match-percent" in err


# -- the pipeline ---------------------------------------------------------------------------------

def report_with_video(report_id, queries, name, inline):
    report = example_report()
    report["reportId"] = report_id
    report["files"] = report["files"][:1]
    data = (queries / name).read_bytes()
    report["files"][0].update(content=base64.b64encode(data).decode() if inline else None,
                              contentUri=None if inline else str(queries / name), originalFileHashes=[])
    return report


@pytest.fixture(scope="module")
def pipeline_run(bank, queries, tmp_path_factory, city_test_db):
    root = tmp_path_factory.mktemp("video-run")
    truncated = queries.parent / "truncated.mp4"
    truncated.write_bytes((queries / "low-bitrate.mp4").read_bytes()[:3000])
    reports = [report_with_video(f"r-{name}", queries, name, inline=number % 2 == 0)
               for number, name in enumerate(QUERIES)]
    reports.append(report_with_video("r-truncated", queries.parent, "truncated.mp4", inline=True))
    (root / "reports.jsonl").write_text("\n".join(json.dumps(report) for report in reports) + "\n")
    summary = run_pipeline(["--source", "files", "--input", str(root / "reports.jsonl"), "--output", str(root / "out"),
                            "--geoip-city-db", city_test_db, "--hash-bank", bank, "--media-root", str(queries)])
    records = {}
    for path in (root / "out" / "routed").rglob("*.avro"):
        with path.open("rb") as handle:
            records.update((record["reportId"], record) for record in fastavro.reader(handle))
    return root / "out", summary, records


def test_every_video_report_is_routed_and_counts_reconcile(pipeline_run):
    _, summary, records = pipeline_run
    assert (summary["read"], summary["routed"], summary["dead_lettered"]) == (6, 6, 0)
    assert set(records) == {f"r-{name}" for name in QUERIES} | {"r-truncated"}


def test_re_encoded_and_trimmed_videos_are_known_with_both_percentages(pipeline_run):
    _, _, records = pipeline_run
    for name, external_id in (("low-bitrate.mp4", "known-a"), ("half-size.mkv", "known-a"),
                              ("other-codec.avi", "known-b"), ("trimmed.mp4", "known-b")):
        record = records[f"r-{name}"]
        assert (record["matchSummary"], record["priority"]) == ("known", "P3"), name
        [match] = record["files"][0]["matches"]
        assert (match["bank"], match["externalId"], match["signalType"]) == ("bank", external_id, "VPDQ")
        assert match["queryMatchPercent"] >= 80 and 0 < match["bankMatchPercent"] <= 100
    assert records["r-trimmed.mp4"]["files"][0]["matches"][0]["bankMatchPercent"] < 100


def test_an_unrelated_video_is_new_and_a_truncated_one_unhashable(pipeline_run):
    _, _, records = pipeline_run
    unrelated, truncated = records["r-unrelated.mp4"], records["r-truncated"]
    assert (unrelated["matchSummary"], unrelated["priority"]) == ("new", "P2")
    assert unrelated["files"][0]["video"] == {"signalType": "VPDQ", "frames": 6, "durationSeconds": 6.0}
    assert truncated["files"][0]["mediaStatus"] == "unhashable" and truncated["files"][0]["mediaError"]
    assert {h["signalType"] for h in truncated["files"][0]["hashes"]} == {"MD5", "SHA1"}


def test_copies_of_one_banked_video_share_a_bundle(pipeline_run):
    _, _, records = pipeline_run
    assert records["r-low-bitrate.mp4"]["bundleId"] == records["r-half-size.mkv"]["bundleId"]
    assert records["r-low-bitrate.mp4"]["bundleId"] != records["r-trimmed.mp4"]["bundleId"]


def test_no_frame_hash_video_bytes_or_uri_reaches_any_output(pipeline_run, bank, queries):
    out, _, _ = pipeline_run
    frame_hashes = [f.pdq_hex for entry in read_bank(bank) for f in VPdqSignal.parse(entry.value)]
    for path in out.rglob("*"):
        if not path.is_file() or "dead_letter" in path.parts:
            continue
        text = path.read_bytes().decode("latin-1")
        assert str(queries) not in text, path
        assert not any(value in text for value in frame_hashes), path


def test_the_demo_stream_sends_a_few_videos_and_its_known_ones_match_the_demo_bank():
    config = SyntheticConfig()
    matcher = HashMatcher.from_banks([packaged("demo-bank.csv")], [packaged("demo-negative-bank.csv")])
    videos = [(synthetic.report, media) for synthetic in map(lambda n: synthetic_report(config, n), range(config.count))
              for media in synthetic.media if media.video]
    assert 5 <= len(videos) <= 40
    kinds = collections.Counter(media.kind for _, media in videos)
    assert kinds["known"] >= 2 and kinds["new"] >= 2
    for report, media in videos:
        file = matcher.enrich_report({"files": [report["files"][media.file_index]]})["files"][0]
        matched = {m["externalId"] for m in file["matches"] if m["signalType"] == "VPDQ"}
        assert matched == ({f"demo-video-{media.seed}"} if media.kind == "known" else set()), (media, file)
