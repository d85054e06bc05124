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

`pack_deflated` deflates the packed bytes too, for the large records a batch run groups (reports by
reportId, routed records by signature): the local runner in worker processes copies, splits and re-encodes
every grouped byte in its one Python process, and a worker decodes each. A small record deflated alone
finds little to refer back to, so it is deflated against its schema's example record
(`schemas/<name>.example.json`) as a preset dictionary: its field names and common values are then back
references. ISA-L level 0 with fixed Huffman codes: a 2.7 KB routed record takes 479 bytes (1,456 deflated
alone), a 2.1 KB report 466 (1,027), in ~2.7 µs to deflate and ~2.3 µs to inflate, faster than deflating it
alone (~4 and ~4.5). The tag byte names the example, so a packed record unpacks anywhere in the same
release; nothing packed is kept past the run. `DeflatedBytesListCoder` deflates a list of bytes (a bounded
file sink's records per key and bundle) as one run, which finds its own repeats.
"""
import itertools
import pickle

import orjson
from apache_beam import coders
from isal import isal_zlib

from schemas import example_record

_JSON = b"j"
_PICKLE = b"p"
_BEAM = b"b"
_DEFLATED_LIKE = {b"r": "report", b"o": "routed_report"}  # tag byte -> the schema whose example is the dictionary
_TAG_OF = {schema: tag for tag, schema in _DEFLATED_LIKE.items()}
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


def pack_deflated(record, like, json_exact=False):
    """`pack`, deflated against the example record of the schema `like` ("report", "routed_report"): about
    a fifth of the packed bytes for a grouping to move (the benchmark's records). A record of another shape
    still comes back equal; it only deflates less."""
    compressor = isal_zlib.compressobj(0, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS, 9, isal_zlib.Z_FIXED,
                                       example_record(like))
    return _TAG_OF[like] + compressor.compress(pack(record, json_exact)) + compressor.flush()


def unpack(packed):
    """The record `pack` or `pack_deflated` packed."""
    like = _DEFLATED_LIKE.get(packed[:1])
    if like is not None:
        inflater = isal_zlib.decompressobj(-isal_zlib.MAX_WBITS, example_record(like))
        packed = inflater.decompress(memoryview(packed)[1:]) + inflater.flush()
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

    def estimate_size(self, values):
        """The length-prefixed run before deflation, for the runner's size metrics (which then show what
        deflating saves as still there). Why not the default (the length of `encode`): the runner samples the
        first elements of every step's input and output, and here an element is a whole list per key and
        bundle, so two in three lists deflated in a batch run were deflated only to be measured."""
        return sum(map(len, values)) + 4 * len(values)

    def is_deterministic(self):
        return True
