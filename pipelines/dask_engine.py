"""`tipline run --source files --runner dask`: the batch pipeline on Dask distributed, through Beam's DaskRunner.

Without `--dask-address`, a `distributed.LocalCluster` of `--dask-workers` worker processes (default 2) is
started for the run and closed after it; with `--dask-address HOST:PORT` the run goes to that scheduler, so
a real cluster scales it out (its workers need tipline installed, e.g. from deploy/Dockerfile).

Beam's DaskRunner (2.77) translates a pipeline into Dask bags, but several of its translations cannot carry
this pipeline, so `TiplineDaskRunner` keeps its options, overrides and result and replaces what falls short:

- a ParDo's bag held every output tag mixed together, so a DoFn with a dead-letter output fed its failures
  to the main consumer; here each output PCollection gets its own bag, filtered by tag;
- elements lost their timestamps and windows after each ParDo; here every bag holds WindowedValues;
- `beam.io.Read` (ReadFromText, ReadFromAvro) produced nothing; here the source is split into bundles,
  each read by a Dask task;
- outputs emitted in `finish_bundle` (BatchElements, the file sinks) were dropped; here they are kept;
- only the last transform's bag was computed, so sinks on other branches never ran; here every leaf is;
- each ParDo was Dask tasks of its own per partition (and per output tag), each setting its DoFn up and
  fetching its input, often from another worker; here the ParDos between two groupings run as one task per
  partition (`_FusedChain`), as the FnApiRunner fuses a stage, and a flatten keeps as many partitions as
  one bag has;
- a combine shuffled every value; here it is Beam's `LiftedCombinePerKey`, combined per partition before
  its shuffle, as the FnApiRunner lifts it;
- a GroupByKey wrapped each value in a WindowedValue of its own to shuffle it and ran each group through
  the general trigger driver; here a grouping in the global window with the default trigger (every
  grouping of the batch pipeline) groups the values as they are and stamps each group as the DirectRunner
  does (`GroupInGlobalWindow`).

Stateful DoFns, timers and side inputs are refused with a one-line error (the batch pipeline uses none).
DaskRunner collects no metrics, so the summary is counted from the pipeline's own PCollections in the same
run (`CountForSummary`): messages read, reports parsed and kept after dedup, routed records by jurisdiction
and dead letters by stage; `other_counts` (files hashed, bank matches...) and `too_late_for_trends` are
not available on Dask.
"""
import collections
import contextlib
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.pipeline import PipelineVisitor, PTransformOverride
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskRunner
from apache_beam.runners.dask.overrides import (_Create, _Flatten, _GroupByKeyOnly, _Read, _Reshuffle,
                                                dask_overrides)
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.transforms.combiners import LiftedCombinePerKey
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue

from pipelines.options import DaskEngineOptions
from transforms.plumbing.direct_runner import collect_the_old_generation_rarely
from transforms.plumbing.metrics import NAMESPACE
from transforms.plumbing.reference_files import local_path

