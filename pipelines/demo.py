"""`tipline demo --pubsub`: the whole streaming pipeline on the local Pub/Sub emulator, in one command.

Starts the installed emulator on a free port, creates the topic and subscription, publishes synthetic
reports (submitted "now") while the pipeline runs, stops after `--seconds`, prints the summary and
stops the emulator.
"""
import sys
import threading

from pipelines.options import DEFAULT_OUTPUT_DIR

PROJECT = "tipline-demo"


def run_demo(seconds, rate, output_dir, route_topics):
    """Publishes while `tipline run` reads the emulator for `seconds`; the run prints and writes the summary."""
    from google.cloud import pubsub_v1

    from pipelines.publish import ensure_subscription, ensure_topic, publish, synthetic_messages
    from pipelines.tipline_pipeline import run

    topic, subscription = f"projects/{PROJECT}/topics/tips", f"projects/{PROJECT}/subscriptions/tips-pipeline"
    ensure_topic(pubsub_v1.PublisherClient(), topic)
    ensure_subscription(pubsub_v1.SubscriberClient(), subscription, topic)
    published = []
    producer = threading.Thread(daemon=True, target=lambda: published.append(
        publish(synthetic_messages(2026), topic, rate=rate, duration=max(seconds - 2, 1), live=True)))
    producer.start()
    argv = ["--source", "pubsub", "--subscription", subscription, "--output", output_dir, "--duration", str(seconds)]
    if route_topics:
        argv += ["--route-topic-template", f"projects/{PROJECT}/topics/tips-{{jurisdiction}}", "--create-route-topics"]
    run(argv)
    producer.join()
    print(f"published {published[0]} reports to {topic}" if published else "the publisher failed (see above)")
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
    parser.set_defaults(func=main)


def main(args):
    from pipelines import emulator

    try:
        with emulator.running() as running:
            print(f"Pub/Sub emulator on {running.host}", flush=True)
            return run_demo(args.seconds, args.rate, args.output, args.route_topics)
    except emulator.EmulatorNotInstalled as missing:
        print(f"tipline demo --pubsub: {missing}", file=sys.stderr)
        return 2
