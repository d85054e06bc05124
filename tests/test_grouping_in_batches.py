"""group_in_batches: Beam's GroupByKey result, moved as a list per key and bundle (a lifted CombinePerKey)."""
import random

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.combiners import ToListCombineFn

from transforms.plumbing.event_windows import ConcatListsCombineFn, group_in_batches


def sorted_groups(grouped):
    key, values = grouped
    return key, sorted(values)


def test_the_merge_holds_what_beams_own_merge_holds():
    rng = random.Random(7)
    accumulators = [[rng.randrange(100) for _ in range(rng.randrange(6))] for _ in range(40)]
    ours = ConcatListsCombineFn().merge_accumulators([list(a) for a in accumulators])
    beams = ToListCombineFn().merge_accumulators([list(a) for a in accumulators])
    assert ours == beams
    assert len(ours) == sum(len(a) for a in accumulators)


def test_groups_as_group_by_key_groups():
    rng = random.Random(11)
    pairs = [(rng.choice(["a", "b", ("c", 1)]), rng.randbytes(rng.randrange(1, 20))) for _ in range(3000)]
    expected = {}
    for key, value in pairs:
        expected.setdefault(key, []).append(value)
    with TestPipeline() as p:
        pairs_in = p | beam.Create(pairs, reshuffle=False)
        batched = pairs_in | "Batched" >> group_in_batches() | "SortBatched" >> beam.Map(sorted_groups)
        grouped = pairs_in | "Grouped" >> beam.GroupByKey() | "SortGrouped" >> beam.Map(sorted_groups)
        assert_that(batched, equal_to([(key, sorted(values)) for key, values in expected.items()]), label="batched")
        assert_that(grouped, equal_to([(key, sorted(values)) for key, values in expected.items()]), label="grouped")
