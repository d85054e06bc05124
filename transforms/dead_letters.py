"""Dead letters: every input the pipeline cannot use, kept with its payload and a reason.

Each stage hands its failures here as dead-letter records; `WriteDeadLetters` writes them as JSON
Lines under `<output>/dead_letter/`, away from every jurisdiction's sink, so they can be replayed.

Two kinds, counted apart:
- a report's failure on its way to a sink (parse, enrich_*, assign_jurisdiction, route): the report is not
  routed; counted in `dead_lettered`, part of `read = routed + duplicates + dead_lettered`;
- a side-stage failure (bundles, trends, alerts, notices, and what their sinks refuse): the report was routed
  and stays counted there; only its bundle, trend row, alert or notice is missing. `WriteSideStageFailures`
  writes it under `dead_letter/stage=<stage>/` too, counted as `side_stage_failures` (per stage in
  `side_stage_failures_by_stage`), outside the reconciliation.
A dead letter the writer cannot file or write (no stage, a value its JSON Lines sink refuses) is written
again as ASCII-escaped JSON in a `dead_letter` stage letter, so no element can stop the dead-letter writer.
"""
import base64
import json

import apache_beam as beam
from apache_beam.transforms import window

from transforms.plumbing.metrics import LabelledCounters, counter
from transforms.plumbing.windowed_files import GROUPED_AS_LINES, JsonLinesSink, WriteWindowedFiles

def encode_payload(payload):
    """The payload as text when it is UTF-8, else base64, so a dead letter can be replayed byte for byte."""
    if isinstance(payload, str):
        return payload, "utf-8"
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


def dead_letter(stage, reason, payload, report_id=None):
    """A dead-letter record: which stage refused the input, why, and the input itself."""
    text, encoding = encode_payload(payload)
    return {"stage": stage, "reason": reason, "reportId": report_id, "payload": text, "payloadEncoding": encoding}


def original_report_json(report):
    """The report as the producer sent it: the parsed dict without the pipeline's `_`-prefixed enrichment.
    (A later stage's element, such as a trend row, may hold datetimes: they are written as text.)"""
    return json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, sort_keys=True, default=str)


def dead_letter_from_failure(stage):
    """Maps a `with_exception_handling` failure (element, (type, value, traceback)) to a dead letter."""

    def to_dead_letter(failure):
        report, (exc_type, exc_value) = failure[0], failure[1][:2]
        reason = f"{stage} failed: {exc_type.__name__}: {exc_value}"[:500]
        if isinstance(report, dict):
            report_id = report.get("reportId")
            return dead_letter(stage, reason, original_report_json(report),
                               report_id if isinstance(report_id, str) else None)
        return dead_letter(stage, reason, report if isinstance(report, (bytes, str)) else repr(report))

    return to_dead_letter


FAILURES = "failures"


def failed(element, error):
    """The failures output of a DoFn that takes window, pane or timestamp parameters: Beam's
    `with_exception_handling` does not pass those to the wrapped DoFn, so such a DoFn catches its own
    element's error and hands it on in the same form, (element, (type, repr(error), traceback))."""
    return beam.pvalue.TaggedOutput(FAILURES, (element, (type(error), repr(error), None)))


def escaped_letter(refusal):
    """A dead letter the JSON Lines sink refused, as a `dead_letter` stage letter holding it ASCII-escaped."""
    letter, (exc_type, exc_value) = refusal[0], refusal[1][:2]
    reason = f"dead_letter failed: {exc_type.__name__}: {ascii(str(exc_value))}"[:500]
    return dead_letter("dead_letter", reason, json.dumps(letter, sort_keys=True, default=repr, ensure_ascii=True))


