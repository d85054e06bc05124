"""Takedown follow-up against a real HTTP server on 127.0.0.1: every state a notice can reach, and a checker
that never downloads content, never reaches a private address it was not allowed, and never hangs."""
import argparse
import collections
import datetime
import http.server
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest

from pipelines import notices_cli
from pipelines.cli import main
from tests.conftest import REPO
from transforms.takedown.checker import CheckPolicy, check_url

DAY = "2026-11-23"
SENT = datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc)  # the end of DAY: the daily send


class Host(http.server.BaseHTTPRequestHandler):
    """Serves, removes, changes, redirects (to itself, to a private address), hangs and resets, by path."""
    protocol_version = "HTTP/1.1"
    requests = collections.Counter()
    ranges = []
    removed = set()
    release = threading.Event()

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(head=True)

    def do_GET(self):
        Host.ranges.append(self.headers.get("Range"))
        self.answer(head=False)

    def answer(self, head):
        path = self.path
        Host.requests[path] += 1
        if path in Host.removed or path.startswith("/gone"):
            return self.send(410 if path.endswith("410") else 404)
        if path.startswith("/redirect-private"):
            return self.send(302, {"Location": "http://169.254.169.254/latest/meta-data/"})
        if path.startswith("/loop"):
            return self.send(302, {"Location": path})
        if path.startswith("/hang"):
            Host.release.wait(30)
            return self.send(200, {"Content-Type": "image/jpeg", "Content-Length": "4"})
        if path.startswith("/reset"):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True  # closed with no answer, lingering 0: a reset
            return None
        if path.startswith("/huge-header"):
            self.send_response(200)
            self.send_header("X-Padding", "x" * 70_000)
            self.end_headers()
            return None
        if path.startswith("/no-head"):
            if head:
                return self.send(405)
            if path == "/no-head.jpg" and self.headers.get("Range") == "bytes=0-0":
                return self.send(206, {"Content-Type": "image/jpeg", "Content-Range": "bytes 0-0/5000000",
                                       "Content-Length": "1"}, body=b"\xff")
        changed = path.startswith("/changes") and Host.requests[path] > 1
        headers = {"Content-Type": "text/html" if changed else "image/jpeg", "Content-Length": "5000000"}
        self.send(200, headers, body=None if head else b"\xff" * 5_000_000)

    def send(self, status, headers=None, body=None):
        self.send_response(status)
        for key, value in (headers or {"Content-Length": "0"}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            try:
                self.wfile.write(body)
            except OSError:  # the checker hung up without reading: what it must do
                pass


@pytest.fixture(scope="module")
def host():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Host)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    Host.release.set()
    server.shutdown()


def policy(host, timeout=2.0):
    port = int(host.split(":")[1])
    return CheckPolicy(timeout, frozenset({host}), {f"files.example.net:{port}": ("127.0.0.1", port)})


@pytest.mark.parametrize("path, status, reason", [
    ("/ok.jpg", "available", "HTTP 200"),
    ("/no-head.jpg", "available", "HTTP 206"),
    ("/gone", "removed", "HTTP 404"),
    ("/gone410", "removed", "HTTP 410"),
    ("/loop", "unreachable", "redirect loop"),
    ("/redirect-private", "not_checkable", "resolves to a cloud metadata address"),
    ("/reset", "unreachable", "connection reset"),
    ("/huge-header", "unreachable", "malformed answer (LineTooLong)"),
])
def test_each_answer_a_host_can_give(host, path, status, reason):
    result = check_url(f"http://files.example.net:{host.split(':')[1]}{path}", policy(host))
    assert (result.status, result.reason) == (status, reason)


def test_a_host_that_hangs_is_unreachable_after_its_timeout_not_removed(host):
    started = time.monotonic()
    result = check_url(f"http://{host}/hang.jpg", policy(host, timeout=0.5))
    assert (result.status, result.reason) == ("unreachable", "timed out")
    assert time.monotonic() - started < 20  # bounded by the timeout, not by the host (which waits 30 s)


def test_the_checker_never_downloads_the_content(host):
    Host.ranges.clear()
    result = check_url(f"http://{host}/no-head-big.jpg", policy(host))
    assert result.status == "available" and result.content_length == 5_000_000
    assert Host.ranges == ["bytes=0-0"]  # a GET for the first byte only, whose body is never read


