"""Hamming range search with 100% recall: multi-index hashing over 16-bit blocks.

Codes (64 or 256 bits) are cut into 16-bit blocks; each block gets a table whose entries are sorted by
that block's value, with a direct-address offset array of 65,537 slots (256 KB: it stays in cache).
A query probes, per table, every key within a small radius of its own block, then checks the bucket's
entries. Which radius per block is enough comes from a counting argument:

* 64-bit codes (pHash, dHash): generalised pigeonhole. If the distance is at most r, the block distances
  d_i sum to at most r, so for thresholds t_i with sum(t_i + 1) > r some block has d_i <= t_i. For r = 8
  on 4 blocks that is (2, 1, 1, 1): 188 probes instead of the 548 of "every block within 2". Each table
  stores the full codes in its own order, so checking a candidate reads memory sequentially.
* 256-bit codes (PDQ): pigeonring (Qin et al., VLDB 2019). On the ring of m blocks there is a start i with
  d_i <= r/m and d_i + d_(i+1) <= 2r/m. Tables store, beside each id, only the next block (16 bits), so a
  bucket entry is rejected with one 16-bit popcount; random reads of full codes are left for the ~0.2% that
  pass. For r = 31 this keeps 10M codes in ~1.3 GB.

A candidate found again in a later table is skipped when an earlier table's condition already held,
so each (query, code) pair is reported once.
"""
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

BLOCK_BITS = 16
KEYS = 1 << BLOCK_BITS
_BLOCKS_PER_WORD = 64 // BLOCK_BITS


def codes_from_hex(hex_values, bits):
    """An (n, bits/64) uint64 array from hex strings: word 0 holds the first 16 hex characters."""
    words = bits // 64
    raw = bytes.fromhex("".join(hex_values))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(hex_values), words)


def _masks_by_weight():
    """All 16-bit masks ordered by popcount, and where each weight ends: probing radius t = masks[:ends[t]]."""
    masks = np.arange(KEYS, dtype=np.uint32)
    weights = np.bitwise_count(masks)
    order = np.argsort(weights, kind="stable")
    ends = np.searchsorted(weights[order], np.arange(BLOCK_BITS + 1), side="right")
    return masks[order].astype(np.uint16), weights[order].astype(np.int64), ends.astype(np.int64)


_MASKS, _MASK_WEIGHTS, _MASK_ENDS = _masks_by_weight()


