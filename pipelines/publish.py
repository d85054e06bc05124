"""`tipline publish`: contract reports to a Pub/Sub topic, with the `reportId` and `submittedAt` attributes.

    tipline publish --project P --topic tips --create --subscription tips-pipeline --count 5000 --rate 500
    tipline publish --project P --topic tips --from replay.jsonl

Works against the emulator (PUBSUB_EMULATOR_HOST set) and real Pub/Sub alike (application credentials).
Pub/Sub unreachable for `--give-up-seconds` (30) ends the command with one line saying so, instead of the
client's own 600 s of retries.
"""
import itertools
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone

LEASE_SECONDS = 600
GIVE_UP_SECONDS = 30


class PubSubUnreachable(RuntimeError):
    """Pub/Sub did not answer within the bounded time `tipline publish` allows."""


def bounded_retry(seconds):
    """The client's retry of transient errors (UNAVAILABLE...), given up after `seconds` in all."""
    from google.api_core import exceptions
    from google.api_core.retry import Retry, if_exception_type

    transient = if_exception_type(exceptions.ServiceUnavailable, exceptions.DeadlineExceeded,
                                  exceptions.InternalServerError, exceptions.Aborted, exceptions.Unknown)
    return Retry(predicate=transient, initial=0.2, maximum=5, multiplier=2, timeout=seconds)


def unreachable(topic, seconds, error):
    from pipelines.errors import first_line

    host = os.environ.get("PUBSUB_EMULATOR_HOST") or "pubsub.googleapis.com"
    return PubSubUnreachable(f"Pub/Sub at {host} unreachable for {topic}: gave up after {seconds:g} s "
                             f"(--give-up-seconds; {first_line(error)})")


def resource_path(project, kind, name):
    """`projects/P/<kind>/<name>`, also accepting a name that is already a full path."""
    return name if name.startswith("projects/") else f"projects/{project}/{kind}/{name}"


def report_attributes(payload):
    """The `reportId` and `submittedAt` attributes of a contract report; none when it cannot be read."""
    try:
        report = json.loads(payload)
    except (ValueError, TypeError):
        return {}
    if not isinstance(report, dict):
        return {}
    return {name: report[name] for name in ("reportId", "submittedAt") if isinstance(report.get(name), str)}


def restamp(payload, now):
    """The report submitted now: live runs keep event time close to processing time (and latency measurable)."""
    try:
        report = json.loads(payload)
    except (ValueError, TypeError):
        return payload
    if not isinstance(report, dict) or not isinstance(report.get("submittedAt"), str):
        return payload
    report["submittedAt"] = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(report).encode("utf-8")


def ensure_topic(publisher, topic, give_up=GIVE_UP_SECONDS):
    from google.api_core.exceptions import AlreadyExists, GoogleAPIError

    try:
        publisher.create_topic(name=topic, retry=bounded_retry(give_up), timeout=give_up)
    except AlreadyExists:
        pass
    except GoogleAPIError as error:
        raise unreachable(topic, give_up, error) from error


def ensure_subscription(subscriber, subscription, topic, give_up=GIVE_UP_SECONDS):
    from google.api_core.exceptions import AlreadyExists, GoogleAPIError

    try:
        subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=LEASE_SECONDS,
                                       retry=bounded_retry(give_up), timeout=give_up)
    except AlreadyExists:
        pass
    except GoogleAPIError as error:
        raise unreachable(subscription, give_up, error) from error


def synthetic_messages(seed):
    """The synthetic stream, one seed after another, for as long as the caller reads."""
    from transforms.demo.synthetic import SyntheticConfig, generate_messages

    for epoch in itertools.count():
        yield from generate_messages(SyntheticConfig(count=10_000, seed=seed + epoch), 0, 1)


def file_messages(path):
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip(b"\r\n")


class Progress:
    """A one-line progress bar on stderr (a terminal), redrawn at most 5 times a second."""

    def __init__(self, total, stream=sys.stderr):
        self.total = total
        self.stream = stream
        self.start = self.drawn = time.monotonic()

    def update(self, done, force=False):
        now = time.monotonic()
        if not force and now - self.drawn < 0.2:
            return
        self.drawn = now
        rate = done / max(now - self.start, 1e-9)
        if self.total:
            filled = int(30 * done / self.total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}"
        else:
            bar = f"{done}"
        self.stream.write(f"\rpublished {bar}  {rate:,.0f}/s ")
        self.stream.flush()


