"""The hash-matching core shared by the pipeline, `tipline match` and `tipline explain`.

For each file of a report: gather the producer's hashes (validated) and the hashes of its media, then
look every hash up in the banks, one index query per signal type for a whole batch of reports. A file
within threshold of a negative-bank entry (known benign content) keeps its hashes but gets no matches: it
names the nearest such entry as its `benignMatch` instead, and alone it makes a report `known_benign`, not new.
"""
import dataclasses

from transforms.matching.banks import BankIndexes
from transforms.matching.media import MediaBudget, MediaRoots, UnhashableMedia, hash_media, media_bytes
from transforms.matching.signals import Md5Signal, PdqSignal, PHashSignal, Sha1Signal, signal_for

COMPUTED_SIGNALS = (Md5Signal, Sha1Signal, PHashSignal, PdqSignal)


@dataclasses.dataclass
class FileHashes:
    """One file's hashes on the way to its `_hashes` record."""

    file_id: str | None
    status: str
    notes: list
    hashes: list  # [(signal, value, source)]
    matches: list = dataclasses.field(default_factory=list)
    benign_match: dict | None = None

    def as_record(self):
        return {
            "fileId": self.file_id,
            "mediaStatus": self.status,
            "mediaError": "; ".join(self.notes) or None,
            "hashes": [{"signalType": s.name, "value": v, "source": source} for s, v, source in self.hashes],
            "matches": self.matches,
            "benignMatch": self.benign_match,
        }


class HashMatcher:
    """Banks plus negative banks, the signals to compute from media, and where media may be read from."""

    def __init__(self, banks, negative_banks=None, media_roots=()):
        self.banks = banks
        self.media_roots = MediaRoots.of(media_roots)
        self.negative_banks = negative_banks or BankIndexes([])
        self.signals = tuple(COMPUTED_SIGNALS) + tuple(
            sorted(banks.signals - set(COMPUTED_SIGNALS), key=lambda signal: signal.name))

    @classmethod
    def from_banks(cls, bank_paths, negative_bank_paths=(), media_roots=()):
        return cls(BankIndexes.from_paths(bank_paths), BankIndexes.from_paths(negative_bank_paths), media_roots)

    def enrich_report(self, report):
        """The report's `_hashes` value: per-file hashes and matches, and the report's match summary."""
        return self.enrich_reports([report])[0]

    def enrich_reports(self, reports):
        """`enrich_report` for a batch, with one bank lookup per signal type for the whole batch."""
        per_report = [self.report_file_hashes(report) for report in reports]
        self.match_files([file for files in per_report for file in files])
        return [{"files": [file.as_record() for file in files], "matchSummary": match_summary(files)}
                for files in per_report]

    def report_file_hashes(self, report):
        """Each file's hashes, the report's files sharing one media budget."""
        budget = MediaBudget()
        return [self.file_hashes(file, budget) for file in report.get("files") or []]

    def file_hashes(self, file, budget=None):
        """A file's provided and computed hashes, before matching; bad parts become notes, not errors."""
        hashes, notes = provided_hashes(file.get("originalFileHashes") or [])
        try:
            data = media_bytes(file, self.media_roots, budget=budget)
            if data is None:
                status = "provided_only" if hashes else "no_media"
            else:
                hashes += [(signal, value, "computed") for signal, value in hash_media(data, self.signals, budget)]
                status = "hashed"
        except UnhashableMedia as error:
            hashes += [(signal, value, "computed") for signal, value in getattr(error, "hashes", [])]
            notes.insert(0, str(error))
            status = "unhashable"
        return FileHashes(file.get("fileId"), status, notes, hashes)

    def match_files(self, files):
        """Fills each file's matches, querying each signal's index once for all the files."""
        by_signal = {}
        for number, file in enumerate(files):
            for signal, value, _ in file.hashes:
                by_signal.setdefault(signal, []).append((number, value))
        benign = {}  # file number -> its nearest negative-bank entry, as a match record
        found = {number: {} for number in range(len(files))}
        for signal, pairs in by_signal.items():
            values = [value for _, value in pairs]
            for (number, _), hits in zip(pairs, self.negative_banks.search(signal, values)):
                for entry, distance in hits:
                    if number not in benign or distance < benign[number]["distance"]:
                        benign[number] = entry.as_match(distance)
            for (number, _), hits in zip(pairs, self.banks.search(signal, values)):
                for entry, distance in hits:
                    key = (entry.bank, entry.label, entry.external_id, signal.name)
                    if key not in found[number] or distance < found[number][key]["distance"]:
                        found[number][key] = entry.as_match(distance)
        for number, file in enumerate(files):
            file.benign_match = benign.get(number)
            if number not in benign:
                file.matches = sorted(found[number].values(), key=lambda m: (m["distance"], m["bank"]))


def provided_hashes(provided):
    """The producer's hashes that name a known type and hold a valid value, and a note per rejected one."""
    hashes, notes = [], []
    for position, item in enumerate(provided, start=1):
        try:
            signal = signal_for(item.get("hashType") or "")
            hashes.append((signal, signal.validate(item.get("value") or ""), "provided"))
        except (KeyError, ValueError) as error:
            notes.append(f"provided hash {position} ignored: {error.args[0]}")
    return hashes, notes


def match_summary(files):
    """known: some file matched; new: some file not known benign had media or hashes; known_benign: the only
    media is known benign content (a negative-bank entry), which is no sign of an unidentified victim;
    no_media: nothing to match on."""
    if any(file.matches for file in files):
        return "known"
    if any((file.hashes or file.status in ("hashed", "unhashable")) and file.benign_match is None for file in files):
        return "new"
    if any(file.benign_match for file in files):
        return "known_benign"
    return "no_media"