def pigeonhole_thresholds(radius, blocks):
    """Per-block probe radii with sum(t_i + 1) = radius + 1; -1 means the block need not be probed."""
    total = radius + 1 - blocks
    return np.array([total // blocks + (1 if i < total % blocks else 0) for i in range(blocks)], dtype=np.int64)


def _block_keys(codes, block):
    word, position = divmod(block, _BLOCKS_PER_WORD)
    shift = np.uint64(64 - BLOCK_BITS * (position + 1))
    return ((codes[:, word] >> shift) & np.uint64(KEYS - 1)).astype(np.uint16)


def _sorted_table(keys):
    """Entry order sorted by key and the offsets of each key's bucket."""
    order = np.argsort(keys, kind="stable")
    offsets = np.zeros(KEYS + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=KEYS), out=offsets[1:])
    return order, offsets


class HammingIndex:
    """Exact Hamming range search over fixed codes, queried in batches."""

    def __init__(self, codes, radius):
        self.codes = np.ascontiguousarray(codes, dtype=np.uint64)
        self.radius = int(radius)
        self.words = self.codes.shape[1]
        self.blocks = self.words * _BLOCKS_PER_WORD
        if self.words == 1:
            self._build_pigeonhole()
        else:
            self._build_pigeonring()

    @classmethod
    def from_hex(cls, hex_values, bits, radius):
        return cls(codes_from_hex(list(hex_values), bits), radius)

    def __len__(self):
        return len(self.codes)

    def nbytes(self):
        return sum(array.nbytes for array in vars(self).values() if isinstance(array, np.ndarray))

    def _build_pigeonhole(self):
        self.thresholds = pigeonhole_thresholds(self.radius, self.blocks)
        probed = [block for block in range(self.blocks) if self.thresholds[block] >= 0]
        self.offsets = np.zeros((self.blocks, KEYS + 1), dtype=np.int64)
        self.table_codes = np.zeros((self.blocks, len(self.codes) if probed else 0), dtype=np.uint64)
        self.table_ids = np.zeros(self.table_codes.shape, dtype=np.int32)
        for block in probed:
            order, self.offsets[block] = _sorted_table(_block_keys(self.codes, block))
            self.table_codes[block] = self.codes[order, 0]
            self.table_ids[block] = order

    def _build_pigeonring(self):
        self.block_radius = self.radius // self.blocks
        self.pair_radius = (2 * self.radius) // self.blocks
        self.offsets = np.zeros((self.blocks, KEYS + 1), dtype=np.int64)
        self.table_next = np.zeros((self.blocks, len(self.codes)), dtype=np.uint16)
        self.table_ids = np.zeros((self.blocks, len(self.codes)), dtype=np.int32)
        for block in range(self.blocks):
            order, self.offsets[block] = _sorted_table(_block_keys(self.codes, block))
            self.table_next[block] = _block_keys(self.codes, (block + 1) % self.blocks)[order]
            self.table_ids[block] = order

    def search(self, queries):
        """All codes within the radius of each query: arrays (query_index, code_index, distance)."""
        queries = np.ascontiguousarray(queries, dtype=np.uint64).reshape(-1, self.words)
        capacity = max(1024, 4 * len(queries))
        while True:
            out = np.empty((3, capacity), dtype=np.int64)
            count = self._search(queries, out)
            if count <= capacity:
                return out[0, :count], out[1, :count], out[2, :count]
            capacity = count

    def _search(self, queries, out):
        if self.words == 1:
            return _search_pigeonhole(queries[:, 0], self.radius, self.thresholds, self.offsets,
                                      self.table_codes, self.table_ids, _MASKS, _MASK_ENDS, out)
        return _search_pigeonring(queries, self.codes, self.radius, self.block_radius, self.pair_radius,
                                  self.offsets, self.table_next, self.table_ids, _MASKS, _MASK_WEIGHTS,
                                  _MASK_ENDS, out)


@intrinsic
def _popcount64(typingctx, value):
    """The CPU's popcount instruction on a uint64 (numba has no popcount builtin)."""

    def codegen(context, builder, signature, args):
        return builder.zext(builder.ctpop(args[0]), context.get_value_type(types.int64))

    return types.int64(types.uint64), codegen


@numba.njit(inline="always")
def _key(code_words, block):
    shift = np.uint64(64 - 16 * (block % 4 + 1))
    return np.int64((code_words[block // 4] >> shift) & np.uint64(0xFFFF))


@numba.njit(cache=True, nogil=True)
def _search_pigeonhole(queries, radius, thresholds, offsets, table_codes, table_ids, masks, mask_ends, out):
    count = 0
    capacity = out.shape[1]
    blocks = thresholds.shape[0]
    for q in range(queries.shape[0]):
        query = queries[q]
        for block in range(blocks):
            if thresholds[block] < 0:
                continue
            shift = np.uint64(64 - 16 * (block + 1))
            key = np.int64((query >> shift) & np.uint64(0xFFFF))
            block_offsets, block_codes = offsets[block], table_codes[block]
            for m in range(mask_ends[thresholds[block]]):
                probe = key ^ np.int64(masks[m])
                for entry in range(block_offsets[probe], block_offsets[probe + 1]):
                    difference = block_codes[entry] ^ query
                    distance = _popcount64(difference)
                    if distance > radius or _found_earlier_64(difference, block, thresholds):
                        continue
                    if count < capacity:
                        out[0, count], out[1, count], out[2, count] = q, table_ids[block, entry], distance
                    count += 1
    return count


@numba.njit(inline="always")
def _found_earlier_64(difference, block, thresholds):
    for earlier in range(block):
        shift = np.uint64(64 - 16 * (earlier + 1))
        if _popcount64((difference >> shift) & np.uint64(0xFFFF)) <= thresholds[earlier]:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _search_pigeonring(queries, codes, radius, block_radius, pair_radius, offsets, table_next, table_ids,
                       masks, mask_weights, mask_ends, out):
    count = 0
    capacity = out.shape[1]
    blocks = offsets.shape[0]
    words = codes.shape[1]
    for q in range(queries.shape[0]):
        query = queries[q]
        for block in range(blocks):
            key = _key(query, block)
            next_key = np.uint64(_key(query, (block + 1) % blocks))
            for m in range(mask_ends[block_radius]):
                probe = key ^ np.int64(masks[m])
                next_budget = pair_radius - mask_weights[m]
                for entry in range(offsets[block, probe], offsets[block, probe + 1]):
                    if _popcount64(np.uint64(table_next[block, entry]) ^ next_key) > next_budget:
                        continue
                    index = table_ids[block, entry]
                    distance = 0
                    for word in range(words):
                        distance += _popcount64(codes[index, word] ^ query[word])
                    if distance > radius or _ring_found_earlier(codes[index], query, block, blocks,
                                                                block_radius, pair_radius):
                        continue
                    if count < capacity:
                        out[0, count], out[1, count], out[2, count] = q, index, distance
                    count += 1
    return count


@numba.njit(inline="always")
def _ring_found_earlier(code, query, block, blocks, block_radius, pair_radius):
    for earlier in range(block):
        here = _popcount64(np.uint64(_key(code, earlier) ^ _key(query, earlier)))
        following = (earlier + 1) % blocks
        there = _popcount64(np.uint64(_key(code, following) ^ _key(query, following)))
        if here <= block_radius and here + there <= pair_radius:
            return True
    return False
