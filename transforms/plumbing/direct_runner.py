"""What the bundle-based DirectRunner needs for tipline's local streaming runs, installed on purpose.

Nothing here happens on import: `install_local_streaming_support()` is called by the code that starts a
local streaming run (pipelines/streaming.py), and by tests that run the streaming DirectRunner themselves.
Both changes are idempotent and touch only the DirectRunner (Dataflow and the FnApiRunner never see them).
"""
from apache_beam.runners.direct import executor
from apache_beam.runners.direct.transform_evaluator import TransformEvaluatorRegistry

from transforms.plumbing.pubsub_source import LocalPull, PullEvaluator


def install_local_streaming_support():
    """The local Pub/Sub pull evaluator, and metrics kept for every bundle."""
    register_pull_evaluator()
    count_every_bundle()


def register_pull_evaluator():
    """Lets the DirectRunner evaluate `PullFromPubSub`'s primitive with its own evaluator."""
    TransformEvaluatorRegistry._test_evaluators_overrides[LocalPull] = PullEvaluator


def count_every_bundle():
    """Makes the bundle-based DirectRunner keep every bundle's metrics, not just the first one's.

    Its worker threads cache one scoped state per step, created with the first bundle's metrics
    container; later bundles count into that stale container and commit their own empty one, so a
    streaming run's counters stop after one bundle per step (seen with the stock ReadFromPubSub too).
    Clearing the cache before each bundle gives every bundle a scoped state with its own container.
    """
    if getattr(executor.TransformExecutor.call, "counts_every_bundle", False):
        return
    stock_call = executor.TransformExecutor.call

    def call(self, state_sampler):
        state_sampler._states_by_name.clear()
        return stock_call(self, state_sampler)

    call.counts_every_bundle = True
    executor.TransformExecutor.call = call
