"""What the bundle-based DirectRunner needs for tipline's local streaming runs, installed on purpose.

Nothing here happens on import: `install_local_streaming_support()` is called by the code that starts a
local streaming run (pipelines/streaming.py), and by tests that run the streaming DirectRunner themselves;
`hold_watermark_at_user_timers()` also by the streaming dedup, whose output depends on it. Every change is
idempotent and touches only the bundle-based DirectRunner (Dataflow and the FnApiRunner never see them).
"""
import threading

from apache_beam.runners.direct import evaluation_context, executor, transform_evaluator
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner, SwitchingDirectRunner
from apache_beam.runners.direct.transform_evaluator import TransformEvaluatorRegistry
from apache_beam.runners.worker import statesampler
from apache_beam.utils import counters
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import TIME_GRANULARITY

from transforms.plumbing.pubsub_source import LocalPull, PullEvaluator

HOLDS_WATERMARK = "holds_watermark_at_timers"  # a stateful DoFn class attribute: True opts in to the hold
READS_WATERMARK = "reads_input_watermark"  # a DoFn class attribute: True lets it call `input_watermark()`
_bundle_watermarks = threading.local()


def on_the_direct_runner(pipeline):
    """Whether `pipeline` runs on Beam's DirectRunner (whose streaming engine is the bundle-based one),
    where state and buffered values cost per key and per element what a production runner does not."""
    return isinstance(pipeline.runner, (BundleBasedDirectRunner, SwitchingDirectRunner))


def install_local_streaming_support():
    """The local Pub/Sub pull evaluator, metrics kept for every bundle, user timers holding the watermark,
    and keyed state forgotten once it is empty."""
    register_pull_evaluator()
    count_every_bundle()
    hold_watermark_at_user_timers()
    forget_empty_keyed_state()


def register_pull_evaluator():
    """Lets the DirectRunner evaluate `PullFromPubSub`'s primitive with its own evaluator."""
    TransformEvaluatorRegistry._test_evaluators_overrides[LocalPull] = PullEvaluator


def count_every_bundle():
    """Makes the bundle-based DirectRunner keep every bundle's metrics, not just the first one's.

    Its worker threads keep one state sampler, which caches one scoped state per step, created with the
    first bundle's metrics container; later bundles count into that stale container and commit their own
    empty one, so a streaming run's counters stop after one bundle per step (seen with the stock
    ReadFromPubSub too). Each bundle now runs with a state sampler of its own, so its scoped states carry
    its own container. (Clearing the cache instead leaked: the sampler also lists every scoped state it
    ever made, each holding its bundle's metrics container, ~200 a second in a local streaming run.)
    """
    if getattr(executor.TransformExecutor.call, "counts_every_bundle", False):
        return
    stock_call = executor.TransformExecutor.call

    def call(self, state_sampler):
        own_sampler = statesampler.StateSampler("", counters.CounterFactory())
        statesampler.set_current_tracker(own_sampler)
        try:
            return stock_call(self, own_sampler)
        finally:
            statesampler.set_current_tracker(state_sampler)

    call.counts_every_bundle = True
    executor.TransformExecutor.call = call


def earliest_hold(keyed_state):
    """The earliest of one key's event-time timers, or None."""
    return min((timestamp for timers in keyed_state.timers.values()
                for (_, domain, _), timestamp in timers.items() if domain == TimeDomain.WATERMARK), default=None)


def hold_watermark_at_user_timers():
    """Holds a stateful DoFn's output watermark just before its earliest pending event-time timer.

    The Beam model holds a step's output watermark at its pending timers, so what a timer emits at its
    own time is on time downstream; the bundle-based DirectRunner does not (its user state commits timers
    without a hold), so a copy the streaming dedup releases from a timer would reach the trend and file
    windows after they closed. Each bundle of a stateful DoFn that opts in (`HOLDS_WATERMARK`; the other
    stateful steps keep the stock behaviour) now reports, for every key it touched, a
    hold one microsecond before that key's earliest event-time timer (none: the key's hold is removed).
    """
    never_stall_with_timers_due()
    evaluator = transform_evaluator._ParDoEvaluator
    if getattr(evaluator.finish_bundle, "holds_watermark", False):
        return
    stock_finish_bundle = evaluator.finish_bundle

    def finish_bundle(self):
        result = stock_finish_bundle(self)
        if getattr(self._applied_ptransform.transform.dofn, HOLDS_WATERMARK, False):
            for key, keyed_state in self._step_context.partial_keyed_state.items():
                earliest = earliest_hold(keyed_state)
                result.keyed_watermark_holds[key] = None if earliest is None else earliest - TIME_GRANULARITY
        return result

    finish_bundle.holds_watermark = True
    evaluator.finish_bundle = finish_bundle


