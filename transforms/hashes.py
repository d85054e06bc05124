"""EnrichHashes: every report gets its files' hashes and bank matches under `_hashes`.

Reports are batched within a bundle so each signal's index is queried once per batch, and each report
leaves at its own event time and window. Not Beam's `BatchElements`: in the global window it emits a
bundle's last batch from `finish_bundle` at the end of the global window, so the runner's watermark is not
held by the reports inside; reports the streaming dedup releases when the watermark jumps (a drained or
finished stream) then reached the trend, bundle and alert windows after they had closed. The banks are loaded once per
worker through `Shared`, and re-checked (size + mtime) at most every `refresh_seconds`: a rewritten bank
file is re-acquired under a new tag, so new hashes match without restarting a streaming job.
A report that fails is dead-lettered alone, never with the rest of its batch.
"""
import collections

import apache_beam as beam
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
        matched = reports | "MatchBatches" >> beam.ParDo(
            MatchHashBatches(self.bank_paths, self.negative_bank_paths, self.refresh_seconds, self.media_roots,
                             self.video, self.max_batch_size)
        ).with_outputs(FAILURES, main="enriched")
        dead_letters = matched[FAILURES] | "ToDeadLetters" >> beam.Map(dead_letter_from_failure(STAGE))
        return matched.enriched, dead_letters


class MatchHashBatches(beam.DoFn):
    """Reports, matched in batches of up to `max_batch_size` within a bundle -> each report with `_hashes`
    at its own event time and window; a report whose hashing failed goes to the `failures` output as
    (report, (type, error, None))."""

    def __init__(self, bank_paths, negative_bank_paths, refresh_seconds, media_roots=(), video=VideoMatching(),
                 max_batch_size=64):
        self.media_roots = list(media_roots or ())
        self.video = video
        self.bank_paths = bank_paths
        self.negative_bank_paths = negative_bank_paths
        self.refresh_seconds = refresh_seconds
        self.max_batch_size = max_batch_size
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

    def start_bundle(self):
        self._pending = []

    def process(self, report, stamped=beam.DoFn.WindowedValueParam):
        self._pending.append(stamped)
        if len(self._pending) >= self.max_batch_size:
            yield from self._match_pending()

    def finish_bundle(self):
        yield from self._match_pending()

    def _match_pending(self):
        """Each pending report with `_hashes`, as a WindowedValue at its own time; if the batch fails, each
        report alone, so a report that fails goes to the failures output (report, error) by itself."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        self._matcher = self._banks.get()
        batch = [stamped.value for stamped in pending]
        try:
            enriched = with_hashes(batch, self._matcher)
        except Exception:
            enriched = [self._enrich_alone(report) for report in batch]
        for stamped, result in zip(pending, enriched):
            if isinstance(result, BaseException):
                yield beam.pvalue.TaggedOutput(FAILURES, stamped.with_value((stamped.value, (type(result), result, None))))
                continue
            yield stamped.with_value(result)
        self._count([result["_hashes"] for result in enriched if not isinstance(result, BaseException)])

    def _enrich_alone(self, report):
        try:
            return with_hashes([report], self._matcher)[0]
        except Exception as error:
            return error

    def _count(self, batch_hashes):
        """The batch's files counted, each counter moved once a batch (an increment costs more than a
        file's count): a counter is only made once something counts in it, as it was per file."""
        files = [file for hashes in batch_hashes for file in hashes["files"]]
        statuses = collections.Counter(file["mediaStatus"] for file in files)
        for status, count in (("hashed", self.files_hashed), ("unhashable", self.files_unhashable)):
            if statuses[status]:
                count.inc(statuses[status])
        if files:
            self.bank_matches.inc(sum(len(file["matches"]) for file in files))
        videos = sum(1 for file in files if file.get("video"))
        if videos:
            self.videos_hashed.inc(videos)

