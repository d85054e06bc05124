"""DoFns reused across bundles on the streaming DirectRunner (direct_runner.reuse_dofns_across_bundles), on
real TestStream pipelines, against Beam's own evaluator (a DoFn set up and torn down for every bundle)."""
import collections
import gc
import pathlib
import subprocess
import sys

import apache_beam as beam
import hypothesis
import pytest
from hypothesis import strategies as st
from apache_beam.coders import StrUtf8Coder
from apache_beam.runners.direct import bundle_factory, evaluation_context, watermark_manager
from apache_beam.runners.direct.clock import TestClock
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.streaming import local_streaming_options
from transforms.plumbing import direct_runner
from transforms.plumbing.direct_runner import install_local_streaming_support

BUNDLES = 12
REPO = pathlib.Path(__file__).resolve().parents[1]


class _LifecycleLog(beam.DoFn):
    """Doubles each number; appends `<event> <instance>` to a file for each lifecycle call (the DoFn the
    runner calls is a pickled copy, so the test reads what it did from the file). With `fail_once_on`, the
    first instance to see that number raises (once: the DirectRunner retries the bundle)."""

    def __init__(self, path, fail_once_on=None):
        self.path, self.fail_once_on = path, fail_once_on

    def log(self, event):
        with open(self.path, "a") as handle:
            handle.write(f"{event} {id(self)}\n")

    def setup(self):
        self.log("setup")

    def start_bundle(self):
        self.log("start_bundle")

    def process(self, number):
        if number == self.fail_once_on and "raised" not in open(self.path).read():
            self.log("raised")
            raise ValueError("a bad element, once")
        yield number * 2

    def finish_bundle(self):
        self.log("finish_bundle")

    def teardown(self):
        self.log("teardown")


def events(path):
    """[(event, instance)] in the order they happened."""
    return [tuple(line.split()) for line in path.read_text().splitlines()]


def run_in_many_bundles(dofn):
    """Runs `dofn` on 0..BUNDLES-1, one TestStream batch (one bundle) each; asserts the doubled outputs."""
    stream = TestStream()
    for number in range(BUNDLES):
        stream = stream.add_elements([number]).advance_watermark_to(number + 1)
    with beam.Pipeline(options=local_streaming_options([])) as pipeline:
        doubled = pipeline | stream.advance_watermark_to_infinity() | beam.ParDo(dofn)
        assert_that(doubled, equal_to([2 * number for number in range(BUNDLES)]))


def test_a_dofn_is_set_up_once_for_many_bundles_and_torn_down_at_the_end(tmp_path):
    install_local_streaming_support()
    log = tmp_path / "log"
    run_in_many_bundles(_LifecycleLog(str(log)))
    happened = events(log)
    counts = collections.Counter(event for event, _ in happened)
    assert counts["start_bundle"] >= BUNDLES and counts["finish_bundle"] == counts["start_bundle"]
    assert counts["setup"] == 1 and counts["teardown"] == 1
    assert happened[0][0] == "setup" and happened[-1][0] == "teardown"
    assert len({instance for _, instance in happened}) == 1


def test_installing_the_support_again_and_the_stages_own_parts_wraps_beams_bundle_set_up_once():
    """Each stage installs the parts it needs (the input watermark, watermark holds), each of which first
    installs the DoFn reuse; a second install must not wrap Beam's bundle set-up and worker loop again."""
    install_local_streaming_support()
    direct_runner.expose_input_watermark()
    direct_runner.hold_watermark_at_user_timers()
    evaluator = direct_runner.transform_evaluator._ParDoEvaluator
    worker = direct_runner.executor._ExecutorService._ExecutorServiceWorker
    installed = evaluator.start_bundle, evaluator.finish_bundle, worker.run
    install_local_streaming_support()
    direct_runner.expose_input_watermark()
    direct_runner.hold_watermark_at_user_timers()
    assert (evaluator.start_bundle, evaluator.finish_bundle, worker.run) == installed


def test_beams_own_evaluator_sets_up_and_tears_down_every_bundle(tmp_path, monkeypatch):
    """The reason for the reuse: the same pipeline on the stock evaluator, same outputs."""
    install_local_streaming_support()
    monkeypatch.setattr(direct_runner, "reusable", lambda evaluator: False)  # every bundle on Beam's own path
    log = tmp_path / "log"
    run_in_many_bundles(_LifecycleLog(str(log)))
    counts = collections.Counter(event for event, _ in events(log))
    assert counts["start_bundle"] >= BUNDLES
    assert counts["setup"] == counts["teardown"] == counts["start_bundle"]


