"""Incident bundles: reports whose files share a content signature within one event-time window.

A report's signature is one deterministic choice among its files' signals, so that a report belongs to
exactly one bundle:
  1. a bank entry it matched, `bank:<bank>:<externalId>` (perceptual matches to the same entry meet here);
  2. otherwise an exact hash, `<type>:<hex>` (MD5, SHA1, SHA256, ...);
  the lexicographically smallest within the first class that has one. Perceptual hashes without a bank
  match form no signature (near-duplicates are not transitive, so they cannot name a bundle).
A report the producer already bundled (`batchedReport`, e.g. VIRAL_POTENTIAL_MEME) is a bundle by
itself: signature `esp-batch:<reportId>`, never merged with other reports.

The bundle id is a digest of (signature, window start), so `StampBundleIds` stamps each report before
routing without waiting for its group, and `BundleRepeats` writes the matching bundle record when the
window fires. Every signature forms a bundle, a single report included: every stamped id resolves to a
record, and a late report can still turn a bundle of one into a repeat (late pane). Bundles carry
counts of distinct users and ESPs, never the user ids themselves.
"""
import functools
import hashlib

import apache_beam as beam
from apache_beam.transforms import window

from schemas.tables import BUNDLE_SCHEMA
from transforms.plumbing.event_windows import (ON_TIME_PANE, in_window, late_firing_windows, pane_columns, utc,
                                      window_start_seconds)
from transforms.plumbing.metrics import counter
from transforms.plumbing.windowed_files import ParquetSink, WriteWindowedFiles

DEFAULT_WINDOW_SECONDS = 3600
EXACT_SIGNAL_TYPES = frozenset({"MD5", "SHA1", "SHA224", "SHA256", "SHA384", "SHA512"})
ESP_BATCH = "esp-batch"

def normal_signal_type(signal_type):
    """`sha-256` and `SHA256` name the same hash."""
    return signal_type.upper().replace("-", "").replace("_", "")


def content_signature(file_results, batched_reason, report_id):
    """The one signature a report is bundled under, or None when its files carry no usable signal."""
    if batched_reason:
        return f"{ESP_BATCH}:{report_id}"
    bank_entries = sorted(
        f"bank:{match['bank']}:{match['externalId']}"
        for file in file_results for match in file.get("matches") or [] if match.get("externalId"))
    if bank_entries:
        return bank_entries[0]
    exact_hashes = sorted(
        f"{normal_signal_type(digest['signalType']).lower()}:{digest['value'].lower()}"
        for file in file_results for digest in file.get("hashes") or []
        if normal_signal_type(digest["signalType"]) in EXACT_SIGNAL_TYPES)
    return exact_hashes[0] if exact_hashes else None


def report_signature(report):
    """Signature of an enriched report (before routing: `_hashes` from EnrichHashes)."""
    return content_signature(report.get("_hashes", {}).get("files") or [],
                             (report.get("batchedReport") or {}).get("reason"), report["reportId"])


def record_signature(record):
    """Signature of a routed record (schemas/routed_report.avsc); agrees with `report_signature`."""
    return content_signature(record.get("files") or [], record.get("batchedReason"), record["reportId"])


def signature_kind(signature):
    prefix = signature.split(":", 1)[0]
    return {"bank": "bank_entry", ESP_BATCH: "esp_batch"}.get(prefix, "exact_hash")


def bundle_id(signature, window_start):
    """Deterministic from (signature, window start): the stamp and the bundle record agree without a join."""
    digest = hashlib.sha256(f"{signature}@{window_start}".encode("utf-8")).hexdigest()
    return f"bnd-{digest[:24]}"


class _StampBundleIdFn(beam.DoFn):
    def __init__(self, window_seconds):
        self.window_seconds = window_seconds
        self.stamped = counter("bundle_stamped")

    def process(self, report, timestamp=beam.DoFn.TimestampParam):
        signature = report_signature(report)
        if signature is None:
            yield report
            return
        self.stamped.inc()
        yield {**report, "_bundleId": bundle_id(signature, window_start_seconds(timestamp, self.window_seconds))}


class StampBundleIds(beam.PTransform):
    """Adds `_bundleId` to each enriched report that has a signature (a copy; routing is untouched)."""

    def __init__(self, window_seconds=DEFAULT_WINDOW_SECONDS):
        super().__init__()
        self.window_seconds = window_seconds

    def expand(self, reports):
        return reports | "Stamp" >> beam.ParDo(_StampBundleIdFn(self.window_seconds))


def sighting(record, timestamp):
    """(event seconds, user, esp, jurisdiction) of a routed record; the user key never leaves the accumulator."""
    user = (record.get("reportedUser") or {}).get("espIdentifier")
    return timestamp.micros / 1e6, (record["espId"], user) if user else None, record["espId"], record["jurisdiction"]


