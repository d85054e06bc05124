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
from transforms.matching.matcher import HashMatcher, VideoMatching
from transforms.plumbing.metrics import counter
from transforms.plumbing.reference_files import RefreshedOnChange
from transforms.reports.enrichment import with_hashes

STAGE = "enrich_hashes"
FAILURES = "failures"


class EnrichHashes(beam.PTransform):
    """Reports -> (reports with `_hashes`, dead letters)."""

    def __init__(self, bank_paths, negative_bank_paths=(), refresh_seconds=60, max_batch_size=64, media_roots=(),
                 video=VideoMatching()):
        super().__init__()
        self.media_roots = list(media_roots or ())
        self.video = video
        self.bank_paths = list(bank_paths)
        self.negative_bank_paths = list(negative_bank_paths)
        self.refresh_seconds = refresh_seconds
        self.max_batch_size = max_batch_size

    def expand(self, reports):
        batches = (
            reports
            | "KeepEventTime" >> beam.Map(lambda report, ts=beam.DoFn.TimestampParam: (report, ts))
            | "BatchReports" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.max_batch_size))
        matched = batches | "MatchBatches" >> beam.ParDo(
            MatchHashBatches(self.bank_paths, self.negative_bank_paths, self.refresh_seconds, self.media_roots,
                             self.video)
        ).with_outputs(FAILURES, main="enriched")
        dead_letters = matched[FAILURES] | "ToDeadLetters" >> beam.Map(dead_letter_from_failure(STAGE))
        return matched.enriched, dead_letters


class MatchHashBatches(beam.DoFn):
    """A batch of (report, event time) -> each report with `_hashes` back at its own event time; a report
    whose hashing failed goes to the `failures` output as (report, (type, error, None))."""

    def __init__(self, bank_paths, negative_bank_paths, refresh_seconds, media_roots=(), video=VideoMatching()):
        self.media_roots = list(media_roots or ())
        self.video = video
        self.bank_paths = bank_paths
        self.negative_bank_paths = negative_bank_paths
        self.refresh_seconds = refresh_seconds
        self._shared = Shared()
        self.files_hashed = counter("files_hashed")
        self.files_unhashable = counter("files_unhashable")
        self.videos_hashed = counter("videos_hashed")
        self.bank_matches = counter("bank_matches")
        self.bank_reloads = counter("bank_reloads")
        self.bank_reload_failures = counter("bank_reload_failures")

    def setup(self):
        self._banks = RefreshedOnChange(
            self._shared, self.bank_paths + self.negative_bank_paths,
            lambda: HashMatcher.from_banks(self.bank_paths, self.negative_bank_paths, self.media_roots, self.video),
            self.refresh_seconds, self.bank_reloads, self.bank_reload_failures, "hash bank")

    def process(self, stamped_batch):
        """Each report at its own event time with `_hashes`; if the batch fails, each report alone, so a
        report that fails goes to the failures output (report, error) by itself."""
        self._matcher = self._banks.get()
        batch = [report for report, _ in stamped_batch]
        try:
            enriched = with_hashes(batch, self._matcher)
        except Exception:
            enriched = [self._enrich_alone(report) for report in batch]
        for (report, event_time), result in zip(stamped_batch, enriched):
            if isinstance(result, BaseException):
                yield beam.pvalue.TaggedOutput(FAILURES, (report, (type(result), result, None)))
                continue
            self._count(result["_hashes"])
            yield TimestampedValue(result, event_time)

    def _enrich_alone(self, report):
        try:
            return with_hashes([report], self._matcher)[0]
        except Exception as error:
            return error

    def _count(self, hashes):
        for file in hashes["files"]:
            if file["mediaStatus"] == "hashed":
                self.files_hashed.inc()
            elif file["mediaStatus"] == "unhashable":
                self.files_unhashable.inc()
            self.bank_matches.inc(len(file["matches"]))
            if file.get("video"):
                self.videos_hashed.inc()

