"""The routed Avro a downstream tool ingests: logical types on every instant, a doc on every field and named
type, the schema version, when each report was routed and the reference data that decided it."""
import copy
import datetime
import math

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipelines.tipline_pipeline import run
from schemas import avro_schema
from tests import hostile
from transforms.matching.banks import read_bank
from transforms.reports.avro_validation import InvalidRecord, compile_validator
from transforms.reports.enrichment import with_hashes, with_location, with_routing
from transforms.reports.routed_record import (
    SCHEMA_VERSION, RoutedRecordCheck, iso_of_micros, json_ready, micros_of, to_routed_record)

INSTANTS = {"submittedAt", "routedAt", "incidentDateTime", "decidedWith.geoipDatabases.builtAt"}


def walk(fields, prefix=""):
    """(path, field) of every field, nested records (in unions and arrays) included."""
    for field in fields:
        path = f"{prefix}{field['name']}"
        yield path, field
        for member in types_within(field["type"]):
            if isinstance(member, dict) and member.get("type") == "record":
                yield from walk(member["fields"], f"{path}.")


def types_within(avro_type):
    members = avro_type if isinstance(avro_type, list) else [avro_type]
    for member in members:
        yield member
        if isinstance(member, dict) and member.get("type") == "array":
            yield from types_within(member["items"])


def named_records(avro_type):
    if isinstance(avro_type, list):
        for member in avro_type:
            yield from named_records(member)
    elif isinstance(avro_type, dict):
        if avro_type.get("type") == "record":
            yield avro_type
            for field in avro_type["fields"]:
                yield from named_records(field["type"])
        elif avro_type.get("type") == "array":
            yield from named_records(avro_type["items"])


def logical_type(avro_type):
    for member in types_within(avro_type):
        if isinstance(member, dict) and "logicalType" in member:
            return member["logicalType"]
    return None


def test_every_instant_is_a_timestamp_micros_and_nothing_else_is():
    fields = dict(walk(avro_schema("routed_report")["fields"]))
    assert {path for path, field in fields.items() if logical_type(field["type"]) == "timestamp-micros"} == INSTANTS
    assert [path for path in fields if path.endswith(("At", "Time")) and path not in INSTANTS] == []


def test_every_field_and_every_record_type_has_a_doc():
    schema = avro_schema("routed_report")
    assert [path for path, field in walk(schema["fields"]) if not field.get("doc", "").strip()] == []
    assert [record["name"] for record in named_records(schema) if not record.get("doc", "").strip()] == []


def test_instants_convert_exactly_and_print_as_iso_8601_with_z():
    assert micros_of("2026-11-23T10:00:00.123456+01:00") == micros_of("2026-11-23T09:00:00.123456Z")
    assert iso_of_micros(micros_of("2026-11-23T10:00:00Z")) == "2026-11-23T10:00:00Z"
    assert iso_of_micros(micros_of("2026-11-23T10:00:00.5-05:00")) == "2026-11-23T15:00:00.500000Z"
    record = {"submittedAt": 0, "routedAt": 1, "incidentDateTime": None, "decidedWith": None}
    assert json_ready(record) == {"submittedAt": "1970-01-01T00:00:00Z", "routedAt": "1970-01-01T00:00:00.000001Z",
                                  "incidentDateTime": None, "decidedWith": None}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("routed-schema") / "out"
    before = datetime.datetime.now(datetime.timezone.utc)
    summary = run(["--synthetic-count", "60", "--output", str(out)])
    after = datetime.datetime.now(datetime.timezone.utc)
    records = []
    for path in sorted((out / "routed").rglob("*.avro")):
        with path.open("rb") as handle:
            records.extend(fastavro.reader(handle))
    return summary, records, before, after


def test_a_demo_run_stamps_each_record_with_its_routing_time_and_version(demo_run):
    summary, records, before, after = demo_run
    assert len(records) == summary["routed"] > 0
    assert {record["schemaVersion"] for record in records} == {SCHEMA_VERSION} == {3}
    assert all(before <= record["routedAt"] <= after for record in records)
    assert all(record["submittedAt"].tzinfo == datetime.timezone.utc for record in records)