def test_an_instance_whose_bundle_raised_is_not_reused_and_is_still_torn_down(tmp_path):
    install_local_streaming_support()
    log = tmp_path / "log"
    run_in_many_bundles(_LifecycleLog(str(log), fail_once_on=5))
    happened = events(log)
    failed = next(instance for event, instance in happened if event == "raised")
    after_failure = happened[happened.index(("raised", failed)) + 1:]
    assert all(instance != failed for event, instance in after_failure if event != "teardown")
    assert sorted(instance for event, instance in happened if event == "setup") == \
        sorted(instance for event, instance in happened if event == "teardown")
    assert collections.Counter(event for event, _ in happened)["setup"] == 2


class _CountPerKeyUntilTimer(beam.DoFn):
    """Counts a key's elements in state across bundles; an event-time timer emits the count (on time: the
    step's watermark is held at its timers, as the streaming dedup's is)."""
    holds_watermark_at_timers = True
    COUNT = ReadModifyWriteStateSpec("count", StrUtf8Coder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def process(self, element, count=beam.DoFn.StateParam(COUNT), flush=beam.DoFn.TimerParam(FLUSH)):
        key, _ = element
        count.write(str(int(count.read() or 0) + 1))
        flush.set(100)

    @on_timer(FLUSH)
    def emit(self, key=beam.DoFn.KeyParam, count=beam.DoFn.StateParam(COUNT)):
        yield key, int(count.read())
        count.clear()


@pytest.mark.parametrize("keys", [["a"], ["a", "b", "c"]])
def test_a_reused_stateful_dofn_keeps_each_bundles_state_and_timers(keys):
    install_local_streaming_support()
    stream = TestStream()
    for number in range(BUNDLES):
        stream = stream.add_elements([(keys[number % len(keys)], number)]).advance_watermark_to(number + 1)
    with beam.Pipeline(options=local_streaming_options([])) as pipeline:
        counted = pipeline | stream.advance_watermark_to_infinity() | beam.ParDo(_CountPerKeyUntilTimer())
        assert_that(counted, equal_to([(key, BUNDLES // len(keys)) for key in keys]))


def watermarks_of_step(pipeline, bundles, upstream_micros, hold_micros):
    """(a step's `_TransformWatermarks` with `bundles` ([[(micros, stacked copies)]], committed) pending, its
    upstream step's, at `upstream_micros`, the bundles made), the step with keyed holds at `hold_micros`."""
    upstream = watermark_manager._TransformWatermarks(None, {}, "upstream")
    upstream._output_watermark = Timestamp(micros=upstream_micros)
    step = watermark_manager._TransformWatermarks(None, {}, "step")
    step.update_input_transform_watermarks([upstream])
    step._keyed_earliest_holds = {index: Timestamp(micros=micros) for index, micros in enumerate(hold_micros)}
    factory, made = bundle_factory.BundleFactory(stacked=True), []
    for elements in bundles:
        bundle = factory.create_bundle(beam.pvalue.PCollection(pipeline))
        for micros, copies in elements:
            for copy in range(copies):
                bundle.add(WindowedValue(copy, Timestamp(micros=micros), [GlobalWindow()]))
        bundle.commit(None)
        step.add_pending(bundle)
        made.append(bundle)
    return step, upstream, made


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    bundles=st.lists(st.lists(st.tuples(st.integers(-10**6, 10**6), st.integers(1, 3)), max_size=6), max_size=5),
    upstream_micros=st.integers(-10**6, 10**6), hold_micros=st.lists(st.integers(-10**6, 10**6), max_size=3),
    upstream_later=st.integers(0, 10**6), done=st.data())
def test_refreshing_from_bundle_minimums_sets_the_watermarks_beams_refresh_sets(
        bundles, upstream_micros, hold_micros, upstream_later, done):
    """Two refreshes (the second after the upstream step advanced and some pending bundles completed),
    Beam's stock refresh on one copy of a step, the installed one on another: same watermarks, same answers."""
    install_local_streaming_support()
    refresh = watermark_manager._TransformWatermarks.refresh
    pipeline = beam.Pipeline()
    stock, stock_upstream, stock_bundles = watermarks_of_step(pipeline, bundles, upstream_micros, hold_micros)
    ours, our_upstream, our_bundles = watermarks_of_step(pipeline, bundles, upstream_micros, hold_micros)
    completed = done.draw(st.lists(st.sampled_from(range(len(bundles))), unique=True) if bundles else st.just([]))
    for _ in range(2):
        assert refresh.stock(stock) == refresh(ours)
        assert (stock._input_watermark, stock._output_watermark) == (ours._input_watermark, ours._output_watermark)
        for watermarks, upstream, made in ((stock, stock_upstream, stock_bundles), (ours, our_upstream, our_bundles)):
            upstream._output_watermark = Timestamp(micros=upstream_micros + upstream_later)
            for index in completed:
                watermarks.remove_pending(made[index])


def key_state_with(timers):
    """A key's committed state holding `timers` [(name, domain, micros)] in the global window."""
    state = evaluation_context.DirectUnmergedState()
    for name, domain, micros in timers:
        state.set_timer(GlobalWindow(), name, domain, Timestamp(micros=micros))
    return state


TIMERS = st.lists(st.tuples(st.sampled_from(["expiry", "flush"]), st.sampled_from([TimeDomain.WATERMARK,
                                                                                    TimeDomain.REAL_TIME]),
                            st.integers(0, 100)), max_size=3)
STEPS = st.lists(st.one_of(
    st.tuples(st.just("commit"), st.sampled_from("abc"), TIMERS),
    st.tuples(st.just("watermark"), st.integers(0, 30)),
    st.tuples(st.just("clock"), st.integers(0, 30)),
    st.tuples(st.just("look"))), max_size=25)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(steps=STEPS)
def test_looking_for_timers_only_when_due_fires_what_beams_walk_fires(steps):
    """Keys committing timers, the watermark and the clock advancing, looks for due timers in between: Beam's
    stock extraction on one copy of a step, the installed one (its DueTimers updated at each commit, as the
    installed handle_result does) on another fire the same timers in the same order, with the same
    answer about processing-time timers, look after look, whether or not the fired ones are cleared."""
    install_local_streaming_support()
    extract = watermark_manager._TransformWatermarks.extract_transform_timers
    clock = TestClock(Timestamp(micros=0))
    stock = watermark_manager._TransformWatermarks(clock, {}, "stock")
    ours = watermark_manager._TransformWatermarks(clock, {}, "ours")
    watermark = 0

    def fired(watermarks, look):
        timers, realtime = look(watermarks)
        return [(t.encoded_key, t.name, t.time_domain, t.timestamp) for t in timers], realtime

    for step in steps + [("look",)]:
        if step[0] == "commit":
            _, key, timers = step
            stock._keyed_states[key] = key_state_with(timers)
            ours._keyed_states[key] = key_state_with(timers)
            direct_runner.count_committed_timers(ours, {key: ours._keyed_states[key]})
        elif step[0] == "watermark":
            watermark += step[1]
            stock._input_watermark = ours._input_watermark = Timestamp(micros=watermark)
        elif step[0] == "clock":
            clock.advance_time(Duration(micros=step[1]))
        else:
            assert fired(stock, extract.stock) == fired(ours, extract)


FULL_COLLECTIONS_WHILE_STATE_GROWS = """
import gc
from transforms.plumbing.direct_runner import install_local_streaming_support

def full_collections_while_keeping(count):
    before = gc.get_stats()[2]["collections"]
    kept = [[index] for index in range(count)]  # lists: the collector stops tracking a dict of atoms
    return gc.get_stats()[2]["collections"] - before

gc.set_threshold(700, 10, 10)  # CPython's defaults
with_defaults = full_collections_while_keeping(1_000_000)
install_local_streaming_support()
print(with_defaults, full_collections_while_keeping(1_000_000), *gc.get_threshold())
"""


def test_the_local_streaming_runner_makes_full_collections_rare_as_its_state_grows():
    """A million small containers kept alive, as a streaming run's keyed state is, in a fresh interpreter (how
    often the collector runs a full pass depends on the heap already there, so not in the test process's)."""
    printed = subprocess.run([sys.executable, "-c", FULL_COLLECTIONS_WHILE_STATE_GROWS], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout.split()
    with_defaults, installed, *thresholds = map(int, printed)
    assert thresholds == [700, 10, direct_runner.OLD_GENERATION_THRESHOLD]
    assert with_defaults >= 3 and installed <= 1, (with_defaults, installed)


def test_a_local_batch_run_makes_full_collections_rare_in_the_process_holding_the_groupings(tmp_path):
    """The launcher of a local batch run holds every grouping's buffers (in one process, every step's work
    too) as Python objects: it collects its old generation every OLD_GENERATION_THRESHOLD middle-generation
    collections, as the local streaming runner does."""
    from pipelines.tipline_pipeline import run

    kept = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    try:
        summary = run(["--synthetic-count", "20", "--output", str(tmp_path)])
        assert (summary["routed"], gc.get_threshold()[2]) == (20, direct_runner.OLD_GENERATION_THRESHOLD)
    finally:
        gc.set_threshold(*kept)