IN_THE_GLOBAL_WINDOW = (GlobalWindow(),)  # made once: a GlobalWindow makes its end Timestamp each time
# the end of the global window in milliseconds, as the DirectRunner's coders carry it
GLOBAL_WINDOW_END = Timestamp(micros=GlobalWindow().max_timestamp().micros // 1000 * 1000)
ONE_ON_TIME_PANE = PaneInfo(is_first=True, is_last=True, timing=PaneInfoTiming.ON_TIME, index=0,
                            nonspeculative_index=0)
MIN_SOURCE_BUNDLE_BYTES = 256 << 10
PARTITION_INPUT_BYTES = 64 << 20  # of the input a partition takes; decoded, its reports hold several times that
SYNTHETIC_REPORT_BYTES = 2 << 10


class DaskCannotRun(NotImplementedError):
    """A part of the pipeline this Dask translation does not carry, named."""


def in_global_window(value):
    return WindowedValue(value, MIN_TIMESTAMP, IN_THE_GLOBAL_WINDOW)


def at_global_window_end(group):
    """A group stamped as the DirectRunner's grouping stamps one in the global window: at its end, in its one
    on-time pane."""
    return WindowedValue(group, GLOBAL_WINDOW_END, IN_THE_GLOBAL_WINDOW, ONE_ON_TIME_PANE)


class _CollectingReceiver(Receiver):
    """Keeps (tag, WindowedValue) pairs, so each output PCollection can take its own tag."""

    def __init__(self, tag, collected):
        self.tag = tag
        self.collected = collected

    def receive(self, windowed_value):
        self.collected.append((self.tag, windowed_value))


class _TaggedReceivers(dict):
    """The receiver of each output tag a DoFn emits to, made on first use, all into one list."""

    def __init__(self, collected):
        super().__init__()
        self.collected = collected

    def __missing__(self, tag):
        receiver = self[tag] = _CollectingReceiver(tag, self.collected)
        return receiver


def run_dofn_on_partition(windowed_values, do_fn, window_fn, label, args, kwargs):
    """One Dask partition as one Beam bundle: setup, start, process each element, finish, teardown;
    returns every (tag, WindowedValue) emitted, finish_bundle's included."""
    collected = []
    receivers = _TaggedReceivers(collected)
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                             per_element_output_counter=None, output_batch_converter=None,
                             process_yields_batches=False, process_batch_yields_elements=False)
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(do_fn), handler, context=DoFnContext(label, state=None), side_inputs=[],
        input_args=args, input_kwargs=kwargs, user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for windowed_value in windowed_values:
        invoker.invoke_process(windowed_value)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return collected


def input_window_fn(pcoll):
    """The WindowFn of a ParDo's input; a source's output (its Read replaced by DaskRunner's override,
    which cannot say) is in the global window."""
    try:
        return pcoll.windowing.windowfn
    except AttributeError:
        return GlobalWindows()


def read_source_bundle(bundles):
    """Reads whole source bundles (one Dask partition may hold several) into global-window values."""
    return [in_global_window(record) for bundle in bundles
            for record in bundle.source.read(bundle.source.get_range_tracker(bundle.start_position,
                                                                             bundle.stop_position))]


class _Step:
    """A ParDo of a fused chain: its DoFn, its input's WindowFn and the keys of its input and of each output
    tag's PCollection (picklable integers: the chain runs in the workers)."""
    __slots__ = ("label", "fn", "window_fn", "args", "kwargs", "input", "outputs")

    def __init__(self, node, keys):
        transform = node.transform
        main_input = _main_inputs(node)[0]
        args, kwargs = transform.raw_side_inputs
        self.label, self.fn, self.window_fn = node.full_label, transform.fn, input_window_fn(main_input)
        self.args, self.kwargs = list(args), dict(kwargs)
        self.input = keys[main_input]
        self.outputs = {tag: keys[output] for tag, output in node.outputs.items()}  # the main output's tag is None


def run_chain_on_partition(windowed_values, steps, root, needed):
    """One partition through a chain of ParDos, each as one Beam bundle over its whole input (`steps` in
    topological order, the first reading the `root` PCollection); returns one element: {key: WindowedValues}
    of the `needed` PCollections. A PCollection is let go once the last step reading it has run."""
    values = {root: list(windowed_values)}
    readers_left = collections.Counter(step.input for step in steps)
    for step in steps:
        inputs = values[step.input]
        readers_left[step.input] -= 1
        if not readers_left[step.input] and step.input not in needed:
            del values[step.input]
        by_tag = {tag: [] for tag in step.outputs}
        for tag, windowed_value in run_dofn_on_partition(inputs, step.fn, step.window_fn, step.label, step.args,
                                                         step.kwargs):
            emitted = by_tag.get(tag)
            if emitted is not None:  # a tag no PCollection takes is dropped, as Beam drops it
                emitted.append(windowed_value)
        for tag, key in step.outputs.items():
            values[key] = by_tag[tag]
    return [{key: values[key] for key in needed}]


