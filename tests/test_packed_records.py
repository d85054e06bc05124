"""Packed records come back equal, including what orjson alone would change or refuse."""
import datetime
import json
import math
import statistics

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from isal import isal_zlib

from schemas import avro_schema, example_record
from tests.hostile import crossed_a_grouping, run_stages, unicode_text
from transforms.demo.synthetic import SyntheticConfig, generate_messages
from transforms.reports.avro_validation import InvalidRecord, compile_validator
from transforms.reports.validation import ReportValidator, decode_message

from transforms.plumbing import packed_records
from transforms.plumbing.packed_records import DeflatedBytesListCoder, pack, pack_deflated, unpack


def demo_records(like):
    """The demo's reports that pass the schema check (what dedup groups), or the routed records the
    enrichment chain makes of them (what bundle stamping groups)."""
    messages = list(generate_messages(SyntheticConfig(count=300, seed=11)))
    if like == "routed_report":
        return [record for kind, record in map(run_stages, messages) if kind == "routed"]
    validator, reports = ReportValidator(), []
    for message in messages:
        try:
            report = decode_message(message, 1 << 20)
            validator.validate(report)
        except InvalidRecord:
            continue
        reports.append(report)
    return reports


class Kind(str):
    pass


REPORT = {"reportId": "r-1", "files": [{"fileId": "f", "hashes": [{"hashType": "MD5", "value": "ab"}]}],
          "victims": [{"ageEstimate": None}], "port": 443, "flag": True, "ratio": -0.0, "note": "é ✓"}


@pytest.mark.parametrize("record", [
    REPORT,
    {**REPORT, "extra": 1.5e-300},
    {**REPORT, "big": 2 ** 70},
    {**REPORT, "lone": "\ud800"},
    {**REPORT, 7: "int key"},
    {**REPORT, "pair": (1, 2)},  # JSON would make it a list
    {**REPORT, "inf": math.inf},  # orjson would write null
    {**REPORT, "when": datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc)},  # JSON would make it a str
    {**REPORT, "kind": Kind("exact_hash")},  # a str subclass
    {**REPORT, "percent": numpy.float64(97.5)},  # a float with a buffer (marshal would make it bytes)
], ids=["json", "float", "big int", "lone surrogate", "int key", "tuple", "infinity", "datetime", "str subclass",
        "numpy float"])
@pytest.mark.parametrize("packed_by", [pack, lambda record: pack_deflated(record, "report"),
                                       lambda record: pack_deflated(record, "routed_report")],
                         ids=["packed", "deflated like a report", "deflated like a routed record"])
def test_unpacked_record_equals_the_packed_one_with_its_types(record, packed_by):
    back = unpack(packed_by(record))
    assert back == record
    assert [type(value) for value in back.values()] == [type(value) for value in record.values()]


def test_a_deflated_report_takes_fewer_bytes_and_a_record_of_any_kind_starting_with_a_tag_stays_itself():
    report = {**REPORT, "files": [{**REPORT["files"][0], "fileId": f"f-{n}"} for n in range(20)]}
    assert len(pack_deflated(report, "report")) < len(pack(report)) / 2
    for tag in ("r", "o", "z"):
        assert unpack(pack({tag: tag * 2})) == {tag: tag * 2} and unpack(pack(tag)) == tag


def test_each_example_record_is_a_record_of_todays_schema():
    """A stale example would still unpack right, only deflate less: so it is kept a record of its schema."""
    ReportValidator().validate(json.loads(example_record("report")))
    routed = json.loads(example_record("routed_report"))
    compile_validator(avro_schema("routed_report"))(routed)
    assert list(routed) == [field["name"] for field in avro_schema("routed_report")["fields"]]


@pytest.mark.parametrize("like", ["report", "routed_report"])
def test_a_record_deflated_against_its_schemas_example_takes_a_fraction_of_deflating_it_alone(like):
    """The demo's records, not the example itself: the dictionary must pay on records it has not seen."""
    records = demo_records(like)
    ratios = [len(pack_deflated(record, like, json_exact=True))
              / len(isal_zlib.compress(pack(record, json_exact=True), 0)) for record in records]
    assert statistics.median(ratios) < 0.6
    assert [unpack(pack_deflated(record, like, json_exact=True)) for record in records] == records


