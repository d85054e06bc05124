"""ReadBoundedLines: JSON Lines files read line by line, each line held only up to a size limit.

Why not Beam's `ReadFromText`: it has no maximum line length. It must hold a whole line to emit it, and it
grows its read buffer with `bytes +=` per 8 KiB read, rescanning nothing but copying everything, so a line
costs memory equal to its length and time quadratic in it (here a 12 MB line took 11 s, a 50 MB line
5½ minutes), all before the parser could refuse it. This source keeps Beam's own file handling (a
`FileBasedSource`: globbing, splitting at offsets, compression by extension) and ReadFromText's record
semantics (lines end at `\\n` or `\\r\\n`, no empty record after a final newline), but its reader holds at
most `max_line_bytes` plus one chunk of a line: a longer line is skipped to its end without being kept
and emitted as an `OversizeLine` (where it is, how long, its first bytes), which ParseReports
dead-letters like any message over the limit.
"""
import dataclasses
import re

import apache_beam as beam
from apache_beam.io import filebasedsource
from apache_beam.io.filesystem import CompressionTypes

CHUNK_BYTES = 1 << 20
HEAD_BYTES = 1024
REPORT_ID_IN_HEAD = re.compile(rb'"reportId"\s*:\s*"([^"\\]{1,200})"')


@dataclasses.dataclass(frozen=True)
class OversizeLine:
    """A line longer than the limit, not read whole: its file, byte offset, length and first bytes."""

    file_name: str
    offset: int
    size: int
    head: bytes

    def report_id(self):
        """The reportId when the head shows it (a best guess for whoever replays the line), else None."""
        found = REPORT_ID_IN_HEAD.search(self.head)
        return found.group(1).decode("utf-8", "replace") if found else None

    def reason(self, max_bytes):
        return (f"message of {self.size} bytes exceeds the limit of {max_bytes} bytes (line at byte "
                f"{self.offset} of {self.file_name}, not read whole; the payload holds its first "
                f"{len(self.head)} bytes)")


class _LineReader:
    """Lines from a binary file object, read in chunks; never holds more than `limit` + a chunk of a line."""

    def __init__(self, handle, limit):
        self.handle = handle
        self.limit = limit
        self.chunk = b""
        self.position = 0  # of the next unread byte in `chunk`

    def next_line(self):
        """(the line without its terminator, or None when longer than the limit; its length; the bytes it
        took up with its terminator; None, or its first HEAD_BYTES when too long); None at the end of the file."""
        parts, held, consumed, tail, oversize = [], 0, 0, b"", False
        while True:
            if self.position >= len(self.chunk):
                self.chunk, self.position = self.handle.read(CHUNK_BYTES), 0
                if not self.chunk:
                    if consumed == 0:
                        return None
                    break
            end = self.chunk.find(b"\n", self.position)
            stop = len(self.chunk) if end < 0 else end + 1
            piece = self.chunk[self.position:stop]
            self.position = stop
            consumed += len(piece)
            tail = (tail + piece[-2:])[-2:]
            if not oversize:
                parts.append(piece)
                held += len(piece)
                if held > self.limit + 2:  # + room for "\r\n"; from here on only the length is counted
                    oversize, parts = True, [b"".join(parts)[:HEAD_BYTES]]
            if end >= 0:
                break
        terminator = 2 if tail == b"\r\n" else 1 if tail.endswith(b"\n") else 0
        length = consumed - terminator
        kept = b"".join(parts)
        if oversize or length > self.limit:
            return None, length, consumed, kept[:HEAD_BYTES]
        return kept[:length], length, consumed, None


class _BoundedLinesSource(filebasedsource.FileBasedSource):
    def __init__(self, file_pattern, max_line_bytes, compression_type=CompressionTypes.AUTO):
        super().__init__(file_pattern, compression_type=compression_type)
        self.max_line_bytes = max_line_bytes

    def read_records(self, file_name, range_tracker):
        """The lines that start in this range: like ReadFromText, a range not starting at 0 begins after
        the first line end at or past its start - 1."""
        start = range_tracker.start_position()
        with self.open_file(file_name) as handle:
            reader = _LineReader(handle, self.max_line_bytes)
            position = start
            if start > 0:
                handle.seek(start - 1)
                skipped = reader.next_line()
                if skipped is None:
                    return
                position = start - 1 + skipped[2]
            while range_tracker.try_claim(position):
                line = reader.next_line()
                if line is None:
                    return
                text, length, consumed, head = line
                yield text if head is None else OversizeLine(file_name, position, length, head)
                position += consumed


class ReadBoundedLines(beam.PTransform):
    """The lines of the files matching `file_pattern` as bytes; a line over `max_line_bytes` as an
    `OversizeLine`."""

    def __init__(self, file_pattern, max_line_bytes):
        super().__init__()
        self.file_pattern = file_pattern
        self.max_line_bytes = max_line_bytes

    def expand(self, pbegin):
        return pbegin | beam.io.Read(_BoundedLinesSource(self.file_pattern, self.max_line_bytes))
