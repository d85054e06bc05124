"""The hourly partials' table form (`ReportTable`) against a Tally per key (`KeyedCombineFn`): the
same tallies, whatever way the records are split into accumulators and merged, and through a pickle; and
the windows over them (`TalliesCombineFn`), which hold the fired tables' partials shared."""
import pickle
import random

import pytest

from transforms.plumbing.event_windows import KeyedCombineFn, KeyedTableCombineFn, TallyCombineFn
from transforms.trends import MOST_PARTIALS, ReportTable, TalliesCombineFn, Tally, merged_tally

KEYS = [("total", None), ("jurisdiction", "GB"), ("jurisdiction", "US"), ("country", None), ("esp", "esp-1"),
        ("esp", "esp-2"), ("annotation", "SEXTORTION")]


def records(rng, count):
    users = [rng.getrandbits(64) - 2**63 for _ in range(count // 3 + 1)] + [0]  # 0: a digest, not "no user"
    out = []
    for _ in range(count):
        keys = tuple(rng.sample(KEYS, rng.randint(0, len(KEYS))))
        counted = (rng.randint(0, 4), rng.choice(users) if rng.random() < 0.8 else None,
                   rng.getrandbits(64) - 2**63 if rng.random() < 0.9 else None)
        out.append((keys, counted))
    return out


def combined(combine_fn, parts):
    accumulators = []
    for part in parts:
        accumulator = combine_fn.create_accumulator()
        for record in part:
            accumulator = combine_fn.add_input(accumulator, record)
        accumulators.append(pickle.loads(pickle.dumps(accumulator)))
    return combine_fn.extract_output(combine_fn.merge_accumulators(accumulators))


def test_the_table_gives_the_tallies_a_tally_per_key_gives():
    rng = random.Random(11)
    for count in (0, 1, 50, 2000):
        stream = records(rng, count)
        cuts = sorted(rng.sample(range(count + 1), min(count + 1, 3)))
        parts = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, count])]
        expected = combined(KeyedCombineFn(TallyCombineFn(Tally)), [stream])
        assert combined(KeyedTableCombineFn(ReportTable), parts) == expected
        assert {key: tally.counts() for key, tally in expected.items()} == {
            key: tally.counts() for key, tally in combined(KeyedTableCombineFn(ReportTable), [stream]).items()}


def test_a_record_without_user_or_bundle_is_counted_but_adds_no_distinct_value():
    table = KeyedTableCombineFn(ReportTable)
    out = combined(table, [[((("total", None),), (2, None, None)), ((("total", None),), (1, 5, 7))]])
    assert out[("total", None)].counts() == {"reports": 2, "files": 3, "users": 1, "bundles": 1}


def test_keys_seen_rarely_keep_their_rows_across_merges():
    """Rows far apart (gaps of several varint bytes) and tables merged past them count the same records."""
    rare, often = ("esp", "esp-rare"), ("total", None)
    stream = [((often, rare) if row in (0, 200, 20_000, 20_001) else (often,), (1, row, None))
              for row in range(30_000)]
    parts = [stream[:150], stream[150:20_000], stream[20_000:]]
    expected = combined(KeyedCombineFn(TallyCombineFn(Tally)), [stream])
    assert combined(KeyedTableCombineFn(ReportTable), parts) == expected
    assert expected[rare].counts() == {"reports": 4, "files": 4, "users": 4, "bundles": 0}


def fired_partials(parts):
    """Each part's table fired: {key: KeyRows} per part, as the hourly partials' panes give them."""
    outputs = []
    for part in parts:
        table = ReportTable()
        for keys, counted in part:
            table.add(keys, counted)
        outputs.append(table.by_key())
    return outputs


def test_windows_over_shared_partials_count_what_merged_tallies_count():
    """An on-time partial, then more late ones than MOST_PARTIALS, into two windows at once (an hourly window
    and a sliding period hold the same partials): each window's tally is the merged Tallies', through a
    pickle too, and the shared partials are left as they were."""
    rng = random.Random(5)
    stream = records(rng, 3000)
    parts = [stream[:2000]] + [stream[start:start + 50] for start in range(2000, 3000, 50)]
    assert len(parts) > MOST_PARTIALS + 1
    partials = fired_partials(parts)
    expected = combined(KeyedCombineFn(TallyCombineFn(Tally)), [stream])
    fn = TalliesCombineFn()
    for key, tally in expected.items():
        hourly, period = fn.create_accumulator(), fn.create_accumulator()
        for by_key in partials:
            if key in by_key:
                hourly = fn.add_input(hourly, by_key[key])
                period = fn.add_input(period, by_key[key])
        assert len(hourly) <= MOST_PARTIALS
        assert fn.extract_output(fn.merge_accumulators([hourly])) == tally.counts()
        assert fn.extract_output(pickle.loads(pickle.dumps(period))) == tally.counts()
        assert merged_tally(hourly) == tally
        assert isinstance(pickle.loads(pickle.dumps(partials[0][key])), Tally)
    for by_key in partials:  # the count `_CountCountedFn` reads, from the rows alone
        assert all(partial.reports == partial.as_tally().reports for partial in by_key.values())
    first = partials[0][("total", None)]
    assert first.counts() == combined(KeyedCombineFn(TallyCombineFn(Tally)), [parts[0]])[("total", None)].counts()


def test_a_fired_table_takes_no_more_records():
    table = ReportTable()
    table.add((("total", None),), (1, 5, 7))
    partial = table.by_key()[("total", None)]
    with pytest.raises(RuntimeError, match="fired"):
        table.add((("total", None),), (1, 6, 8))
    with pytest.raises(RuntimeError, match="fired"):
        table.merge(ReportTable())
    assert partial.counts() == {"reports": 1, "files": 1, "users": 1, "bundles": 1}
