"""The hash-matching core shared by the pipeline, `tipline match` and `tipline explain`.

For each file of a report: gather the producer's hashes (validated) and the hashes of its media, then
look every hash up in the banks, one index query per signal type for a whole batch of reports. A file
within threshold of a negative-bank entry (known benign content) keeps its hashes but gets no matches: it
names the nearest such entry as its `benignMatch` instead, and alone it makes a report `known_benign`, not new.
A video (or animated image) is hashed exactly and with vPDQ; its frames are matched against banked
videos (per-video percentages) and banked PDQ images (frame-level hits), and only a count of them leaves
the worker.
"""
import collections
import dataclasses

from transforms.matching.banks import BankIndexes
from transforms.matching.media import MAX_MEDIA_BYTES, MediaBudget, MediaRoots, UnhashableMedia, hash_media, media_bytes
from transforms.matching.signals import Md5Signal, PdqSignal, PHashSignal, Sha1Signal, VPdqSignal, signal_for
from transforms.matching.video import VideoLimits, hash_video, is_video
from transforms.matching.video_index import VideoMatch, matched_segments

COMPUTED_SIGNALS = (Md5Signal, Sha1Signal, PHashSignal, PdqSignal)


class FileHashes:
    """One file's hashes on the way to its `_hashes` record: hashes as [(signal, value, source)], then the
    matches `match_files` finds. A plain class with slots: a dataclass's generated `__init__` (its default
    factory) cost twice as much, for three of these a report."""

    __slots__ = ("file_id", "status", "notes", "hashes", "matches", "video", "benign_match")

    def __init__(self, file_id, status, notes, hashes, video=None):
        self.file_id = file_id
        self.status = status
        self.notes = notes
        self.hashes = hashes
        self.matches = []
        self.video = video  # VideoHashes of a video file
        self.benign_match = None

    def as_record(self):
        return {
            "fileId": self.file_id,
            "mediaStatus": self.status,
            "mediaError": "; ".join(self.notes) or None,
            "hashes": [{"signalType": s.name, "value": v, "source": source} for s, v, source in self.hashes],
            "video": self.video.summary() if self.video else None,
            "matches": self.matches,
            "benignMatch": self.benign_match,
        }


@dataclasses.dataclass(frozen=True)
class VideoMatching:
    """How videos are sampled and when a video match counts (the reference's defaults)."""

    query_match_percent: float = VPdqSignal.query_match_percent
    bank_match_percent: float = VPdqSignal.bank_match_percent
    seconds_per_frame: float = 1.0
    limits: VideoLimits = VideoLimits()


