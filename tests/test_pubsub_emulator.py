"""The streaming pipeline on the Pub/Sub emulator with the real google-cloud-pubsub client.

Every report published (redeliveries included) is routed or dead-lettered exactly once, routed records
reach their jurisdiction's topic, and the subscription is left with nothing unacknowledged.
"""
import json
import threading
import time
import uuid

import apache_beam as beam
import fastavro
import pytest

from pipelines import emulator
from pipelines.options import TiplineOptions
from pipelines.publish import ensure_subscription, ensure_topic, file_messages, publish
from pipelines.streaming import local_streaming_options, run_for
from tests.test_pipeline_end_to_end import variant
from transforms.plumbing.route_topics import PublishRoutedToTopics, route_topic
from transforms.plumbing.windowed_files import GROUPED_AS_LINES, JsonLinesSink, WriteWindowedFiles

pytestmark = pytest.mark.emulator
PROJECT = "tipline-test"
IPS = {"GB": "81.2.69.160", "US-WA": "216.160.83.56", "UNKNOWN": "10.1.2.3"}  # the City test db's places


@pytest.fixture(scope="session")
def pubsub():
    """One emulator per xdist worker, on a free port; the clients find it through PUBSUB_EMULATOR_HOST."""
    try:
        with emulator.running() as running:
            yield running
    except emulator.EmulatorNotInstalled as missing:
        pytest.skip(str(missing))


def make_topic(kind="tips"):
    from google.cloud import pubsub_v1

    name = f"{kind}-{uuid.uuid4().hex[:8]}"
    topic, subscription = f"projects/{PROJECT}/topics/{name}", f"projects/{PROJECT}/subscriptions/{name}"
    ensure_topic(pubsub_v1.PublisherClient(), topic)
    ensure_subscription(pubsub_v1.SubscriberClient(), subscription, topic)
    return topic, subscription


def pull_all(subscription):
    from google.cloud import pubsub_v1

    client, messages = pubsub_v1.SubscriberClient(), []
    while True:
        received = client.pull(subscription=subscription, max_messages=100, return_immediately=True,
                               timeout=10).received_messages
        if not received:
            return messages
        client.acknowledge(subscription=subscription, ack_ids=[item.ack_id for item in received])
        messages.extend(item.message for item in received)


def test_publish_sets_the_contract_attributes(pubsub, tmp_path):
    topic, subscription = make_topic()
    lines = [json.dumps(variant(f"p-{i}")) for i in range(3)] + ["{not json"]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    assert publish(iter([b""]), topic) == 0  # Pub/Sub refuses an empty message (and the batch it is in)
    assert publish(file_messages(tmp_path / "in.jsonl"), topic) == 4
    messages = sorted(pull_all(subscription), key=lambda message: message.data)
    attributes = [dict(message.attributes) for message in messages]
    assert {"reportId": "p-0", "submittedAt": variant("p-0")["submittedAt"]} in attributes
    assert sum(1 for a in attributes if not a) == 1  # the malformed message has none


def test_every_report_routed_or_dead_lettered_exactly_once(pubsub, tmp_path, city_test_db):
    topic, subscription = make_topic()
    template = f"projects/{PROJECT}/topics/routed-{uuid.uuid4().hex[:6]}-{{jurisdiction}}"
    routed_subscriptions = {}
    for code in IPS:
        routed_topic = route_topic(template, code)
        routed_subscriptions[code] = routed_topic.replace("/topics/", "/subscriptions/")
        from google.cloud import pubsub_v1
        ensure_topic(pubsub_v1.PublisherClient(), routed_topic)
        ensure_subscription(pubsub_v1.SubscriberClient(), routed_subscriptions[code], routed_topic)
    reports = [variant(f"r-{code}-{i}", ip=ip) for code, ip in IPS.items() for i in range(20)]
    payloads = [json.dumps(report).encode() for report in reports]
    redelivered = payloads[::6]
    malformed = [b"{not json", json.dumps({"reportId": "r-bad"}).encode()]
    assert publish(iter(payloads + redelivered + malformed), topic) == 60 + 10 + 2

    out = tmp_path / "out"
    options = local_streaming_options(["--source", "pubsub", "--subscription", subscription, "--output", str(out),
                                       "--geoip-city-db", city_test_db])
    pipeline = beam.Pipeline(options=options)
    from pipelines.tipline_pipeline import build_pipeline

    outputs = build_pipeline(pipeline, options.view_as(TiplineOptions))
    _ = outputs["routed"] | PublishRoutedToTopics(template)
    run_for(pipeline, subscription, duration=6, run_id=uuid.uuid4().hex, progress=False)

    routed = {record["reportId"]: record["jurisdiction"] for path in (out / "routed").rglob("*.avro")
              for record in fastavro.reader(path.open("rb"))}
    routed_count = sum(1 for path in (out / "routed").rglob("*.avro") for _ in fastavro.reader(path.open("rb")))
    letters = [json.loads(line) for path in (out / "dead_letter").rglob("*.jsonl")
               for line in path.read_text().splitlines()]
    assert sorted(routed) == sorted(report["reportId"] for report in reports) and routed_count == len(reports)
    assert sorted(letter["payload"] for letter in letters) == sorted(m.decode() for m in malformed)
    on_topics = []
    for code, routed_subscription in routed_subscriptions.items():
        messages = pull_all(routed_subscription)
        assert all(m.attributes["jurisdiction"] == code == json.loads(m.data)["jurisdiction"] for m in messages)
        assert not any(b'"content"' in m.data or b"contentUri" in m.data for m in messages)
        on_topics += [(m.attributes["reportId"], code) for m in messages]
    assert sorted(on_topics) == sorted(routed.items())
    assert pull_all(subscription) == []  # everything was acknowledged after the run


