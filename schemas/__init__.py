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


def reference_table(name):
    """The rows of the reference table `schemas/<name>.csv` as dicts."""
    with resources.files(__package__).joinpath(f"{name}.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))