def never_stall_with_timers_due():
    """Keeps the DirectRunner's monitor from declaring a stall while event-time timers are due.

    Its shutdown check looks for running bundles and processing-time timers, not for event-time timers
    that a bundle committed just after the monitor last fired timers made due; such a race ended a local
    streaming run with "Monitor task detected a pipeline stall" (raised as a tuple, so a TypeError). With
    timers due, the monitor runs again and fires them.
    """
    monitor = executor._ExecutorServiceParallelExecutor._MonitorTask
    if getattr(monitor._should_shutdown, "waits_for_due_timers", False):
        return
    stock_should_shutdown = monitor._should_shutdown

    def should_shutdown(self):
        if not self._is_executing():
            due, _ = self._executor.evaluation_context._watermark_manager.extract_all_timers()
            if due:
                return False
        return stock_should_shutdown(self)

    should_shutdown.waits_for_due_timers = True
    monitor._should_shutdown = should_shutdown


def is_empty(keyed_state):
    """No value and no timer (reading a missing value leaves an empty list behind, which holds nothing)."""
    return (not any(values for tags in keyed_state.state.values() for values in tags.values())
            and not any(keyed_state.timers.values()) and not keyed_state.global_state)


def forget_empty_keyed_state():
    """Drops a key's state from the DirectRunner once it holds no value and no timer.

    The DirectRunner keeps one state object per key a stateful step or grouping ever saw (~1-2 KB each,
    with a timer) and never removes it, even once cleared: a streaming run grew by every reportId, bundle
    signature and session it had seen. An empty state is what a key that was never seen gets, so removing
    it changes nothing but memory; and the watermark manager, which walks every key's timers each time it
    looks for due timers, walks only the live ones.
    """
    context = evaluation_context.EvaluationContext
    if getattr(context.handle_result, "forgets_empty_state", False):
        return
    stock_handle_result = context.handle_result

    def handle_result(self, completed_bundle, completed_timers, result):
        committed = stock_handle_result(self, completed_bundle, completed_timers, result)
        empty = [key for key, keyed_state in result.partial_keyed_state.items() if is_empty(keyed_state)]
        if empty:
            existing = self._transform_keyed_states[result.transform]
            with self._watermark_manager.get_watermarks(result.transform)._lock:  # the lock its timer walk takes
                for key in empty:
                    if key in existing and is_empty(existing[key]):
                        del existing[key]
        return committed

    handle_result.forgets_empty_state = True
    context.handle_result = handle_result


def expose_input_watermark():
    """Lets a DoFn that opts in (`READS_WATERMARK`) read its step's input watermark with `input_watermark()`.

    A DoFn has no watermark parameter; the DirectRunner's own GroupAlsoByWindow reads the input watermark
    from its watermark manager to tell a late element from an on-time one, and a DoFn that stands in for
    a windowed grouping on this runner needs the same. Each bundle of such a DoFn records where to read it.
    """
    evaluator = transform_evaluator._ParDoEvaluator
    if getattr(evaluator.start_bundle, "exposes_watermark", False):
        return
    stock_start_bundle = evaluator.start_bundle

    def start_bundle(self):
        reads = getattr(self._applied_ptransform.transform.dofn, READS_WATERMARK, False)
        _bundle_watermarks.source = ((self._evaluation_context._watermark_manager, self._applied_ptransform)
                                     if reads else None)
        return stock_start_bundle(self)

    start_bundle.exposes_watermark = True
    evaluator.start_bundle = start_bundle


def input_watermark():
    """The input watermark (micros) of the step whose bundle this thread runs, or None where unknown."""
    source = getattr(_bundle_watermarks, "source", None)
    if source is None:
        return None
    manager, applied = source
    return manager.get_watermarks(applied).input_watermark.micros
