"""Append-only JSON Lines logs: referral and acknowledgement events, and the audit log.

Lines are appended under an exclusive lock with O_APPEND, files are created owner-only (0600), and
readers take only complete lines, so a reader never sees half an event. Nothing here rewrites a line.
The audit log chains each line to the one before it (`prev`: SHA-256 of the previous line), so a line
changed or removed afterwards breaks the chain (`verify_chain`).
"""
import fcntl
import hashlib
import json
import os
import pathlib

GENESIS = "0" * 64


def _open_for_append(path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def _line_hash(line):
    return hashlib.sha256(line.encode()).hexdigest()


class EventLog:
    def __init__(self, path):
        self.path = pathlib.Path(path)

    def append(self, event):
        line = json.dumps(event, sort_keys=True, separators=(",", ":")) + "\n"
        descriptor = _open_for_append(self.path)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.write(descriptor, line.encode())
        finally:
            os.close(descriptor)

    def read_from(self, offset):
        """`(events, next_offset)`: the complete lines after byte `offset`."""
        if not self.path.exists():
            return [], offset
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
        complete = data[:data.rfind(b"\n") + 1]
        events = [json.loads(line) for line in complete.splitlines() if line.strip()]
        return events, offset + len(complete)


class AuditLog:
    """Who called what, when, with what answer; each line chained to the previous one."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.written = (None, None)  # (file size after this process's last line, that line's hash)

    def _last_line_hash(self, descriptor):
        """The hash of the file's last line: remembered when this process wrote it, else read from the file."""
        size = os.fstat(descriptor).st_size
        if size == 0:
            return GENESIS
        if self.written[0] == size:
            return self.written[1]
        with open(self.path, "rb") as handle:
            handle.seek(max(0, size - 65536))
            last = handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        return _line_hash(last.decode())

    def append(self, entry):
        descriptor = _open_for_append(self.path)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            body = {**entry, "prev": self._last_line_hash(descriptor)}
            line = json.dumps(body, sort_keys=True, separators=(",", ":"))
            os.write(descriptor, (line + "\n").encode())
            self.written = (os.fstat(descriptor).st_size, _line_hash(line))
        finally:
            os.close(descriptor)

    def entries(self):
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def verify_chain(self):
        """`(lines, first_broken_line_number or None)`."""
        previous = GENESIS
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        for number, line in enumerate(lines, 1):
            if json.loads(line).get("prev") != previous:
                return len(lines), number
            previous = _line_hash(line)
        return len(lines), None
