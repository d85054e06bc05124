"""`tipline run --runner dask`: the batch pipeline on a Dask LocalCluster of 2 worker processes gives the same
routed records, trend rows, bundles, dead letters and summary counts as the DirectRunner on the same input."""
import argparse
import gc
import json
import pathlib

import apache_beam as beam
import fastavro
import pyarrow.parquet as pq
import pytest
from apache_beam.transforms import userstate

from pipelines.dask_engine import (PARTITION_INPUT_BYTES, SYNTHETIC_REPORT_BYTES, DaskCannotRun, TiplineDaskRunner,
                                   _BagsPerPCollection, dask_scheduler, input_bytes, overrides, partition_count)
from pipelines.tipline_pipeline import run
from transforms.demo.synthetic import SyntheticConfig, generate_messages
from transforms.plumbing.direct_runner import OLD_GENERATION_THRESHOLD

REPORTS = 300
COUNTS = ("read", "routed", "duplicates", "dead_lettered", "routed_by_jurisdiction", "dead_lettered_by_stage",
          "reconciled")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask")
    messages = list(generate_messages(SyntheticConfig(count=REPORTS, seed=7, hours=3)))
    (root / "reports.jsonl").write_bytes(b"\n".join(messages) + b"\n")
    common = ["--source", "files", "--input", str(root / "reports.jsonl"), "--demo-data"]
    direct = run(common + ["--output", str(root / "direct")])
    dask = run(common + ["--output", str(root / "dask"), "--runner", "dask", "--dask-workers", "2"])
    return root, direct, dask


def routed(out):
    """The routed records without `routedAt`: the time each run routed a report, which two runs cannot share."""
    records = []
    for path in sorted((out / "routed").rglob("*.avro")):
        with path.open("rb") as handle:
            records.extend({key: value for key, value in record.items() if key != "routedAt"}
                           for record in fastavro.reader(handle))
    return sorted(records, key=lambda record: record["reportId"])


def rows(out, folder):
    found = [row for path in sorted((out / folder).rglob("*.parquet")) for row in pq.read_table(path).to_pylist()]
    return sorted(found, key=lambda row: json.dumps(row, sort_keys=True, default=str))


def dead_letters(out):
    return sorted(line for path in (out / "dead_letter").rglob("*.jsonl") for line in path.read_text().splitlines())


def relative_files(out):
    """Every output file's path; a routed file's without its digest, which covers `routedAt` (the time each
    run routed its reports: two runs cannot share it)."""
    return sorted(comparable_name(path.relative_to(out)) for path in pathlib.Path(out).rglob("*")
                  if path.is_file() and path.name != "summary.json" and path.parent.name != "summaries")


def comparable_name(relative):
    if relative.parts[0] == "routed":
        return str(relative.parent / (relative.name.rsplit("-", 1)[0] + "-<digest>.avro"))
    return str(relative)


def test_the_same_routed_records(runs):
    root, direct, _ = runs
    assert direct["routed"] > 250
    assert routed(root / "dask") == routed(root / "direct")


def test_the_same_trend_rows_and_bundles(runs):
    root, _, _ = runs
    assert rows(root / "dask", "trends") == rows(root / "direct", "trends") != []
    assert rows(root / "dask", "bundles") == rows(root / "direct", "bundles") != []


def test_the_same_dead_letters_and_files(runs):
    root, direct, _ = runs
    assert dead_letters(root / "dask") == dead_letters(root / "direct")
    assert relative_files(root / "dask") == relative_files(root / "direct")


def test_the_summary_counted_from_the_outputs_matches_the_metrics(runs):
    _, direct, dask = runs
    assert {key: dask[key] for key in COUNTS} == {key: direct[key] for key in COUNTS}
    assert dask["reconciled"] and dask["duplicates"] > 0 and dask["dead_lettered"] > 0
    assert "outputs" in dask["counted_from"] and "counted_from" not in direct


class _StatefulFn(beam.DoFn):
    SEEN = userstate.ReadModifyWriteStateSpec("seen", beam.coders.BooleanCoder())

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        yield element


def test_a_stateful_dofn_is_refused_by_name():
    pipeline = beam.Pipeline(runner=TiplineDaskRunner("127.0.0.1:1", partitions=2))
    _ = pipeline | beam.Create([("k", 1)]) | "KeepState" >> beam.ParDo(_StatefulFn())
    with pytest.raises(DaskCannotRun, match="KeepState: stateful DoFns and timers are not supported"):
        pipeline.run(test_runner_api=False)


def test_a_streaming_source_is_refused():
    with pytest.raises(ValueError, match="--runner dask runs batch pipelines"):
        run(["--runner", "dask", "--source", "pubsub", "--subscription", "projects/p/subscriptions/s", "--demo-data"])


def test_the_local_clusters_workers_collect_the_old_generation_rarely():
    """Each worker of the run's LocalCluster starts with full collections every OLD_GENERATION_THRESHOLD
    middle-generation ones (CPython's default, 10, had them walk every held partition: a third of the CPU)."""
    from dask.distributed import Client

    with dask_scheduler(None, 2) as (address, _), Client(address) as client:
        thresholds = client.run(gc.get_threshold)
    assert len(thresholds) == 2
    assert {threshold[2] for threshold in thresholds.values()} == {OLD_GENERATION_THRESHOLD}


