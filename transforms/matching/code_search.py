"""Hamming range search over banked codes, the way picked by the bank's size and the codes' width: a few
codes are compared with every query (numpy), more go through the multi-index of `hamming_index.py`.

Per query, in batches of 64 (this machine, the tables warm): a 64-bit scan costs ~3.3 ns a code, the
64-bit multi-index ~4 µs whatever the bank's size (~15 µs as the pipeline meets it, its 16 MB tables cold
between batches), so pHash and dHash banks are scanned up to 4,096 codes; a 256-bit scan costs ~24 ns a
code, the pigeonring index ~0.7 µs, so PDQ image banks and vPDQ frames are scanned up to 32 codes only (a
60-frame video query against 120 banked frames: ~0.3 ms scanned, ~0.15 ms through the index).

The multi-index is compiled with numba, which costs a process ~0.15 s to import: it is imported only when a
bank is past its scan limit, so a run, a worker or a command line tool over small banks never pays it.
"""
import numpy as np

SCAN_CODES = {64: 4096, 256: 32}  # code width in bits -> the most codes scanned
SCAN_CELLS = 1 << 20  # codes x queries x words compared at once: bounds a scan's scratch memory (~8 MB)


def codes_from_hex(hex_values, bits):
    """An (n, bits/64) uint64 array from hex strings: word 0 holds the first 16 hex characters."""
    words = bits // 64
    raw = bytes.fromhex("".join(hex_values))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(hex_values), words)


def range_search(codes, radius):
    """A searcher of `codes` (an (n, words) uint64 array) within `radius`: its `search(queries)` gives arrays
    (query index, code index, distance) of every pair within it, in no set order."""
    if len(codes) <= SCAN_CODES[64 * codes.shape[1]]:
        return ScannedCodes(codes, radius)
    from transforms.matching.hamming_index import HammingIndex  # numba: only a bank this large needs it
    return HammingIndex(codes, radius)


class ScannedCodes:
    """Every code compared with every query, a chunk of queries at a time."""

    def __init__(self, codes, radius):
        self.codes = codes
        self.radius = radius

    def nbytes(self):
        return self.codes.nbytes

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
