"""EnrichHashes: every report gets its files' hashes and bank matches under `_hashes`.

Reports are batched so each signal's index is queried once per batch; each report keeps its own event
time through the batch (BatchElements stamps a batch with one timestamp). The banks are loaded once per
worker through `Shared`, and re-checked (size + mtime) at most every `refresh_seconds`: a rewritten bank
file is re-acquired under a new tag, so new hashes match without restarting a streaming job.
A report that fails is dead-lettered alone, never with the rest of its batch.
"""
import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.shared import Shared

from transforms.dead_letters import dead_letter_from_failure
from transforms.matching.matcher import HashMatcher
from transforms.plumbing.metrics import counter
from transforms.plumbing.reference_files import RefreshedOnChange

STAGE = "enrich_hashes"
FAILURE_KEY = "_hashes_error"


class HashingFailed(Exception):
    """A report whose hashing raised an unexpected error inside its batch."""


class EnrichHashes(beam.PTransform):
    """Reports -> (reports with `_hashes`, dead letters)."""

    def __init__(self, bank_paths, negative_bank_paths=(), refresh_seconds=60, max_batch_size=64):
        super().__init__()
        self.bank_paths = list(bank_paths)
        self.negative_bank_paths = list(negative_bank_paths)
        self.refresh_seconds = refresh_seconds
        self.max_batch_size = max_batch_size

    def expand(self, reports):
        batches = (
            reports
            | "KeepEventTime" >> beam.Map(lambda report, ts=beam.DoFn.TimestampParam: (report, ts))
            | "BatchReports" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.max_batch_size))
        matched, failed_batches = (
            batches
            | "MatchBatches" >> beam.ParDo(
                MatchHashBatches(self.bank_paths, self.negative_bank_paths, self.refresh_seconds))
            .with_exception_handling())
        enriched, failed_reports = matched | "SeparateFailures" >> beam.Map(raise_recorded_failure).with_exception_handling()
        batch_failures = failed_batches | "SplitFailedBatches" >> beam.FlatMap(
            lambda failure: [(report, failure[1]) for report, _ in failure[0]])
        dead_letters = (
            (failed_reports, batch_failures)
            | "FlattenFailures" >> beam.Flatten()
            | "ToDeadLetters" >> beam.Map(dead_letter_from_failure(STAGE)))
        return enriched, dead_letters


class MatchHashBatches(beam.DoFn):
    """A batch of (report, event time) -> each report with `_hashes` (or with the error that stopped it),
    back at its own event time."""

    def __init__(self, bank_paths, negative_bank_paths, refresh_seconds):
        self.bank_paths = bank_paths
        self.negative_bank_paths = negative_bank_paths
        self.refresh_seconds = refresh_seconds
        self._shared = Shared()
        self.files_hashed = counter("files_hashed")
        self.files_unhashable = counter("files_unhashable")
        self.bank_matches = counter("bank_matches")
        self.bank_reloads = counter("bank_reloads")
        self.bank_reload_failures = counter("bank_reload_failures")

    def setup(self):
        self._banks = RefreshedOnChange(
            self._shared, self.bank_paths + self.negative_bank_paths,
            lambda: HashMatcher.from_banks(self.bank_paths, self.negative_bank_paths), self.refresh_seconds,
            self.bank_reloads, self.bank_reload_failures, "hash bank")

    def process(self, stamped_batch):
        self._matcher = self._banks.get()
        batch = [report for report, _ in stamped_batch]
        try:
            results = self._matcher.enrich_reports(batch)
        except Exception:  # an unexpected error in one report: retry one by one so only it fails
            results = [self._enrich_alone(report) for report in batch]
        for (report, event_time), hashes in zip(stamped_batch, results):
            if FAILURE_KEY in hashes:
                yield TimestampedValue({**report, **hashes}, event_time)
                continue
            self._count(hashes)
            yield TimestampedValue({**report, "_hashes": hashes}, event_time)

    def _enrich_alone(self, report):
        try:
            return self._matcher.enrich_report(report)
        except Exception as error:
            return {FAILURE_KEY: f"{type(error).__name__}: {error}"}

    def _count(self, hashes):
        for file in hashes["files"]:
            if file["mediaStatus"] == "hashed":
                self.files_hashed.inc()
            elif file["mediaStatus"] == "unhashable":
                self.files_unhashable.inc()
            self.bank_matches.inc(len(file["matches"]))


def raise_recorded_failure(report):
    """Passes enriched reports through; raises for a report whose hashing failed, to dead-letter it."""
    if FAILURE_KEY in report:
        raise HashingFailed(report[FAILURE_KEY])
    return report