def test_a_stream_writes_its_unwindowed_files_every_flush_not_only_when_drained(pubsub, tmp_path):
    """The routed and dead-letter files of a stream (`window_seconds=None`) are flushed every `flush_seconds`
    of processing time: records published after a flush land in a file of their own, while the stream runs."""
    topic, subscription = make_topic()
    first = [{"id": n, "dest": "GB"} for n in range(5)]
    then = [{"id": n, "dest": "GB"} for n in range(5, 10)]
    out = tmp_path / "out"

    def publish_the_rest_once_a_file_is_written():
        deadline = time.monotonic() + 30
        while not list(out.rglob("*.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.1)
        seen_while_running.append(len(list(out.rglob("*.jsonl"))))
        publish(iter(json.dumps(record).encode() for record in then), topic)

    seen_while_running = []
    assert publish(iter(json.dumps(record).encode() for record in first), topic) == len(first)
    pipeline = beam.Pipeline(options=local_streaming_options([]))
    _ = (pipeline | beam.io.ReadFromPubSub(subscription=subscription) | beam.Map(json.loads)
         | WriteWindowedFiles(str(out), destination=lambda record: f"dest={record['dest']}", sink=JsonLinesSink,
                              suffix=".jsonl", window_seconds=None, flush_seconds=1, grouped_as=GROUPED_AS_LINES))
    publisher = threading.Thread(target=publish_the_rest_once_a_file_is_written)
    publisher.start()
    run_for(pipeline, subscription, duration=15, run_id=uuid.uuid4().hex, progress=False)
    publisher.join()  # the rest was read only if it was published, once a file was written, while the run read
    files = sorted({record["id"] for record in map(json.loads, path.read_text().splitlines())}
                   for path in out.rglob("*.jsonl"))
    assert seen_while_running == [1]  # the first records' file, written before the stream was drained
    assert files == [{0, 1, 2, 3, 4}, {5, 6, 7, 8, 9}]


def test_a_stream_keeps_no_empty_source_bundle_it_has_run(pubsub, tmp_path, monkeypatch):
    """The source reschedules itself with an empty bundle after every pull; once run, that bundle is no
    longer pending, so an idle stream's source holds at most the one it has just scheduled and the one
    running, not one per pull."""
    from apache_beam.runners.direct import watermark_manager

    pending_at_reschedule, stock_add_pending = [], watermark_manager._TransformWatermarks.add_pending

    def add_pending(self, bundle):
        stock_add_pending(self, bundle)
        if isinstance(bundle.pcollection, beam.pvalue.PBegin):
            pending_at_reschedule.append(len(self._pending))

    monkeypatch.setattr(watermark_manager._TransformWatermarks, "add_pending", add_pending)
    topic, subscription = make_topic()
    publish(iter(json.dumps({"id": n, "dest": "GB"}).encode() for n in range(10)), topic)
    out = tmp_path / "out"
    pipeline = beam.Pipeline(options=local_streaming_options([]))
    _ = (pipeline | beam.io.ReadFromPubSub(subscription=subscription) | beam.Map(json.loads)
         | WriteWindowedFiles(str(out), destination=lambda record: f"dest={record['dest']}", sink=JsonLinesSink,
                              suffix=".jsonl", window_seconds=None, flush_seconds=1, grouped_as=GROUPED_AS_LINES))
    run_for(pipeline, subscription, duration=4, run_id=uuid.uuid4().hex, progress=False)
    routed = [json.loads(line)["id"] for path in out.rglob("*.jsonl") for line in path.read_text().splitlines()]
    assert sorted(routed) == list(range(10))
    assert len(pending_at_reschedule) > 20  # an idle source pulled many times
    assert max(pending_at_reschedule) <= 2
