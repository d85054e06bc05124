"""Every stage after routing survives every element: what one record, row, alert or notice makes fail
(a field a stage reads missing, a value a Parquet column cannot hold, a string no UTF-8 writer takes) becomes
a dead letter naming the stage and the error kind, the other elements are written, and the run goes on.

Parse refuses what valid reports could carry into these failures (tests/test_whole_pipeline_property.py
runs the whole pipeline over edge values), so each stage here is fed the odd element directly: a hand-made
record as the stage receives it, no monkeypatching. Before side-stage failures had an output, each of these
runs stopped with the element's exception.
"""
import json

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from pipelines.summary import format_summary, summarize
from tests.test_takedown_notices import ASN, CITY, unlocated_report
from tests.test_trends import at, counter, routed_record, streaming_pipeline
from transforms.alerts import SpikeAlerts, SpikeRule
from transforms.bundles import BundleRepeats, StampBundleIds
from transforms.dead_letters import (WriteDeadLetters, dead_letter, gather_side_stage_failures,
                                     take_gathered_side_stage_failures)
from transforms.notices import WriteTakedownNotices
from transforms.plumbing.direct_runner import count_every_bundle
from transforms.plumbing.metrics import NAMESPACE
from transforms.trends import TrendCounts

HOUR = 3600


