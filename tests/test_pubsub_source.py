"""The local Pub/Sub source's ledger against a scripted client (no emulator): redeliveries dropped at the
source (a malformed message used to be dead-lettered once per delivery) and outages waited out for a bounded grace, then a clear error.

The same behaviours through the whole pipeline on the emulator are in tests/test_faults.py.
"""
import random
import time

import pytest
from google.api_core import exceptions
from google.cloud.pubsub_v1 import types
from google.protobuf.timestamp_pb2 import Timestamp

from transforms.plumbing import pubsub_source

SUBSCRIPTION = "projects/tipline-test/subscriptions/tips"


def delivery(message_id, ack_id, published=1_700_000_000):
    return types.ReceivedMessage(ack_id=ack_id, message=types.PubsubMessage(
        data=f"m{message_id}".encode(), message_id=str(message_id), publish_time=Timestamp(seconds=published)))


class ScriptedClient:
    """Answers each pull with the next scripted item: a list of deliveries, or an exception to raise."""

    def __init__(self, *script):
        self.script = list(script)
        self.acknowledged, self.leases, self.pull_timeouts = [], [], []

    def pull(self, subscription, max_messages, return_immediately, retry, timeout):
        assert retry is None  # the ledger retries, not the client (whose own retry lasts 60 s)
        self.pull_timeouts.append(timeout)
        step = self.script.pop(0) if self.script else []
        if isinstance(step, Exception):
            raise step
        return types.PullResponse(received_messages=step)

    def modify_ack_deadline(self, subscription, ack_ids, ack_deadline_seconds, retry=None, timeout=None):
        self.leases.append((list(ack_ids), ack_deadline_seconds))

    def acknowledge(self, subscription, ack_ids, retry=None, timeout=None):
        self.acknowledged.extend(ack_ids)

    def close(self):
        pass


@pytest.fixture
def make_ledger():
    ledgers = []

    def make(client):
        ledger = pubsub_source._Ledger(SUBSCRIPTION)
        ledger._client = client
        ledgers.append(ledger)
        return ledger

    yield make
    for ledger in ledgers:
        ledger.close()


@pytest.fixture
def short_grace(monkeypatch):
    monkeypatch.setattr(pubsub_source, "OUTAGE_GRACE_SECONDS", 1.0)
    monkeypatch.setattr(pubsub_source, "MAX_BACKOFF_SECONDS", 0.2)


# --- redeliveries within a run ---------------------------------------------------------------------------

def test_a_redelivered_message_is_dropped_at_the_source_and_its_ack_id_kept(make_ledger):
    client = ScriptedClient([delivery(1, "a1"), delivery(2, "a2")], [],
                            [delivery(1, "a1-again"), delivery(3, "a3")], [])
    ledger = make_ledger(client)
    first, dropped_first = ledger.pull(100)
    second, dropped_second = ledger.pull(100)
    assert [m.message_id for m in first] == ["1", "2"] and dropped_first == 0
    assert [m.message_id for m in second] == ["3"] and dropped_second == 1
    assert (ledger.pulled, ledger.redeliveries) == (4, 1)  # deliveries, and those not emitted again
    assert ledger.acknowledge_all() == 4  # the redelivery's new ack id is acknowledged with the rest
    assert sorted(client.acknowledged) == ["a1", "a1-again", "a2", "a3"]


def test_a_new_message_reusing_an_id_with_another_publish_time_is_read(make_ledger):
    """An emulator restarted empty numbers its messages from 1 again: id and publish time identify a message."""
    ledger = make_ledger(ScriptedClient([delivery(1, "a1", published=100)], [], [delivery(1, "b1", published=200)], []))
    assert len(ledger.pull(10)[0]) == 1 and len(ledger.pull(10)[0]) == 1
    assert ledger.redeliveries == 0


