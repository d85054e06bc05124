"""PullFromPubSub: a local Pub/Sub source that pulls large batches and acknowledges after the run commits.

Why not Beam's `ReadFromPubSub` on the DirectRunner: its evaluator pulls 10 messages per request and
acknowledges each batch before anything downstream runs (~430 messages/s here), so a crash loses what
was in flight. On Dataflow, `ReadFromPubSub` is right (it acknowledges once the data is committed), and
`ReadReports` keeps it there.

Guarantee this source gives on the DirectRunner (at-least-once, nothing lost):
- each pull asks for up to `max_messages` messages and extends their lease to `LEASE_SECONDS`; a
  background thread keeps extending the lease of everything pulled and not yet acknowledged;
- nothing is acknowledged while the pipeline runs: the bounded run (pipelines/streaming.py) stops the
  source at its deadline, lets the pipeline drain (the watermark goes to the end of time, every window
  fires, every sink's files are finalized and route-topic publishes confirmed), and only after the run
  has finished successfully acknowledges the run's messages (`acknowledge_run`);
- a crash before that acknowledges nothing: Pub/Sub redelivers the run's messages to the next run;
- a redelivery within a run (lease lost, or a producer publishing twice) is dropped by the pipeline's
  reportId dedup, so within a run each report is routed or dead-lettered exactly once.

The ledger of unacknowledged messages lives in this process: the source is for the in-process
DirectRunner only.
"""
import threading
import time
import uuid

import apache_beam as beam
from apache_beam import coders
from apache_beam.runners.direct.transform_evaluator import (TransformEvaluatorRegistry, TransformResult,
                                                            _TransformEvaluator)
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

DEFAULT_MAX_MESSAGES = 1000
LEASE_SECONDS = 600
RENEW_EVERY_SECONDS = 120
ACK_BATCH = 2000  # ack ids per request, well under the 512 KB request limit
IDLE_PAUSE = 0.05


def event_time(message, timestamp_attribute):
    """The message's event time: the attribute (RFC 3339 or epoch millis), else its publish time."""
    value = message.attributes.get(timestamp_attribute) if timestamp_attribute else None
    if value:
        try:
            return Timestamp(micros=int(value) * 1000)
        except ValueError:
            try:
                return Timestamp.from_rfc3339(value).to_precision(Timestamp.MICROS_PRECISION,
                                                                   allow_lossy_conversion=True)
            except ValueError:
                pass  # parse dead-letters the report; the publish time keeps it in a sane window
    return Timestamp.from_utc_datetime(message.publish_time)


class _Ledger:
    """Ack ids pulled by one run and not yet acknowledged; keeps their leases alive."""

    def __init__(self, subscription):
        self.subscription = subscription
        self.lock = threading.Lock()
        self.pending = {}  # ack id -> when its lease was last extended (monotonic)
        self.pulled = 0
        self.watermark = None  # the read's watermark hold: the time of its latest pull
        self.stopped = threading.Event()
        self._client = None
        self._renewer = threading.Thread(target=self._renew_leases, daemon=True, name="pubsub-lease")
        self._renewer.start()

    @property
    def client(self):
        if self._client is None:
            from google.cloud import pubsub_v1

            self._client = pubsub_v1.SubscriberClient()
        return self._client

    def pull(self, max_messages):
        """Up to `max_messages` messages (several requests: the emulator returns at most 100 each),
        leased for LEASE_SECONDS and recorded for acknowledgement after the run."""
        messages = []
        while len(messages) < max_messages:
            response = self.client.pull(  # return_immediately: never hold the run's deadline on a long poll
                subscription=self.subscription, max_messages=max_messages - len(messages),
                return_immediately=True, timeout=30)
            received = response.received_messages
            if not received:
                break
            ack_ids = [item.ack_id for item in received]
            self.client.modify_ack_deadline(subscription=self.subscription, ack_ids=ack_ids,
                                            ack_deadline_seconds=LEASE_SECONDS)
            self.add(ack_ids)
            messages.extend(item.message for item in received)
        with self.lock:
            self.pulled += len(messages)
            self.watermark = Timestamp.of(time.time())
        return messages

    def add(self, ack_ids):
        now = time.monotonic()
        with self.lock:
            self.pending.update(dict.fromkeys(ack_ids, now))

    def _renew_leases(self):
        while not self.stopped.wait(RENEW_EVERY_SECONDS / 4):
            cutoff = time.monotonic() - RENEW_EVERY_SECONDS
            with self.lock:
                due = [ack_id for ack_id, renewed in self.pending.items() if renewed < cutoff]
            for batch in _batches(due, ACK_BATCH):
                self.client.modify_ack_deadline(subscription=self.subscription, ack_ids=batch,
                                                ack_deadline_seconds=LEASE_SECONDS)
                self.add(batch)

    def acknowledge_all(self):
        """Acknowledges every pending message; returns how many."""
        with self.lock:
            ack_ids, self.pending = list(self.pending), {}
        for batch in _batches(ack_ids, ACK_BATCH):
            self.client.acknowledge(subscription=self.subscription, ack_ids=batch)
        return len(ack_ids)

    def release_all(self):
        """Hands every pending message back to Pub/Sub for immediate redelivery (a failed run)."""
        with self.lock:
            ack_ids, self.pending = list(self.pending), {}
        for batch in _batches(ack_ids, ACK_BATCH):
            self.client.modify_ack_deadline(subscription=self.subscription, ack_ids=batch, ack_deadline_seconds=0)
        return len(ack_ids)

    def close(self):
        self.stopped.set()
        if self._client is not None:
            self._client.close()