class WriteDeadLetters(beam.PTransform):
    """Counts and writes dead letters as JSON Lines under `<output>/dead_letter/stage=<stage>/`.

    Not windowed by event time: a message that could not be parsed has none. `side_stage=True` counts them
    as side-stage failures (reports routed all the same) instead of `dead_lettered`. `side_stage_letters`:
    side-stage letters counted already (`take_gathered_side_stage_failures`), written by the same sink.
    """

    def __init__(self, output_dir, flush_seconds=60, side_stage=False, side_stage_letters=()):
        super().__init__()
        self.output_dir = output_dir
        self.flush_seconds = flush_seconds
        self.side_stage = side_stage
        self.side_stage_letters = tuple(side_stage_letters)

    def expand(self, dead_letters):
        counted = dead_letters | "CountDeadLetters" >> beam.Map(
            _count_side_stage_failure if self.side_stage else _count_dead_letter)
        if self.side_stage_letters:
            counted = (counted, *self.side_stage_letters) | "WithSideStageFailures" >> beam.Flatten()
        written, refused = counted | "WriteDeadLetterFiles" >> self.letter_files(with_refusals=True)
        escaped = refused | "EscapeRefused" >> beam.Map(escaped_letter)
        _ = escaped | "WriteEscapedFiles" >> self.letter_files(with_refusals=False)  # ASCII strings only
        return written

    def letter_files(self, with_refusals):
        return WriteWindowedFiles(
            f"{self.output_dir}/dead_letter",
            destination=lambda letter: f"stage={letter['stage']}",
            sink=JsonLinesSink,
            suffix=".jsonl",
            window_seconds=None,
            flush_seconds=self.flush_seconds,
            grouped_as=GROUPED_AS_LINES,  # strings only
            with_refusals=with_refusals,
        )


_GATHERED = "_tipline_gathered_side_stage_letters"


def gather_side_stage_failures(pipeline):
    """From now on each `WriteSideStageFailures` applied in `pipeline` counts its letters and hands them to
    `take_gathered_side_stage_failures` instead of writing them with a dead-letter sink of its own.

    Why: a sink per side stage (five in the whole pipeline) is ~25 steps and two groupings, empty in a
    normal run but each built, translated and run as bundles of their own by every worker: about a third of
    a batch run's fixed cost. The letters are the same; only side stages sharing a stage name (bundles) or
    escaped letters of several stages now share their file."""
    setattr(pipeline, _GATHERED, [])


def take_gathered_side_stage_failures(pipeline):
    """The counted side-stage letters gathered in `pipeline` so far; a `WriteSideStageFailures` applied
    after this writes its own again, so no letter is left without a sink."""
    gathered = getattr(pipeline, _GATHERED, None) or []
    if hasattr(pipeline, _GATHERED):
        delattr(pipeline, _GATHERED)
    return gathered


class WriteSideStageFailures(beam.PTransform):
    """A side stage's failure outputs (each of (element, (type, error, traceback))) -> dead letters
    `stage=<stage>`, counted as side-stage failures: the report behind the element was routed (see the
    module doc). Takes a tuple of PCollections in any windows. In a pipeline gathering side-stage failures
    (`gather_side_stage_failures`), returns the counted letters for the run's one dead-letter sink; else
    writes them and returns the paths written."""

    def __init__(self, output_dir, stage):
        super().__init__()
        self.output_dir = output_dir
        self.stage = stage

    def expand(self, failure_outputs):
        letters = [
            failures
            | f"ToDeadLetters{number}" >> beam.Map(dead_letter_from_failure(self.stage))
            | f"Unwindow{number}" >> beam.WindowInto(window.GlobalWindows())
            for number, failures in enumerate(failure_outputs)]
        all_letters = letters | "AllFailures" >> beam.Flatten()
        gathered = getattr(all_letters.pipeline, _GATHERED, None)
        if gathered is None:
            return all_letters | "WriteDeadLetters" >> WriteDeadLetters(self.output_dir, side_stage=True)
        counted = all_letters | "CountSideStageFailures" >> beam.Map(_count_side_stage_failure)
        gathered.append(counted)
        return counted


_DEAD_LETTERED = counter("dead_lettered")
_DEAD_LETTERED_BY_STAGE = LabelledCounters("dead_lettered_by_stage")
_SIDE_STAGE_FAILURES = counter("side_stage_failures")
_SIDE_STAGE_FAILURES_BY_STAGE = LabelledCounters("side_stage_failures_by_stage")


def _count_dead_letter(letter):
    _DEAD_LETTERED.inc()
    _DEAD_LETTERED_BY_STAGE.inc(str(letter.get("stage")))  # a letter without one is filed as `dead_letter`
    return letter


def _count_side_stage_failure(letter):
    _SIDE_STAGE_FAILURES.inc()
    _SIDE_STAGE_FAILURES_BY_STAGE.inc(str(letter.get("stage")))
    return letter
