"""Faults (issue #7.3): a sink folder that cannot be written, a bank file or a GeoIP database replaced mid-run,
Pub/Sub leases expiring mid-run, the Pub/Sub emulator stopped (and restarted) mid-run.

What each fault does is recorded in docs/RELIABILITY.md. Real parts: the whole pipeline on the DirectRunner,
the real `MatchHashBatches` DoFn with real bank files.
"""
import hashlib
import json
import os
import signal
import threading
import time

import shutil

import pyarrow.parquet as pq
import pytest
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from pipelines import emulator
from pipelines.tipline_pipeline import run
from tests import hostile
from transforms.demo.packaged import packaged
from pipelines.publish import ensure_subscription, ensure_topic, publish
from tests.conftest import MAXMIND, example_report
from tests.test_pipeline_end_to_end import variant
from tests.test_pubsub_emulator import make_topic, pubsub, pull_all  # noqa: F401 - pubsub is a fixture
from transforms.plumbing import pubsub_source
from transforms.geo import _LocateFn
from transforms.hashes import MatchHashBatches
from transforms.demo.packaged import resolve

BANK_HEADER = "hash_type,hash_value,bank,label,external_id\n"


# --- a sink folder that cannot be written -----------------------------------------------------------

@pytest.fixture(scope="module")
def blocked_sink_run(tmp_path_factory, city_test_db):
    """A run whose routed/jurisdiction=GB 'folder' is a regular file (unwritable even for root), then the
    operator's fix: the file removed and the same input replayed into the same output."""
    root = tmp_path_factory.mktemp("blocked")
    reports = [variant(f"r-gb-{i}", ip="81.2.69.160") for i in range(3)] + \
              [variant(f"r-wa-{i}", ip="216.160.83.56") for i in range(3)]
    (root / "in.jsonl").write_text("\n".join(json.dumps(r) for r in reports) + "\n")
    blocker = root / "out" / "routed" / "jurisdiction=GB"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    argv = ["--source", "files", "--input", str(root / "in.jsonl"), "--output", str(root / "out"),
            "--geoip-city-db", city_test_db, "--demo-data"]
    with pytest.raises(Exception) as stopped:  # noqa: PT011 - the runner wraps the sink's IOError
        run(argv)
    leftovers = sorted(str(path) for path in (root / "out").rglob(".*.tmp"))
    blocker.unlink()
    return root / "out", str(stopped.value), leftovers, run(argv)


def test_an_unwritable_sink_stops_the_run_naming_the_file(blocked_sink_run):
    _, error, leftovers, _ = blocked_sink_run
    assert "routed/jurisdiction=GB/" in error and "was not written: is the sink folder writable?" in error
    assert leftovers == []  # nothing half-written left under a hidden name either


def test_a_replay_after_the_fix_routes_every_report_once(blocked_sink_run):
    out, _, _, replay = blocked_sink_run
    routed = {folder: sorted(r["reportId"] for r in records) for folder, records in hostile.read_routed(out).items()}
    assert routed == {"jurisdiction=GB": ["r-gb-0", "r-gb-1", "r-gb-2"],
                      "jurisdiction=US-WA": ["r-wa-0", "r-wa-1", "r-wa-2"]}
    # what the stopped run wrote before it stopped is in the output already, and not routed again
    assert replay["routed"] + replay["other_counts"].get("already_in_output", 0) == 6 and replay["reconciled"]


# --- a run killed (SIGKILL) while it writes a file ---------------------------------------------------------

KILLED_WRITER = """
import sys, time
from transforms.plumbing.packed_records import pack
from transforms.plumbing.windowed_files import GROUPED_PACKED, JsonLinesSink, _WriteContentAddressedFn

class StalledSink(JsonLinesSink):  # stands in for a slow disk: the process is killed mid-write
    def write(self, record):
        time.sleep(3600)

writer = _WriteContentAddressedFn(sys.argv[1], StalledSink, ".jsonl", grouped_as=GROUPED_PACKED)
writer.setup()
list(writer.process((("jurisdiction=GB", "2026-11-23T10:00:00--2026-11-23T11:00:00"), [pack({"reportId": "r"})])))
"""