def letters(out, stage):
    """The dead letters under `<out>/dead_letter/stage=<stage>/`."""
    return [json.loads(line) for path in sorted((out / "dead_letter" / f"stage={stage}").glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def table_rows(out, table):
    return [row for path in sorted((out / "trends" / table).rglob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def run_stage(stage, elements, streaming=False):
    """Runs `stage` over timestamped `elements` (a bounded Create, or a TestStream); returns the result."""
    if streaming:
        count_every_bundle()  # the streaming DirectRunner would otherwise keep one bundle's counts per step
    pipeline = streaming_pipeline() if streaming else TestPipeline()
    source = (TestStream().add_elements(elements).advance_watermark_to_infinity() if streaming
              else beam.Create(elements))
    with pipeline as p:
        _ = p | source | stage
    return p.result


def odd_trend_records():
    no_location = routed_record("no-location")
    del no_location["location"]
    return [at(10, routed_record("good")), at(20, no_location), at(30, routed_record("esp-as-number", esp=7))]


@pytest.mark.parametrize("streaming", [False, True])
def test_a_trend_record_or_row_that_fails_is_a_dead_letter_and_the_tables_are_written(tmp_path, streaming):
    result = run_stage(TrendCounts(str(tmp_path)), odd_trend_records(), streaming)
    found = letters(tmp_path, "trends")
    kinds = sorted({letter["reason"].split(":")[1].strip() for letter in found})
    assert kinds == ["ArrowTypeError", "KeyError"]  # the record without `location`; the rows esp=7 cannot hold
    assert [letter["reportId"] for letter in found if "KeyError" in letter["reason"]] == ["no-location"]
    assert all(letter["stage"] == "trends" and letter["reason"].startswith("trends failed: ") for letter in found)
    # the rows the table could not hold are the esp=7 rows only: one hourly, 24 sliding
    assert sorted(json.loads(letter["payload"])["table"] for letter in found if "Arrow" in letter["reason"]) == (
        ["hourly_by_esp"] + ["sliding24h_by_esp"] * 24)
    assert [row["reports"] for row in table_rows(tmp_path, "hourly_total")] == [2]  # good and esp=7: routed both
    assert [row["esp"] for row in table_rows(tmp_path, "hourly_by_esp")] == ["esp-1"]
    assert counter(result, "side_stage_failures") == len(found) == 26
    assert counter(result, "dead_lettered") == 0


def test_gathered_side_stage_failures_are_the_files_a_stage_alone_writes_counted_apart(tmp_path):
    """In a pipeline gathering side-stage failures (as build_pipeline does), a side stage's letters go
    through the run's one dead-letter sink: the same files as the stage alone writes, counted as side-stage
    failures, beside a report's letter counted as dead-lettered."""
    alone, gathered = tmp_path / "alone", tmp_path / "gathered"
    run_stage(TrendCounts(str(alone)), odd_trend_records())
    parse_letter = dead_letter("parse", "not JSON", b"{oops", None)
    with TestPipeline() as p:
        gather_side_stage_failures(p)
        _ = p | "Records" >> beam.Create(odd_trend_records()) | TrendCounts(str(gathered))
        _ = (p | "Letters" >> beam.Create([parse_letter])
             | WriteDeadLetters(str(gathered), side_stage_letters=take_gathered_side_stage_failures(p)))
    files = {folder: {path.name: path.read_bytes() for path in (folder / "dead_letter" / "stage=trends").iterdir()}
             for folder in (alone, gathered)}
    assert files[gathered] == files[alone] and len(letters(alone, "trends")) == 26
    assert letters(gathered, "parse") == [parse_letter]
    assert counter(p.result, "side_stage_failures") == 26 and counter(p.result, "dead_lettered") == 1


def test_a_bundle_record_that_fails_is_a_dead_letter_and_the_other_bundles_are_written(tmp_path):
    no_bank = routed_record("no-bank", bundle="bnd-x", matches=[("bank", "e1")])
    del no_bank["files"][0]["matches"][0]["bank"]
    unhashable = routed_record("list-jurisdiction", bundle="bnd-y", hashes=[("MD5", "aa")])
    unhashable["jurisdiction"] = ["GB"]
    good = routed_record("good", bundle="bnd-z", hashes=[("MD5", "bb")])
    result = run_stage(BundleRepeats(str(tmp_path), HOUR), [at(10, good), at(20, no_bank), at(30, unhashable)])
    found = letters(tmp_path, "bundles")
    assert sorted((letter["reportId"], letter["reason"].split(":")[1].strip()) for letter in found) == [
        ("list-jurisdiction", "TypeError"), ("no-bank", "KeyError")]
    bundles = [row for path in (tmp_path / "bundles").rglob("*.parquet") for row in pq.read_table(path).to_pylist()]
    assert [row["bundle_id"] for row in bundles] == ["bnd-z"]
    assert counter(result, "side_stage_failures") == 2


def unstamped_record(report_id, matches):
    """A routed record before StampBundleIds, with only what its signature reads."""
    return {"reportId": report_id, "bundleId": None, "files": [{"matches": matches, "hashes": []}]}


def test_a_record_whose_signature_fails_is_stamped_without_a_bundle_and_dead_lettered(tmp_path):
    no_bank = unstamped_record("no-bank", [{"externalId": "e1"}])
    good = unstamped_record("good", [{"bank": "b", "externalId": "e1"}])
    with TestPipeline() as p:
        stamped = (p | beam.Create([at(10, good), at(20, no_bank)])
                   | StampBundleIds(HOUR, output_dir=str(tmp_path))
                   | beam.Map(lambda record: (record["reportId"], record["bundleId"] is not None)))
        beam.testing.util.assert_that(stamped, beam.testing.util.equal_to([("good", True), ("no-bank", False)]))
    [letter] = letters(tmp_path, "bundles")
    assert (letter["reportId"], letter["reason"]) == ("no-bank", "bundles failed: KeyError: KeyError('bank')")


def test_without_an_output_for_its_dead_letters_a_failed_signature_stops_the_run():
    with pytest.raises(Exception, match="bundle signature failed: KeyError"):  # noqa: PT011
        with TestPipeline() as p:
            _ = p | beam.Create([at(20, unstamped_record("no-bank", [{"externalId": "e1"}]))]) | StampBundleIds(HOUR)


def test_an_alert_record_that_fails_or_an_alert_the_sink_refuses_is_a_dead_letter(tmp_path):
    no_esp = routed_record("no-esp")
    del no_esp["espId"]
    unwritable = routed_record("bytes-esp", esp=b"esp-bytes")  # no JSON writer takes bytes
    rules = {"esp": SpikeRule(min_count=1, ratio=1.0)}
    result = run_stage(SpikeAlerts(str(tmp_path), rules=rules),
                       [at(10, routed_record("good")), at(20, no_esp), at(30, unwritable)])
    found = letters(tmp_path, "alerts")
    assert sorted(letter["reason"].split(":")[1].strip() for letter in found) == ["KeyError", "TypeError"]
    assert [letter["reportId"] for letter in found if "KeyError" in letter["reason"]] == ["no-esp"]
    written = [json.loads(line) for path in (tmp_path / "alerts").rglob("*.jsonl")
               for line in path.read_text().splitlines()]
    assert sorted(alert["key"] for alert in written if alert["kind"] == "esp") == ["esp-1"]
    assert counter(result, "side_stage_failures") == 2


def test_a_report_whose_notice_fails_is_a_dead_letter_and_the_other_notices_are_written(tmp_path):
    good = unlocated_report(("https://files.example.net/a.jpg",), "good")
    no_geo = unlocated_report(("https://files.example.net/b.jpg",), "no-geo")
    del no_geo["_geo"]
    result = run_stage(WriteTakedownNotices(str(tmp_path), asn_db=ASN, city_db=CITY),
                       [TimestampedValue(good, 1795392000), TimestampedValue(no_geo, 1795392000)])
    [letter] = letters(tmp_path, "notices")
    assert (letter["reportId"], letter["reason"]) == ("no-geo", "notices failed: KeyError: KeyError('_geo')")
    notices = [json.loads(line) for path in (tmp_path / "notices").rglob("*.jsonl")
               for line in path.read_text().splitlines()]
    assert [notice["url"] for notice in notices] == ["https://files.example.net/a.jpg"]
    assert counter(result, "side_stage_failures") == 1


def test_a_dead_letter_the_writer_cannot_file_is_written_escaped_and_nothing_is_lost(tmp_path):
    plain = dead_letter("parse", "not JSON", b"{oops", None)
    stageless = {key: value for key, value in dead_letter("parse", "odd", b"[]", None).items() if key != "stage"}
    result = run_stage(WriteDeadLetters(str(tmp_path)), [TimestampedValue(plain, 0), TimestampedValue(stageless, 0)])
    assert letters(tmp_path, "parse") == [plain]
    [escaped] = letters(tmp_path, "dead_letter")
    assert escaped["reason"] == "dead_letter failed: KeyError: \"KeyError('stage')\""
    assert json.loads(escaped["payload"]) == stageless  # the letter as it came, as ASCII-escaped JSON
    assert counter(result, "dead_lettered") == 2


def test_side_stage_failures_are_counted_apart_from_the_reconciliation():
    totals = {(NAMESPACE, "read"): 5, (NAMESPACE, "routed"): 4, (NAMESPACE, "dead_lettered"): 1,
              (NAMESPACE, "side_stage_failures"): 3, (f"{NAMESPACE}.side_stage_failures_by_stage", "trends"): 2,
              (f"{NAMESPACE}.side_stage_failures_by_stage", "notices"): 1}
    summary = summarize(totals)
    assert summary["reconciled"] and summary["side_stage_failures"] == 3
    assert summary["side_stage_failures_by_stage"] == {"notices": 1, "trends": 2}
    assert "side_stage_failures" not in summary["other_counts"]
    assert "side-stage failures: 3 (notices 1, trends 2;" in format_summary(summary)


def without_location(record):
    """Fault injector (test only): a routed record as no valid report can make it, without `location`."""
    return {key: value for key, value in record.items() if key != "location"}


def test_in_a_whole_run_a_side_stage_failure_keeps_the_report_routed_and_the_run_reconciled(tmp_path, city_test_db):
    """The whole pipeline over valid reports, with a second trends branch fed by a fault injector: the run
    finishes, every report is routed once, the failures are side-stage dead letters on disk, and
    read = routed + duplicates + dead_lettered still holds with them counted apart."""
    from pipelines.options import TiplineOptions
    from pipelines.tipline_pipeline import build_pipeline
    from tests.test_pipeline_end_to_end import variant
    from transforms.plumbing.metrics import read_counters

    out = tmp_path / "out"
    payloads = [json.dumps(variant(f"r-{n}", ip="81.2.69.160")).encode() for n in range(3)] + [b"{not json"]
    options = beam.options.pipeline_options.PipelineOptions(
        ["--source", "files", "--output", str(out), "--geoip-city-db", city_test_db, "--demo-data"])
    with TestPipeline(options=options) as p:
        outputs = build_pipeline(p, options.view_as(TiplineOptions), messages=p | beam.Create(payloads))
        _ = (outputs["routed"] | "FaultInjector" >> beam.Map(without_location)
             | "InjectedTrends" >> TrendCounts(str(tmp_path / "injected")))
    summary = summarize(read_counters(p.result))
    assert (summary["read"], summary["routed"], summary["dead_lettered"]) == (4, 3, 1) and summary["reconciled"]
    assert summary["side_stage_failures"] == len(letters(tmp_path / "injected", "trends")) == 3
    assert summary["side_stage_failures_by_stage"] == {"trends": 3}
    assert "side-stage failures: 3 (trends 3;" in format_summary(summary)
    assert sum(row["reports"] for row in table_rows(out, "hourly_total")) == 3  # the real branch counted all
