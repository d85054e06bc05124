"""Hash banks: named lists of known hashes, read from CSV or Parquet and indexed per signal type.

A bank file has exactly the columns `hash_type,hash_value,bank,label,external_id` (external_id may be
empty or absent); a `VPDQ` row holds one whole video, its frames as `VPdqSignal` text. Several files load
into one `BankIndexes`; exact types are looked up in a dict, perceptual types in a Hamming range search at
the signal's default threshold (`code_search.py`), vPDQ videos in a `VideoIndex`. A bad row stops the load
with an error naming the file and line, so a broken bank is never half-loaded.
"""
import csv
import dataclasses
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.matching.code_search import codes_from_hex, range_search
from transforms.matching.signals import VPdqSignal, signal_for
from transforms.matching.video_index import VideoIndex
from transforms.plumbing.reference_files import fingerprint, stage

COLUMNS = ("hash_type", "hash_value", "bank", "label", "external_id")
REQUIRED = ("hash_type", "hash_value", "bank")


class BankFileError(ValueError):
    """A bank file that cannot be used, with where and why."""


@dataclasses.dataclass(frozen=True)
class BankEntry:
    signal: type
    value: str
    bank: str
    label: str | None = None
    external_id: str | None = None

    def as_match(self, distance, **video_fields):
        """The match record every sink receives (video matches add their percentages and segments)."""
        return {"bank": self.bank, "label": self.label, "externalId": self.external_id,
                "signalType": self.signal.name, "distance": int(distance), **video_fields}

    def as_row(self):
        return {"hash_type": self.signal.name, "hash_value": self.value, "bank": self.bank,
                "label": self.label or "", "external_id": self.external_id or ""}


def read_bank(path):
    """The entries of one bank file (CSV or Parquet, any Beam filesystem path staged once per worker, or
    `packaged:NAME`)."""
    source = stage(path)
    rows = _parquet_rows(source) if path.endswith(".parquet") else _csv_rows(source)
    return [entry_from_row(row, path, where) for where, row in rows]


def read_banks(paths):
    return [entry for path in paths for entry in read_bank(path)]


def _csv_rows(path):
    with FileSystems.open(path) as handle:
        reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
        _check_columns(reader.fieldnames or [], path)
        for row in reader:
            yield f"line {reader.line_num}", row


def _parquet_rows(path):
    with FileSystems.open(path) as handle:
        table = pq.read_table(pa.BufferReader(handle.read()))
    _check_columns(table.column_names, path)
    for number, row in enumerate(table.to_pylist(), start=1):
        yield f"row {number}", row


def _check_columns(names, path):
    unknown = sorted(set(names) - set(COLUMNS))
    missing = [name for name in REQUIRED if name not in names]
    if unknown or missing:
        raise BankFileError(f"{path}: expected columns {','.join(COLUMNS)}; "
                            f"missing {missing or 'none'}, unexpected {unknown or 'none'}")


def entry_from_row(row, path, where):
    try:
        signal = signal_for(row.get("hash_type") or "")
        value = signal.validate(row.get("hash_value") or "")
    except (KeyError, ValueError) as error:
        raise BankFileError(f"{path} {where}: {error.args[0]}") from None
    bank = (row.get("bank") or "").strip()
    if not bank:
        raise BankFileError(f"{path} {where}: empty bank name")
    return BankEntry(signal, value, bank, (row.get("label") or "").strip() or None,
                     (row.get("external_id") or "").strip() or None)


def write_bank(entries, path):
    """Writes entries as a bank file, Parquet or CSV by the path's suffix."""
    rows = [entry.as_row() for entry in entries]
    if path.endswith(".parquet"):
        table = pa.Table.from_pylist(rows, schema=pa.schema([(name, pa.string()) for name in COLUMNS]))
        with FileSystems.create(path) as handle:
            pq.write_table(table, handle)
        return
    with FileSystems.create(path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        writer = csv.DictWriter(text, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        text.flush()
        text.detach()


def bank_fingerprint(paths):
    """(path, size, mtime) of each bank file: cheap to re-check, changes when a bank is rewritten."""
    return fingerprint(paths)


class SignalIndex:
    """The entries of one signal type, searchable a batch of hashes at a time. Each query's hits come in
    bank entry order, whichever way they were found, so ties between matches sort the same way in every run."""

    def __init__(self, signal, entries):
        self.signal = signal
        self.entries = list(entries)
        if signal.perceptual:
            self._near = range_search(codes_from_hex([e.value for e in self.entries], signal.bits),
                                       signal.default_threshold)
        else:
            self._exact = {}  # value -> [(entry, 0)], built once: most lookups find nothing, a hit copies its list
            for entry in self.entries:
                self._exact.setdefault(entry.value, []).append((entry, 0))

    def search(self, values):
        """For each validated hash in `values`, a list of (entry, distance) within the threshold."""
        if not values or not self.entries:
            return [[] for _ in values]
        if not self.signal.perceptual:
            exact = self._exact
            return [list(exact[value]) if value in exact else [] for value in values]
        found = [[] for _ in values]
        rows, ids, distances = self._within_threshold(codes_from_hex(values, self.signal.bits))
        for row, number, distance in zip(rows.tolist(), ids.tolist(), distances.tolist()):
            found[row].append((self.entries[number], distance))
        return found

    def _within_threshold(self, queries):
        """(query row, entry number, distance) arrays of every pair within the threshold, by row then entry."""
        rows, ids, distances = self._near.search(queries)
        order = np.lexsort((ids, rows))
        return rows[order], ids[order], distances[order]


class BankIndexes:
    """Every bank entry, grouped and indexed by signal type."""

    def __init__(self, entries):
        by_signal = {}
        for entry in entries:
            by_signal.setdefault(entry.signal, []).append(entry)
        self.indexes = {signal: VideoIndex(group) if signal.video else SignalIndex(signal, group)
                        for signal, group in by_signal.items()}

    @classmethod
    def from_paths(cls, paths):
        return cls(read_banks(paths))

    @property
    def signals(self):
        return set(self.indexes)

    def __len__(self):
        return sum(len(index.entries) for index in self.indexes.values())

    def search(self, signal, values):
        index = self.indexes.get(signal)
        return index.search(values) if index else [[] for _ in values]

    def search_videos(self, queries, query_match_percent, bank_match_percent):
        """For each query video (its VPdqFeature list), [(entry, VideoMatch)] of the banked videos it matches."""
        index = self.indexes.get(VPdqSignal)
        return index.search(queries, query_match_percent, bank_match_percent) if index else [[] for _ in queries]

