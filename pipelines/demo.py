"""`tipline demo --pubsub`: the whole streaming pipeline on the local Pub/Sub emulator, in one command.

Starts the installed emulator on a free port, creates the topic and subscription, publishes synthetic
reports (submitted "now") while the pipeline runs, stops after `--seconds`, prints the summary and
stops the emulator.
"""
import sys
import threading
import uuid

PROJECT = "tipline-demo"


def run_demo(seconds, rate, output_dir, route_topics):
    import apache_beam as beam
    from google.cloud import pubsub_v1

    from pipelines.options import TiplineOptions
    from pipelines.publish import ensure_subscription, ensure_topic, publish, synthetic_messages
    from pipelines.streaming import local_streaming_options, run_for
    from pipelines.summary import counters, format_summary, summarize, write_summary
    from pipelines.tipline_pipeline import build_pipeline
    from transforms.route_topics import PublishRoutedToTopics

    topic, subscription = f"projects/{PROJECT}/topics/tips", f"projects/{PROJECT}/subscriptions/tips-pipeline"
    ensure_topic(pubsub_v1.PublisherClient(), topic)
    ensure_subscription(pubsub_v1.SubscriberClient(), subscription, topic)
    options = local_streaming_options(["--source", "pubsub", "--subscription", subscription, "--output", output_dir])
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options.view_as(TiplineOptions))
    if route_topics:
        _ = outputs["routed"] | "RouteTopics" >> PublishRoutedToTopics(
            f"projects/{PROJECT}/topics/tips-{{jurisdiction}}", create_topics=True)
    published = []
    producer = threading.Thread(daemon=True, target=lambda: published.append(
        publish(synthetic_messages(2026), topic, rate=rate, duration=max(seconds - 2, 1), live=True)))
    producer.start()
    result = run_for(pipeline, subscription, seconds, uuid.uuid4().hex)
    producer.join()
    summary = summarize(counters(result))
    print(f"published {published[0]} reports to {topic}")
    print(format_summary(summary))
    print(f"summary: {write_summary(summary, output_dir)}")
    return 0


def register(subparsers):
    parser = subparsers.add_parser("demo", help="run the pipeline on a local demo (--pubsub: on the emulator)",
                                   description=__doc__)
    parser.add_argument("--pubsub", action="store_true", required=True,
                        help="stream through the local Pub/Sub emulator")
    parser.add_argument("--seconds", type=float, default=30, help="how long the pipeline reads")
    parser.add_argument("--rate", type=float, default=300, help="reports published per second")
    parser.add_argument("--output", default="./tipline-out", help="output folder")
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