def test_a_temporary_file_left_by_a_killed_run_is_removed_by_the_next(tmp_path, city_test_db):
    """The real file writer, killed with SIGKILL while its temporary is open, left a 0-byte `.…tmp` file
    that later runs kept; the next run into the output removes it."""
    import subprocess
    import sys

    out = tmp_path / "out"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out / "routed")])
    try:
        deadline = time.monotonic() + 120  # the writer's start only; generous for a loaded machine
        while not list(out.rglob(".*.tmp")) and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        [temporary] = list(out.rglob(".*.tmp"))
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert temporary.stat().st_size == 0
    (tmp_path / "in.jsonl").write_text(json.dumps(variant("r-after-kill", ip="81.2.69.160")) + "\n")
    summary = run(["--source", "files", "--input", str(tmp_path / "in.jsonl"), "--output", str(out),
                   "--geoip-city-db", city_test_db, "--demo-data"])
    assert summary["routed"] == 1 and not temporary.exists() and not list(out.rglob(".*.tmp"))


# --- a bank file replaced mid-run -----------------------------------------------------------------------

def md5_report(report_id, data):
    report = example_report()
    report["reportId"] = report_id
    report["files"][0].update(content=hostile.b64(data), contentUri=None, originalFileHashes=[])
    return report


def write_bank(path, rows):
    """Writes a bank the way an operator should: a new file renamed over the old one."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(BANK_HEADER + "".join(f"MD5,{value},ops-bank,{label},x-{label}\n" for value, label in rows))
    os.replace(temporary, path)
    future = time.time() + 5  # a distinct mtime even on coarse-grained filesystems
    os.utime(path, (future, future))


def matches(fn, report):
    fn.start_bundle()
    [enriched] = list(fn.process(report, WindowedValue(report, Timestamp(0), (GlobalWindow(),)))) + list(fn.finish_bundle())
    assert isinstance(enriched, WindowedValue) and enriched.timestamp == Timestamp(0)
    return [m["label"] for file in enriched.value["_hashes"]["files"] for m in file["matches"]]


@pytest.fixture
def bank_fn(tmp_path):
    bank = tmp_path / "bank.csv"
    write_bank(bank, [("0" * 32, "placeholder")])
    fn = MatchHashBatches([str(bank)], [], refresh_seconds=0)
    fn.setup()
    return fn, bank


def test_a_bank_replaced_mid_run_is_used_by_the_next_batch(bank_fn):
    fn, bank = bank_fn
    media = hostile.benign_image(5)
    assert matches(fn, md5_report("before", media)) == []
    write_bank(bank, [(hashlib.md5(media).hexdigest(), "added")])
    assert matches(fn, md5_report("after", media)) == ["added"]


def test_a_broken_bank_replacement_keeps_the_last_good_bank(bank_fn):
    fn, bank = bank_fn
    media = hostile.benign_image(6)
    write_bank(bank, [(hashlib.md5(media).hexdigest(), "good")])
    assert matches(fn, md5_report("good", media)) == ["good"]
    bank.write_text("hash_type,hash_value\nMD5,not-a-hash-and-missing-columns\n")  # a truncated/bad write
    os.utime(bank, (time.time() + 10, time.time() + 10))
    assert matches(fn, md5_report("still-good", media)) == ["good"]


# --- a GeoIP database replaced mid-run --------------------------------------------------------------------

def placed(fn, ip):
    """(where the location came from, city) of a report whose upload came from `ip`."""
    [located] = list(fn.process(variant("r-geo", ip=ip)))
    return located["_geo"]["locationSource"], located["_geo"]["city"]


def started_locator(city_db, refresh_seconds=60):
    """A worker's locator: `setup` acquires the reader shared by the DoFns of one worker process."""
    fn = _LocateFn(str(city_db), None, None, refresh_seconds)
    fn.setup()
    return fn


