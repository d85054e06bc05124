"""`tipline trends report --html`: one self-contained page with every chart, checked in headless Chromium."""
import argparse
import datetime
import re
import shutil
import subprocess

import pytest

from pipelines.trends_cli import register
from schemas.tables import BUNDLE_SCHEMA, TABLES
from tests.test_trends_cli import hour, new_york, trend_row, write_table  # noqa: F401 (new_york: autouse fixture)

CHARTS = 6  # reports over time, country, incident type, annotation, known vs new, bundles
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def output(tmp_path):
    trends = tmp_path / "out" / "trends"
    hours = range(0, 30)
    write_table(trends, "hourly_total", [trend_row(n, 0, 20 + n) for n in hours], TABLES["hourly_total"])
    write_table(trends, "hourly_by_country", [trend_row(n, 0, 3 + (n * c) % 7, country=f"C{c:02d}")
                                              for n in hours for c in range(14)], TABLES["hourly_by_country"])
    write_table(trends, "hourly_by_incident_type", [trend_row(n, 0, 5 + c, incident_type=t) for n in hours
                                                    for c, t in enumerate(["CSAM", "ENTICEMENT"])],
                TABLES["hourly_by_incident_type"])
    write_table(trends, "hourly_by_annotation", [trend_row(n, 0, 2 + n % 3, annotation="sextortion") for n in hours],
                TABLES["hourly_by_annotation"])
    write_table(trends, "hourly_by_match_class", [trend_row(n, 0, 4 + c, match_class=m) for n in hours
                                                  for c, m in enumerate(["known", "new", "no_media"])],
                TABLES["hourly_by_match_class"])
    write_table(tmp_path / "out", "bundles", [
        {"bundle_id": f"bnd-{n}", "signature": f"md5:{n:02x}", "signature_kind": "exact_hash",
         "window_start": hour(1), "window_end": hour(1) + datetime.timedelta(hours=30 + 24),
         "first_seen": hour(1), "last_seen": hour(1) + datetime.timedelta(hours=n), "reports": 2 + n, "users": 2,
         "esps": 1, "jurisdictions": ["GB", "US-WA"], "pane_index": 0, "pane_timing": "ON_TIME"} for n in range(20)],
        BUNDLE_SCHEMA)
    return tmp_path / "out"


def write_report(capsys, output, page, *argv):
    parser = argparse.ArgumentParser(prog="tipline")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["trends", "report", "--output", str(output), "--html", str(page), *argv])
    code = args.func(args)
    capsys.readouterr()
    return code


def test_the_report_is_one_self_contained_page_with_every_chart_and_its_reading(output, capsys, tmp_path):
    page = tmp_path / "report.html"
    assert write_report(capsys, output, page) == 0
    text = page.read_text()
    images = re.findall(r'<img class="chart" alt="[^"]*" src="([^"]{0,30})', text)
    assert len(images) == CHARTS and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing to fetch: it opens offline
    assert re.search(r"C\d\d is the largest country: [\d,]+ reports \(\d+% of all\); 14 country values in all", text)
    assert "sextortion" in text and "No spike alerts in this period." in text
    # all 20 counted, not only the 15 charted; the largest lasted 19 hours
    assert "20 incidents of repeated content; the largest (exact_hash) had 21 reports from 1 ESPs across 2 " \
           "jurisdictions over 19.0 hours." in text
    assert "all data; all times UTC" in text


def test_the_report_says_what_range_it_covers(output, capsys, tmp_path):
    page = tmp_path / "report.html"
    assert write_report(capsys, output, page, "--since", "2026-11-23T10:00:00Z", "--until", "2026-11-24") == 0
    text = page.read_text()
    assert "from 2026-11-23T10:00:00Z to 2026-11-24T00:00:00Z; all times UTC" in text
    assert "from 2026-11-23T10:00:00Z to 2026-11-24T00:00:00Z;" in text and "2026-11-23T09:00:00Z" not in text


def chromium(*argv, timeout=300):
    """Debian's headless Chromium, offline; the timeout only guards against a hang, it is not a measurement."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--disable-background-networking", "--no-first-run", "--virtual-time-budget=20000", *argv],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it when run as root)")
def test_the_report_renders_every_chart_in_headless_chromium(output, capsys, tmp_path):
    page = tmp_path / "report.html"
    assert write_report(capsys, output, page) == 0
    dom = chromium("--dump-dom", page.as_uri())
    assert f'data-charts-rendered="{CHARTS}"' in dom.stdout, dom.stderr[-2000:]  # every image decoded by the browser
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,4200", "--hide-scrollbars", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