def publish(messages, topic, rate=None, count=None, duration=None, live=False, progress=None, publisher=None,
            give_up=GIVE_UP_SECONDS):
    """Publishes `messages` (bytes) to `topic`, paced to `rate`/s, until `count` or `duration` s; returns the count.

    An empty message is skipped and counted in a warning: Pub/Sub refuses a message with neither data nor
    attributes, and with it the whole batch it was sent in. A batch Pub/Sub does not take within `give_up`
    seconds raises PubSubUnreachable."""
    from google.cloud import pubsub_v1

    publisher = publisher or pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.02))
    start = time.monotonic()
    retry = bounded_retry(give_up)
    futures, published, empty = [], 0, 0
    for payload in messages if count is None else itertools.islice(messages, count):
        elapsed = time.monotonic() - start
        if duration is not None and elapsed >= duration:
            break
        if rate:
            ahead = published / rate - elapsed
            if ahead > 0:
                time.sleep(ahead)
        if not payload:
            empty += 1
            continue
        if live:
            payload = restamp(payload, datetime.now(timezone.utc))
        futures.append(publisher.publish(topic, payload, retry=retry, timeout=give_up, **report_attributes(payload)))
        published += 1
        if len(futures) >= 5000:
            _settle(futures, topic, give_up)
        if progress:
            progress.update(published)
    _settle(futures, topic, give_up)
    if progress:
        progress.update(published, force=True)
        progress.stream.write("\n")
    if empty:
        logging.warning("skipped %d empty messages: Pub/Sub cannot carry a message with no data", empty)
    return published


def _settle(futures, topic, give_up):
    from google.api_core.exceptions import GoogleAPIError

    try:
        for future in futures:
            future.result()
    except GoogleAPIError as error:
        raise unreachable(topic, give_up, error) from error
    futures.clear()


def register(subparsers):
    parser = subparsers.add_parser("publish", help="publish contract reports to a Pub/Sub topic",
                                   description=__doc__, formatter_class=_raw())
    parser.add_argument("--project", required=True)
    parser.add_argument("--topic", required=True, help="name or projects/P/topics/T")
    parser.add_argument("--rate", type=float, default=None, help="messages per second (default: as fast as possible)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--count", type=int, default=None, help="how many messages (default: 1000 synthetic, or the whole file)")
    stop.add_argument("--duration", type=float, default=None, help="publish for this many seconds")
    parser.add_argument("--from", dest="from_file", default=None, help="JSON Lines file (default: the synthetic stream)")
    parser.add_argument("--seed", type=int, default=2026, help="synthetic stream seed")
    parser.add_argument("--live", action="store_true", help="set submittedAt to the publish time (live demos, latency)")
    parser.add_argument("--create", action="store_true", help="create the topic (and --subscription) when missing")
    parser.add_argument("--subscription", action="append", default=[],
                        help="with --create: a subscription to create on the topic (repeatable)")
    parser.add_argument("--give-up-seconds", type=float, default=GIVE_UP_SECONDS,
                        help=f"stop with an error when Pub/Sub is unreachable this long (default {GIVE_UP_SECONDS})")
    parser.set_defaults(func=main)


def _raw():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def main(args):
    from google.cloud import pubsub_v1

    topic = resource_path(args.project, "topics", args.topic)
    if args.create:
        ensure_topic(pubsub_v1.PublisherClient(), topic, args.give_up_seconds)
        subscriber = pubsub_v1.SubscriberClient()
        for name in args.subscription:
            ensure_subscription(subscriber, resource_path(args.project, "subscriptions", name), topic,
                                args.give_up_seconds)
    messages = file_messages(args.from_file) if args.from_file else synthetic_messages(args.seed)
    count = args.count if args.count is not None or args.duration is not None or args.from_file else 1000
    progress = Progress(count) if sys.stderr.isatty() else None
    published = publish(messages, topic, args.rate, count, args.duration, args.live, progress,
                        give_up=args.give_up_seconds)
    print(f"published {published} messages to {topic}")
    return 0