def test_a_geoip_database_renamed_over_is_read_after_the_refresh_interval(tmp_path):
    city = tmp_path / "city.mmdb"
    shutil.copy(MAXMIND / "GeoIP2-City-Test.mmdb", city)
    running, refreshing = started_locator(city, refresh_seconds=3600), started_locator(city, refresh_seconds=0)
    assert placed(running, "81.2.69.160") == placed(refreshing, "81.2.69.160") == ("geoip", "London")
    replacement = tmp_path / "new.mmdb"
    shutil.copy(resolve(packaged("demo-city.mmdb")), replacement)  # a database that does not place this IP
    os.replace(replacement, city)  # the safe way: the old file's mapping stays valid
    os.utime(city, (time.time() + 5, time.time() + 5))  # a distinct mtime even on coarse-grained filesystems
    assert placed(running, "81.2.69.160") == ("geoip", "London")  # the memory-mapped old file, not a crash
    # past its refresh interval a worker reads the new file, which places the IP nowhere: the report's own
    # estimate is used; so does a worker started afterwards
    assert placed(refreshing, "81.2.69.160") == ("estimatedLocation", None)
    assert placed(started_locator(city), "81.2.69.160") == ("estimatedLocation", None)


def test_a_broken_geoip_replacement_keeps_the_last_good_database(tmp_path):
    city = tmp_path / "city.mmdb"
    shutil.copy(MAXMIND / "GeoIP2-City-Test.mmdb", city)
    refreshing = started_locator(city, refresh_seconds=0)
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"not a MaxMind database")  # a truncated or bad upload, renamed over the good one
    os.replace(broken, city)
    os.utime(city, (time.time() + 5, time.time() + 5))
    assert placed(refreshing, "81.2.69.160") == ("geoip", "London")


# --- Pub/Sub leases that expire mid-run -----------------------------------------------------------------

@pytest.fixture(scope="module")
def expiring_leases_run(pubsub, tmp_path_factory, city_test_db):
    """A bounded streaming run whose leases last 1 s and are never renewed in time: the emulator redelivers
    every message several times during the run (a stalled lease renewer, or a worker paused past its leases)."""
    root = tmp_path_factory.mktemp("leases")
    topic, subscription = make_topic()
    reports = [variant(f"r-lease-{i}", ip="81.2.69.160") for i in range(20)]
    malformed = [b"{not json", json.dumps({"reportId": "r-bad"}).encode()]
    publish(iter([json.dumps(report).encode() for report in reports] + malformed), topic)
    settled = []  # the run's ledger as it was acknowledged: what the source pulled and dropped
    stock_acknowledge_all = pubsub_source._Ledger.acknowledge_all

    def acknowledge_all(run_ledger):
        settled.append({"pulled": run_ledger.pulled, "redeliveries": run_ledger.redeliveries})
        return stock_acknowledge_all(run_ledger)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pubsub_source, "LEASE_SECONDS", 1)
        patch.setattr(pubsub_source._Ledger, "acknowledge_all", acknowledge_all)
        patch.setattr(pubsub_source.PullEvaluator, "finish_bundle",
                      reading_until(lambda led: led.redeliveries >= len(reports) + len(malformed)))
        summary = run(["--source", "pubsub", "--subscription", subscription, "--duration", "6",
                       "--output", str(root / "out"), "--geoip-city-db", city_test_db, "--demo-data"])
    [ledger] = settled
    return root / "out", summary, reports, malformed, subscription, ledger


def reading_until(done, longest=180):
    """The source's `finish_bundle`, reading past its --duration until `done(ledger)` holds (at most `longest`
    s more): on a loaded machine a run's start can eat its whole duration before the fault the test
    stages has happened (leases expired and redelivered, an emulator restarted and republished to)."""
    stock_finish_bundle = pubsub_source.PullEvaluator.finish_bundle
    give_up = time.time() + longest

    def finish_bundle(evaluator):
        transform = evaluator.transform
        if transform.stop_at is not None and not done(pubsub_source.ledger(transform.run_id, transform.subscription)):
            transform.stop_at = max(transform.stop_at, min(time.time() + 1, give_up))
        return stock_finish_bundle(evaluator)

    return finish_bundle


