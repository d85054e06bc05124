"""Hamming range search over banked codes, the way picked by the bank's size: below `SCAN_ENTRIES` codes,
every code is compared with every query (numpy, ~1 ns a code); past it, the multi-index of
`hamming_index.py`, whose hundreds of probes into multi-megabyte tables cost ~15 µs a query whatever the
bank's size, which made small banks (the demo's, a local deployment's) the costliest part of matching.

The multi-index is compiled with numba, which costs a process ~0.15 s to import: it is imported only when a
bank is large enough to need it, so a run, a worker or a command line tool over small banks never pays it.
"""
import numpy as np

SCAN_ENTRIES = 4096
SCAN_CELLS = 1 << 20  # codes x queries x words compared at once: bounds a scan's scratch memory (~8 MB)


def codes_from_hex(hex_values, bits):
    """An (n, bits/64) uint64 array from hex strings: word 0 holds the first 16 hex characters."""
    words = bits // 64
    raw = bytes.fromhex("".join(hex_values))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(hex_values), words)


def range_search(codes, radius):
    """A searcher of `codes` (an (n, words) uint64 array) within `radius`: its `search(queries)` gives arrays
    (query index, code index, distance) of every pair within it, in no set order."""
    if len(codes) <= SCAN_ENTRIES:
        return ScannedCodes(codes, radius)
    from transforms.matching.hamming_index import HammingIndex  # numba: only a bank this large needs it
    return HammingIndex(codes, radius)


class ScannedCodes:
    """Every code compared with every query, a chunk of queries at a time."""

    def __init__(self, codes, radius):
        self.codes = codes
        self.radius = radius

    def search(self, queries):
        if not len(self.codes) or not len(queries):
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        step = max(1, SCAN_CELLS // self.codes.size)
        parts = []
        for start in range(0, len(queries), step):
            chunk = queries[start:start + step]
            distances = np.bitwise_count(chunk[:, None, :] ^ self.codes[None, :, :]).sum(axis=2, dtype=np.int64)
            rows, ids = np.nonzero(distances <= self.radius)
            parts.append((rows + start, ids, distances[rows, ids]))
        return tuple(np.concatenate(column) for column in zip(*parts))