def test_redeliveries_count_toward_the_pull_size(make_ledger):
    """A burst of redeliveries cannot keep one bundle pulling for ever: max_messages bounds deliveries."""
    client = ScriptedClient([delivery(1, "a1")], [], *[[delivery(1, f"again-{i}")] for i in range(50)])
    ledger = make_ledger(client)
    ledger.pull(10)
    messages, dropped = ledger.pull(10)
    assert messages == [] and dropped == 10


def test_a_redelivery_is_dropped_after_its_identity_went_into_the_sorted_array(make_ledger, monkeypatch):
    monkeypatch.setattr(pubsub_source, "RECENT_AT_MOST", 4)
    client = ScriptedClient([delivery(i, f"a{i}") for i in range(10)], [],
                            [delivery(3, "a3-again"), delivery(10, "a10"), delivery(9, "a9-again")], [])
    ledger = make_ledger(client)
    assert len(ledger.pull(100)[0]) == 10 and len(ledger.seen._recent) < 4  # merged during the first pull
    messages, dropped = ledger.pull(100)
    assert [m.message_id for m in messages] == ["10"] and dropped == 2


def test_seen_identities_agree_with_a_set_across_merges(monkeypatch):
    """Random identities with repeats, in pulls of random sizes: the same first sightings as a Python set,
    including identities that differ only in NUL bytes (numpy's string type would strip trailing ones)."""
    monkeypatch.setattr(pubsub_source, "RECENT_AT_MOST", 64)
    rng = random.Random(7)
    pool = [rng.randbytes(16) for _ in range(1500)]
    pool += [b"\x00" * 16, b"\x00" * 15 + b"\x01", b"a" + b"\x00" * 15,
             b"a\x00b" + b"\x00" * 13, b"a\x00c" + b"\x00" * 13]
    seen, reference = pubsub_source.SeenIdentities(), set()
    for _ in range(120):
        pull = [rng.choice(pool) for _ in range(rng.randint(0, 80))]
        expected = []
        for identity in pull:
            expected.append(identity not in reference)
            reference.add(identity)
        assert seen.keep_new(pull) == expected
    assert len(seen) == len(reference) and len(seen._sorted) > 1000


def test_an_identity_of_another_length_is_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        pubsub_source.SeenIdentities().keep_new([b"short"])


# --- outages ----------------------------------------------------------------------------------------------

def test_a_short_outage_is_waited_out(make_ledger, short_grace):
    unavailable = exceptions.ServiceUnavailable("failed to connect to all addresses")
    client = ScriptedClient(unavailable, unavailable, exceptions.DeadlineExceeded("slow"), [delivery(1, "a1")], [])
    ledger = make_ledger(client)
    messages, _ = ledger.pull(10)
    assert [m.message_id for m in messages] == ["1"] and ledger.outage_since is None and ledger.failure is None


def test_an_outage_longer_than_the_grace_stops_with_a_clear_error(make_ledger, short_grace):
    client = ScriptedClient(*[exceptions.ServiceUnavailable("failed to connect to all addresses")] * 1000)
    ledger = make_ledger(client)
    ledger.add(["pulled-before"])
    started = time.monotonic()
    with pytest.raises(pubsub_source.PubSubUnavailable) as stopped:
        ledger.pull(10)
    assert 1.0 <= time.monotonic() - started < 2.0  # the grace, not the client's 60 s retry
    message = str(stopped.value)
    assert SUBSCRIPTION in message and "unreachable for 1 s" in message and "failed to connect" in message
    assert "acknowledges nothing" in message and "1 unacknowledged messages are redelivered" in message
    assert all(timeout <= 1.0 for timeout in client.pull_timeouts)  # no request outlives the grace
    tries = len(client.pull_timeouts)
    with pytest.raises(pubsub_source.PubSubUnavailable):  # the runner retries the bundle: no second grace
        ledger.pull(10)
    assert len(client.pull_timeouts) == tries and client.acknowledged == []


def test_a_missing_subscription_fails_at_once(make_ledger, short_grace):
    ledger = make_ledger(ScriptedClient(exceptions.NotFound("Resource not found")))
    with pytest.raises(exceptions.NotFound):
        ledger.pull(10)


