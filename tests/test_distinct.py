"""DistinctDigests counts what a Python set of the same digests counts, through adds, merges and pickling;
digests are the same in every process (partials made on different workers merge)."""
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.plumbing.distinct import SORT_AT_LEAST, DistinctDigests, digest64, pair_digest64, sorted_distinct

DIGESTS = st.integers(min_value=-2**63, max_value=2**63 - 1)
FEW_DIGESTS = st.integers(min_value=0, max_value=300)  # many repeats: exercises the merge of added ones


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(st.one_of(DIGESTS, FEW_DIGESTS), max_size=400)), max_size=6))
def test_adds_and_merges_count_as_a_set_does(steps):
    counted, expected = DistinctDigests(), set()
    for merge_another, digests in steps:
        if merge_another:
            other = DistinctDigests()
            for digest in digests:
                other.add(digest)
            counted.update(other)
        else:
            for digest in digests:
                counted.add(digest)
        expected.update(digests)
        assert len(counted) == len(expected)
    assert counted.digests().tolist() == sorted(expected)
    assert pickle.loads(pickle.dumps(counted)) == counted


def test_a_merge_leaves_the_merged_one_as_it_was():
    first, second = DistinctDigests(range(10)), DistinctDigests()
    for digest in range(5, 5 + 3 * SORT_AT_LEAST):
        second.add(digest)
    first.update(second)
    second.add(-1)
    assert len(first) == 5 + 3 * SORT_AT_LEAST and len(second) == 3 * SORT_AT_LEAST + 1
    assert not DistinctDigests() and DistinctDigests([3])


def test_digests_are_the_same_in_another_process_with_another_string_hash_seed():
    code = ("from transforms.plumbing.distinct import digest64, pair_digest64; "
            "print(digest64('bnd-0123'), pair_digest64('esp-1', 'user-7'))")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": "12345", "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}).stdout.split()
    assert [int(value) for value in printed] == [digest64("bnd-0123"), pair_digest64("esp-1", "user-7")]
    assert pair_digest64("esp-1", "user-7") != pair_digest64("esp-1u", "ser-7")


@pytest.mark.parametrize("values", [
    [], [5], [7, 7, 7], [2**63 - 1, -2**63, 0, -1, 2**63 - 1, -2**63],
    list(np.random.default_rng(3).integers(-2**63, 2**63 - 1, 5000, endpoint=True)),
    list(np.random.default_rng(4).integers(-50, 50, 5000)),
])
def test_sorted_distinct_gives_what_numpy_unique_gives(values):
    array = np.array(values, dtype=np.int64)
    assert np.array_equal(sorted_distinct(array), np.unique(array))
    assert sorted_distinct(array).dtype == np.int64