class _KeyBySignatureFn(beam.DoFn):
    """Streaming: (signature, sighting); the window comes from the windowing that follows."""

    def process(self, record, timestamp=beam.DoFn.TimestampParam):
        signature = record_signature(record)
        if signature is not None:
            yield signature, sighting(record, timestamp)


class _KeyBySignatureAndWindowFn(beam.DoFn):
    """Batch: ((signature, window start), sighting), grouped in the global window."""

    def __init__(self, window_seconds):
        self.window_seconds = window_seconds

    def process(self, record, timestamp=beam.DoFn.TimestampParam):
        signature = record_signature(record)
        if signature is not None:
            yield (signature, window_start_seconds(timestamp, self.window_seconds)), sighting(record, timestamp)


class BundleFn(beam.CombineFn):
    """First/last seen, report count and the distinct users, ESPs and jurisdictions of one bundle."""

    def create_accumulator(self):
        return [float("inf"), float("-inf"), 0, set(), set(), set()]

    def add_input(self, acc, sighting):
        seen, user, esp, jurisdiction = sighting
        acc[0], acc[1], acc[2] = min(acc[0], seen), max(acc[1], seen), acc[2] + 1
        if user is not None:
            acc[3].add(user)
        acc[4].add(esp)
        acc[5].add(jurisdiction)
        return acc

    def merge_accumulators(self, accs):
        merged = self.create_accumulator()
        for acc in accs:
            merged[0], merged[1], merged[2] = min(merged[0], acc[0]), max(merged[1], acc[1]), merged[2] + acc[2]
            for index in (3, 4, 5):
                merged[index] |= acc[index]
        return merged

    def extract_output(self, acc):
        return acc


def bundle_record(signature, start, end, accumulator, pane):
    """The bundle row: window bounds in epoch seconds, the combined accumulator, pane columns."""
    first, last, reports, users, esps, jurisdictions = accumulator
    return {
        "bundle_id": bundle_id(signature, start),
        "signature": signature,
        "signature_kind": signature_kind(signature),
        "window_start": utc(start),
        "window_end": utc(end),
        "first_seen": utc(first),
        "last_seen": utc(last),
        "reports": reports,
        "users": len(users),
        "esps": len(esps),
        "jurisdictions": sorted(jurisdictions),
        **pane,
    }


class _BundleRecordFn(beam.DoFn):
    def process(self, keyed, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        signature, accumulator = keyed
        yield bundle_record(signature, int(win.start.micros // 1_000_000), int(win.end.micros // 1_000_000),
                            accumulator, pane_columns(pane))


def batch_bundle_record(window_seconds):
    """Batch: ((signature, window start), accumulator) -> the bundle row, timestamped inside its window."""

    def to_record(keyed):
        (signature, start), accumulator = keyed
        return in_window(bundle_record(signature, start, start + window_seconds, accumulator, ON_TIME_PANE),
                         start, window_seconds)

    return to_record


def date_partition(row):
    return f"dt={row['window_start']:%Y-%m-%d}"


class BundleRepeats(beam.PTransform):
    """Groups routed records by (signature, fixed event-time window); writes `bundles/dt=.../*.parquet`.

    On-time pane when the watermark passes the window, then one accumulating late pane per late report
    (within `allowed_lateness_seconds`); a query keeps the latest pane per bundle_id. Returns the records.
    """

    def __init__(self, output_dir, window_seconds=DEFAULT_WINDOW_SECONDS, allowed_lateness_seconds=24 * 3600):
        super().__init__()
        self.output_dir = output_dir
        self.window_seconds = window_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(self, routed_records):
        bundles = self.batch_bundles(routed_records) if routed_records.is_bounded else (
            routed_records
            | "KeyBySignature" >> beam.ParDo(_KeyBySignatureFn())
            | "BundleWindows" >> late_firing_windows(
                window.FixedWindows(self.window_seconds), self.allowed_lateness_seconds, accumulate=True)
            | "CombineBundle" >> beam.CombinePerKey(BundleFn())
            | "ToBundleRecord" >> beam.ParDo(_BundleRecordFn()))
        _ = bundles | "WriteBundleFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/bundles",
            destination=date_partition,
            sink=functools.partial(ParquetSink, BUNDLE_SCHEMA),
            suffix=".parquet",
            window_seconds=self.window_seconds,
            allowed_lateness_seconds=self.allowed_lateness_seconds)
        return bundles

    def batch_bundles(self, routed_records):
        """Keyed by (signature, window start) in the global window: one on-time pane per bundle."""
        return (routed_records
                | "KeyBySignatureAndWindow" >> beam.ParDo(_KeyBySignatureAndWindowFn(self.window_seconds))
                | "CombineBundle" >> beam.CombinePerKey(BundleFn())
                | "ToBundleRecord" >> beam.Map(batch_bundle_record(self.window_seconds)))