def test_nan_survives_packing():
    back = unpack(pack({"reportId": "r-1", "extra": math.nan}))
    assert math.isnan(back["extra"])


def test_plain_values_pack_as_json_and_others_are_pickled():
    assert pack(REPORT).startswith(b"j{")
    assert pack({**REPORT, "kind": Kind("exact_hash")}).startswith(b"p")
    assert pack({**REPORT, "pair": (1, 2)}).startswith(b"p")


def test_a_record_nested_deeper_than_pickle_goes_packs_through_beams_coder():
    deep = leaf = {}
    for _ in range(5000):
        leaf["child"] = {}
        leaf = leaf["child"]
    back = unpack(pack({"reportId": "r-deep", "nested": deep}))
    depth, node = 0, back["nested"]
    while node:
        depth, node = depth + 1, node["child"]
    assert (back["reportId"], depth) == ("r-deep", 5000)


@pytest.mark.parametrize("values", [[], [b""], [b"z", b"", b"\x00" * 70_000], [bytes([n % 256]) * n for n in range(300)]],
                         ids=["none", "one empty", "mixed", "many"])
def test_a_deflated_list_of_bytes_decodes_to_the_same_list(values):
    coder = DeflatedBytesListCoder()
    assert coder.decode(coder.encode(values)) == values


def test_a_deflated_lists_size_estimate_is_its_run_before_deflation_and_deflates_nothing(monkeypatch):
    values = [pack({**REPORT, "reportId": f"r-{n}"}) for n in range(50)]
    run_bytes = len(isal_zlib.decompress(DeflatedBytesListCoder().encode(values)))

    def no_deflating(*_):
        raise AssertionError("estimate_size deflated the list")
    monkeypatch.setattr(packed_records.isal_zlib, "compress", no_deflating)
    assert DeflatedBytesListCoder().estimate_size(values) == run_bytes


def test_a_list_of_similar_records_deflates_to_a_fraction_of_its_bytes():
    values = [pack({**REPORT, "reportId": f"r-{n}"}) for n in range(200)]
    assert len(DeflatedBytesListCoder().encode(values)) < sum(map(len, values)) / 4


JSON_EXACT_RECORDS = ["json", "float", "big int", "lone surrogate", "int key", "datetime", "str subclass", "numpy float"]


@pytest.mark.parametrize("record", [REPORT, {**REPORT, "extra": 1.5e-300}, {**REPORT, "big": 2 ** 70},
                                    {**REPORT, "lone": "\ud800"}, {**REPORT, 7: "int key"},
                                    {**REPORT, "when": datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc)},
                                    {**REPORT, "kind": Kind("exact_hash")}, {**REPORT, "percent": numpy.float64(97.5)}],
                         ids=JSON_EXACT_RECORDS)
def test_json_exact_skips_only_the_load_back_check_what_orjson_refuses_is_still_pickled(record):
    back = unpack(pack_deflated(record, "report", json_exact=True))
    assert back == record
    assert [type(value) for value in back.values()] == [type(value) for value in record.values()]


def test_json_exact_is_the_callers_promise():
    """What the load-back check catches, a caller that promised `json_exact` gets changed: so only decoded
    messages and schema-checked routed records are packed that way."""
    assert unpack(pack({"pair": (1, 2)}, json_exact=True)) == {"pair": [1, 2]}
    assert unpack(pack({"pair": (1, 2)})) == {"pair": (1, 2)}


ANY_FLOAT_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), unicode_text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(unicode_text(max_size=6), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(unicode_text(max_size=6), ANY_FLOAT_JSON, max_size=4), st.booleans())
def test_every_message_decode_message_accepts_packs_json_exact(value, as_literal_overflow):
    """NaN, infinities (json.dumps writes them) and number literals past a double are refused at decoding,
    so every report that reaches a batch grouping comes back from it equal."""
    payload = json.dumps(value).encode()
    if as_literal_overflow:
        payload = payload[:-1] + (b', ' if value else b'') + b'"n": 1e999}'
    try:
        report = decode_message(payload, 1 << 20)
    except InvalidRecord:
        return
    crossed_a_grouping(report, "report")