def _pluck(partition, key):
    return partition[0][key]


class _FusedChain:
    """ParDos that follow one another without a grouping between them (a stage's steps, its dead-letter
    branches, the stages after routing): one Dask task per partition runs them all, as the FnApiRunner fuses
    a stage. Why: as a task per ParDo and per output tag, the 20,000-report run was 7,717 tasks, each
    setting up its DoFn and fetching its input, often from the other worker (~7 s of transfers)."""

    def __init__(self, root, root_key):
        self.root, self.root_key = root, root_key  # the PCollection its first steps read
        self.steps = []
        self.needed = set()
        self._bag = None

    def bag(self, root_bag):
        """The chain's bag: one element a partition, {key: WindowedValues} of its needed outputs."""
        if self._bag is None:
            self._bag = root_bag.map_partitions(run_chain_on_partition, self.steps, self.root_key,
                                                frozenset(self.needed))
        return self._bag


def _main_inputs(node):
    return [pcoll for pcoll in node.main_inputs.values() if isinstance(pcoll, beam.PCollection)]


class _PipelineNodes(PipelineVisitor):
    """The leaf transforms in topological order."""

    def __init__(self):
        self.nodes = []

    def visit_transform(self, node):
        self.nodes.append(node)


class _BagsPerPCollection:
    """Translates the pipeline's leaf transforms into Dask bag operations: each source, grouping and flatten
    a bag, and the ParDos between them fused into chains (`_FusedChain`), each output a bag plucked from its
    chain's."""

    def __init__(self, pipeline, partitions, collect=()):
        self.partitions = partitions
        visitor = _PipelineNodes()
        pipeline.visit(visitor)
        self.nodes = visitor.nodes
        self.keys, self.chain_of, self.chain_rooted_at = {}, {}, {}
        self.consumed = {pcoll for node in self.nodes for pcoll in _main_inputs(node)}
        for node in self.nodes:
            if node.side_inputs:
                raise DaskCannotRun(f"{node.full_label}: side inputs are not supported on --runner dask")
            for output in node.outputs.values():
                self.keys[output] = len(self.keys)
            if isinstance(node.transform, beam.ParDo):
                self._join_chain(node)
        self._mark_needed(collect)
        self.bags = {}
        for node in self.nodes:
            self._translate(node)

    def _join_chain(self, node):
        signature = DoFnSignature(node.transform.fn)
        if signature.is_stateful_dofn() or signature.has_timers():
            raise DaskCannotRun(f"{node.full_label}: stateful DoFns and timers are not supported on --runner dask")
        main_input = _main_inputs(node)[0]
        chain = self.chain_of.get(main_input)  # its input made in a chain: the step joins it
        if chain is None:
            chain = self.chain_rooted_at.get(main_input)
        if chain is None:
            chain = self.chain_rooted_at[main_input] = _FusedChain(main_input, self.keys[main_input])
        chain.steps.append(_Step(node, self.keys))
        for output in node.outputs.values():
            self.chain_of[output] = chain

    def _mark_needed(self, collect):
        """A chain gives back the outputs a grouping, a flatten or the launcher reads, and its leaves."""
        read_outside = {pcoll for node in self.nodes if not isinstance(node.transform, beam.ParDo)
                        for pcoll in _main_inputs(node)}
        for pcoll, chain in self.chain_of.items():
            if pcoll in read_outside or pcoll not in self.consumed or pcoll in collect:
                chain.needed.add(self.keys[pcoll])

    def bag(self, pcoll):
        """The bag of `pcoll`: its own, or plucked from its chain's."""
        if pcoll not in self.bags:
            chain = self.chain_of[pcoll]
            self.bags[pcoll] = chain.bag(self.bags[chain.root]).map_partitions(_pluck, self.keys[pcoll])
        return self.bags[pcoll]

    def _translate(self, node):
        transform = node.transform
        if isinstance(transform, beam.ParDo):
            return  # run by its chain
        inputs = [self.bag(pcoll) for pcoll in _main_inputs(node)]
        if isinstance(transform, _Create):
            self._set_main(node, self._from_sequence([in_global_window(v) for v in transform.values]))
        elif isinstance(transform, _Read):
            self._set_main(node, self._read(transform.source))
        elif isinstance(transform, _Flatten):
            import dask.bag as db

            self._set_main(node, self._flattened(inputs))
        elif isinstance(transform, _Reshuffle):
            self._set_main(node, inputs[0].repartition(npartitions=self.partitions))
        elif isinstance(transform, GroupInGlobalWindow):
            self._set_main(node, self._group(inputs[0], at_global_window_end))
        elif isinstance(transform, _GroupByKeyOnly):
            self._set_main(node, self._group(inputs[0]))
        else:
            raise DaskCannotRun(f"{node.full_label}: {type(transform).__name__} is not supported on --runner dask")

    def _flattened(self, bags):
        """The bags as one, in as many partitions as one bag has: concatenated, the dead-letter and
        side-stage-failure flattens (of ~10-20 bags each) would run every later step once per input partition."""
        import dask.bag as db

        if not bags:
            return self._from_sequence([])
        joined = db.concat(bags)
        return joined.repartition(npartitions=self.partitions) if joined.npartitions > self.partitions else joined

    def _from_sequence(self, values):
        import dask.bag as db

        return db.from_sequence(values, npartitions=max(1, min(self.partitions, len(values))))

    def _set_main(self, node, bag):
        (output,) = node.outputs.values()
        self.bags[output] = bag

    def _read(self, source):
        """The source split so that every partition has a share of it, each bundle read by one task."""
        share = (source.estimate_size() or 0) // self.partitions + 1
        bundles = list(source.split(desired_bundle_size=max(MIN_SOURCE_BUNDLE_BYTES, share)))
        return self._from_sequence(bundles).map_partitions(read_source_bundle)

    def _group(self, bag, stamped=in_global_window):
        """All values of a key together as (key, values), `stamped` (Dask hashes keys with its deterministic
        tokenize)."""
        return (bag.groupby(lambda windowed: windowed.value[0], shuffle="tasks", npartitions=self.partitions)
                .map(lambda group: stamped((group[0], [windowed.value[1] for windowed in group[1]]))))

    def leaves(self):
        """What the run computes: every chain (its leaves are sinks' results) and every other unread bag."""
        return ([chain.bag(self.bags[chain.root]) for chain in self.chain_rooted_at.values()]
                + [bag for pcoll, bag in self.bags.items()
                   if pcoll not in self.consumed and pcoll not in self.chain_of])


