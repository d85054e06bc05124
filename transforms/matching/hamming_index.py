"""Hamming range search with 100% recall: multi-index hashing.

Codes are cut into blocks; each block gets a table whose entries are sorted by that block's value, with
a direct-address offset array (no search). A query probes, per table, every key within a small radius of
its own block, then checks the bucket's entries. Which radius per block is enough comes from a counting
argument:

* 64-bit codes (pHash, dHash): three blocks of 22, 21 and 21 bits and the generalised pigeonhole. If the
  distance is at most r, the block distances d_i sum to at most r, so for thresholds t_i with
  sum(t_i + 1) > r some block has d_i <= t_i. For r = 8 that is (2, 2, 2): 718 probes, but buckets of
  ~2-5 of 10M codes, so ~3k candidates per query instead of the ~29k of four 16-bit blocks with radii
  (2, 1, 1, 1). Probes are random memory reads, so the kernel first computes every probe key and
  prefetches its offset slot, then reads the bucket bounds and prefetches each bucket, then scans: the
  CPU overlaps the misses instead of waiting on each in turn. Each table stores the full codes in its own
  order, so checking a candidate needs no second random read; offsets are int32 (~24 MB for all three).
* 256-bit codes (PDQ): 16-bit blocks and pigeonring (Qin et al., VLDB 2019). On the ring of m blocks there
  is a start i with d_i <= r/m and d_i + d_(i+1) <= 2r/m. Tables store, beside each id, only the next block
  (16 bits), so a bucket entry is rejected with one 16-bit popcount; random reads of full codes are left
  for the ~0.2% that pass. For r = 31 this keeps 10M codes in ~1.3 GB. Bucket starts are gathered and
  prefetched before the buckets are scanned, as above.

A candidate found again in a later table is skipped when an earlier table's condition already held,
so each (query, code) pair is reported once.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from transforms.matching.code_search import codes_from_hex

BLOCK_BITS = 16
WIDE_BLOCK_BITS = (22, 21, 21)  # 64-bit codes: three blocks, so buckets hold ~2-5 of 10M codes
KEYS = 1 << BLOCK_BITS
_BLOCKS_PER_WORD = 64 // BLOCK_BITS


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


def _masks_within(width, threshold):
    """Every `width`-bit mask of popcount <= threshold (the keys a block probes around its own)."""
    masks = np.zeros(1, dtype=np.int64)
    for _ in range(threshold):  # masks of weight w+1: add one bit above the top set bit of a weight-w mask
        grown = [mask | (1 << bit) for mask in masks.tolist() for bit in range(width)
                 if mask < (1 << bit)]
        masks = np.union1d(masks, np.array(grown, dtype=np.int64))
    return masks


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
        widths = np.array(WIDE_BLOCK_BITS, dtype=np.int64)
        self.shifts = (64 - np.cumsum(widths)).astype(np.int64)
        self.key_masks = ((1 << widths) - 1).astype(np.uint64)
        self.thresholds = pigeonhole_thresholds(self.radius, len(widths))
        probed = [block for block in range(len(widths)) if self.thresholds[block] >= 0]
        size = len(self.codes) if probed else 0
        self.table_codes = np.zeros((len(widths), size), dtype=np.uint64)
        self.table_ids = np.zeros((len(widths), size), dtype=np.int32)
        self.offsets = np.zeros((len(widths), (1 << int(widths.max())) + 1), dtype=np.int32)
        probe_masks = [np.zeros(0, dtype=np.int64)] * len(widths)
        for block in probed:
            keys = (self.codes[:, 0] >> np.uint64(self.shifts[block])) & self.key_masks[block]
            order = np.argsort(keys, kind="stable")
            np.cumsum(np.bincount(keys.astype(np.int64), minlength=1 << int(widths[block])),
                      out=self.offsets[block, 1:(1 << int(widths[block])) + 1])
            self.table_codes[block] = self.codes[order, 0]
            self.table_ids[block] = order
            probe_masks[block] = _masks_within(int(widths[block]), int(self.thresholds[block]))
        self.mask_starts = np.zeros(len(widths) + 1, dtype=np.int64)
        np.cumsum([len(masks) for masks in probe_masks], out=self.mask_starts[1:])
        self.probe_masks = np.concatenate(probe_masks)

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
            return _search_pigeonhole(queries[:, 0], self.radius, self.thresholds, self.shifts, self.key_masks,
                                      self.offsets, self.table_codes, self.table_ids, self.probe_masks,
                                      self.mask_starts, out)
        return _search_pigeonring(queries, self.codes, self.radius, self.block_radius, self.pair_radius,
                                  self.offsets, self.table_next, self.table_ids, _MASKS, _MASK_WEIGHTS,
                                  _MASK_ENDS, out)


@intrinsic
def _popcount64(typingctx, value):
    """The CPU's popcount instruction on a uint64 (numba has no popcount builtin)."""

    def codegen(context, builder, signature, args):
        return builder.zext(builder.ctpop(args[0]), context.get_value_type(types.int64))

    return types.int64(types.uint64), codegen


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to start loading array[index] into cache (llvm.prefetch: read, keep, data)."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
        pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [pointer.type] + [ir.IntType(32)] * 3), "llvm.prefetch")
        builder.call(function, [pointer, ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 3),
                                ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@numba.njit(inline="always")
def _key(code_words, block):
    shift = np.uint64(64 - 16 * (block % 4 + 1))
    return np.int64((code_words[block // 4] >> shift) & np.uint64(0xFFFF))


@numba.njit(cache=True, nogil=True)
def _search_pigeonhole(queries, radius, thresholds, shifts, key_masks, offsets, table_codes, table_ids,
                       probe_masks, mask_starts, out):
    count = 0
    capacity = out.shape[1]
    blocks = thresholds.shape[0]
    starts = np.empty(probe_masks.shape[0], dtype=np.int64)
    ends = np.empty(probe_masks.shape[0], dtype=np.int64)
    for q in range(queries.shape[0]):
        query = queries[q]
        # phase 1: every probe's bucket bounds (independent loads the CPU overlaps), phase 2: the buckets
        for block in range(blocks):
            key = np.int64((query >> np.uint64(shifts[block])) & key_masks[block])
            block_offsets = offsets[block]
            for m in range(mask_starts[block], mask_starts[block + 1]):
                starts[m] = key ^ probe_masks[m]
                _prefetch(block_offsets, starts[m])
        for block in range(blocks):
            block_offsets = offsets[block]
            for m in range(mask_starts[block], mask_starts[block + 1]):
                probe = starts[m]
                starts[m] = block_offsets[probe]
                ends[m] = block_offsets[probe + 1]
                _prefetch(table_codes[block], starts[m])
        for block in range(blocks):
            block_codes = table_codes[block]
            for m in range(mask_starts[block], mask_starts[block + 1]):
                for entry in range(starts[m], ends[m]):
                    difference = block_codes[entry] ^ query
                    distance = _popcount64(difference)
                    if distance > radius or _found_earlier_64(difference, block, thresholds, shifts, key_masks):
                        continue
                    if count < capacity:
                        out[0, count], out[1, count], out[2, count] = q, table_ids[block, entry], distance
                    count += 1
    return count


@numba.njit(inline="always")
def _found_earlier_64(difference, block, thresholds, shifts, key_masks):
    for earlier in range(block):
        if _popcount64((difference >> np.uint64(shifts[earlier])) & key_masks[earlier]) <= thresholds[earlier]:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _search_pigeonring(queries, codes, radius, block_radius, pair_radius, offsets, table_next, table_ids,
                       masks, mask_weights, mask_ends, out):
    count = 0
    capacity = out.shape[1]
    blocks = offsets.shape[0]
    words = codes.shape[1]
    probes = mask_ends[block_radius]
    starts = np.empty((blocks, probes), dtype=np.int64)
    for q in range(queries.shape[0]):
        query = queries[q]
        for block in range(blocks):  # every probe's bucket start first, prefetched, then the buckets
            key = _key(query, block)
            for m in range(probes):
                starts[block, m] = offsets[block, key ^ np.int64(masks[m])]
                _prefetch(table_next[block], starts[block, m])
        for block in range(blocks):
            key = _key(query, block)
            next_key = np.uint64(_key(query, (block + 1) % blocks))
            for m in range(probes):
                probe = key ^ np.int64(masks[m])
                next_budget = pair_radius - mask_weights[m]
                for entry in range(starts[block, m], offsets[block, probe + 1]):
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
