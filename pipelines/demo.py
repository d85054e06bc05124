"""`tipline demo --pubsub`: the whole streaming pipeline on the local Pub/Sub emulator, in one command.

Starts the installed emulator on a free port, creates the topic and subscription, publishes synthetic
reports (submitted "now") while the pipeline runs, stops after `--seconds`, prints the summary and
stops the emulator. With the door (the default), it also starts the intake service on a free port and a
scripted provider reports through it over HTTP (submit, upload, fileinfo, finish), plus a public report.
"""
import contextlib
import threading

from pipelines.errors import UsageError
from pipelines.options import DEFAULT_OUTPUT_DIR

PROJECT = "tipline-demo"


def run_demo(seconds, rate, output_dir, route_topics, door=True, door_rate=5):
    """Publishes while `tipline run` reads the emulator for `seconds`; the run prints and writes the summary."""
    from google.cloud import pubsub_v1

    from pipelines.demo_door import intake_door, print_door_outcome
    from pipelines.publish import ensure_subscription, ensure_topic, publish, synthetic_messages
    from pipelines.tipline_pipeline import run

    topic, subscription = f"projects/{PROJECT}/topics/tips", f"projects/{PROJECT}/subscriptions/tips-pipeline"
    ensure_topic(pubsub_v1.PublisherClient(), topic)
    ensure_subscription(pubsub_v1.SubscriberClient(), subscription, topic)
    published = []
    producer = threading.Thread(daemon=True, target=lambda: published.append(
        publish(synthetic_messages(2026), topic, rate=rate, duration=max(seconds - 2, 1), live=True)))
    producer.start()
    argv = ["--source", "pubsub", "--subscription", subscription, "--output", output_dir, "--duration", str(seconds),
            "--demo-data"]
    if route_topics:
        argv += ["--route-topic-template", f"projects/{PROJECT}/topics/tips-{{jurisdiction}}", "--create-route-topics"]
    with intake_door(topic, max(seconds - 5, 1), door_rate) if door else contextlib.nullcontext() as outcome:
        run(argv + (["--media-root", outcome["quarantine"]] if door else []))
    producer.join()
    print(f"published {published[0]} reports to {topic}" if published else "the publisher failed (see above)")
    if door:
        print_door_outcome(outcome, output_dir)
    return 0


def register(subparsers):
    parser = subparsers.add_parser("demo", help="run the pipeline on a local demo (--pubsub: on the emulator)",
                                   description=__doc__)
    parser.add_argument("--pubsub", action="store_true", required=True,
                        help="stream through the local Pub/Sub emulator")
    parser.add_argument("--seconds", type=float, default=30, help="how long the pipeline reads")
    parser.add_argument("--rate", type=float, default=300, help="reports published per second")
    parser.add_argument("--output", default=DEFAULT_OUTPUT_DIR, help=f"output folder (default {DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--route-topics", action="store_true",
                        help="also publish routed records to per-jurisdiction topics on the emulator")
    parser.add_argument("--no-door", dest="door", action="store_false",
                        help="without the intake service and its scripted provider")
    parser.add_argument("--door-rate", type=float, default=5,
                        help="reports/s the scripted provider sends through the door")
    parser.set_defaults(func=main)


def main(args):
    from pipelines import emulator

    try:
        with emulator.running() as running:
            print(f"Pub/Sub emulator on {running.host}", flush=True)
            return run_demo(args.seconds, args.rate, args.output, args.route_topics, args.door, args.door_rate)
    except emulator.EmulatorNotInstalled as missing:
        raise UsageError(f"--pubsub: {missing}") from None
