"""The compiled validator (`compile_validator`) says yes exactly where fastavro does, on reports with one
field changed or missing and on a schema with every kind of type."""
import copy
import math

import fastavro
import pytest
from fastavro.validation import validate
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import avro_schema
from tests.conftest import example_report
from tests.hostile import json_paths
from tests.test_avro_validation import replaced
from transforms.reports.avro_validation import InvalidRecord, compile_nested_validator, compile_validator

REPORT = avro_schema("report")
# Every kind of type the contract schemas use, and some they do not yet: multi-branch unions, numbers,
# a recursive named type, an enum with a default that is not null.
VARIETY = {
    "type": "record", "name": "test.Variety", "fields": [
        {"name": "small", "type": "int"},
        {"name": "big", "type": ["null", "long"], "default": None},
        {"name": "ratio", "type": "double", "default": 0.5},
        {"name": "flag", "type": "boolean", "default": False},
        {"name": "either", "type": ["null", "string", "int", {"type": "array", "items": "float"}], "default": None},
        {"name": "colour", "type": {"type": "enum", "name": "test.Colour", "symbols": ["RED", "BLUE"]},
         "default": "RED"},
        {"name": "child", "type": ["null", "test.Variety"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": {
            "type": "record", "name": "test.Tag", "fields": [{"name": "label", "type": "string"}]}}, "default": []},
    ]}

# Finite floats: where fastavro takes NaN or an infinity for a number, the compiled check refuses it
# (test_refuses_non_finite_numbers_where_fastavro_takes_them).
FINITE = st.floats(allow_nan=False, allow_infinity=False)
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), FINITE, st.text(max_size=5),
    st.lists(st.one_of(st.integers(), FINITE, st.text(max_size=2)), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["A1", "Upload", "sextortion", "VIRAL_POTENTIAL_MEME", "RED", "esp", "public"]))


def deleted(value, path):
    value = copy.deepcopy(value)
    target = value
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return value


def accepted_by_fastavro(record, schema):
    try:
        return validate(record, schema, raise_errors=True, strict=False)
    except (fastavro.validation.ValidationError, ValueError, TypeError):
        return False


def verdicts(record, schema):
    """(compiled validator, fastavro) verdicts on a record."""
    try:
        compile_validator(schema)(record)
        named = True
    except InvalidRecord:
        named = False
    return named, accepted_by_fastavro(record, schema)


REPORT_PATHS = [path for path in json_paths(example_report()) if path]
VARIETY_EXAMPLE = {"small": 1, "big": 2**40, "either": [1.5, 2], "colour": "BLUE", "tags": [{"label": "b"}],
                   "child": {"small": -3, "child": {"small": 4, "either": "x"}}}
VARIETY_PATHS = [path for path in json_paths(VARIETY_EXAMPLE) if path]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(REPORT_PATHS), ODD_VALUES)
def test_agrees_on_mutated_reports(path, new):
    named, fastavro_says = verdicts(replaced(example_report(), path, new), REPORT)
    assert named == fastavro_says


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(REPORT_PATHS))
def test_agrees_on_reports_missing_a_field(path):
    named, fastavro_says = verdicts(deleted(example_report(), path), REPORT)
    assert named == fastavro_says


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VARIETY_PATHS), ODD_VALUES)
def test_agrees_on_every_kind_of_type(path, new):
    named, fastavro_says = verdicts(replaced(VARIETY_EXAMPLE, path, new), VARIETY)
    assert named == fastavro_says


def test_accepts_valid_records_and_refuses_non_records():
    compile_validator(REPORT)(example_report())
    compile_validator(VARIETY)(VARIETY_EXAMPLE)
    for value in (None, [], "report", 3):
        with pytest.raises(InvalidRecord):
            compile_validator(REPORT)(value)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("path, expected_path", [(("ratio",), "$.ratio"), (("either", 1), "$.either"),
                                                 (("child", "ratio"), "$.child.ratio")])
def test_refuses_non_finite_numbers_where_fastavro_takes_them(number, path, expected_path):
    """Every record checked is written as JSON too, which has no NaN or infinity: both forms of the check
    refuse one where the schema wants a float or double, naming the field; fastavro takes it."""
    record = replaced(VARIETY_EXAMPLE, path, number)
    assert accepted_by_fastavro(record, VARIETY)
    for check in (compile_validator(VARIETY), compile_nested_validator(VARIETY)):
        with pytest.raises(InvalidRecord, match=expected_path.replace("$", r"\$")):
            check(record)
