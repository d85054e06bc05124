"""The demo's routed output served to two demo agencies over real HTTP, each seeing exactly its sink files'
reports; a re-referral moving one between them; the audit log recording every call; the page in Chromium."""
import glob
import json
import shutil
import subprocess
import sys

import fastavro
import httpx
import pytest
from PIL import Image

from pipelines.reports_cli import default_agencies_table
from services.agencies.demo_table import DEMO_SECRETS
from services.agencies.events import AuditLog
from services.agencies.index import instant_text
from tests.agency_service import REPO, running_service

INDIA, PHILIPPINES = ("intl-in", DEMO_SECRETS["intl-in"]), ("intl-ph", DEMO_SECRETS["intl-ph"])
MEDIA_MARKERS = ("contentUri", '"content"', "locationOfFile", "base64", "data:image", "http://", "https://", "gs://")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def tipline(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, capture_output=True, text=True)


def sink_records(output, code):
    """The routed records in one jurisdiction's sink files, by reportId, with their instants as the service
    prints them (ISO 8601 with Z)."""
    records = {}
    for path in glob.glob(str(output / "routed" / f"jurisdiction={code}" / "*.avro")):
        with open(path, "rb") as handle:
            records.update((record["reportId"], json.loads(json.dumps(record, default=instant_text)))
                           for record in fastavro.reader(handle))
    return records


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("agencies-demo")
    output = root / "out"
    ran = tipline("run", "--output", str(output), "--synthetic-count", "600")
    assert ran.returncode == 0, ran.stderr[-2000:]
    with running_service(output, default_agencies_table(), "--rate-limit", "1000", "--burst", "100000") as base:
        yield {"base": base, "output": output, "root": root, "calls": []}


def call(demo, method, path, auth, **kwargs):
    demo["calls"].append((method, path, auth[0]))
    answer = httpx.request(method, demo["base"] + path, auth=auth, timeout=60, **kwargs)
    text = answer.text
    assert not [marker for marker in MEDIA_MARKERS if marker in text], path
    return answer


def listed(demo, auth):
    seen, query = [], {"limit": 500}
    while True:
        body = call(demo, "GET", "/reports", auth, params=query).json()
        seen += [item["reportId"] for item in body["reports"]]
        if not body["next"]:
            return seen
        query["before"] = body["next"]["before"]


def test_two_demo_agencies_each_see_exactly_their_sink_files_and_a_referral_moves_one(demo):
    output = demo["output"]
    india, philippines = sink_records(output, "IN"), sink_records(output, "PH")
    assert len(india) > 50 and len(philippines) > 10
    assert sorted(listed(demo, INDIA)) == sorted(india)
    assert sorted(listed(demo, PHILIPPINES)) == sorted(philippines)
    for report_id in sorted(india)[:25]:
        assert call(demo, "GET", f"/reports/{report_id}", INDIA).json()["report"] == india[report_id]
        assert call(demo, "GET", f"/reports/{report_id}", PHILIPPINES).status_code == 404

    moved = sorted(india)[0]
    referred = tipline("reports", "refer", moved, "--to", "PH", "--reason", "account registered in the Philippines",
                       "--output", str(output))
    assert referred.returncode == 0, referred.stderr
    assert call(demo, "GET", f"/reports/{moved}", INDIA).status_code == 404
    assert sorted(listed(demo, INDIA)) == sorted(set(india) - {moved})
    assert sorted(listed(demo, PHILIPPINES)) == sorted(set(philippines) | {moved})
    detail = call(demo, "GET", f"/reports/{moved}", PHILIPPINES).json()
    assert detail["report"] == india[moved] and detail["jurisdiction"] == "PH"
    assert call(demo, "POST", f"/reports/{moved}/ack", PHILIPPINES).status_code == 200

    found = tipline("reports", "find", "--report-id", moved, "--format", "json", "--output", str(output))
    assert [(row["jurisdiction"], row["routed_jurisdiction"]) for row in json.loads(found.stdout)] == [("PH", "IN")]

    audit = AuditLog(output / "agencies-state" / "audit.jsonl")
    http_entries = [entry for entry in audit.entries() if entry["client"] != "cli" and entry["route"] != "/healthz"]
    assert [(entry["method"], entry["agency"]) for entry in http_entries] == [
        (method, agency) for method, _, agency in demo["calls"]]
    assert audit.verify_chain()[1] is None


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it when run as root)")
def test_the_agency_page_in_headless_chromium(demo):
    base, output = demo["base"], demo["output"]
    philippines = sink_records(output, "PH")
    url = base.replace("http://", f"http://{PHILIPPINES[0]}:{PHILIPPINES[1]}@")
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000"]
    dom = subprocess.run([*browser, "--dump-dom", f"{url}/ui"], capture_output=True, text=True, timeout=300).stdout
    assert "Philippines" in dom and "Signed in as" in dom
    assert all(report_id in dom for report_id in sorted(philippines)[:50])
    assert not any(report_id in dom for report_id in sink_records(output, "IN") if report_id not in philippines
                   and report_id not in listed(demo, PHILIPPINES))

    screenshot = demo["root"] / "agency-page.png"
    subprocess.run([*browser, f"--screenshot={screenshot}", f"{url}/ui"], capture_output=True, timeout=300)
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1400, 1000)
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    assert len(colours) > 50, "a blank or unstyled page"
    assert {(0x60, 0x7D, 0x8B), (0xEF, 0x6C, 0x00)} & colours, "no priority badge rendered"
    report_id = sorted(philippines)[0]
    detail = subprocess.run([*browser, "--dump-dom", f"{url}/ui/reports/{report_id}"], capture_output=True, text=True,
                            timeout=300).stdout
    assert f"Report {report_id}" in detail and "Files" in detail
    print(f"screenshot: {screenshot}")
