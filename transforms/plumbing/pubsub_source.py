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
- a redelivery within a run (a lease lost: the same message, same `message_id` and publish time) is
  dropped here, at the source: its new ack id is kept in the ledger (acknowledged with the rest after the
  run) but the message is not emitted again, and it is counted (`redeliveries_dropped_at_source`). So a
  malformed message is dead-lettered once per run, not once per delivery. The messages seen live as long as
  the run (a 16-byte digest each, in a sorted array: `SeenIdentities`), and so do the ack ids, packed per
  pull with one lease time per pull (a few dozen bytes each). A report published twice (two
  messages, two ids) is still dropped by the pipeline's reportId dedup (`duplicates`);
- Pub/Sub unreachable (an outage, the emulator stopped): each call (pull, lease extension, acknowledge)
  is retried with a bounded backoff for up to `OUTAGE_GRACE_SECONDS` from the first failure of the
  outage, the run pausing meanwhile; a subscription found missing during an outage (an emulator
  restarted empty, then re-created) is waited for the same way. An outage longer than the grace fails
  the run with `PubSubUnavailable` naming the subscription, the outage and how many messages go back
  unacknowledged; nothing is acknowledged and Pub/Sub redelivers them to the next run.

The ledger of unacknowledged messages lives in this process: the source is for the in-process
DirectRunner only.
"""
import logging
import os
import threading
import time
import uuid

import apache_beam as beam
import numpy as np
from apache_beam import coders
from apache_beam.runners.direct.transform_evaluator import TransformResult, _TransformEvaluator
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from transforms.plumbing.metrics import counter
from transforms.plumbing.packed_buckets import DIGEST_BYTES, digest_of


DEFAULT_MAX_MESSAGES = 5000  # a bundle per pull: the streaming runner pays per bundle and step, so large ones pay (1,000: ~250/s, 5,000: ~390/s here)
LEASE_SECONDS = 600
RENEW_EVERY_SECONDS = 120
ACK_BATCH = 2000  # ack ids per request, well under the 512 KB request limit
IDLE_PAUSE = 0.05
MAX_ELEMENTS_IN_FLIGHT = 4 * DEFAULT_MAX_MESSAGES  # pulled and not yet through every step: more stay in Pub/Sub
OUTAGE_GRACE_SECONDS = 30  # how long an unreachable Pub/Sub is waited out before the run fails
CALL_TIMEOUT_SECONDS = 10  # one request; the ledger retries it (not the client's own 60 s retry)
FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.1, 2.0  # pauses between retries during an outage
RELEASE_TIMEOUT_SECONDS = 5  # handing a failed run's messages back is tried once: their leases end anyway
REDELIVERIES_COUNTER = "redeliveries_dropped_at_source"


class PubSubUnavailable(RuntimeError):
    """Pub/Sub stayed unreachable longer than OUTAGE_GRACE_SECONDS."""


def _transient(error, during_outage):
    """Worth retrying: Pub/Sub unreachable, overloaded or slow; or, during an outage, a subscription that is
    missing until it is re-created (an emulator restarted empty). Anything else fails at once."""
    from google.api_core import exceptions

    if isinstance(error, (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded, exceptions.Aborted,
                          exceptions.InternalServerError, exceptions.Unknown, exceptions.ResourceExhausted)):
        return True
    return during_outage and isinstance(error, exceptions.NotFound)


def _identity(message):
    """What stays the same across deliveries of one message: its id and publish time (the time too, since an
    emulator restarted empty numbers its messages from 1 again), as a 16-byte digest: the run remembers one
    for every message it read."""
    pb = type(message).pb(message)
    return digest_of(f"{pb.message_id}@{pb.publish_time.seconds}.{pb.publish_time.nanos}")


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
    """Ack ids pulled by one run and not yet acknowledged; keeps their leases alive, drops redeliveries and
    waits out short Pub/Sub outages."""

    def __init__(self, subscription):
        self.subscription = subscription
        self.lock = threading.Lock()
        self.pending = PendingAckIds()
        self.seen = SeenIdentities()  # every message emitted by this run (read by the pulling thread only)
        self.pulled = 0  # deliveries, redeliveries included
        self.redeliveries = 0  # deliveries of a message already emitted by this run, not emitted again
        self.watermark = None  # the read's watermark hold: the time of its latest pull
        self.outage_since = None  # monotonic start of the first failed request of an ongoing outage
        self.failure = None  # the PubSubUnavailable that ended the outage; raised again by every request
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

    def _call(self, what, request, consequence="the run stops and acknowledges nothing", unacknowledged=None):
        """`request(timeout)` (one RPC, without the client's own retry), retried with a bounded backoff while
        Pub/Sub is unreachable, for up to OUTAGE_GRACE_SECONDS from the first failure of the outage; past
        that, raises PubSubUnavailable (and every later request of the run raises it too). The error says
        what then happens (`consequence`) to how many messages (`unacknowledged`, default: those pending)."""
        pause = FIRST_BACKOFF_SECONDS
        while True:
            if self.failure is not None:
                raise self.failure
            started = time.monotonic()
            with self.lock:
                outage = None if self.outage_since is None else started - self.outage_since
            timeout = max(1.0, min(CALL_TIMEOUT_SECONDS, OUTAGE_GRACE_SECONDS - (outage or 0)))
            try:
                response = request(timeout)
            except Exception as error:
                if not _transient(error, outage is not None):
                    raise
                with self.lock:
                    if self.outage_since is None:
                        self.outage_since = started
                        logging.warning("Pub/Sub subscription %s unreachable (%s failed: %s); retrying for up "
                                        "to %s s", self.subscription, what, error, OUTAGE_GRACE_SECONDS)
                    outage = time.monotonic() - self.outage_since
                    pending = len(self.pending) if unacknowledged is None else unacknowledged
                if outage >= OUTAGE_GRACE_SECONDS:
                    self.failure = PubSubUnavailable(
                        f"Pub/Sub subscription {self.subscription} unreachable for {outage:.0f} s, longer than "
                        f"the {OUTAGE_GRACE_SECONDS} s grace ({what} failed: {error}); {consequence}: its "
                        f"{pending} unacknowledged messages are redelivered by Pub/Sub to the next run")
                    raise self.failure from error
                time.sleep(min(pause, OUTAGE_GRACE_SECONDS - outage))
                pause = min(2 * pause, MAX_BACKOFF_SECONDS)
                continue
            if outage is not None:
                with self.lock:
                    since, self.outage_since = self.outage_since, None
                if since is not None:
                    logging.warning("Pub/Sub subscription %s reachable again after %.1f s", self.subscription,
                                    time.monotonic() - since)
            return response

    def pull(self, max_messages):
        """Up to `max_messages` deliveries (several requests: the emulator returns at most 100 each), leased
        for LEASE_SECONDS and recorded for acknowledgement after the run. Returns the messages this run had
        not pulled before, and how many redeliveries (of messages it had) were dropped."""
        messages, delivered, redelivered, unleased = [], 0, 0, []
        while delivered < max_messages:
            response = self._call("pull", lambda timeout: self.client.pull(  # return_immediately: never hold
                subscription=self.subscription, max_messages=max_messages - delivered,  # the run's deadline
                return_immediately=True, retry=None, timeout=timeout))
            received = response.received_messages
            if not received:
                break
            unleased.extend(item.ack_id for item in received)
            if len(unleased) >= ACK_BATCH:
                self._lease(unleased)
                unleased = []
            delivered += len(received)
            new = self.seen.keep_new([_identity(item.message) for item in received])
            messages.extend(item.message for item, fresh in zip(received, new) if fresh)
            redelivered += len(received) - sum(new)
        self._lease(unleased)
        with self.lock:
            self.pulled += delivered
            self.redeliveries += redelivered
            self.watermark = Timestamp.of(time.time())
        return messages, redelivered

    def _lease(self, ack_ids):
        """Records `ack_ids` (every delivery's, redeliveries' too: all acknowledged after the run) and extends
        their lease to LEASE_SECONDS, ACK_BATCH ack ids a request.

        Why per ACK_BATCH and not per response: the emulator answers a pull with at most 100
        messages, and a lease request after each made half of a 5,000-message pull's requests (0.50 s of wall
        for 5,000 here, 0.33 s leased per 2,000). Until its lease is extended a delivery holds the
        subscription's own deadline (10 s or more), longer than the few responses in between; one that
        lapses anyway is redelivered and dropped here as a redelivery."""
        for batch in _batches(ack_ids, ACK_BATCH):
            self.add(batch)
            self._extend_leases(batch)

    def _extend_leases(self, ack_ids):
        """One request extending the leases of at most ACK_BATCH `ack_ids` to LEASE_SECONDS."""
        self._call("extending leases", lambda timeout: self.client.modify_ack_deadline(
            subscription=self.subscription, ack_ids=ack_ids, ack_deadline_seconds=LEASE_SECONDS,
            retry=None, timeout=timeout))

    def add(self, ack_ids):
        """Records up to ACK_BATCH ack ids of one pull, leased now, packed with one lease time for them all."""
        if not ack_ids:
            return
        packed = pack_ack_ids(ack_ids)
        now = time.monotonic()
        with self.lock:
            self.pending.add(packed, len(ack_ids), now)

    def _renewed(self, pull):
        now = time.monotonic()
        with self.lock:  # only if still pending: the run may have been settled meanwhile
            self.pending.renewed(pull, now)

    def _take_pending(self):
        """Every pending ack id, the ledger emptied."""
        with self.lock:
            pending, self.pending = self.pending, PendingAckIds()
        return pending.ack_ids()

    def _renew_leases(self):
        while not self.stopped.wait(RENEW_EVERY_SECONDS / 4):
            cutoff = time.monotonic() - RENEW_EVERY_SECONDS
            with self.lock:
                due = self.pending.due(cutoff)
            try:
                for pull, packed in due:
                    for batch in _batches(unpack_ack_ids(packed), ACK_BATCH):
                        self._extend_leases(batch)
                    self._renewed(pull)
            except Exception as error:  # noqa: BLE001 - the next pull raises the same outage, or retries
                if not self.stopped.is_set():
                    logging.warning("could not extend the leases of %s: %s", self.subscription, error)

    def acknowledge_all(self):
        """Acknowledges every pending message; returns how many."""
        ack_ids = self._take_pending()
        for done, batch in zip(range(0, len(ack_ids), ACK_BATCH), _batches(ack_ids, ACK_BATCH)):
            self._call("acknowledge", lambda timeout, batch=batch: self._acknowledge(batch, timeout),
                       consequence="the run committed its outputs but could not acknowledge them",
                       unacknowledged=len(ack_ids) - done)
        return len(ack_ids)

    def _acknowledge(self, ack_ids, timeout):
        """One request; if Pub/Sub refuses an ack id in it (one from before a subscription was re-created),
        the others are acknowledged one by one and the refused ones logged."""
        from google.api_core.exceptions import InvalidArgument

        try:
            self.client.acknowledge(subscription=self.subscription, ack_ids=ack_ids, retry=None, timeout=timeout)
        except InvalidArgument:
            if len(ack_ids) == 1:
                logging.warning("Pub/Sub refused to acknowledge %s on %s", ack_ids[0], self.subscription)
                return
            for ack_id in ack_ids:
                self._acknowledge([ack_id], timeout)

    def release_all(self):
        """Hands every pending message back to Pub/Sub for immediate redelivery (a failed run). Tried once:
        if Pub/Sub cannot be reached, the messages are redelivered anyway when their leases end."""
        ack_ids = self._take_pending()
        try:
            for batch in _batches(ack_ids, ACK_BATCH):
                self.client.modify_ack_deadline(subscription=self.subscription, ack_ids=batch, ack_deadline_seconds=0,
                                                retry=None, timeout=RELEASE_TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001 - the run is failing already; keep its own error
            logging.warning("could not hand %d messages back to %s (%s): Pub/Sub redelivers them when their "
                            "leases end", len(ack_ids), self.subscription, error)
        return len(ack_ids)

    def close(self):
        self.stopped.set()
        if self._client is not None:
            self._client.close()


class PendingAckIds:
    """Ack ids pulled and not yet settled: each pull's packed, with one time its leases were last extended;
    `len()` counts the ack ids."""

    def __init__(self):
        self.pulls = {}  # pull number -> [when its leases were last extended (monotonic), its ack ids packed]
        self.count = 0
        self.next_pull = 0

    def __len__(self):
        return self.count

    def add(self, packed, count, now):
        self.pulls[self.next_pull] = [now, packed]
        self.next_pull += 1
        self.count += count

    def renewed(self, pull, now):
        if pull in self.pulls:
            self.pulls[pull][0] = now

    def due(self, cutoff):
        """(pull, packed ack ids) of the pulls whose leases were last extended before `cutoff`."""
        return [(pull, packed) for pull, (renewed, packed) in self.pulls.items() if renewed < cutoff]

    def ack_ids(self):
        return [ack_id for _, packed in self.pulls.values() for ack_id in unpack_ack_ids(packed)]


IDENTITY_BYTES = DIGEST_BYTES  # `_identity`'s digest
RECENT_AT_MOST = 8192  # identities held in a set before they are merged into the sorted array


class SeenIdentities:
    """The 16-byte identities of every message a run emitted, to drop redeliveries: a sorted numpy array, and
    the newest (at most RECENT_AT_MOST) in a set until they are merged in.

    Why not a set of them all: a run keeps one for every message it read, and a set of 16-byte `bytes` costs
    ~91 bytes an identity (tracemalloc, 100,000); here ~16. A pull's identities are looked up in the
    array at once; a merge inserts the recent ones in order (a copy of the array, so O(n) every
    RECENT_AT_MOST messages)."""

    def __init__(self):
        self._sorted = np.empty(0, dtype=f"S{IDENTITY_BYTES}")
        self._recent = set()

    def keep_new(self, identities):
        """For each of `identities` in order, whether this run sees it for the first time (then it is
        remembered; a second one in the same list is not new)."""
        in_sorted = self._in_sorted(as_identity_array(identities))
        new = []
        for identity, old in zip(identities, in_sorted):
            fresh = not old and identity not in self._recent
            if fresh:
                self._recent.add(identity)
            new.append(fresh)
        if len(self._recent) >= RECENT_AT_MOST:
            self._merge_recent()
        return new

    def __len__(self):
        return len(self._sorted) + len(self._recent)

    def _in_sorted(self, wanted):
        if not len(self._sorted) or not len(wanted):
            return [False] * len(wanted)
        at = np.minimum(np.searchsorted(self._sorted, wanted), len(self._sorted) - 1)
        return same_bytes(self._sorted[at], wanted).tolist()

    def _merge_recent(self):
        recent = np.sort(as_identity_array(list(self._recent)))
        self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, recent), recent)
        self._recent = set()


def as_identity_array(identities):
    """16-byte identities as a numpy array, refusing any other length (the array would pad or cut it)."""
    if any(len(identity) != IDENTITY_BYTES for identity in identities):
        raise ValueError(f"a message identity is not {IDENTITY_BYTES} bytes")
    return np.array(identities, dtype=f"S{IDENTITY_BYTES}")


def same_bytes(left, right):
    """Element-wise equality of two identity arrays, byte for byte (not numpy's string comparison)."""
    return (left.view("<u8").reshape(-1, 2) == right.view("<u8").reshape(-1, 2)).all(axis=1)


def pack_ack_ids(ack_ids):
    """One pull's ack ids as (their common prefix, the rest of each joined by newlines): a run keeps every
    ack id until it ends, and ids of one pull share most of their text (~170 bytes an id as a dict entry,
    a few dozen packed). Pub/Sub's ack ids are printable, without newlines."""
    prefix = os.path.commonprefix(ack_ids)
    return prefix, "\n".join(ack_id[len(prefix):] for ack_id in ack_ids).encode("utf-8")


def unpack_ack_ids(packed):
    prefix, rest = packed
    return [prefix + suffix for suffix in rest.decode("utf-8").split("\n")]


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


class LocalPull(beam.PTransform):
    """The primitive the DirectRunner evaluates with `PullEvaluator` (registered by
    transforms/plumbing/direct_runner.py)."""

    def __init__(self, subscription, timestamp_attribute, max_messages, run_id, stop_at, read_seconds=None):
        super().__init__()
        self.subscription = subscription
        self.timestamp_attribute = timestamp_attribute
        self.max_messages = max_messages
        self.run_id = run_id
        self.stop_at = stop_at
        self.read_seconds = read_seconds

    def expand(self, pbegin):
        return beam.pvalue.PCollection(pbegin.pipeline, is_bounded=False)

    def _infer_output_coder(self, input_type=None, input_coder=None):
        return coders.BytesCoder()

    def get_windowing(self, inputs):
        return beam.Windowing(GlobalWindows())


def elements_in_flight(evaluation_context):
    """How many elements wait in bundles for some step of the DirectRunner's pipeline (a racy count)."""
    watermarks = evaluation_context._watermark_manager._transform_to_watermarks
    try:
        return sum(len(bundle._elements) for tw in list(watermarks.values()) for bundle in list(tw._pending))
    except RuntimeError:  # a set changed size while counted: count again next time
        return 0


class PullEvaluator(_TransformEvaluator):
    """Each bundle: pulls until `max_messages` or an empty pull, leases them, emits them.

    Like the stock evaluator, it reschedules itself with an empty bundle and holds the watermark at
    the current time; past `stop_at` it returns neither, so the watermark goes to the end of time and
    the pipeline drains. Unlike it, it does not pull while `MAX_ELEMENTS_IN_FLIGHT` elements wait for
    the pipeline's steps: a pipeline slower than its input would otherwise hold the whole backlog in
    memory (a local run at 200 reports/s routing ~170/s grew by several KB of RSS a second).
    """

    def start_bundle(self):
        self.transform = self._applied_ptransform.transform

    def process_element(self, element):
        pass

    def finish_bundle(self):
        transform = self.transform
        if transform.stop_at is None and transform.read_seconds is not None:  # the first pull starts the clock
            transform.stop_at = time.time() + transform.read_seconds
        if transform.stop_at is not None and time.time() >= transform.stop_at:
            return TransformResult(self, [], [], None, {None: MAX_TIMESTAMP})
        run_ledger = ledger(transform.run_id, transform.subscription)
        if elements_in_flight(self._evaluation_context) >= MAX_ELEMENTS_IN_FLIGHT:
            time.sleep(IDLE_PAUSE)  # the pipeline is behind: the backlog waits in Pub/Sub, not in memory
            messages, redelivered = [], 0
        else:
            messages, redelivered = run_ledger.pull(transform.max_messages)
        if redelivered:  # counted in every bundle thanks to direct_runner.count_every_bundle
            counter(REDELIVERIES_COUNTER).inc(redelivered)
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



class PullFromPubSub(beam.PTransform):
    """Message data (bytes) from `subscription`, timestamped from `timestamp_attribute` (DirectRunner only).

    `stop_at` (epoch seconds), or `read_seconds` after the first pull, ends the read so the pipeline drains
    (counted from the first pull, a slow start on a busy machine does not eat the reading time); `run_id`
    names the ledger that `acknowledge_run` acknowledges once the run has finished.
    """

    def __init__(self, subscription, timestamp_attribute=None, max_messages=DEFAULT_MAX_MESSAGES,
                 run_id=None, stop_at=None, read_seconds=None):
        super().__init__()
        self.subscription = subscription
        self.timestamp_attribute = timestamp_attribute
        self.max_messages = max_messages
        self.run_id = run_id or uuid.uuid4().hex
        self.stop_at = stop_at
        self.read_seconds = read_seconds

    def expand(self, pbegin):
        return pbegin | "Pull" >> LocalPull(self.subscription, self.timestamp_attribute, self.max_messages,
                                            self.run_id, self.stop_at, self.read_seconds)