@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1:9/x", "resolves to a loopback address"),
    ("http://10.1.2.3/x", "resolves to a private address"),
    ("http://169.254.169.254/latest/meta-data/", "resolves to a cloud metadata address"),
    ("http://[::ffff:192.168.0.1]/x", "resolves to a private address"),
    ("http://100.64.0.9/x", "resolves to a shared (carrier-grade NAT) address"),
    ("gopher://files.example.net/x", "scheme 'gopher' is not http or https"),
])
def test_private_and_metadata_addresses_are_refused_without_a_request(url, reason):
    result = check_url(url, CheckPolicy(1.0))
    assert (result.status, result.reason) == ("not_checkable", reason)


def test_a_name_that_resolves_to_a_private_address_is_refused(host):
    port = host.split(":")[1]
    result = check_url(f"http://files.example.net:{port}/ok.jpg",
                       CheckPolicy(1.0, frozenset(), {f"files.example.net:{port}": ("127.0.0.1", int(port))}))
    assert (result.status, result.reason) == ("not_checkable", "resolves to a loopback address")


def write_notices(out, host, paths, checkable=True):
    folder = out / "notices" / f"dt={DAY}" / "provider=example.net"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "batch.jsonl").open("w") as handle:
        for number, path in enumerate(paths):
            url = f"http://files.example.net:{host.split(':')[1]}{path}" if checkable else "ftp://x/y"
            handle.write(json.dumps({
                "noticeId": f"ntc-{number:02d}{path.strip('/').replace('/', '-')}", "day": DAY, "url": url,
                "provider": "example.net", "host": "files.example.net", "hostingCountry": None,
                "reportCount": 1, "checkable": checkable, "notCheckableReason": None if checkable else "ftp",
                "pane_index": 0}) + "\n")


def follow_up(out, host, hours_after_sent, max_attempts=3):
    args = argparse.Namespace(
        output=str(out), after_hours=24, max_attempts=max_attempts, timeout_seconds=2.0,
        as_of=SENT + datetime.timedelta(hours=hours_after_sent), allow_private_hosts=[host],
        connect_to=[f"files.example.net:{host.split(':')[1]}:{host}"], ca_file=None, beam_args=[])
    assert notices_cli.run_follow_up(args) == 0
    return {row["notice_id"]: row for row in pq.read_table(out / "notice_outcomes" / "outcomes.parquet").to_pylist()}


def test_every_state_transition_of_a_notice(tmp_path, host):
    paths = ["/ok.jpg", "/gone", "/changes.jpg", "/removed-later.jpg", "/reset", "/redirect-private"]
    write_notices(tmp_path, host, paths)
    status = lambda rows: {key[6:]: (row["status"], row["attempts"]) for key, row in rows.items()}
    assert status(follow_up(tmp_path, host, 1)) == {  # not due yet: sent, nothing checked
        "ok.jpg": ("sent", 0), "gone": ("sent", 0), "changes.jpg": ("sent", 0),
        "removed-later.jpg": ("sent", 0), "reset": ("sent", 0), "redirect-private": ("sent", 0)}
    first = follow_up(tmp_path, host, 25)
    assert status(first) == {
        "ok.jpg": ("re_notified", 1), "gone": ("removed", 1), "changes.jpg": ("re_notified", 1),
        "removed-later.jpg": ("re_notified", 1), "reset": ("unreachable", 1),
        "redirect-private": ("not_checkable", 1)}
    assert first["ntc-01gone"]["hours_to_removal"] == 25.0
    Host.removed.add("/removed-later.jpg")
    assert status(follow_up(tmp_path, host, 30)) == status(first)  # nothing due 5 h after the last check
    second = follow_up(tmp_path, host, 50)
    assert status(second) == {
        "ok.jpg": ("re_notified", 2), "gone": ("removed", 1), "changes.jpg": ("removed", 2),
        "removed-later.jpg": ("removed", 2), "reset": ("unreachable", 2), "redirect-private": ("not_checkable", 1)}
    third = follow_up(tmp_path, host, 75)
    assert status(third)["ok.jpg"] == ("escalated", 3) and status(third)["reset"] == ("unreachable", 3)
    assert third["ntc-04reset"]["final"] and third["ntc-00ok.jpg"]["final"]
    checks = sorted(p.name for p in (tmp_path / "notice_checks").iterdir())
    assert len(checks) == 6 + 4 + 2 and all(".tmp" not in name for name in checks)
    assert all("files.example.net" not in (tmp_path / "notice_checks" / name).read_text() for name in checks)


