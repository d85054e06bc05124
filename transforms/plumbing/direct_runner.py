"""What the bundle-based DirectRunner needs for tipline's local streaming runs, installed on purpose.

Nothing here happens on import: `install_local_streaming_support()` is called by the code that starts a
local streaming run (pipelines/streaming.py), and by tests that run the streaming DirectRunner themselves;
`hold_watermark_at_user_timers()` also by the streaming dedup, whose output depends on it. Both it and
`expose_input_watermark()` wrap the bundle methods that `reuse_dofns_across_bundles()` replaces, so they
install that first. Every change is idempotent and touches only the bundle-based DirectRunner (Dataflow
and the FnApiRunner never see them).
"""
import copy
import gc
import logging
import threading
from typing import Any

import apache_beam
from apache_beam import coders, pvalue
from apache_beam.internal import pickler
from apache_beam.runners import common
from apache_beam.runners.common import DoFnRunner, DoFnState
from apache_beam.runners.direct import evaluation_context, executor, transform_evaluator, watermark_manager
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner, SwitchingDirectRunner
from apache_beam.runners.direct.direct_userstate import DirectUserStateContext
from apache_beam.runners.direct.transform_evaluator import TransformEvaluatorRegistry
from apache_beam.runners.direct.util import TransformResult
from apache_beam.runners.worker import statesampler
from apache_beam.utils import counters
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import get_dofn_specs, is_stateful_dofn
from apache_beam.utils.timestamp import TIME_GRANULARITY

from transforms.plumbing.pubsub_source import LocalPull, PullEvaluator

HOLDS_WATERMARK = "holds_watermark_at_timers"  # a stateful DoFn class attribute: True opts in to the hold
READS_WATERMARK = "reads_input_watermark"  # a DoFn class attribute: True lets it call `input_watermark()`
OLD_GENERATION_THRESHOLD = 1000  # middle-generation collections between full ones (CPython's default: 10)
REUSE_WRITTEN_FOR_BEAM = "2.77.0"  # the Beam whose _ParDoEvaluator.start_bundle/finish_bundle reuse_dofns_across_bundles restates
_bundle_watermarks = threading.local()
_thread_dofns = threading.local()
_LOGGER = logging.getLogger(__name__)


def on_the_direct_runner(pipeline):
    """Whether `pipeline` runs on Beam's DirectRunner (whose streaming engine is the bundle-based one),
    where state and buffered values cost per key and per element what a production runner does not."""
    return isinstance(pipeline.runner, (BundleBasedDirectRunner, SwitchingDirectRunner))


def install_local_streaming_support():
    """DoFns set up once and reused across bundles, keyed state copied cheaply, the local Pub/Sub pull
    evaluator, metrics kept for every bundle, user timers holding the watermark, keyed state forgotten once
    it is empty and a source's empty bundles once run, and watermarks refreshed from each pending bundle's
    earliest timestamp, found once; keys' timers walked only when one can be due; the collector's full
    passes made rare."""
    collect_the_old_generation_rarely()
    reuse_dofns_across_bundles()
    copy_keyed_state_without_deepcopy()
    register_pull_evaluator()
    count_every_bundle()
    hold_watermark_at_user_timers()
    forget_empty_keyed_state()
    forget_empty_source_bundles()
    refresh_watermarks_from_bundle_minimums()
    extract_timers_only_when_due()