class HashMatcher:
    """Banks plus negative banks, the signals to compute from media, and where media may be read from."""

    def __init__(self, banks, negative_banks=None, media_roots=(), video=VideoMatching()):
        self.banks = banks
        self.media_roots = MediaRoots.of(media_roots)
        self.negative_banks = negative_banks or BankIndexes([])
        self.video = video
        self.signals = tuple(COMPUTED_SIGNALS) + tuple(
            sorted({s for s in banks.signals - set(COMPUTED_SIGNALS) if not s.video}, key=lambda signal: signal.name))

    @classmethod
    def from_banks(cls, bank_paths, negative_bank_paths=(), media_roots=(), video=VideoMatching()):
        return cls(BankIndexes.from_paths(bank_paths), BankIndexes.from_paths(negative_bank_paths), media_roots, video)

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
        """Each file's hashes, the report's files sharing one media budget (made only when some file has
        media: most reports carry hashes alone)."""
        files = report.get("files") or []
        if not any(map(has_media, files)):
            return [hashes_without_media(file) for file in files]
        budget = MediaBudget()
        return [self.file_hashes(file, budget) for file in files]

    def file_hashes(self, file, budget=None):
        """A file's provided and computed hashes, before matching; bad parts become notes, not errors."""
        if not has_media(file):
            return hashes_without_media(file)
        hashes, notes = provided_hashes(file.get("originalFileHashes") or [])
        video = None
        try:
            data = media_bytes(file, self.media_roots, max_bytes=max(MAX_MEDIA_BYTES, self.video.limits.max_bytes),
                               budget=budget)
            if is_video(data):
                hashes += [(signal, signal.hash_bytes(data), "computed") for signal in self.exact_signals()]
                video = self.video_hashes(data, budget)
                status = "hashed"
            else:
                if len(data) > MAX_MEDIA_BYTES:
                    raise UnhashableMedia(f"media larger than {MAX_MEDIA_BYTES} bytes")
                hashes += [(signal, value, "computed") for signal, value in hash_media(data, self.signals, budget)]
                status = "hashed"
        except UnhashableMedia as error:
            hashes += [(signal, value, "computed") for signal, value in getattr(error, "hashes", [])]
            notes.insert(0, str(error))
            status = "unhashable"
        return FileHashes(file.get("fileId"), status, notes, hashes, video=video)

    def video_hashes(self, data, budget):
        """The video's vPDQ, its decoding charged to the report's media budget and stopped when that is spent."""
        if budget is None:
            return hash_video(data, self.video.seconds_per_frame, self.video.limits)
        budget.check_time_left()
        limits = dataclasses.replace(self.video.limits, max_decode_seconds=min(
            self.video.limits.max_decode_seconds, budget.seconds_left))
        return budget.timed(lambda: hash_video(data, self.video.seconds_per_frame, limits))

    def exact_signals(self):
        return [signal for signal in self.signals if not signal.perceptual]

    def match_files(self, files):
        """Fills each file's matches, querying each signal's index once for all the files."""
        by_signal = {}
        for number, file in enumerate(files):
            for signal, value, _ in file.hashes:
                by_signal.setdefault(signal, []).append((number, value))
        benign = {}  # file number -> its nearest negative-bank entry, as a match record
        found = collections.defaultdict(dict)  # file number -> {entry key: match record}
        negative_signals, bank_signals = self.negative_banks.signals, self.banks.signals
        for signal, pairs in by_signal.items():  # a signal no bank holds is not searched: it finds nothing
            values = [value for _, value in pairs]
            if signal in negative_signals:
                for (number, _), hits in zip(pairs, self.negative_banks.search(signal, values)):
                    for entry, distance in hits:
                        if number not in benign or distance < benign[number]["distance"]:
                            benign[number] = entry.as_match(distance)
            if signal not in bank_signals:
                continue
            for (number, _), hits in zip(pairs, self.banks.search(signal, values)):
                for entry, distance in hits:
                    key = (entry.bank, entry.label, entry.external_id, signal.name)
                    if key not in found[number] or distance < found[number][key]["distance"]:
                        found[number][key] = entry.as_match(distance)
        self.match_videos(files, benign, found)
        for number, matches in found.items():
            if number not in benign:
                files[number].matches = sorted(matches.values(), key=lambda m: (m["distance"], m["bank"]))
        for number, match in benign.items():
            files[number].benign_match = match

    def match_videos(self, files, benign, found):
        """Video files against banked videos and, frame by frame, banked PDQ images."""
        numbers = [number for number, file in enumerate(files) if file.video]
        queries = [files[number].video.features for number in numbers]
        thresholds = (self.video.query_match_percent, self.video.bank_match_percent)
        for number, hits in zip(numbers, self.negative_banks.search_videos(queries, *thresholds)):
            for entry, match in hits:  # the nearest known-benign video names the file's benignMatch
                if number not in benign or match.distance < benign[number]["distance"]:
                    benign[number] = entry.as_match(match.distance, **match.as_fields())
        for number, hits in zip(numbers, self.banks.search_videos(queries, *thresholds)):
            for entry, match in hits:
                found[number][(entry.bank, entry.label, entry.external_id, VPdqSignal.name)] = (
                    entry.as_match(match.distance, **match.as_fields()))
        for number, query in zip(numbers, queries):
            for entry, match in self.image_hits(query):
                key = (entry.bank, entry.label, entry.external_id, PdqSignal.name)
                if key not in found[number] or match.distance < found[number][key]["distance"]:
                    found[number][key] = entry.as_match(match.distance, **match.as_fields())

    def image_hits(self, features):
        """[(banked PDQ image entry, VideoMatch)] for images some frame of the video is within threshold of."""
        frames = VPdqSignal.matchable(features)
        by_entry = {}
        for frame, hits in zip(frames, self.banks.search(PdqSignal, [frame.pdq_hex for frame in frames])):
            for entry, distance in hits:
                by_entry.setdefault(entry, []).append((frame.timestamp, distance))
        return [(entry, VideoMatch(100.0 * len(hits) / len(frames), 100.0, min(d for _, d in hits),
                                   matched_segments([t for t, _ in hits], self.video.seconds_per_frame)))
                for entry, hits in by_entry.items()]


def has_media(file):
    """Whether the file carries media to read (what `media_bytes` reads: `content`, else `contentUri`)."""
    return bool(file.get("content") or file.get("contentUri"))


def hashes_without_media(file):
    """The hashes of a file that carries no media: the producer's, if any."""
    hashes, notes = provided_hashes(file.get("originalFileHashes") or [])
    return FileHashes(file.get("fileId"), "provided_only" if hashes else "no_media", notes, hashes)


def provided_hashes(provided):
    """The producer's hashes that name a known type and hold a valid value, and a note per rejected one."""
    hashes, notes = [], []
    for position, item in enumerate(provided, start=1):
        try:
            signal = signal_for(item.get("hashType") or "")
            if signal.video:
                raise ValueError(f"{signal.name} is computed from the video, not taken from producers")
            hashes.append((signal, signal.validate(item.get("value") or ""), "provided"))
        except (KeyError, ValueError) as error:
            notes.append(f"provided hash {position} ignored: {error.args[0]}")
    return hashes, notes


def match_summary(files):
    """known: some file matched; new: some file not known benign had media or hashes; known_benign: the only
    media is known benign content (a negative-bank entry), which is no sign of an unidentified victim;
    no_media: nothing to match on."""
    new = benign = False
    for file in files:
        if file.matches:
            return "known"
        if file.benign_match:
            benign = True
        elif file.benign_match is None and (file.hashes or file.status in ("hashed", "unhashable")):
            new = True
    return "new" if new else "known_benign" if benign else "no_media"
