"""Many small records in few keys, for the local runner's forms of keyed state.

The DirectRunner keeps ~1-3 KB per key with a timer and walks every key's timers, so the local forms of the
streaming dedup (transforms/dedup.py), incident stamping and bundle sessions (transforms/bundles.py) and the
spike detector (transforms/alerts.py) spread their keys (a reportId, a signature, a bundle) over a fixed number
of buckets by a 16-byte digest, keep each bucket's records packed (at a fixed size in one bytes value,
length-prefixed in one bytearray, or pickled in a bag), and give each bucket one timer at the earliest time
any of its records is due.
"""
import hashlib
import pickle
import struct

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

DIGEST_BYTES = 16  # 128 bits: two keys sharing a digest is not a practical risk


def digest_of(key):
    return hashlib.blake2b(key.encode("utf-8"), digest_size=DIGEST_BYTES).digest()


def bucket_of(digest, buckets):
    return int.from_bytes(digest[:4], "big") % buckets


def held_half(digest):
    """The 8 bytes of a 16-byte digest that its bucket is not chosen by: what a bucket holds a key under when
    a record should be small (incidents, spike baselines). Keys in one bucket then differ in all 64 bits:
    two of a day's ~35 million keys at 200 reports/s sharing one has a chance of ~3·10⁻⁸."""
    return digest[8:16]


def record_offset(packed, digest, record_bytes, digest_at=0):
    """Where the record holding `digest` (at `digest_at` in each `record_bytes`-long record) starts in
    `packed`, or -1; a match across two records is not one."""
    start = packed.find(digest, digest_at)
    while start != -1 and (start - digest_at) % record_bytes:
        start = packed.find(digest, start + 1)
    return start if start == -1 else start - digest_at


@beam.typehints.with_output_types(beam.typehints.KV[int, bytes])
class PackedIntoBuckets(beam.DoFn):
    """(bucket of the digest of `key_text(element)`, `pack(element)` as bytes): an element on its way to a
    local state form whose records are too varied to pack at a fixed size (bundle sightings, spike counts)."""

    def __init__(self, buckets, key_text, pack):
        self.buckets = buckets
        self.key_text = key_text
        self.pack = pack

    def process(self, element):
        yield bucket_of(digest_of(self.key_text(element)), self.buckets), self.pack(element)


_SHORT = struct.Struct("<H")
_LONG = struct.Struct("<I")
_LONG_MARK = 0xFFFF  # a record of this length or longer: the mark, then its length in four bytes


def append_record(records, record):
    """Appends `record` (bytes) to `records` (a bytearray), prefixed by its length: two bytes, or the mark and
    four for one of 64 KB or more.

    Why one bytearray rather than a bag of bytes values: a bytes object costs ~33 bytes of header and a list
    slot, which for the ~80-byte bundle sightings held for two days was a third of what they took."""
    if len(record) < _LONG_MARK:
        records += _SHORT.pack(len(record))
    else:
        records += _SHORT.pack(_LONG_MARK) + _LONG.pack(len(record))
    records += record


def iter_records(records):
    """The records `append_record` put into `records`, in order, as bytes."""
    at, end = 0, len(records)
    view = memoryview(records)
    while at < end:
        (length,), at = _SHORT.unpack_from(records, at), at + _SHORT.size
        if length == _LONG_MARK:
            (length,), at = _LONG.unpack_from(records, at), at + _LONG.size
        yield bytes(view[at:at + length])
        at += length


def pickled(record):
    return pickle.dumps(record, pickle.HIGHEST_PROTOCOL)


def move_timer_earlier(next_at, timer, micros):
    """A bucket's one timer stands at the earliest time any of its records is due: set it to `micros` only
    when that is earlier than the time it holds, kept in the `next_at` state (a timer cannot be read)."""
    earliest = next_at.read()
    if earliest is None or micros < earliest:
        next_at.write(micros)
        timer.set(Timestamp(micros=micros))


def reset_timer(next_at, timer, due_times):
    """After a bucket's timer fired: the timer at the earliest of `due_times`, or none when nothing is due."""
    next_at.clear()
    if due_times:
        earliest = min(due_times)
        next_at.write(earliest)
        timer.set(Timestamp(micros=earliest))