def collect_the_old_generation_rarely():
    """Full garbage collections only every OLD_GENERATION_THRESHOLD middle-generation ones, not every 10.

    The bundle-based DirectRunner holds every key's state and timers as Python objects of this process, so
    the old generation grows with the stream, and each full collection walks all of it: in a 120-s run at
    1,200 reports/s, CPython's default thresholds made ~4 full collections a second, and collecting took
    27-29% of the process's CPU (26.5 of 32.3 s in full collections); with 1,000, 8%, about one full
    collection every 30 s. Reference counting still frees all garbage without cycles at once; cyclic
    garbage that survived into the old generation waits for the next full collection."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, OLD_GENERATION_THRESHOLD)


def reuse_dofns_across_bundles():
    """Sets a step's DoFn up once per worker thread and reuses it, with its DoFnRunner, for the thread's bundles.

    The bundle-based DirectRunner's `_ParDoEvaluator` deserializes a copy of the DoFn, builds a new
    DoFnRunner (whose DoFnSignature inspects every method's signature, and whose statefulness check walks
    the DoFn's specs twice more) and calls `setup()` and `teardown()` for EVERY bundle: in a local
    streaming run, with small bundles, that was a third of the CPU. The Beam model lets a runner keep a
    DoFn instance for many bundles, set up once and torn down when it is done with it, as the FnApiRunner
    and Dataflow do; here it is one instance per (step, worker thread), torn down when the thread ends
    with the run (finished, failed or cancelled). Each bundle still gets its own output bundles, counters,
    state context and bundle finalizer; an instance whose bundle raised is never reused (a retry gets a
    new one), as Beam discards a failed DoFn. Steps with side inputs keep the stock per-bundle path (the
    invoker caches side-input values that change with the window), and so does the splittable-DoFn
    evaluator (which passes a DoFn that is not a pickled copy). The scheduler's per-bundle "is this
    step stateful?" check is memoized per step too. It restates Beam's start/finish_bundle, so it is
    pinned to the Beam it was written for (`REUSE_WRITTEN_FOR_BEAM`, the version setup.py pins).
    """
    if apache_beam.__version__ != REUSE_WRITTEN_FOR_BEAM:
        raise RuntimeError(f"transforms/plumbing/direct_runner.py restates Beam {REUSE_WRITTEN_FOR_BEAM}'s "
                           f"_ParDoEvaluator bundle set-up; Beam {apache_beam.__version__} is installed: "
                           f"check reuse_dofns_across_bundles against it and update REUSE_WRITTEN_FOR_BEAM")
    memoize_serial_steps()
    evaluator = transform_evaluator._ParDoEvaluator
    worker = executor._ExecutorService._ExecutorServiceWorker
    if getattr(worker.run, "tears_down_dofns", False):  # installed (other supports wrap start_bundle again)
        return
    stock_start_bundle, stock_finish_bundle = evaluator.start_bundle, evaluator.finish_bundle
    stock_run = worker.run

    def start_bundle(self):
        self._reused_dofn = None
        if not reusable(self):
            return stock_start_bundle(self)
        self._reused_dofn = check_out_dofn(self)
        self._reused_dofn.begin(self)
        self.runner.start()

    def finish_bundle(self):
        if self._reused_dofn is None:
            return stock_finish_bundle(self)
        self.runner.finish()
        bundles = list(self._tagged_receivers.values())
        result_counters = self._counter_factory.get_counters()
        if self.user_state_context:
            self.user_state_context.commit()
            self.user_state_context.reset()
        self._reused_dofn.end()
        check_in_dofn(self._reused_dofn)
        return TransformResult(self, bundles, [], result_counters, None)

    def run(self):
        self.tears_down_dofns = True  # a worker started before the install keeps the stock path
        try:
            stock_run(self)
        finally:
            tear_down_thread_dofns()

    run.tears_down_dofns = True
    evaluator.start_bundle, evaluator.finish_bundle, worker.run = start_bundle, finish_bundle, run


def reusable(evaluator):
    """Whether this bundle's DoFn may come from the worker thread's set-up instances (see above)."""
    return (evaluator._perform_dofn_pickle_test and not evaluator._applied_ptransform.side_inputs
            and getattr(threading.current_thread(), "tears_down_dofns", False))


class ReusedDoFn:
    """One step's DoFn, deserialized and set up once, and the DoFnRunner (signature, invoker, output
    handler, user state context) built for it once; `begin` points them at one bundle's outputs and state.

    Beam's runner classes are compiled (Cython), so their receivers and state context cannot be swapped
    afterwards: the runner is built on receivers that forward to the current bundle's output bundles, and
    on a state context whose step context (the bundle's keyed state) changes with the bundle.
    """

    def __init__(self, evaluator):
        applied = evaluator._applied_ptransform
        transform = applied.transform
        self.step = applied
        self.dofn = pickler.roundtrip(transform.dofn)
        self.forwarders = transform_evaluator._TaggedReceivers(evaluator._evaluation_context)
        for output_tag in applied.outputs:
            self.forwarders[output_tag] = ToCurrentBundle()
        self.user_state_context, self.user_timer_map, self.key_coder = None, {}, None
        if is_stateful_dofn(self.dofn):
            self.key_coder = key_coder_of(applied)
            self.user_state_context = DirectUserStateContext(evaluator._step_context, self.dofn, self.key_coder)
            self.user_timer_map = {f"user/{spec.name}": spec for spec in get_dofn_specs(self.dofn)[1]}
        self.runner = DoFnRunner(
            self.dofn, getattr(transform, "args", []), getattr(transform, "kwargs", {}), [],
            applied.inputs[0].windowing, tagged_receivers=self.forwarders, step_name=applied.full_label,
            state=DoFnState(counters.CounterFactory()),  # its counters are legacy aggregators, which nothing counts
            user_state_context=self.user_state_context)
        self.runner.setup()

    def begin(self, evaluator):
        """Hands this instance to `evaluator` for one bundle, with the bundle's own outputs and counters."""
        evaluator._tagged_receivers = output_receivers(evaluator)
        for output_tag, forwarder in self.forwarders.items():
            forwarder.bundle = evaluator._tagged_receivers[output_tag]
        evaluator._counter_factory = counters.CounterFactory()
        self.runner.bundle_finalizer_param.reset()  # the DirectRunner never finalizes bundles (nor did it stock)
        if self.user_state_context is not None:
            self.user_state_context.step_context = evaluator._step_context
        evaluator.runner, evaluator.user_state_context = self.runner, self.user_state_context
        evaluator.user_timer_map, evaluator.key_coder = self.user_timer_map, self.key_coder

    def end(self):
        """Lets go of the finished bundle's outputs and keyed state (an idle instance holds neither)."""
        for forwarder in self.forwarders.values():
            forwarder.bundle = None
        if self.user_state_context is not None:
            self.user_state_context.step_context = None

    def tear_down(self):
        try:
            self.runner.teardown()
        except Exception:  # a teardown is best effort (the Beam model's word); the run has already ended
            _LOGGER.exception("teardown of the DoFn of %s failed", self.step.full_label)


class ToCurrentBundle(common.Receiver):
    """A reused DoFnRunner's receiver of one output: passes each element to the current bundle's."""

    bundle = None

    def receive(self, element):
        self.bundle.receive(element)


def key_coder_of(applied):
    """The coder of a stateful step's keys, as Beam's evaluator picks it."""
    kv_type_hint = applied.inputs[0].element_type
    if kv_type_hint and kv_type_hint != Any:
        return coders.registry.get_coder(kv_type_hint).key_coder()
    return coders.registry.get_coder(Any)


def output_receivers(evaluator):
    """A new output bundle for each of the step's outputs, as Beam's evaluator makes for each bundle."""
    receivers = transform_evaluator._TaggedReceivers(evaluator._evaluation_context)
    for output_tag in evaluator._applied_ptransform.outputs:
        output_pcollection = pvalue.PCollection(None, tag=output_tag)
        output_pcollection.producer = evaluator._applied_ptransform
        receivers[output_tag] = evaluator._evaluation_context.create_bundle(output_pcollection)
        receivers[output_tag].tag = output_tag
    return receivers


def thread_dofns():
    """This worker thread's (idle instances by step, every instance it set up)."""
    if not hasattr(_thread_dofns, "idle"):
        _thread_dofns.idle, _thread_dofns.every = {}, []
    return _thread_dofns.idle, _thread_dofns.every


def check_out_dofn(evaluator):
    """The thread's idle instance of the evaluator's step, else a new one set up."""
    idle, every = thread_dofns()
    reused = idle.pop(evaluator._applied_ptransform, None)
    if reused is None:
        reused = ReusedDoFn(evaluator)
        every.append(reused)
    return reused


def check_in_dofn(reused):
    """Returns an instance whose bundle finished to the thread's idle ones."""
    thread_dofns()[0][reused.step] = reused


def tear_down_thread_dofns():
    """Tears down every instance this thread set up (idle, or left by a failed bundle)."""
    idle, every = thread_dofns()
    idle.clear()
    while every:
        every.pop().tear_down()


def memoize_serial_steps():
    """Remembers per step whether the scheduler must run its bundles one at a time.

    Beam's registry decides it for every bundle it schedules, with a statefulness check that walks the
    DoFn's methods (7% of a local streaming run's CPU); the answer never changes within a run.
    """
    registry = TransformEvaluatorRegistry
    if getattr(registry.should_execute_serially, "memoized", False):
        return
    stock_should_execute_serially = registry.should_execute_serially

    def should_execute_serially(self, applied_ptransform):
        memo = self.__dict__.setdefault("_serial_steps", {})
        if applied_ptransform not in memo:
            memo[applied_ptransform] = stock_should_execute_serially(self, applied_ptransform)
        return memo[applied_ptransform]

    should_execute_serially.memoized = True
    registry.should_execute_serially = should_execute_serially


def copy_keyed_state_without_deepcopy():
    """Copies a key's state for a bundle with dict copies where Beam deep-copies its timers.

    Each bundle works on a copy of every key's state it touches (committed only if the bundle succeeds);
    Beam makes it with `copy.deepcopy` of the timers and global state, which rebuilds every window and
    timestamp object through its pickle protocol: 17% of a local streaming run's CPU once DoFns were
    reused, mostly for the timers a firing bundle reads. Windows, timer keys and timestamps are immutable
    values, so copying the two levels of dicts is the same copy; the global state (mutable values, and
    empty for user state) is still deep-copied. The copy is a `DirectUnmergedState` (Beam's gives the base
    class with the same settings), so the states a run commits keep this method.
    """
    state_class = evaluation_context.DirectUnmergedState
    if "copy" in state_class.__dict__:
        return

    def copy_state(self):
        cloned = state_class()
        for window, timers in self.timers.items():
            cloned.timers[window] = dict(timers)
        cloned.global_state = copy.deepcopy(self.global_state) if self.global_state else {}
        for window, tagged in self.state.items():
            for tag, values in tagged.items():
                cloned.state[window][tag] = copy.copy(values)
        return cloned

    state_class.copy = copy_state


def register_pull_evaluator():
    """Lets the DirectRunner evaluate `PullFromPubSub`'s primitive with its own evaluator."""
    TransformEvaluatorRegistry._test_evaluators_overrides[LocalPull] = PullEvaluator


def count_every_bundle():
    """Makes the bundle-based DirectRunner keep every bundle's metrics, not just the first one's.

    Its worker threads keep one state sampler, which caches one scoped state per step, created with the
    first bundle's metrics container; later bundles count into that stale container and commit their own
    empty one, so a streaming run's counters stop after one bundle per step (seen with the stock
    ReadFromPubSub too). Each bundle now runs with a tracker of its own (`BundleTracker`), so its states
    carry its own container. (Clearing the cache instead leaked: the sampler also lists every scoped state it
    ever made, each holding its bundle's metrics container, ~200 a second in a local streaming run.)
    """
    if getattr(executor.TransformExecutor.call, "counts_every_bundle", False):
        return
    stock_call = executor.TransformExecutor.call

    def call(self, state_sampler):
        own_tracker = BundleTracker()
        statesampler.set_current_tracker(own_tracker)
        try:
            return stock_call(self, own_tracker)
        finally:
            statesampler.set_current_tracker(state_sampler)

    call.counts_every_bundle = True
    executor.TransformExecutor.call = call


class BundleTracker:
    """One bundle's state tracker: what the DirectRunner's executor, Beam's metrics and its loggers ask of a
    state sampler (scoped states to enter, the current one's metrics container and step, a metric update),
    without sampling time. Why not a state sampler per bundle: its scoped states and the sampler refer to
    each other, so each bundle left a cycle, with its metrics container, that only a full collection frees
    (~26,000 objects between two in a 10-minute soak); these refer to nothing that refers back."""
    stage_name = ""

    def __init__(self):
        self._entered = [TrackedState(None, None, None)]

    def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
        if not isinstance(name_context, common.NameContext):
            name_context = common.NameContext(name_context)
        return TrackedState(self._entered, name_context, metrics_container)

    def current_state(self):
        return self._entered[-1]

    def update_metric(self, typed_metric_name, value):
        container = self._entered[-1].metrics_container
        if container is not None:
            container.get_metric_cell(typed_metric_name).update(value)


class TrackedState:
    """A `BundleTracker`'s state: current while entered."""
    __slots__ = ("_entered", "name_context", "metrics_container")

    def __init__(self, entered, name_context, metrics_container):
        self._entered = entered
        self.name_context = name_context
        self.metrics_container = metrics_container

    def __enter__(self):
        self._entered.append(self)
        return self

    def __exit__(self, *unused_exception):
        self._entered.pop()


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
    reuse_dofns_across_bundles()  # first: it replaces the body that this one wraps
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


def forget_empty_source_bundles():
    """Removes a source's empty bundle from its pending bundles once the source has run it.

    An unbounded source (the local pull, Beam's own Pub/Sub read) reschedules itself with an empty bundle
    after each pull, which the watermark manager adds to the source's pending bundles; it removes a
    completed bundle only if it has elements, so every empty one stayed: one per pull (~2,300 in a
    10-minute local stream, ~1 KB each), walked by each refresh of the source's watermark. A bundle with
    no element holds no watermark back, so removing it changes nothing but memory."""
    manager = watermark_manager.WatermarkManager
    if getattr(manager._update_pending, "forgets_empty_bundles", False):
        return
    stock_update_pending = manager._update_pending

    def _update_pending(self, input_committed_bundle, applied_ptransform, *rest):
        stock_update_pending(self, input_committed_bundle, applied_ptransform, *rest)
        if input_committed_bundle is not None and not input_committed_bundle.has_elements():
            self._transform_to_watermarks[applied_ptransform].remove_pending(input_committed_bundle)

    _update_pending.forgets_empty_bundles = True
    manager._update_pending = _update_pending


def earliest_timestamp(bundle):
    """The earliest timestamp of `bundle`'s elements (None if it has none), remembered on a committed bundle,
    whose elements no longer change. A stack of values shares its first one's timestamp."""
    earliest = getattr(bundle, "_tipline_earliest", False)
    if earliest is False:
        earliest = min((element.timestamp for element in bundle._elements), default=None)
        if bundle._committed:
            bundle._tipline_earliest = earliest
    return earliest


def refresh_watermarks_from_bundle_minimums():
    """Beam's `_TransformWatermarks.refresh`, with each pending bundle's earliest timestamp found once.

    Why: the stock refresh walks every element of every bundle pending for the step, each time any
    upstream step completes a bundle (its own TODO says so); with thousands of reports in flight that was a
    tenth of a local streaming run's CPU (1.6 million timestamp comparisons for 10,000 reports). The
    watermark it sets is the same: the input watermark is at most the earliest pending element's timestamp
    less one granule, and the upstream watermarks; the output watermark at most the earliest keyed hold.
    Restated from the Beam that `REUSE_WRITTEN_FOR_BEAM` names (checked there)."""
    reuse_dofns_across_bundles()  # first: it checks that the installed Beam is the one this restates
    watermarks = watermark_manager._TransformWatermarks
    if getattr(watermarks.refresh, "from_bundle_minimums", False):
        return
    infinity = watermark_manager.WatermarkManager.WATERMARK_POS_INF

    def refresh(self):
        with self._lock:
            earliest = min((at for at in map(earliest_timestamp, self._pending) if at is not None), default=None)
            pending_holder = infinity if earliest is None else earliest - TIME_GRANULARITY
            producer_watermark = min([tw.output_watermark for tw in self._input_transform_watermarks] + [infinity])
            self._input_watermark = max(self._input_watermark, min(pending_holder, producer_watermark))
            earliest_hold = min(self._keyed_earliest_holds.values(), default=infinity)
            new_output_watermark = min(self._input_watermark, earliest_hold)
            advanced = new_output_watermark > self._output_watermark
            self._output_watermark = new_output_watermark
            return advanced

    refresh.from_bundle_minimums = True
    refresh.stock = watermarks.refresh
    watermarks.refresh = refresh


class DueTimers:
    """When a step's keys' timers can fire soonest, and which keys hold processing-time timers.

    No event-time timer is before `earliest`, none on the clock before `earliest_realtime` (None: none of
    that kind). Both are exact after a walk and only lowered by commits between walks (a cleared timer
    leaves them low), so a look may walk for nothing but never passes over a due timer. `realtime_keys` is
    kept exact, as each commit replaces its keys' states: it answers whether the step holds processing-time
    timers, which the monitor reads to know whether a run may end."""

    def __init__(self, keyed_states):
        self.earliest = self.earliest_realtime = None
        self.realtime_keys = set()
        self.replace(keyed_states)

    def replace(self, keyed_states):
        """Counts the timers of `keyed_states` ((key, state) pairs), each now that key's whole state."""
        for key, keyed_state in keyed_states:
            realtime = False
            for timers in keyed_state.timers.values():
                for (_, domain, _), timestamp in timers.items():
                    if domain == TimeDomain.WATERMARK:
                        self.earliest = earlier(self.earliest, timestamp)
                    else:  # compared with the clock by the walk
                        self.earliest_realtime, realtime = earlier(self.earliest_realtime, timestamp), True
            if realtime:
                self.realtime_keys.add(key)
            else:
                self.realtime_keys.discard(key)

    def nothing_due(self, watermark, now):
        return ((self.earliest is None or watermark < self.earliest)
                and (self.earliest_realtime is None or now < self.earliest_realtime))


def earlier(one, other):
    """The earlier of two optional times."""
    return other if one is None else one if other is None else min(one, other)


def count_committed_timers(step, committed):
    """Counts in `step`'s DueTimers (a `_TransformWatermarks`) the key states {key: state} a bundle committed."""
    with step._lock:
        due = getattr(step, "_tipline_due_timers", None)
        if due is not None:
            due.replace(committed.items())


def extract_timers_only_when_due():
    """Beam's `_TransformWatermarks.extract_transform_timers`, answered at once while none can be due.

    Why: the stock extraction walks every key's timers, of every step, each time the executor's monitor
    looks for due timers, which is after every bundle: in a 60-s local streaming run at 600 reports/s, 9% of
    the CPU (711,549 looks, 4.9 million key walks), and 411 of the looks found a timer due. Each step now
    keeps DueTimers, made in every walk and updated by every bundle that commits keyed state; a look with
    the input watermark before its earliest event-time timer and the clock before its earliest
    processing-time timer would find nothing in the walk either (a timer fires once the watermark or the
    clock reaches it), so it returns that without walking (and, as the walk would, whether the step holds
    processing-time timers). A step not yet walked, or with a timer that may be due, walks as Beam does, so
    the timers fired and their order are Beam's. Restated from the Beam that `REUSE_WRITTEN_FOR_BEAM` names (checked
    there)."""
    reuse_dofns_across_bundles()  # first: it checks that the installed Beam is the one this restates
    watermarks, context = watermark_manager._TransformWatermarks, evaluation_context.EvaluationContext
    if getattr(watermarks.extract_transform_timers, "only_when_due", False):
        return
    stock_handle_result = context.handle_result

    def extract_transform_timers(self):
        with self._lock:
            due = getattr(self, "_tipline_due_timers", None)
            if due is not None and due.nothing_due(self._input_watermark, self._clock.time()):
                return [], bool(due.realtime_keys)
            fired, has_realtime_timer = [], False
            for encoded_key, state in self._keyed_states.items():
                timers, had_realtime_timer = state.get_timers(
                    watermark=self._input_watermark, processing_time=self._clock.time())
                has_realtime_timer = has_realtime_timer or had_realtime_timer
                for window, (name, time_domain, timestamp, dynamic_timer_tag) in timers:
                    fired.append(watermark_manager.TimerFiring(
                        encoded_key, window, name, time_domain, timestamp, dynamic_timer_tag=dynamic_timer_tag))
            self._tipline_due_timers = DueTimers(self._keyed_states.items())
            self._fired_timers.update(fired)
            return fired, has_realtime_timer

    def handle_result(self, completed_bundle, completed_timers, result):
        committed = stock_handle_result(self, completed_bundle, completed_timers, result)
        if result.partial_keyed_state:  # counted after the commit: a walk before it sees the old states
            count_committed_timers(self._watermark_manager.get_watermarks(result.transform), result.partial_keyed_state)
        return committed

    extract_transform_timers.only_when_due = True
    extract_transform_timers.stock = watermarks.extract_transform_timers
    watermarks.extract_transform_timers = extract_transform_timers
    context.handle_result = handle_result


def expose_input_watermark():
    """Lets a DoFn that opts in (`READS_WATERMARK`) read its step's input watermark with `input_watermark()`.

    A DoFn has no watermark parameter; the DirectRunner's own GroupAlsoByWindow reads the input watermark
    from its watermark manager to tell a late element from an on-time one, and a DoFn that stands in for
    a windowed grouping on this runner needs the same. Each bundle of such a DoFn records where to read it.
    """
    reuse_dofns_across_bundles()  # first: it replaces the body that this one wraps
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