@pytest.mark.emulator
def test_leases_expiring_mid_run_route_each_report_once(expiring_leases_run):
    out, summary, reports, malformed, subscription, ledger = expiring_leases_run
    routed = [r["reportId"] for records in hostile.read_routed(out).values() for r in records]
    assert summary["redeliveries_dropped_at_source"] > 0  # redeliveries did happen, and were dropped at the source
    assert summary["read"] == len(reports) + len(malformed) and summary["reconciled"]  # read counts messages
    # the Beam counter saw every bundle's redeliveries; deliveries = messages read + redeliveries dropped
    assert summary["redeliveries_dropped_at_source"] == ledger["redeliveries"]
    assert ledger["pulled"] == summary["read"] + ledger["redeliveries"]
    assert summary["duplicates"] == 0
    assert sorted(routed) == sorted(report["reportId"] for report in reports)
    assert pull_all(subscription) == []  # every delivery acknowledged after the run


@pytest.mark.emulator
def test_leases_expiring_mid_run_dead_letter_each_malformed_message_once(expiring_leases_run):
    """Finding 10, fixed: the source drops a redelivery (a message id it pulled before in the run)."""
    out, summary, _, malformed, _, _ = expiring_leases_run
    letters = [letter["payload"] for records in hostile.read_jsonl(out / "dead_letter").values() for letter in records]
    assert sorted(letters) == sorted(m.decode() for m in malformed)
    assert summary["dead_lettered"] == len(malformed)


# --- the Pub/Sub emulator stopped (and restarted) mid-run ---------------------------------------------------

@pytest.fixture
def own_emulator(monkeypatch):
    """An emulator of the test's own on a free port, that it may kill (the session's, which other tests use on
    this worker, is left alone); the clients of the test and of its run find it through PUBSUB_EMULATOR_HOST.
    Yields a list: a restarted emulator is appended to it, and every one is stopped at the end."""
    try:
        servers = [emulator.start()]
    except emulator.EmulatorNotInstalled as missing:
        pytest.skip(str(missing))
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", servers[0].host)
    yield servers
    for server in servers:
        server.stop()


def kill(server):
    """Kills the emulator's process group at once (a crash, not a shutdown); its port is free again after."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()


class BackgroundRun(threading.Thread):
    """`run(argv)` in a thread: `.result(timeout)` returns its summary or raises its error."""

    def __init__(self, argv):
        super().__init__(daemon=True, name="tipline-run")
        self.argv, self.summary, self.error = argv, None, None
        self.start()

    def run(self):
        try:
            self.summary = run(self.argv)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            self.error = error

    def result(self, timeout):
        self.join(timeout)
        assert not self.is_alive(), f"the run did not end within {timeout} s"
        if self.error is not None:
            raise self.error
        return self.summary


def ledger_of(subscription, pulled, timeout=180):
    """The running run's ledger once it has pulled at least `pulled` messages."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [led for led in list(pubsub_source._LEDGERS.values()) if led.subscription == subscription]
        if found and found[0].pulled >= pulled:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"the run did not pull {pulled} messages within {timeout} s")


def settlements(monkeypatch):
    """Records every settlement of a run's ledger: ('acknowledge' | 'release', how many messages)."""
    calls = []
    for kind, name in (("acknowledge", "acknowledge_all"), ("release", "release_all")):
        stock = getattr(pubsub_source._Ledger, name)

        def settle(run_ledger, stock=stock, kind=kind):
            calls.append((kind, len(run_ledger.pending)))
            return stock(run_ledger)

        monkeypatch.setattr(pubsub_source._Ledger, name, settle)
    return calls


def outputs(out):
    return sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file()) if out.exists() else []