def _batches(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


_LEDGERS = {}
_LEDGERS_LOCK = threading.Lock()


def ledger(run_id, subscription):
    with _LEDGERS_LOCK:
        if run_id not in _LEDGERS:
            _LEDGERS[run_id] = _Ledger(subscription)
        return _LEDGERS[run_id]


def acknowledge_run(run_id):
    """Acknowledges what run `run_id` pulled: call once the run finished and its sinks committed."""
    return _settle_run(run_id, lambda run_ledger: run_ledger.acknowledge_all())


def release_run(run_id):
    """Returns a failed run's messages to Pub/Sub at once instead of waiting for their leases to end."""
    return _settle_run(run_id, lambda run_ledger: run_ledger.release_all())


def _settle_run(run_id, settle):
    """Takes the run's ledger out of the registry, settles its messages with `settle`, and closes it."""
    with _LEDGERS_LOCK:
        run_ledger = _LEDGERS.pop(run_id, None)
    if run_ledger is None:
        return 0
    try:
        return settle(run_ledger)
    finally:
        run_ledger.close()


class _LocalPull(beam.PTransform):
    """The primitive the DirectRunner evaluates with `_PullEvaluator` (registered below)."""

    def __init__(self, subscription, timestamp_attribute, max_messages, run_id, stop_at):
        super().__init__()
        self.subscription = subscription
        self.timestamp_attribute = timestamp_attribute
        self.max_messages = max_messages
        self.run_id = run_id
        self.stop_at = stop_at

    def expand(self, pbegin):
        return beam.pvalue.PCollection(pbegin.pipeline, is_bounded=False)

    def _infer_output_coder(self, input_type=None, input_coder=None):
        return coders.BytesCoder()

    def get_windowing(self, inputs):
        return beam.Windowing(GlobalWindows())


class _PullEvaluator(_TransformEvaluator):
    """Each bundle: pulls until `max_messages` or an empty pull, leases them, emits them.

    Like the stock evaluator, it reschedules itself with an empty bundle and holds the watermark at
    the current time; past `stop_at` it returns neither, so the watermark goes to the end of time and
    the pipeline drains.
    """

    def start_bundle(self):
        self.transform = self._applied_ptransform.transform

    def process_element(self, element):
        pass

    def finish_bundle(self):
        transform = self.transform
        if transform.stop_at is not None and time.time() >= transform.stop_at:
            return TransformResult(self, [], [], None, {None: MAX_TIMESTAMP})
        run_ledger = ledger(transform.run_id, transform.subscription)
        messages = run_ledger.pull(transform.max_messages)
        bundles = []
        if messages:
            bundle = self._evaluation_context.create_bundle(list(self._outputs)[0])
            for message in messages:
                bundle.output(GlobalWindows.windowed_value(
                    message.data, timestamp=event_time(message, transform.timestamp_attribute)))
            bundles.append(bundle)
        else:
            time.sleep(IDLE_PAUSE)
        again = self._evaluation_context.create_bundle(beam.pvalue.PBegin(self._applied_ptransform.transform.pipeline))
        return TransformResult(self, bundles, [again], None, {None: run_ledger.watermark})


TransformEvaluatorRegistry._test_evaluators_overrides[_LocalPull] = _PullEvaluator


class PullFromPubSub(beam.PTransform):
    """Message data (bytes) from `subscription`, timestamped from `timestamp_attribute` (DirectRunner only).

    `stop_at` (epoch seconds) ends the read so the pipeline drains; `run_id` names the ledger that
    `acknowledge_run` acknowledges once the run has finished.
    """

    def __init__(self, subscription, timestamp_attribute=None, max_messages=DEFAULT_MAX_MESSAGES,
                 run_id=None, stop_at=None):
        super().__init__()
        self.subscription = subscription
        self.timestamp_attribute = timestamp_attribute
        self.max_messages = max_messages
        self.run_id = run_id or uuid.uuid4().hex
        self.stop_at = stop_at

    def expand(self, pbegin):
        return pbegin | "Pull" >> _LocalPull(self.subscription, self.timestamp_attribute, self.max_messages,
                                             self.run_id, self.stop_at)
