"""Matching query videos against banked vPDQ videos through one PDQ range search.

Every matchable frame of every banked video (quality >= 50, each distinct hash once per video) goes into
one Hamming range search (`code_search.py`: the multi-index past a few dozen frames) with a frame -> video
table, so a query costs one lookup per query frame. From the hits, per (query, banked video): the share of
the query's frames within the frame threshold of some frame of that video, and the share of that video's
frames some query frame is within the threshold of (python-threatexchange's `query_match_percent` and
`compared_match_percent`). A pair matches when both reach their thresholds.
"""
import dataclasses

import numpy as np

from transforms.matching.code_search import codes_from_hex, range_search
from transforms.matching.signals import VPdqSignal


@dataclasses.dataclass
class VideoMatch:
    """How one query video matched one banked video (or image, for frame-level hits)."""

    query_match_percent: float
    bank_match_percent: float
    distance: int  # the closest frame pair
    segments: list  # [(start, end)] of the query's matched frames, in seconds

    def as_fields(self):
        return {"queryMatchPercent": round(self.query_match_percent, 2),
                "bankMatchPercent": round(self.bank_match_percent, 2),
                "segments": [{"start": start, "end": end} for start, end in self.segments]}


def matched_segments(timestamps, interval=1.0):
    """Runs of matched frame times no further apart than 1.5 sampling intervals, as (start, end)."""
    segments = []
    for timestamp in sorted(timestamps):
        if segments and timestamp - segments[-1][1] <= 1.5 * interval:
            segments[-1][1] = timestamp
        else:
            segments.append([timestamp, timestamp])
    return [(start, end) for start, end in segments]


class VideoIndex:
    """Banked vPDQ videos, searchable a batch of query videos at a time."""

    def __init__(self, entries, frame_threshold=VPdqSignal.frame_threshold):
        self.entries = list(entries)
        frames = [VPdqSignal.matchable(VPdqSignal.parse(entry.value)) for entry in self.entries]
        self.frame_counts = np.array([len(video) for video in frames], dtype=np.int64)
        self.frame_video = np.repeat(np.arange(len(frames), dtype=np.int64), self.frame_counts)
        hexes = [feature.pdq_hex for video in frames for feature in video]
        self._index = range_search(codes_from_hex(hexes, 256), frame_threshold) if hexes else None

    def __len__(self):
        return len(self.entries)

    def search(self, queries, query_match_percent=VPdqSignal.query_match_percent,
               bank_match_percent=VPdqSignal.bank_match_percent):
        """For each query (a list of VPdqFeature), a list of (entry, VideoMatch) reaching both thresholds."""
        found = [[] for _ in queries]
        kept = [VPdqSignal.matchable(query) for query in queries]
        hexes = [feature.pdq_hex for query in kept for feature in query]
        if not hexes or self._index is None:
            return found
        query_of_frame = np.repeat(np.arange(len(kept)), [len(query) for query in kept])
        rows, ids, distances = self._index.search(codes_from_hex(hexes, 256))
        if not len(rows):
            return found
        videos = self.frame_video[ids]
        queries_hit = query_of_frame[rows]
        order = np.lexsort((videos, queries_hit))
        pairs = np.stack([queries_hit[order], videos[order]], axis=1)
        starts = np.flatnonzero(np.r_[True, np.any(pairs[1:] != pairs[:-1], axis=1)])
        ends = np.r_[starts[1:], len(order)]
        first_frame = np.r_[0, np.cumsum([len(query) for query in kept])]
        for start, end in zip(starts.tolist(), ends.tolist()):
            query, video = int(pairs[start, 0]), int(pairs[start, 1])
            hit = order[start:end]
            query_frames = np.unique(rows[hit]) - first_frame[query]
            match = VideoMatch(100.0 * len(query_frames) / len(kept[query]),
                               100.0 * len(np.unique(ids[hit])) / int(self.frame_counts[video]),
                               int(distances[hit].min()),
                               matched_segments([kept[query][frame].timestamp for frame in query_frames.tolist()]))
            if match.query_match_percent >= query_match_percent and match.bank_match_percent >= bank_match_percent:
                found[query].append((self.entries[video], match))
        return found
