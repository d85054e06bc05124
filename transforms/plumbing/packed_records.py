"""Records packed as bytes to cross a grouping: `marshal` for plain Python values, else pickle.

Why not Beam's coder for a dict (FastPrimitivesCoder): it encodes and decodes a report field by field, and
the local runner (FnApiRunner) decodes and re-encodes every grouped value once more, so a 3 KB report
crossing a GroupByKey cost four coder passes plus a pickled `Timestamp` when it travelled with its event
time. Packed, it costs one dump and one load, and the grouping moves bytes.

Why marshal: it gives back exactly what it was given (tuples, NaN, big integers, str subclasses refused
rather than changed), where orjson writes NaN as null and tuples as lists, so it would need a second load
to check each record; marshal's dump and load together cost less than that. Its format is that of the
running Python version, as pickle's protocol is: packed bytes live only between two steps of one run.
"""
import marshal
import pickle

_MARSHAL = b"m"
_PICKLE = b"p"


def pack(record):
    """`record` as bytes that `unpack` turns back into an equal record of the same types."""
    try:
        return _MARSHAL + marshal.dumps(record)
    except ValueError:  # an object marshal does not know (a class instance, a subclass of a builtin type)
        return _PICKLE + pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(packed):
    """The record `pack` packed."""
    body = memoryview(packed)[1:]
    return marshal.loads(body) if packed[:1] == _MARSHAL else pickle.loads(body)