def test_a_demo_run_names_the_reference_data_that_decided_each_record(demo_run):
    summary, records, _, _ = demo_run
    reference = summary["reference_data"]
    city = reference["geoip"]["--geoip-city-db"]
    banks = {(bank, False) for found in reference["hash_banks"] for bank in found["banks"]}
    banks |= {(bank, True) for found in reference["negative_hash_banks"] for bank in found["banks"]}
    for record in records:
        decided = record["decidedWith"]
        (database,) = decided["geoipDatabases"]
        assert (database["kind"], database["databaseType"]) == ("city", city["database_type"])
        assert database["builtAt"] == datetime.datetime.fromtimestamp(city["build_epoch"], datetime.timezone.utc)
        assert {(bank["name"], bank["negative"]) for bank in decided["hashBanks"]} == banks
        assert decided["jurisdictionTablesSha256"] == reference["jurisdiction_tables"]["sha256"][:16]
        assert decided["tiplineVersion"] == reference["tipline_version"]
    first = records[0]["decidedWith"]["hashBanks"]
    for found in reference["hash_banks"] + reference["negative_hash_banks"]:
        entries = [entry.bank for entry in read_bank(found["path"])]
        for bank in found["banks"]:
            (version,) = [version for version in first if version["name"] == bank]
            assert version["fileSha256"] == found["sha256"][:16] and version["entries"] == entries.count(bank)


def routed_example(decided):
    """A routed record of the example report, as BuildRoutedRecords builds it, with `decided` as its decidedWith."""
    from tests.conftest import example_report

    validator, matcher, locator, rules, _ = hostile._stages()
    report = example_report()
    validator.validate(report)
    report = with_routing(with_location(with_hashes([report], matcher)[0], locator), rules)
    return to_routed_record(report, 1_795_392_000_000_000, decided)


def outcome(check, record):
    try:
        check(record)
        return "valid"
    except InvalidRecord as error:
        return str(error)


DECIDED = {"geoipDatabases": [{"kind": "city", "databaseType": "GeoIP2-City", "builtAt": 1_795_392_000_000_000}],
           "hashBanks": [{"name": "demo-known", "negative": False, "fileSha256": "5c6b8a6be86e4af4", "entries": 504}],
           "jurisdictionTablesSha256": "3300a791f1e2be6d", "tiplineVersion": "0.1.0"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10_000), hostile.json_values, st.booleans()),
                min_size=1, max_size=6))
def test_the_route_check_refuses_what_the_full_check_refuses_with_the_same_reason(changes):
    """RoutedRecordCheck skips a decidedWith it already found valid: over records with one field set to any
    JSON value (decidedWith's fields too), shared or fresh decidedWith values, in any order, each outcome is
    the full schema check's."""
    full = compile_validator(avro_schema("routed_report"))
    check = RoutedRecordCheck()
    shared = copy.deepcopy(DECIDED)
    for share, where, value, mutate in changes:
        record = routed_example(shared if share else copy.deepcopy(DECIDED))
        if mutate:
            paths = [path for path in hostile.json_paths(record) if path and (not share or path[0] != "decidedWith")]
            hostile._set(record, paths[where % len(paths)], value)
        assert outcome(check, record) == outcome(full, record)


def test_the_route_check_checks_a_new_decided_with_in_full():
    check = RoutedRecordCheck()
    assert outcome(check, routed_example(DECIDED)) == "valid"
    broken = copy.deepcopy(DECIDED)
    broken["hashBanks"][0]["entries"] = "504"
    assert outcome(check, routed_example(broken)) == "$.decidedWith.hashBanks[0].entries: expected an long, got str"
    assert outcome(check, routed_example(DECIDED)) == "valid"


@pytest.mark.parametrize("number", [math.nan, math.inf])
def test_the_route_check_refuses_a_number_json_cannot_hold(number):
    """A routed record is JSON too (route topics, the agency service, a batch grouping's packed copy): a
    video's duration of NaN or infinity is refused, naming the field, not published as NaN or null."""
    record = routed_example(DECIDED)
    record["files"][0]["video"] = {"signalType": "VPDQ", "frames": 12, "durationSeconds": number}
    assert outcome(RoutedRecordCheck(), record) == f"$.files[0].video.durationSeconds: {number} is not a finite number"
    record["files"][0]["video"]["durationSeconds"] = 12.04
    assert outcome(RoutedRecordCheck(), record) == "valid"
