"""Records packed as bytes to cross a grouping: orjson where it gives back an equal record, else pickle.

Why not Beam's coder for a dict (FastPrimitivesCoder): it encodes and decodes a report field by field, and
the local runner (FnApiRunner) decodes and re-encodes every grouped value once more, so a 3 KB report
crossing a GroupByKey cost four coder passes plus a pickled `Timestamp` when it travelled with its event
time; a row's datetimes are pickled one by one. Packed, a record costs one dump and one load, and the
grouping moves bytes.

Exactness: orjson refuses (so pickle takes) what it would otherwise turn into something else: subclasses of
str, int, dict and list (numpy scalars, enums), datetimes, dataclasses; what it still changes silently
(NaN and infinities written as null, tuples as lists) fails the check that the dump loads back equal.
(marshal is not used: it writes any object with a buffer, a numpy float among them, as bytes.) A record
nested deeper than pickle goes (a hostile report) is packed by Beam's own coder, as it was before.

`pack_deflated` deflates the packed bytes too (ISA-L, level 0), for the large records a batch run groups
(reports by reportId, routed records by signature): the local runner in worker processes copies, splits
and re-encodes every grouped byte in its one Python process, so a 2.7 KB routed record deflated to 1.4 KB
(3.5 µs, inflated in 4) costs it less than the bytes it no longer moves. `DeflatedBytesListCoder` does the
same for a list of such bytes (a bounded file sink's records per key and bundle), deflated as one run.
"""
import itertools
import pickle

import orjson
from apache_beam import coders
from isal import isal_zlib

_JSON = b"j"
_PICKLE = b"p"
_BEAM = b"b"
_DEFLATED = b"z"
_BEAM_CODER = coders.FastPrimitivesCoder()
_REFUSE_WHAT_JSON_WOULD_CHANGE = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME
                                  | orjson.OPT_PASSTHROUGH_DATACLASS)


def pack(record, json_exact=False):
    """`record` as bytes that `unpack` turns back into an equal record of the same types.

    `json_exact`: the caller knows the record holds no NaN, infinity or tuple (a decoded message, a routed
    record the schema check passed), so the check that the dump loads back equal, ~7 µs of a 2 KB record's
    9, is skipped. What orjson refuses still goes to pickle."""
    try:
        packed = orjson.dumps(record, option=_REFUSE_WHAT_JSON_WOULD_CHANGE)
        if json_exact or orjson.loads(packed) == record:
            return _JSON + packed
    except TypeError:  # orjson.JSONEncodeError: a type passed through, an integer past 64 bits, a lone surrogate
        pass
    try:
        return _PICKLE + pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
    except RecursionError:  # nested deeper than pickle goes (a hostile report): Beam's own coder takes it
        return _BEAM + _BEAM_CODER.encode(record)


def pack_deflated(record, json_exact=False):
    """`pack`, deflated: fewer bytes for a grouping to move, at ~5 µs a 2 KB record to deflate and inflate."""
    return _DEFLATED + isal_zlib.compress(pack(record, json_exact), 0)


def unpack(packed):
    """The record `pack` or `pack_deflated` packed."""
    if packed[:1] == _DEFLATED:
        packed = isal_zlib.decompress(memoryview(packed)[1:])
    kind, body = packed[:1], memoryview(packed)[1:]
    if kind == _JSON:
        return orjson.loads(body)
    return pickle.loads(body) if kind == _PICKLE else _BEAM_CODER.decode(bytes(body))


class DeflatedBytesListCoder(coders.Coder):
    """A list of bytes values as one deflated run of length-prefixed values (ISA-L, level 1): a list of
    routed records' Avro datums takes 244 bytes a record where they are 923 (~2.5 µs a record to deflate and
    inflate), for the lists a bounded file sink groups (`group_in_batches`)."""

    def encode(self, values):
        return isal_zlib.compress(b"".join(itertools.chain.from_iterable(
            (len(value).to_bytes(4, "big"), value) for value in values)), 1)

    def decode(self, encoded):
        run, values, offset = memoryview(isal_zlib.decompress(encoded)), [], 0
        while offset < len(run):
            size = int.from_bytes(run[offset:offset + 4], "big")
            values.append(bytes(run[offset + 4:offset + 4 + size]))
            offset += 4 + size
        return values

    def is_deterministic(self):
        return True