def test_a_large_pull_leases_every_delivery_once_in_few_requests(make_ledger):
    """The emulator answers 100 messages a pull: 5,000 take 50 responses, and their leases go out per
    ACK_BATCH ack ids (3 requests), not one request per response."""
    responses = [[delivery(100 * r + i, f"a{100 * r + i}") for i in range(100)] for r in range(50)]
    client = ScriptedClient(*responses)
    ledger = make_ledger(client)
    messages, _ = ledger.pull(5000)
    assert len(messages) == 5000
    leased = [ack_id for ack_ids, seconds in client.leases for ack_id in ack_ids]
    assert sorted(leased) == sorted(f"a{n}" for n in range(5000))
    assert all(seconds == pubsub_source.LEASE_SECONDS for _, seconds in client.leases)
    assert [len(ack_ids) for ack_ids, _ in client.leases] == [2000, 2000, 1000]
    assert ledger.acknowledge_all() == 5000


def test_no_lease_request_holds_more_than_a_batch_when_responses_are_large(make_ledger):
    """Pub/Sub itself answers up to 1,000 messages a pull: responses gathered past ACK_BATCH are still
    leased ACK_BATCH ack ids a request (the bound that keeps a request under Pub/Sub's size limit)."""
    responses = [[delivery(1500 * r + i, f"a{1500 * r + i}") for i in range(1500)] for r in range(3)]
    client = ScriptedClient(*responses)
    ledger = make_ledger(client)
    assert len(ledger.pull(4500)[0]) == 4500
    assert [len(ack_ids) for ack_ids, _ in client.leases] == [2000, 1000, 1500]
    assert sorted(a for ack_ids, _ in client.leases for a in ack_ids) == sorted(f"a{n}" for n in range(4500))


def test_a_subscription_missing_after_an_outage_is_waited_for(make_ledger, short_grace):
    """An emulator restarted empty answers NotFound until the subscription is re-created."""
    client = ScriptedClient(exceptions.ServiceUnavailable("down"), exceptions.NotFound("Resource not found"),
                            [delivery(1, "a1")], [])
    ledger = make_ledger(client)
    assert len(ledger.pull(10)[0]) == 1


def test_a_failed_run_hands_its_messages_back_once_without_hiding_its_error(make_ledger):
    class Down(ScriptedClient):
        def modify_ack_deadline(self, *args, **kwargs):
            self.leases.append(kwargs)
            raise exceptions.ServiceUnavailable("down")

    client = Down()
    ledger = make_ledger(client)
    ledger.add(["a1", "a2"])
    assert ledger.release_all() == 2  # logged, not raised
    assert len(client.leases) == 1 and client.leases[0]["timeout"] == pubsub_source.RELEASE_TIMEOUT_SECONDS


def test_an_ack_id_refused_after_the_run_does_not_keep_the_others_unacknowledged(make_ledger):
    class Refusing(ScriptedClient):
        def acknowledge(self, subscription, ack_ids, retry=None, timeout=None):
            if "stale" in ack_ids:
                raise exceptions.InvalidArgument("Invalid ack id")
            super().acknowledge(subscription, ack_ids)

    client = Refusing()
    ledger = make_ledger(client)
    ledger.add(["a1", "stale", "a2"])
    assert ledger.acknowledge_all() == 3
    assert sorted(client.acknowledged) == ["a1", "a2"]


def test_an_outage_at_acknowledgement_says_the_outputs_are_committed(make_ledger, short_grace):
    class Down(ScriptedClient):
        def acknowledge(self, *args, **kwargs):
            raise exceptions.ServiceUnavailable("failed to connect to all addresses")

    ledger = make_ledger(Down())
    ledger.add(["a1", "a2", "a3"])
    with pytest.raises(pubsub_source.PubSubUnavailable) as stopped:
        ledger.acknowledge_all()
    assert "the run committed its outputs but could not acknowledge them: its 3 unacknowledged" in str(stopped.value)