class _LiftedCombineOverride(PTransformOverride):
    """A CombinePerKey as Beam's `LiftedCombinePerKey`: each partition's values combined per key and window
    before the shuffle (as the FnApiRunner lifts a combine), so the grouping moves a partial per key and
    partition, not every value. Without it the trends, alerts, notices and file-sink combines each shuffled
    every routed record between the workers."""

    def matches(self, applied_ptransform):
        return applied_ptransform.transform.__class__ == beam.CombinePerKey

    def get_replacement_transform_for_applied_ptransform(self, applied_ptransform):
        combine = applied_ptransform.transform
        return LiftedCombinePerKey(combine.fn, combine.args, combine.kwargs)


class GroupInGlobalWindow(_GroupByKeyOnly):
    """A GroupByKey of input in the global window with the default trigger (every grouping here): one
    grouping, its groups stamped as the DirectRunner stamps them. Why not Beam's DaskRunner GroupByKey: it
    wraps each value in a WindowedValue of its own before the shuffle (ReifyWindows: a Timestamp and a
    window pickled per value) and runs each group through the general trigger driver after it."""


class _GroupInGlobalWindowOverride(PTransformOverride):
    def matches(self, applied_ptransform):
        return (applied_ptransform.transform.__class__ == beam.GroupByKey
                and _main_inputs(applied_ptransform)[0].windowing.is_default())

    def get_replacement_transform_for_applied_ptransform(self, applied_ptransform):
        return GroupInGlobalWindow()


