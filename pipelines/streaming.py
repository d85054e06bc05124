"""A bounded local streaming run: `tipline run --source pubsub --subscription ... --duration S`.

The DirectRunner cannot `wait_until_finish(duration)`, and cancelling it loses every unfired window.
So the run swaps Beam's `ReadFromPubSub` for the local pull source (transforms/plumbing/pubsub_source.py, the way
the DirectRunner itself swaps in its own read), which stops reading at the deadline: the watermark then
goes to the end of time, every window fires, the sinks finalize, the pipeline finishes by itself, and
only then are the run's messages acknowledged. A line of progress is printed every few seconds.

Within the run, a redelivery of a message already read (a lease lost) is dropped by the source and counted
(`redeliveries_dropped_at_source`), so the summary's `read` counts messages, not deliveries. Pub/Sub
unreachable for longer than the source's grace (`OUTAGE_GRACE_SECONDS`, 30 s) fails the run with
`PubSubUnavailable`, acknowledging nothing.
"""
import logging
import threading
import time

from apache_beam.io.gcp.pubsub import ReadFromPubSub
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions
from apache_beam.pipeline import PTransformOverride

from transforms.plumbing.direct_runner import install_local_streaming_support
from transforms.plumbing.metrics import read_counters, top_level_counts
from transforms.plumbing.pubsub_source import PullFromPubSub, acknowledge_run, ledger, release_run

PROGRESS_EVERY_SECONDS = 5


class PullInsteadOfReadFromPubSub(PTransformOverride):
    """Replaces each `ReadFromPubSub` of a subscription with the local pull source of this run."""

    def __init__(self, run_id, read_seconds):
        self.run_id = run_id
        self.read_seconds = read_seconds

    def matches(self, applied_ptransform):
        return isinstance(applied_ptransform.transform, ReadFromPubSub)

    def get_replacement_transform_for_applied_ptransform(self, applied_ptransform):
        source = applied_ptransform.transform._source
        if not source.subscription_name or source.with_attributes:
            raise ValueError("the local streaming run reads message data from a subscription")
        return PullFromPubSub(source.full_subscription, source.timestamp_attribute,
                              run_id=self.run_id, read_seconds=self.read_seconds)


def local_streaming_options(argv):
    """Streaming on the bundle-based DirectRunner (the one with streaming support; no Prism download)."""
    options = PipelineOptions(argv)
    options.view_as(SetupOptions).save_main_session = False
    standard = options.view_as(StandardOptions)
    standard.streaming = True
    if standard.runner in (None, "DirectRunner", "SwitchingDirectRunner"):
        standard.runner = "BundleBasedDirectRunner"
    return options


def tipline_counts(result):
    """read / routed / dead-lettered so far (attempted: the DirectRunner updates them as bundles finish)."""
    return top_level_counts(read_counters(result, committed=False))


def format_progress(elapsed, pulled, counts, watermark, redelivered=0):
    """`pulled` counts deliveries; `redelivered` those of messages already read in this run (not read again)."""
    mark = watermark.to_utc_datetime().strftime("%H:%M:%S") if watermark is not None else "-"
    return (f"[{elapsed:6.1f}s] pulled {pulled}" + (f" ({redelivered} redelivered)" if redelivered else "")
            + f"  read {counts.get('read', 0)}  routed {counts.get('routed', 0)}  "
            f"dead-lettered {counts.get('dead_lettered', 0)}  watermark {mark}")


def print_every(stop, every, line, out=print):
    """Prints `line()` every `every` seconds until `stop` is set (the progress line of batch and streaming)."""
    while not stop.wait(every):
        out(line(), flush=True)


def report_progress(result, run_ledger, start, stop, every=PROGRESS_EVERY_SECONDS, out=print):
    def line():
        with run_ledger.lock:
            pulled, redelivered, watermark = run_ledger.pulled, run_ledger.redeliveries, run_ledger.watermark
        return format_progress(time.monotonic() - start, pulled, tipline_counts(result), watermark, redelivered)

    print_every(stop, every, line, out)


def run_for(pipeline, subscription, duration, run_id, progress=True):
    """Runs `pipeline` (built with ReadFromPubSub), reads for `duration` s from its first pull, drains it, then
    acknowledges; returns its result."""
    install_local_streaming_support()
    pipeline.replace_all([PullInsteadOfReadFromPubSub(run_id, duration)])
    run_ledger = ledger(run_id, subscription)
    start, stop = time.monotonic(), threading.Event()
    result = pipeline.run()
    reporter = threading.Thread(target=report_progress, args=(result, run_ledger, start, stop), daemon=True)
    if progress:
        reporter.start()
    try:
        result.wait_until_finish()
    except BaseException:
        release_run(run_id)  # tried once, bounded: the run's own error is what is raised (and reported once)
        raise
    finally:
        stop.set()
    acknowledged = acknowledge_run(run_id)
    logging.info("acknowledged %d messages after the run committed", acknowledged)
    return result
