"""The whole pipeline from files, on MaxMind's City test database: routing, isolation, counts."""
import base64
import io
import json

import fastavro
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from pipelines.tipline_pipeline import run
from tests.conftest import example_report

MEDIA_FIELDS = ("content", "contentUri", "locationOfFile", "url")


def benign_jpeg(seed):
    """A small synthetic picture: coloured rectangles on a gradient."""
    image = Image.new("RGB", (128, 128))
    draw = ImageDraw.Draw(image)
    for step in range(128):
        draw.line([(0, step), (127, step)], fill=(step * 2 % 256, seed * 37 % 256, 255 - step))
    for box in range(4):
        corner = (seed * 13 + box * 29) % 90
        draw.rectangle([corner, corner // 2, corner + 30, corner // 2 + 40], fill=((seed + box) * 53 % 256, 40, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def variant(report_id, ip=None, **changes):
    report = example_report()
    report["reportId"] = report_id
    if ip is not None:
        report["files"][0]["ipCaptureEvent"]["ipAddress"] = ip
        report["personOrUserReported"]["ipCaptureEvents"] = []
    report.update(changes)
    return report


@pytest.fixture(scope="module")
def run_output(tmp_path_factory, city_test_db):
    root = tmp_path_factory.mktemp("e2e")
    media = benign_jpeg(3)
    with_media = variant("r-media", ip="216.160.83.56")
    with_media["files"][0].update(content=base64.b64encode(media).decode(), contentUri=None)
    no_ip = variant("r-noip")
    no_ip["files"][0]["ipCaptureEvent"] = None
    no_ip["personOrUserReported"] = None
    reports = [variant("r-gb"), variant("r-wa", ip="216.160.83.56"), with_media, no_ip,
               variant("r-private", ip="10.1.2.3")]
    lines = [json.dumps(report) for report in reports]
    lines += [lines[0], lines[2], "{not json", json.dumps({"reportId": "r-bad"})]
    (root / "reports.jsonl").write_text("\n".join(lines) + "\n")
    summary = run(["--source", "files", "--input", str(root / "reports.jsonl"), "--output", str(root / "out"),
                   "--geoip-city-db", city_test_db, "--demo-data"])
    return root / "out", summary, {report["reportId"]: report for report in reports}


def routed_records(out):
    records = {}
    for path in (out / "routed").rglob("*.avro"):
        with path.open("rb") as handle:
            records.setdefault(path.parent.name, []).extend(fastavro.reader(handle))
    return records


def test_counts_reconcile(run_output):
    _, summary, _ = run_output
    assert (summary["read"], summary["routed"], summary["duplicates"], summary["dead_lettered"]) == (9, 5, 2, 2)
    assert summary["reconciled"]


def test_each_report_reaches_its_own_jurisdiction_only(run_output):
    out, summary, _ = run_output
    routed = routed_records(out)
    by_folder = {folder: sorted(r["reportId"] for r in records) for folder, records in routed.items()}
    assert by_folder == {"jurisdiction=GB": ["r-gb", "r-private"], "jurisdiction=US-WA": ["r-media", "r-wa"],
                         "jurisdiction=UNKNOWN": ["r-noip"]}
    for folder, records in routed.items():
        assert all(f"jurisdiction={record['jurisdiction']}" == folder for record in records)
        assert {record["schemaVersion"] for record in records} == {3}
    assert summary["routed_by_jurisdiction"] == {"GB": 2, "US-WA": 2, "UNKNOWN": 1}


def test_a_private_ip_falls_back_to_the_estimated_location_marked_as_such(run_output):
    out, _, _ = run_output
    records = {r["reportId"]: r for rs in routed_records(out).values() for r in rs}
    assert records["r-private"]["location"]["locationSource"] == "estimatedLocation"
    assert records["r-gb"]["location"]["locationSource"] == "geoip"


def test_no_media_bytes_or_uris_in_any_output(run_output):
    out, _, reports = run_output
    secrets = [reports["r-media"]["files"][0]["content"][:40], "file:///var/tipline/media", "files.example.net/a/b.jpg"]
    for path in out.rglob("*"):
        restricted = path.relative_to(out).parts[0] in ("dead_letter", "notices")
        if path.is_file() and not restricted:
            data = path.read_bytes()
            if path.suffix == ".avro":
                data = json.dumps(list(fastavro.reader(io.BytesIO(data))), default=str).encode()
            for secret in secrets:
                assert secret.encode() not in data, (path, secret)


def test_notices_carry_the_url_to_remove_and_nothing_of_the_media(run_output):
    out, _, reports = run_output
    notices = [json.loads(line) for path in (out / "notices").rglob("*.jsonl") for line in path.open()]
    assert [notice["url"] for notice in notices] == ["https://files.example.net/a/b.jpg"]
    data = b"".join(path.read_bytes() for path in (out / "notices").rglob("*") if path.is_file())
    for secret in (reports["r-media"]["files"][0]["content"][:40], "file:///var/tipline/media"):
        assert secret.encode() not in data


def test_media_is_hashed_and_unreadable_media_marks_the_file(run_output):
    out, _, _ = run_output
    records = {r["reportId"]: r for rs in routed_records(out).values() for r in rs}
    hashed = records["r-media"]["files"][0]
    assert hashed["mediaStatus"] == "hashed"
    assert {h["signalType"] for h in hashed["hashes"] if h["source"] == "computed"} >= {"MD5", "SHA1", "PHASH"}
    unreadable = records["r-gb"]["files"][0]
    assert unreadable["mediaStatus"] == "unhashable" and unreadable["mediaError"]
    assert records["r-gb"]["location"]["city"] == "London"


def test_trend_totals_reconcile_with_the_routed_reports(run_output):
    out, summary, _ = run_output
    total = pq.read_table(out / "trends" / "hourly_total").to_pylist()
    assert sum(row["reports"] for row in total) == summary["routed"] == 5
    by_jurisdiction = {}
    for row in pq.read_table(out / "trends" / "hourly_by_jurisdiction").to_pylist():
        by_jurisdiction[row["jurisdiction"]] = by_jurisdiction.get(row["jurisdiction"], 0) + row["reports"]
    assert by_jurisdiction == summary["routed_by_jurisdiction"]


def test_dead_letters_keep_payloads_apart_from_the_sinks(run_output):
    out, _, _ = run_output
    letters = [json.loads(line) for path in (out / "dead_letter").rglob("*.jsonl")
               for line in path.read_text().splitlines()]
    assert sorted(letter["payload"] for letter in letters) == sorted(['{not json', json.dumps({"reportId": "r-bad"})])
    assert json.loads((out / "summary.json").read_text())["reconciled"] is True
