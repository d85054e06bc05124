"""The compiled validator agrees with fastavro on the contract schema, and names the bad field."""
import copy

import fastavro
import pytest
from fastavro.validation import validate
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import avro_schema
from tests.conftest import example_report
from tests.hostile import json_paths
from transforms.reports.avro_validation import InvalidRecord, compile_nested_validator, compile_validator

SCHEMA = avro_schema("report")
check = compile_validator(SCHEMA)

ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False),
                       st.text(max_size=5), st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                       st.sampled_from(["A1", "Z9", "Upload", "viral", "sextortion", "VIRAL_POTENTIAL_MEME"]))


def replaced(value, path, new):
    value = copy.deepcopy(value)
    target = value
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return value


def accepted_by_fastavro(record):
    try:
        return validate(record, SCHEMA, raise_errors=True, strict=False)
    except (fastavro.validation.ValidationError, ValueError, TypeError):
        return False


def accepted_by_compiled(record):
    try:
        check(record)
        return True
    except InvalidRecord:
        return False


ALL_PATHS = [path for path in json_paths(example_report()) if path]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ALL_PATHS), ODD_VALUES)
def test_agrees_with_fastavro_on_mutated_reports(path, new):
    record = replaced(example_report(), path, new)
    assert accepted_by_compiled(record) == accepted_by_fastavro(record)


def test_accepts_the_contract_example():
    check(example_report())


@pytest.mark.parametrize("path,new,expected", [
    (("files", 0, "industryClassification"), "Z9", "$.files[0].industryClassification: 'Z9' is not one of"),
    (("reporter", "espId"), 17, "$.reporter.espId: expected a string, got int"),
    (("personOrUserReported", "ipCaptureEvents", 1, "port"), 2**40, "out of range for an Avro int"),
    (("victims",), {"ageEstimate": 3}, "$.victims: expected a list, got dict"),
])
def test_reasons_name_the_offending_field(path, new, expected):
    with pytest.raises(InvalidRecord, match=expected.replace("[", r"\[").replace("]", r"\]").replace("$", r"\$")):
        check(replaced(example_report(), path, new))


def test_missing_required_field_is_named():
    record = example_report()
    del record["incidentSummary"]["incidentType"]
    with pytest.raises(InvalidRecord, match=r"\$\.incidentSummary\.incidentType: required field is missing"):
        check(record)


nested_check = compile_nested_validator(SCHEMA)


def outcome(check_function, record):
    try:
        check_function(record)
        return None
    except InvalidRecord as error:
        return str(error)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ALL_PATHS), ODD_VALUES)
def test_the_straight_line_check_says_what_the_nested_one_says(path, new):
    record = replaced(example_report(), path, new)
    assert outcome(check, record) == outcome(nested_check, record)


def test_the_straight_line_check_of_routed_records_says_what_the_nested_one_says():
    from tests.agency_service import routed_record

    routed_schema = avro_schema("routed_report")
    straight, nested = compile_validator(routed_schema), compile_nested_validator(routed_schema)
    good = routed_record("r", "GB")
    cases = [good] + [replaced(good, path, new) for path in json_paths(good) if path
                      for new in (None, "x", 2**70, True, 1.5, [], {})]
    messages = [outcome(straight, record) for record in cases]
    assert messages == [outcome(nested, record) for record in cases]
    assert messages[0] is None and sum(message is not None for message in messages) > len(cases) / 2


def test_a_bad_item_after_the_same_object_repeated_is_named_by_its_own_place():
    """The straight-line loops find an item's index only for the message: by the first place holding that
    very object, which must be the item's own place (an earlier copy would have failed first)."""
    report = example_report()
    file = report["files"][0]
    bad = {**file, "industryClassification": "Z9"}
    report["files"] = [file, file, bad, bad]
    report["incidentSummary"]["reportAnnotations"] = ["sextortion", "sextortion", "spam", "nope", "nope"]
    assert outcome(check, report) == outcome(nested_check, report) == (
        "$.incidentSummary.reportAnnotations[3]: 'nope' is not one of sextortion, csamSolicitation, "
        "minorToMinorInteraction, spam, sadisticOnlineExploitation")
    report["incidentSummary"]["reportAnnotations"] = ["spam"]
    assert outcome(check, report) == outcome(nested_check, report)
    assert outcome(check, report).startswith("$.files[2].industryClassification: 'Z9' is not one of")
