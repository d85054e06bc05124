"""The routed Avro a downstream tool ingests: logical types on every instant, a doc on every field and named
type, the schema version, when each report was routed and the reference data that decided it."""
import datetime

import fastavro
import pytest

from pipelines.tipline_pipeline import run
from schemas import avro_schema
from transforms.matching.banks import read_bank
from transforms.reports.routed_record import SCHEMA_VERSION, iso_of_micros, json_ready, micros_of

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