def test_a_url_no_machine_may_check_is_not_checkable_at_once(tmp_path, host):
    write_notices(tmp_path, host, ["/x"], checkable=False)
    [row] = follow_up(tmp_path, host, 100).values()
    assert (row["status"], row["attempts"], row["final"]) == ("not_checkable", 0, True)


def test_a_run_killed_midway_repeats_nothing_it_recorded(tmp_path, host):
    paths = [f"/kill-{n}.jpg" for n in range(4)] + ["/hang-kill.jpg"]
    write_notices(tmp_path, host, paths)
    command = [sys.executable, "-m", "pipelines.cli", "notices", "follow-up", "--output", str(tmp_path),
               "--as-of", "2026-11-25T01:00:00Z", "--timeout-seconds", "25", "--allow-private-hosts", host,
               "--connect-to", f"files.example.net:{host.split(':')[1]}:{host}"]
    Host.requests.clear()
    Host.release.clear()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    checks = tmp_path / "notice_checks"
    deadline = time.monotonic() + 240
    while Host.requests["/hang-kill.jpg"] == 0 and time.monotonic() < deadline:  # the run is stuck on the hang
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    Host.release.set()
    recorded_before = {p.name for p in checks.glob("*.json")} if checks.exists() else set()
    assert len(recorded_before) == 4  # the four before the hanging host, one host at a time
    seen_before = collections.Counter(Host.requests)
    follow_up(tmp_path, host, 25)
    for name in recorded_before:
        path = paths[int(name.split("-")[1][:2])]
        assert Host.requests[path] == seen_before[path], f"{path} was checked again"
    assert len(list(checks.glob("*.json"))) == len(paths)


def test_takedown_figures_per_provider(tmp_path, host):
    write_notices(tmp_path, host, ["/gone", "/ok.jpg", "/gone410"])
    follow_up(tmp_path, host, 30)
    [figures] = notices_cli.takedown_summary(str(tmp_path))
    assert figures == {"provider": "example.net", "notices": 3, "removed": 2, "median_hours": 30.0,
                       "p90_hours": 30.0, "removed_within_24h": 0.0, "removed_within_72h": 0.667,
                       "escalated": 0, "unreachable": 0, "not_checkable": 0}


def test_the_demo_lifecycle_against_local_stand_in_hosts(tmp_path, capsys):
    from transforms.demo.takedown_host import NEVER, removal_day

    folder = tmp_path / "notices" / f"dt={DAY}" / "provider=example.org"
    folder.mkdir(parents=True)
    urls = [f"https://media.example.org/{n}/f.jpg" for n in range(12)] + ["https://45.18.128.7/x/y.jpg"]
    with (folder / "batch.jsonl").open("w") as handle:
        for number, url in enumerate(urls):
            handle.write(json.dumps({"noticeId": f"ntc-{number:02d}", "day": DAY, "url": url, "provider": "example.org",
                                     "host": url.split("/")[2], "checkable": True, "reportCount": 1}) + "\n")
    assert notices_cli.run_demo(argparse.Namespace(output=str(tmp_path))) == 0
    rows = {row["notice_id"]: row for row in pq.read_table(tmp_path / "notice_outcomes" / "outcomes.parquet").to_pylist()}
    expected = {f"ntc-{number:02d}": {1: ("removed", 25.0), 2: ("removed", 49.0), NEVER: ("escalated", None)}[
        removal_day(url)] for number, url in enumerate(urls)}
    assert {key: (row["status"], row["hours_to_removal"]) for key, row in rows.items()} == expected
    assert {status for status, _ in expected.values()} == {"removed", "escalated"}
    assert "example.org" in capsys.readouterr().out
    chart = tmp_path / "takedown.png"
    capsys.readouterr()
    assert main(["trends", "takedown", "--output", str(tmp_path), "--json", "--plot", str(chart)]) == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figures = json.loads(capsys.readouterr().out)
    assert figures == notices_cli.takedown_summary(str(tmp_path)) and figures[0]["provider"] == "example.org"
