"""The compiled Avro encoder and container writer give what fastavro gives, and standard files it reads."""
import io
import json
import random

import fastavro
import pytest

from schemas import avro_schema
from tests.agency_service import routed_record
from transforms.plumbing.avro_files import (AvroContainerWriter, UnsupportedSchema, compile_encoder, long_bytes)
from transforms.plumbing.windowed_files import AvroSink

SCHEMA = avro_schema("routed_report")
DECIDED = {"geoipDatabases": [{"kind": "city", "databaseType": "GeoIP2-City", "builtAt": 1_770_245_369_000_000}],
           "hashBanks": [{"name": "demo-known", "negative": False, "fileSha256": "5c6b8a6be86e4af4", "entries": 504}],
           "jurisdictionTablesSha256": "3300a791f1e2be6d", "tiplineVersion": "0.1.0"}


def varied_records(count=200, seed=3):
    """Routed records with every optional part present or absent, long strings and arrays, video matches."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        record = routed_record(f"r-{index}", rng.choice(["GB", "US-CA-LA", "UNKNOWN"]),
                               user=rng.choice([None, "u", "ü" * rng.randrange(1, 40)]))
        record["decidedWith"] = rng.choice([None, DECIDED])
        record["incidentDateTime"] = rng.choice([None, 0, 1_795_428_000_123_456])
        record["reportedUser"] = rng.choice([None, record["reportedUser"]])
        record["location"]["asn"] = rng.choice([None, 6167, 2**40])
        record["location"]["accuracyRadiusKm"] = rng.choice([None, 5, 100, 20_000])
        record["victimCount"] = rng.randrange(0, 200)
        record["escalateToHighPriority"] = rng.choice([None, "x" * rng.choice([1, 63, 64, 20_000])])
        record["reportAnnotations"] = ["sextortion"] * rng.choice([0, 1, 3])
        file = record["files"][0]
        file["matches"] = [{"bank": "b", "label": None, "externalId": "e", "signalType": "VPDQ", "distance": 3,
                            "queryMatchPercent": 87.5, "bankMatchPercent": 12.25,
                            "segments": [{"start": 0.0, "end": 1.5}]},
                           {"bank": "b", "label": "l", "externalId": None, "signalType": "PDQ", "distance": 0}
                           ][:rng.randrange(3)]
        file["video"] = rng.choice([None, {"signalType": "VPDQ", "frames": 12, "durationSeconds": 12.04}])
        file["benignMatch"] = rng.choice([None, {"bank": "n", "signalType": "MD5", "distance": 0}])
        if rng.random() < 0.1:
            file["hashes"] = file["hashes"] * 16_400  # an array past the fast encoder's length table
        if rng.random() < 0.2:
            del record["bundleId"]  # absent: its default (null)
        records.append(record)
    return records


def decoded(data):
    return list(fastavro.reader(io.BytesIO(data)))


def test_each_record_encodes_to_fastavros_bytes():
    encode = compile_encoder(SCHEMA)
    parsed = fastavro.parse_schema(SCHEMA)
    for record in varied_records():
        ours, theirs = bytearray(), io.BytesIO()
        encode(ours, record)
        fastavro.schemaless_writer(theirs, parsed, record)
        assert bytes(ours) == theirs.getvalue(), record["reportId"]


def test_the_sink_writes_a_container_fastavro_reads_as_its_own_writer_does():
    records = varied_records()
    ours, theirs = io.BytesIO(), io.BytesIO()
    sink = AvroSink("routed_report")
    sink.open(ours)
    for record in records:
        sink.write(record)
    sink.flush()
    fastavro.writer(theirs, SCHEMA, records, codec="deflate")
    assert decoded(ours.getvalue()) == decoded(theirs.getvalue())
    with io.BytesIO(ours.getvalue()) as handle:
        reader = fastavro.reader(handle)
        assert reader.codec == "deflate" and reader.writer_schema["name"] == "tipline.RoutedReport"
    assert len(decoded(ours.getvalue())) == len(records)


def test_the_same_records_give_the_same_bytes_and_small_blocks_still_read_back():
    records = varied_records(50)

    def written(block_bytes):
        handle = io.BytesIO()
        writer = AvroContainerWriter(handle, SCHEMA, compile_encoder(SCHEMA), block_bytes=block_bytes)
        for record in records:
            writer.write(record)
        writer.close()
        return handle.getvalue()

    assert written(1 << 16) == written(1 << 16)
    assert decoded(written(100)) == decoded(written(1 << 16)) == decoded(fastavro_file(records))


def fastavro_file(records):
    handle = io.BytesIO()
    fastavro.writer(handle, SCHEMA, records, codec="deflate")
    return handle.getvalue()


def test_a_file_of_no_records_is_a_valid_empty_container():
    handle = io.BytesIO()
    AvroContainerWriter(handle, SCHEMA, compile_encoder(SCHEMA)).close()
    assert decoded(handle.getvalue()) == []


def test_a_value_of_the_wrong_type_raises_rather_than_being_written():
    encode = compile_encoder(SCHEMA)
    for field, value in (("victimCount", "3"), ("reportId", 7), ("submittedAt", "2026-11-23T00:00:00Z")):
        record = routed_record("r", "GB")
        record[field] = value
        with pytest.raises((TypeError, AttributeError)):
            encode(bytearray(), record)


def test_longs_match_fastavro_at_every_width():
    for number in [0, 1, -1, 63, 64, -65, 8191, 8192, 2**31 - 1, -2**31, 2**62, 2**63 - 1, -2**63]:
        handle = io.BytesIO()
        fastavro.schemaless_writer(handle, "long", number)
        assert long_bytes(number) == handle.getvalue(), number


def test_unions_of_two_types_are_refused_by_name():
    schema = {"type": "record", "name": "T", "fields": [{"name": "x", "type": ["int", "string"]}]}
    with pytest.raises(UnsupportedSchema, match=r"only \[\"null\", type\] unions"):
        compile_encoder(schema)


def test_the_routed_schema_is_what_the_sink_writes_into_the_header():
    handle = io.BytesIO()
    AvroContainerWriter(handle, SCHEMA, compile_encoder(SCHEMA)).close()
    with io.BytesIO(handle.getvalue()) as reread:
        header = fastavro.reader(reread).metadata
    assert json.loads(header["avro.schema"]) == SCHEMA


def test_a_type_that_contains_itself_encodes_as_fastavro_does():
    schema = {"type": "record", "name": "Node", "fields": [
        {"name": "label", "type": "string"},
        {"name": "next", "type": ["null", "Node"], "default": None},
        {"name": "children", "type": {"type": "array", "items": "Node"}, "default": []}]}
    value = {"label": "a", "next": {"label": "b", "next": None, "children": [{"label": "c"}]},
             "children": [{"label": "d", "next": {"label": "e"}}]}
    ours, theirs = bytearray(), io.BytesIO()
    compile_encoder(schema)(ours, value)
    fastavro.schemaless_writer(theirs, fastavro.parse_schema(schema), value)
    assert bytes(ours) == theirs.getvalue()
