"""Avro schemas and reference tables, shipped as package data."""
import csv
import functools
import json
from importlib import resources

import fastavro


@functools.cache
def avro_schema(name):
    """The parsed Avro schema `schemas/<name>.avsc`, loaded once per process."""
    text = resources.files(__package__).joinpath(f"{name}.avsc").read_text()
    return fastavro.parse_schema(json.loads(text))


@functools.cache
def example_record(name):
    """`schemas/<name>.example.json`, one typical record of the schema `<name>.avsc` (synthetic), as compact
    JSON bytes: what a record packed for a grouping is deflated against (transforms/plumbing/packed_records.py)."""
    text = resources.files(__package__).joinpath(f"{name}.example.json").read_text()
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False).encode()


def reference_table(name):
    """The rows of the reference table `schemas/<name>.csv` as dicts."""
    with resources.files(__package__).joinpath(f"{name}.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))