def overrides():
    """Beam's DaskRunner overrides, after lifting each combine and grouping in the global window (their
    GroupByKey override takes the groupings these leave)."""
    return [_LiftedCombineOverride(), _GroupInGlobalWindowOverride(), *dask_overrides()]


class TiplineDaskRunner(DaskRunner):
    """Beam's DaskRunner with the translation above; `collect` names PCollections whose elements the
    launcher gets back (the summary's counts)."""

    def __init__(self, address, partitions, collect=()):
        super().__init__()
        self.address = address
        self.partitions = partitions
        self.collect = list(collect)

    def run_pipeline(self, pipeline, options):
        import dask.distributed

        pipeline.replace_all(overrides())
        bags = _BagsPerPCollection(pipeline, self.partitions, self.collect)
        client = dask.distributed.Client(self.address)
        leaves = [bag.count() for bag in bags.leaves()]
        futures = client.compute(leaves + [bags.bag(pcoll) for pcoll in self.collect])  # one graph
        return DaskRunResult(client, futures[:len(leaves)], futures[len(leaves):])


class DaskRunResult(PipelineResult):
    """A submitted Dask run: waiting raises the first worker error; `collected` holds the elements of the
    runner's `collect` PCollections once done."""

    def __init__(self, client, leaf_futures, collected_futures):
        super().__init__(PipelineState.RUNNING)
        self.client = client
        self.leaf_futures = leaf_futures
        self.collected_futures = collected_futures
        self.collected = None

    def wait_until_finish(self, duration=None):
        try:
            self.client.gather(self.leaf_futures)
            self.collected = [[windowed.value for windowed in values]
                              for values in self.client.gather(self.collected_futures)]
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        self._state = PipelineState.DONE
        return self._state

    def metrics(self):
        raise NotImplementedError("DaskRunner collects no metrics; tipline counts the run's outputs instead")


class CountForSummary(beam.PTransform):
    """The summary's counts from the pipeline's own PCollections, where the runner keeps no metrics:
    ((namespace, name), count) pairs for read, parsed, kept after dedup, routed (and by jurisdiction),
    dead-lettered (and by stage)."""

    def expand(self, outputs):
        labelled = (
            outputs["messages"] | "LabelRead" >> beam.Map(lambda _: (NAMESPACE, "read")),
            outputs["parsed"] | "LabelParsed" >> beam.Map(lambda _: (NAMESPACE, "parsed")),
            outputs["reports"] | "LabelKept" >> beam.Map(lambda _: (NAMESPACE, "kept_after_dedup")),
            outputs["routed"] | "LabelRouted" >> beam.FlatMap(lambda record: [
                (NAMESPACE, "routed"), (f"{NAMESPACE}.routed_by_jurisdiction", record["jurisdiction"])]),
            outputs["dead_letters"] | "LabelDeadLetters" >> beam.FlatMap(lambda letter: [
                (NAMESPACE, "dead_lettered"), (f"{NAMESPACE}.dead_lettered_by_stage", letter["stage"])]))
        return (labelled
                | "FlattenLabels" >> beam.Flatten()
                | "OneWindow" >> beam.WindowInto(GlobalWindows())
                | "CountLabels" >> beam.combiners.Count.PerElement()
                # the launcher collects a ParDo's output: the runner replaces each combine, outputs and all
                | "Counted" >> beam.Map(tuple))


