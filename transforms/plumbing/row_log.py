"""Rising row numbers kept as the gaps between them, each a LEB128 varint, in one bytearray.

Why: a window's table (transforms/trends.py, `ReportTable`) keeps per key the rows of the records counted
under it. A key's rows only rise, and most keys (the total, an ESP, a country) come back within a few
records, so a gap fits in one byte where an array of 32-bit rows takes four.
"""
import numpy as np

_LOW_BITS = 0x7F
_MORE = 0x80


class RowLog:
    """Rows appended in rising order; `rows()` gives them back as a numpy array."""
    __slots__ = ("gaps", "last")

    def __init__(self):
        self.gaps = bytearray()
        self.last = -1

    def append(self, row):
        gap = row - self.last
        if gap < 1:
            raise ValueError(f"row {row} does not rise past {self.last}")
        self.last = row
        while gap > _LOW_BITS:
            self.gaps.append(gap & _LOW_BITS | _MORE)
            gap >>= 7
        self.gaps.append(gap)

    def extend_moved(self, other, offset):
        """Appends `other`'s rows, each moved on by `offset` (past this log's last row): its first gap is
        written again, the rest are copied as they are."""
        if not other.gaps:
            return
        first_ends = 0
        while other.gaps[first_ends] & _MORE:
            first_ends += 1
        first_ends += 1
        first_row = int(varint_values(other.gaps[:first_ends])[0]) - 1
        self.append(first_row + offset)
        self.gaps += memoryview(other.gaps)[first_ends:]
        self.last = other.last + offset

    def rows(self):
        return np.cumsum(varint_values(self.gaps)) - 1

    def __len__(self):
        """How many rows: a varint's last byte is the one without the continuation bit."""
        return int(np.count_nonzero(np.frombuffer(self.gaps, dtype=np.uint8) < _MORE))


def varint_values(packed):
    """The LEB128 varints in `packed`, decoded at once: each byte's seven low bits moved to their place
    and summed per varint."""
    data = np.frombuffer(packed, dtype=np.uint8)
    if not data.size:
        return np.zeros(0, dtype=np.int64)
    ends = data < _MORE
    if ends.all():
        return data.astype(np.int64)
    starts = np.concatenate(([0], np.flatnonzero(ends)[:-1] + 1))
    varint_of_byte = np.cumsum(ends) - ends
    place = np.arange(data.size) - starts[varint_of_byte]
    return np.add.reduceat((data & _LOW_BITS).astype(np.int64) << (7 * place), starts)