@pytest.mark.emulator
def test_an_emulator_stopped_mid_run_stops_the_run_with_a_clear_error(own_emulator, monkeypatch, tmp_path,
                                                                       city_test_db):
    monkeypatch.setattr(pubsub_source, "OUTAGE_GRACE_SECONDS", 3)
    settled = settlements(monkeypatch)
    topic, subscription = make_topic()
    reports = [variant(f"r-down-{i}", ip="81.2.69.160") for i in range(20)]
    publish(iter([json.dumps(report).encode() for report in reports]), topic)
    out = tmp_path / "out"
    running = BackgroundRun(["--source", "pubsub", "--subscription", subscription, "--duration", "600",
                             "--output", str(out), "--geoip-city-db", city_test_db, "--demo-data"])
    ledger_of(subscription, pulled=len(reports))
    kill(own_emulator[0])
    killed = time.monotonic()
    with pytest.raises(pubsub_source.PubSubUnavailable) as stopped:
        running.result(timeout=120)
    took = time.monotonic() - killed
    message = str(stopped.value)
    assert 3 <= took < 60, took  # the grace, then the stop: not the client's 60 s retry, not the 600 s run
    assert f"Pub/Sub subscription {subscription} unreachable for 3 s, longer than the 3 s grace" in message
    assert "the run stops and acknowledges nothing: its 20 unacknowledged messages are redelivered" in message
    assert settled == [("release", 20)]  # handed back (tried once; Pub/Sub is down), never acknowledged
    # Nothing claims the reports done: no summary, no routed file or dead letter (flushed at the end of the run or
    # after 60 s), no temporary file. Aggregates of event-time windows the watermark had closed before the outage
    # may be there, complete (written then renamed): the same messages, redelivered in the same panes, give the
    # same file names and are skipped by the next run (docs/RELIABILITY.md, residual case).
    written = outputs(out)
    assert all(path.split("/")[0] in ("trends", "bundles", "alerts") for path in written), written
    assert not any(name.startswith(".") for path in written for name in path.split("/")), written
    for path in written:
        if path.endswith(".parquet"):
            pq.read_table(out / path)  # complete


@pytest.mark.emulator
def test_an_emulator_restarted_within_the_grace_lets_the_run_go_on(own_emulator, monkeypatch, tmp_path,
                                                                   city_test_db):
    monkeypatch.setattr(pubsub_source, "OUTAGE_GRACE_SECONDS", 60)  # an emulator restarts slowly under load
    topic, subscription = make_topic()
    before = [variant(f"r-before-{i}", ip="81.2.69.160") for i in range(10)]
    after = [variant(f"r-after-{i}", ip="216.160.83.56") for i in range(10)]
    # read until the 20 messages published after the restart have been pulled too
    monkeypatch.setattr(pubsub_source.PullEvaluator, "finish_bundle",
                        reading_until(lambda led: led.pulled >= len(before) * 2 + len(after)))
    encode = lambda reports: iter([json.dumps(report).encode() for report in reports])  # noqa: E731
    publish(encode(before), topic)
    out = tmp_path / "out"
    running = BackgroundRun(["--source", "pubsub", "--subscription", subscription, "--duration", "12",
                             "--output", str(out), "--geoip-city-db", city_test_db, "--demo-data"])
    run_ledger = ledger_of(subscription, pulled=len(before))
    port = int(own_emulator[0].host.rsplit(":", 1)[1])
    kill(own_emulator[0])
    deadline = time.monotonic() + 60
    while run_ledger.outage_since is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run_ledger.outage_since is not None  # the run met the outage
    own_emulator.append(emulator.start(port, timeout=120))
    # Pub/Sub is back, but an emulator keeps nothing: the test makes the topic and subscription again and
    # publishes what the run had not acknowledged (delivered again, as Pub/Sub would) and some new reports
    from google.cloud import pubsub_v1

    ensure_topic(pubsub_v1.PublisherClient(), topic)
    ensure_subscription(pubsub_v1.SubscriberClient(), subscription, topic)
    publish(encode(before + after), topic)
    summary = running.result(timeout=300)
    routed = [r["reportId"] for records in hostile.read_routed(out).values() for r in records]
    assert sorted(routed) == sorted(report["reportId"] for report in before + after)  # each once
    assert summary["read"] == 30 and summary["duplicates"] == len(before) and summary["reconciled"]
    assert run_ledger.failure is None and run_ledger.outage_since is None
    assert pull_all(subscription) == []  # everything delivered after the restart was acknowledged