def totals_from_counts(counts):
    """{(namespace, name): value} as `read_counters` gives it, from CountForSummary's pairs."""
    totals = dict(counts)
    parsed = totals.pop((NAMESPACE, "parsed"), 0)
    kept = totals.pop((NAMESPACE, "kept_after_dedup"), 0)
    totals[(NAMESPACE, "duplicates")] = parsed - kept
    return totals


@contextlib.contextmanager
def dask_scheduler(address, workers):
    """(scheduler address, its workers): the given scheduler's, or a LocalCluster of `workers` processes
    for the length of the run."""
    from dask.distributed import Client, LocalCluster

    if address:
        with Client(address) as client:
            count = len(client.scheduler_info()["workers"])
        yield address, count
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      preload=[__name__]) as cluster:  # dask_setup below, in each worker
        yield cluster.scheduler_address, workers
        with nanny_warnings_quiet():
            cluster.close()


def partition_count(input_bytes, workers):
    """One partition per worker, more as the input passes PARTITION_INPUT_BYTES a partition.

    Each Beam step is a Dask task per partition (its DoFns set up, scheduled, its input fetched when it sits
    on another worker), so on one machine fewer are faster: 20,000 reports (41 MB) on 2 workers took 20 s in
    2 partitions, 22 s in 4, 33 s in 8. A backfill of a cluster's size still gets partitions a worker holds."""
    return max(1, workers, -(-input_bytes // PARTITION_INPUT_BYTES))


def input_bytes(opts):
    """The size of what the run reads: its input files, or the synthetic reports it makes."""
    if opts.source == "synthetic":
        return opts.synthetic_count * SYNTHETIC_REPORT_BYTES
    return sum(found.size_in_bytes for matched in FileSystems.match([local_path(opts.input_pattern)])
               for found in matched.metadata_list)


def dask_setup(worker):
    """Run in each worker as it starts (`preload`; a cluster of your own: `dask worker --preload
    pipelines.dask_engine`): full garbage collections only every 1,000 middle-generation ones, not every 10.

    A worker holds its partitions' values as Python objects, so its old generation grows with the data and each
    full collection walks it: at 20,000 reports on 2 workers, ~50 full collections of ~200 ms each took 10-11
    of each worker's ~29 CPU seconds; with this, 5 each (the run: 37-39 s -> 23-24 s)."""
    collect_the_old_generation_rarely()


@contextlib.contextmanager
def nanny_warnings_quiet():
    """A worker process that imported Beam, numba and pyarrow can take over the nanny's 4 s to exit on a busy
    machine; the nanny then kills it and warns, after the run has finished and its outputs are complete."""
    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    nanny.setLevel(logging.ERROR)
    try:
        yield
    finally:
        nanny.setLevel(level)


def run_on_dask(options, opts):
    """Runs the batch pipeline on Dask to the end; returns the summary, counted from the outputs."""
    from pipelines.summary import summarize
    from pipelines.tipline_pipeline import build_pipeline

    if opts.source == "pubsub":
        raise ValueError("--runner dask runs batch pipelines: use --source files (or synthetic)")
    engine = options.view_as(DaskEngineOptions)
    if engine.dask_workers < 1:
        raise ValueError("--dask-workers must be at least 1")
    collect_the_old_generation_rarely()  # this process holds the graph (and a LocalCluster's scheduler)
    with dask_scheduler(engine.dask_address, engine.dask_workers) as (address, workers):
        runner = TiplineDaskRunner(address, partitions=partition_count(input_bytes(opts), workers))
        pipeline = beam.Pipeline(runner=runner, options=options)
        counts = build_pipeline(pipeline, opts) | "CountForSummary" >> CountForSummary()
        runner.collect = [counts]
        result = pipeline.run(test_runner_api=False)  # the same PCollection objects as `collect` names
        try:
            result.wait_until_finish()
        finally:
            result.client.close()
    summary = summarize(totals_from_counts(result.collected[0]))
    summary["counted_from"] = "the run's outputs (DaskRunner keeps no metrics)"
    return summary
