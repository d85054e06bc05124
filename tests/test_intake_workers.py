"""`tipline serve intake --workers 2` over real HTTP: rate limits and exactly-once finish hold across workers.

Each test holds keep-alive connections that it knows (from /proc) to be served by different worker
processes, so a request's worker is chosen, not left to chance.
"""
import base64
import http.client
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from pipelines import emulator
from services.common.credentials import add_account
from services.intake.provider_client import parse_response, report_xml
from tests.test_intake_service import wait_for_messages
from tests.test_pubsub_emulator import make_topic, pubsub  # noqa: F401 - pubsub is a fixture

pytestmark = pytest.mark.emulator
PASSWORDS = {"esp-17": "flooding provider's secret", "esp-42": "quiet provider's secret", "esp-7": "racing secret"}
BURST = 6


class Response:
    def __init__(self, response):
        self.status, self.body = response.status, response.read()
        self.code = parse_response(self)["responseCode"] if self.body.startswith(b"<?xml") else None

    @property
    def content(self):
        return self.body


def worker_pids(parent):
    """The child processes of `parent` (from every one of its threads; a thread ending while read is
    skipped)."""
    pids = []
    for task in pathlib.Path(f"/proc/{parent}/task").iterdir():
        try:
            pids.extend(int(pid) for pid in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return pids


def serving_pid(connection, server_port, pids):
    """The worker process holding the server side of `connection` (matched through /proc/net/tcp)."""
    client_port = connection.sock.getsockname()[1]
    wanted = f"0100007F:{client_port:04X}"
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{server_port:04X}" and fields[2] == wanted:
            inode = f"socket:[{fields[9]}]"
            for pid in pids:
                if inode in open_files(pid):
                    return pid
    return None


def open_files(pid):
    """What `pid`'s descriptors point at; a descriptor closed (or a process gone) while read is skipped, as
    the worker opens and closes files of its own meanwhile."""
    targets = set()
    try:
        with os.scandir(f"/proc/{pid}/fd") as entries:
            for entry in entries:
                try:
                    targets.add(os.readlink(entry.path))
                except FileNotFoundError:
                    continue
    except FileNotFoundError:
        pass
    return targets


def call(connection, method, path, user=None, body=None, content_type=None):
    headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()} \
        if user else {}
    if content_type:
        headers["Content-Type"] = content_type
    connection.request(method, path, body=body, headers=headers)
    return Response(connection.getresponse())


@pytest.fixture(scope="module")
def two_workers(pubsub, tmp_path_factory):
    """The service with 2 workers; yields (two connections on different workers, subscription)."""
    workdir = tmp_path_factory.mktemp("two-workers")
    for user, password in PASSWORDS.items():
        add_account(workdir / "providers.jsonl", user, user, password)
    topic, subscription = make_topic("workers")
    port = emulator.free_port()
    tipline = pathlib.Path(sys.executable).parent / "tipline"
    service = subprocess.Popen(
        [str(tipline), "serve", "intake", "--workers", "2", "--port", str(port), "--credentials",
         str(workdir / "providers.jsonl"), "--store", str(workdir / "intake.sqlite"), "--quarantine-root",
         str(workdir / "quarantine"), "--project", topic.split("/")[1], "--topic", topic,
         "--provider-rate", "0.001", "--provider-burst", str(BURST)], start_new_session=True)
    try:
        yield connections_on_two_workers(service, port), subscription
    finally:
        service.terminate()
        service.wait(timeout=60)


def connections_on_two_workers(service, port, patience=300):
    """Keep-alive connections, one per worker, each checked to be served by its worker (after a 404 that
    touches no limit)."""
    by_worker, seen, deadline = {}, [], time.monotonic() + patience
    while len(by_worker) < 2 and time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError("the intake service stopped")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            call(connection, "GET", "/no-such-endpoint")
        except OSError as error:
            seen.append(type(error).__name__)
            connection.close()
            time.sleep(0.5)
            continue
        pids = worker_pids(service.pid)
        pid = serving_pid(connection, port, pids)
        seen.append((pid, pids))
        if pid is None or pid in by_worker:
            connection.close()
        else:
            by_worker[pid] = connection
    assert len(by_worker) == 2, f"could not reach both workers: {seen[-10:]}"
    return list(by_worker.values())


def test_a_flood_from_one_provider_is_refused_across_workers_and_another_provider_goes_on(two_workers):
    (first, second), _ = two_workers
    answers = [call(connection, "GET", "/status", "esp-17") for _ in range(BURST) for connection in (first, second)]
    assert [answer.code for answer in answers] == [0] * BURST + [4290] * BURST  # one bucket, not one a worker
    assert {answer.status for answer in answers[BURST:]} == {429}
    assert [call(connection, "GET", "/status", "esp-42").code for connection in (first, second)] == [0, 0]


def test_a_finish_sent_to_both_workers_at_once_publishes_once(two_workers):
    (first, second), subscription = two_workers
    submitted = call(first, "POST", "/submit", "esp-7", report_xml(), "text/xml")
    report_id = parse_response(submitted)["reportId"]
    form = f"id={report_id}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(f"esp-7:{PASSWORDS['esp-7']}".encode()).decode(),
               "Content-Type": "application/x-www-form-urlencoded"}
    for connection in (first, second):  # both requests are sent before either answer is read
        connection.request("POST", "/finish", body=form, headers=headers)
    codes = sorted(Response(connection.getresponse()).code for connection in (first, second))
    assert codes == [0, 5102]
    messages = wait_for_messages(subscription, 2, patience=15)  # waits for a second copy that must not come
    assert [json.loads(message.data)["reportId"].rsplit("-", 1)[1] for message in messages] == [report_id]
