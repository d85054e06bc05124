"""Incident bundles: reports whose files share a content signature within one event-time window.

A report's signature (transforms/reports/signatures.py) is one deterministic choice among its files'
signals, so that a report belongs to exactly one bundle: a bank entry it matched, else an exact hash; a
report the producer already bundled (`batchedReport`) is a bundle by itself.

The bundle id is a digest of (signature, window start), so `StampBundleIds` stamps each report before
routing without waiting for its group, and `BundleRepeats` writes the matching bundle record when the
window fires. Every signature forms a bundle, a single report included: every stamped id resolves to a
record, and a late report can still turn a bundle of one into a repeat (late pane). Bundles carry
counts of distinct users and ESPs, never the user ids themselves.
"""
import dataclasses
import functools
import hashlib

import apache_beam as beam
import pyarrow as pa

from transforms.plumbing.event_windows import CombinePerKeyAndWindow, TallyCombineFn, utc, window_start_seconds
from transforms.plumbing.metrics import counter
from transforms.plumbing.windowed_files import ParquetSink, WriteWindowedFiles
from transforms.reports.signatures import record_signature, report_signature, signature_kind

DEFAULT_WINDOW_SECONDS = 3600

BUNDLE_SCHEMA = pa.schema([
    ("bundle_id", pa.string()),
    ("signature", pa.string()),
    ("signature_kind", pa.string()),
    ("window_start", pa.timestamp("us", tz="UTC")),
    ("window_end", pa.timestamp("us", tz="UTC")),
    ("first_seen", pa.timestamp("us", tz="UTC")),
    ("last_seen", pa.timestamp("us", tz="UTC")),
    ("reports", pa.int64()),
    ("users", pa.int64()),
    ("esps", pa.int64()),
    ("jurisdictions", pa.list_(pa.string())),
    ("pane_index", pa.int64()),
    ("pane_timing", pa.string()),
])


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


def signature_and_sighting(record_and_time):
    """([the signature of a (routed record, event time)], its sighting); no key when its files have none."""
    record, timestamp = record_and_time
    signature = record_signature(record)
    return ([signature] if signature is not None else []), sighting(record, timestamp)


@dataclasses.dataclass
class BundleTally:
    """What a bundle accumulates: first/last seen (epoch seconds), reports, distinct users, ESPs, jurisdictions."""

    first: float = float("inf")
    last: float = float("-inf")
    reports: int = 0
    users: set = dataclasses.field(default_factory=set)
    esps: set = dataclasses.field(default_factory=set)
    jurisdictions: set = dataclasses.field(default_factory=set)

    def add(self, sighting):
        seen, user, esp, jurisdiction = sighting
        self.first, self.last, self.reports = min(self.first, seen), max(self.last, seen), self.reports + 1
        if user is not None:
            self.users.add(user)
        self.esps.add(esp)
        self.jurisdictions.add(jurisdiction)

    def merge(self, other):
        self.first, self.last = min(self.first, other.first), max(self.last, other.last)
        self.reports += other.reports
        self.users |= other.users
        self.esps |= other.esps
        self.jurisdictions |= other.jurisdictions


def bundle_record(signature, start, end, tally, pane):
    """The bundle row: window bounds in epoch seconds, the combined tally, pane columns."""
    return {
        "bundle_id": bundle_id(signature, start),
        "signature": signature,
        "signature_kind": signature_kind(signature),
        "window_start": utc(start),
        "window_end": utc(end),
        "first_seen": utc(tally.first),
        "last_seen": utc(tally.last),
        "reports": tally.reports,
        "users": len(tally.users),
        "esps": len(tally.esps),
        "jurisdictions": sorted(tally.jurisdictions),
        **pane,
    }


def result_bundle_record(result):
    """A `WindowResult` of a bundle's tally -> the bundle row."""
    return bundle_record(result.key, result.start, result.end, result.value, result.pane)


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
        bundles = (
            routed_records
            | "Sightings" >> beam.Map(lambda record, ts=beam.DoFn.TimestampParam: (record, ts))
            | "CombineBundles" >> CombinePerKeyAndWindow(
                signature_and_sighting, TallyCombineFn(BundleTally), self.window_seconds, self.allowed_lateness_seconds,
                accumulate=True)
            | "ToBundleRecord" >> beam.Map(result_bundle_record))
        _ = bundles | "WriteBundleFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/bundles",
            destination=date_partition,
            sink=functools.partial(ParquetSink, BUNDLE_SCHEMA),
            suffix=".parquet",
            window_seconds=self.window_seconds,
            allowed_lateness_seconds=self.allowed_lateness_seconds)
        return bundles