def test_partitions_one_per_worker_and_more_as_the_input_grows(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"x" * 1000)
    (tmp_path / "b.jsonl").write_bytes(b"y" * 500)
    files = argparse.Namespace(source="files", input_pattern=str(tmp_path / "*.jsonl"))
    assert input_bytes(files) == 1500
    uri = argparse.Namespace(source="files", input_pattern=(tmp_path / "a.jsonl").as_uri())
    assert input_bytes(uri) == 1000
    assert input_bytes(argparse.Namespace(source="synthetic", synthetic_count=10)) == 10 * SYNTHETIC_REPORT_BYTES
    assert [partition_count(size, 2) for size in (0, 1500, 2 * PARTITION_INPUT_BYTES, 3 * PARTITION_INPUT_BYTES + 1)] \
        == [2, 2, 2, 4]
    assert partition_count(100 * PARTITION_INPUT_BYTES, 10) == 100


def test_a_given_scheduler_is_asked_how_many_workers_it_has():
    with dask_scheduler(None, 1) as (address, _), dask_scheduler(address, 99) as (given, workers):
        assert (given, workers) == (address, 1)


def translated(build, partitions=2):
    """(the translation of the pipeline `build` makes, its named PCollections), as TiplineDaskRunner makes
    it, computed here with Dask's synchronous scheduler."""
    pipeline = beam.Pipeline(runner=TiplineDaskRunner("127.0.0.1:1", partitions=partitions))
    named = build(pipeline)
    pipeline.replace_all(overrides())
    return _BagsPerPCollection(pipeline, partitions, list(named.values())), named


def values_of(bags, pcoll):
    return sorted(windowed.value for windowed in bags.bag(pcoll).compute(scheduler="sync"))


def chain_tasks(bag):
    return sorted(key[1] for key in dict(bag.__dask_graph__()) if key[0].startswith("run_chain_on_partition"))


def test_pardos_between_groupings_run_as_one_task_per_partition_with_each_output_apart():
    def build(pipeline):
        split = (pipeline | beam.Create(list(range(10)))
                 | "Split" >> beam.FlatMap(lambda n: [n] if n % 3 else [beam.pvalue.TaggedOutput("odd_ones", n)])
                 .with_outputs("odd_ones", main="kept"))
        doubled = split.kept | "Double" >> beam.Map(lambda n: (n % 2, 2 * n))
        grouped = doubled | beam.GroupByKey() | "Sum" >> beam.MapTuple(lambda key, values: (key, sum(values)))
        return {"odd_ones": split.odd_ones | "Negate" >> beam.Map(lambda n: -n), "grouped": grouped}

    bags, named = translated(build)
    assert values_of(bags, named["odd_ones"]) == [-9, -6, -3, 0]
    assert values_of(bags, named["grouped"]) == [(0, 2 * (2 + 4 + 8)), (1, 2 * (1 + 5 + 7))]
    # Split, Double and Negate are one chain, Sum another: a task for each chain and partition
    assert chain_tasks(bags.bag(named["grouped"])) == [0, 0, 1, 1]
    assert chain_tasks(bags.bag(named["odd_ones"])) == [0, 1]


def test_a_flatten_of_many_bags_keeps_as_many_partitions_as_one_bag():
    def build(pipeline):
        parts = [pipeline | f"Make{n}" >> beam.Create([n, 10 + n]) | f"Keep{n}" >> beam.Map(lambda v: v)
                 for n in range(6)]
        return {"flat": parts | beam.Flatten() | "After" >> beam.Map(lambda v: v + 100)}

    bags, named = translated(build)
    flat = bags.bag(named["flat"])
    assert flat.npartitions == 2
    assert values_of(bags, named["flat"]) == sorted(v + 100 for n in range(6) for v in (n, 10 + n))


def test_a_combine_is_lifted_so_its_shuffle_moves_a_partial_per_key_and_partition():
    from apache_beam.runners.dask.overrides import _GroupByKeyOnly

    def build(pipeline):
        sums = (pipeline | beam.Create(list(range(100))) | beam.Map(lambda n: (n % 2, n))
                | beam.CombinePerKey(sum))
        return {"sums": sums | "Collected" >> beam.Map(tuple)}  # a combine's own output is replaced with it

    bags, named = translated(build)
    assert values_of(bags, named["sums"]) == [(0, 2450), (1, 2500)]
    [shuffled] = [node.main_inputs[next(iter(node.main_inputs))] for node in bags.nodes
                  if isinstance(node.transform, _GroupByKeyOnly)]
    assert len(bags.bag(shuffled).compute(scheduler="sync")) <= 2 * 2  # not the 100 values


def grouped_with_stamps(pipeline, windowed):
    """(key, values, timestamp in ms, window, pane timing) of a GroupByKey's groups: the DirectRunner's coders
    carry a timestamp in milliseconds."""
    def stamps(kv, ts=beam.DoFn.TimestampParam, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        return kv[0], sorted(kv[1]), ts.micros // 1000, win, pane.timing

    values = pipeline | beam.Create([("a", 1), ("b", 2), ("a", 13), ("a", 3)])
    if windowed:
        values = (values | beam.Map(lambda kv: beam.window.TimestampedValue(kv, kv[1]))
                  | beam.WindowInto(beam.window.FixedWindows(10)))
    return values | beam.GroupByKey() | "Stamps" >> beam.Map(stamps)


@pytest.mark.parametrize("windowed", [False, True], ids=["global window", "fixed windows"])
def test_groups_are_stamped_as_the_direct_runner_stamps_them(windowed):
    from apache_beam.testing.util import assert_that, equal_to

    bags, named = translated(lambda pipeline: {"groups": grouped_with_stamps(pipeline, windowed)})
    on_dask = values_of(bags, named["groups"])
    assert len(on_dask) == (3 if windowed else 2)
    with beam.Pipeline() as pipeline:
        assert_that(grouped_with_stamps(pipeline, windowed), equal_to(on_dask))
