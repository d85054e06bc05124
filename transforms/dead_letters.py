"""Dead letters: every input the pipeline cannot use, kept with its payload and a reason.

Each stage hands its failures here as dead-letter records; `WriteDeadLetters` writes them as JSON
Lines under `<output>/dead_letter/`, away from every jurisdiction's sink, so they can be replayed.
"""
import base64
import json

import apache_beam as beam

from transforms.plumbing.metrics import LabelledCounters, counter
from transforms.plumbing.windowed_files import JsonLinesSink, WriteWindowedFiles

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
    """The report as the producer sent it: the parsed dict without the pipeline's `_`-prefixed enrichment."""
    return json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, sort_keys=True)


def dead_letter_from_failure(stage):
    """Maps a `with_exception_handling` failure (report, (type, value, traceback)) to a dead letter."""

    def to_dead_letter(failure):
        report, (exc_type, exc_value, _) = failure[0], failure[1][:3]
        reason = f"{stage} failed: {exc_type.__name__}: {exc_value}"[:500]
        if isinstance(report, dict):
            return dead_letter(stage, reason, original_report_json(report), report.get("reportId"))
        return dead_letter(stage, reason, report if isinstance(report, (bytes, str)) else repr(report))

    return to_dead_letter


class WriteDeadLetters(beam.PTransform):
    """Counts and writes dead letters as JSON Lines under `<output>/dead_letter/stage=<stage>/`.

    Not windowed by event time: a message that could not be parsed has none.
    """

    def __init__(self, output_dir, flush_seconds=60):
        super().__init__()
        self.output_dir = output_dir
        self.flush_seconds = flush_seconds

    def expand(self, dead_letters):
        counted = dead_letters | "CountDeadLetters" >> beam.Map(_count_dead_letter)
        return counted | "WriteDeadLetterFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/dead_letter",
            destination=lambda letter: f"stage={letter['stage']}",
            sink=JsonLinesSink,
            suffix=".jsonl",
            window_seconds=None,
            flush_seconds=self.flush_seconds,
            json_records=True,  # strings only
        )


_DEAD_LETTERED = counter("dead_lettered")
_DEAD_LETTERED_BY_STAGE = LabelledCounters("dead_lettered_by_stage")


def _count_dead_letter(letter):
    _DEAD_LETTERED.inc()
    _DEAD_LETTERED_BY_STAGE.inc(letter["stage"])
    return letter
