"""ReadReports: the raw report messages (bytes) from the chosen source.

- `synthetic`: the in-package generator of realistic reports (the embedded demo), split into shards so
  the runner can spread the generation;
- `files`: JSON Lines files, or Avro files written with the contract schema (by file extension); a line
  over `max_message_bytes` is not read whole but passed on as an `OversizeLine` for the dead letters
  (`transforms/plumbing/bounded_lines.py` says why Beam's ReadFromText cannot do this);
- `pubsub`: a Pub/Sub subscription; event time comes from the `submittedAt` attribute.
"""
import json

import apache_beam as beam
from apache_beam.io import ReadFromAvro, ReadFromPubSub

from transforms.reports.validation import DEFAULT_MAX_MESSAGE_BYTES
from transforms.plumbing.bounded_lines import ReadBoundedLines
from transforms.plumbing.reference_files import local_path

SOURCES = ("synthetic", "files", "pubsub")
SYNTHETIC_SHARDS = 8


class ReadReports(beam.PTransform):
    """Reads report messages as bytes from `source` (one of SOURCES)."""

    def __init__(self, source, input_pattern=None, subscription=None, synthetic_config=None,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
        super().__init__()
        self.max_message_bytes = max_message_bytes
        if source not in SOURCES:
            raise ValueError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
        if source == "files" and not input_pattern:
            raise ValueError("--source files needs --input GLOB (JSON Lines, or .avro files)")
        if source == "pubsub" and not subscription:
            raise ValueError("--source pubsub needs --subscription projects/P/subscriptions/S")
        self.source = source
        self.input_pattern = local_path(input_pattern)  # file:///f/x.jsonl reads /f/x.jsonl, as preflight checks it
        self.subscription = subscription
        self.synthetic_config = synthetic_config

    def expand(self, pbegin):
        if self.source == "synthetic":
            return pbegin | "Synthetic" >> _ReadSynthetic(self.synthetic_config)
        if self.source == "pubsub":
            return pbegin | "ReadFromPubSub" >> ReadFromPubSub(
                subscription=self.subscription, timestamp_attribute="submittedAt")
        if self.input_pattern.endswith(".avro"):
            return (pbegin
                    | "ReadFromAvro" >> ReadFromAvro(self.input_pattern)
                    | "AsJson" >> beam.Map(lambda record: json.dumps(record).encode("utf-8")))
        return pbegin | "ReadLines" >> ReadBoundedLines(self.input_pattern, self.max_message_bytes)


class _ReadSynthetic(beam.PTransform):
    """Generates the synthetic stream shard by shard inside the pipeline (no large `Create`)."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def expand(self, pbegin):
        from transforms.demo.synthetic import generate_messages

        config = self.config
        return (pbegin
                | "Shards" >> beam.Create(list(range(SYNTHETIC_SHARDS)))
                | "Reshuffle" >> beam.Reshuffle()
                | "Generate" >> beam.FlatMap(lambda shard: generate_messages(config, shard, SYNTHETIC_SHARDS)))
