"""The Hamming index finds exactly what a brute-force scan finds, boundary distances included."""
import numpy as np
import pytest

from transforms.matching.hamming_index import HammingIndex, codes_from_hex, pigeonhole_thresholds


def random_codes(rng, count, words):
    return rng.integers(0, np.iinfo(np.uint64).max, size=(count, words), dtype=np.uint64, endpoint=True)


def flip_bits(code, bit_positions):
    flipped = code.copy()
    for bit in bit_positions:
        flipped[bit // 64] ^= np.uint64(1) << np.uint64(63 - bit % 64)
    return flipped


def brute_force(codes, queries, radius):
    distances = np.bitwise_count(queries[:, None, :] ^ codes[None, :, :]).sum(axis=2)
    rows, ids = np.nonzero(distances <= radius)
    return {(int(r), int(i), int(distances[r, i])) for r, i in zip(rows, ids)}


def search_set(index, queries):
    return set(zip(*(column.tolist() for column in index.search(queries))))


@pytest.mark.parametrize("words,radius", [(1, 8), (1, 10), (1, 0), (4, 31), (4, 12)])
def test_matches_brute_force_with_planted_neighbours_up_to_and_past_the_radius(words, radius):
    rng = np.random.default_rng(radius + words)
    codes = random_codes(rng, 5000, words)
    # planted: distances 0..radius+2 from bank codes, so the boundary and just past it are both covered
    planted = [flip_bits(codes[i], rng.choice(64 * words, size=i % (radius + 3), replace=False)) for i in range(150)]
    queries = np.concatenate([np.array(planted), random_codes(rng, 50, words)])
    expected = brute_force(codes, queries, radius)
    assert search_set(HammingIndex(codes, radius), queries) == expected
    boundary = {d for _, _, d in expected}
    assert radius in boundary and 0 in boundary


def test_clustered_bank_reports_each_pair_once():
    """Near-duplicate bank entries hit several tables; each (query, code) must still appear once."""
    rng = np.random.default_rng(3)
    base = random_codes(rng, 1, 1)[0]
    codes = np.array([flip_bits(base, rng.choice(64, size=k, replace=False)) for k in range(12)] * 3)
    rows, ids, distances = HammingIndex(codes, 8).search(base[None, :])
    assert len(set(ids.tolist())) == len(ids)
    assert search_set(HammingIndex(codes, 8), base[None, :]) == brute_force(codes, base[None, :], 8)


def test_hex_codes_keep_hex_order():
    codes = codes_from_hex(["8000000000000001", "0000000000000000"], 64)
    assert codes[0, 0] == np.uint64(0x8000000000000001)
    rows, ids, distances = HammingIndex(codes, 2).search(codes[1:])
    assert sorted(zip(ids.tolist(), distances.tolist())) == [(0, 2), (1, 0)]


def test_pigeonhole_thresholds_cover_the_radius():
    for radius in range(0, 20):
        thresholds = pigeonhole_thresholds(radius, 4)
        assert sum(t + 1 for t in thresholds) == radius + 1
        assert max(thresholds) - min(thresholds) <= 1


def test_empty_index_and_empty_batch():
    index = HammingIndex(np.zeros((0, 4), dtype=np.uint64), 31)
    assert [len(column) for column in index.search(np.zeros((3, 4), dtype=np.uint64))] == [0, 0, 0]
    full = HammingIndex(random_codes(np.random.default_rng(0), 10, 1), 8)
    assert [len(column) for column in full.search(np.zeros((0, 1), dtype=np.uint64))] == [0, 0, 0]
