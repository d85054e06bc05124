"""SpikeAlerts: the baseline rule, and alerts from a pipeline over a quiet stretch then a flood."""
import functools
import json
import pickle
import random
import sys

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from tests.test_trends import at, routed_record, streaming_pipeline
from transforms.alerts import SpikeAlerts, SpikeRule, WatchedCounts, counted_key, spike_step, watched_key
from transforms.plumbing.event_windows import KeyedCombineFn, KeyedTableCombineFn

HOUR = 3600
RULE = SpikeRule(min_count=10, ratio=5.0, alpha=0.5)


def run_counts(counts, rule=RULE):
    """Alerts (window index, ratio) for a list of (window index, count)."""
    baseline, alerts = None, []
    for index, count in counts:
        baseline, alert = spike_step(baseline, index * HOUR, count, rule, HOUR)
        if alert:
            alerts.append((index, alert["ratio"]))
    return alerts, baseline


def test_a_new_signature_flooding_in_alerts_at_once():
    assert run_counts([(0, 12)])[0] == [(0, 12.0)]


def test_a_steady_count_never_alerts_and_a_jump_over_ratio_times_baseline_does():
    steady = [(hour, 4) for hour in range(6)]
    assert run_counts(steady)[0] == []
    assert run_counts(steady + [(6, 19)])[0] == []           # 19 < 5 x ~4
    assert run_counts(steady + [(6, 21)])[0] == [(6, 5.33)]  # 21 >= 5 x ~3.94


def test_below_the_minimum_count_nothing_alerts_whatever_the_ratio():
    assert run_counts([(0, 0), (1, 9)], SpikeRule(min_count=10, ratio=2.0))[0] == []


def test_silent_windows_decay_the_baseline():
    _, baseline = run_counts([(0, 40), (3, 0)])
    assert baseline.mean == 40 * 0.5 ** 4  # after 40: 20; two silent windows and a zero: 20 x 0.5^3
    assert run_counts([(0, 40), (1, 40), (5, 20)])[0][-1] == (5, 5.33)


def test_volume_keys_wait_for_their_warm_up():
    counts = [(0, 100), (1, 1), (2, 1), (3, 100)]  # baseline 30, 21.3, 15.21 before hour 3
    assert run_counts(counts, SpikeRule(min_count=10, ratio=3.0, warmup_windows=3))[0] == [(3, 6.57)]
    assert run_counts(counts, SpikeRule(min_count=10, ratio=3.0))[0] == [(0, 100.0), (3, 6.57)]


def flood(start_seconds, count, prefix, esp="esp-1", jurisdiction="GB"):
    return [at(start_seconds + index, routed_record(f"{prefix}{index}", esp=esp, jurisdiction=jurisdiction,
                                                   user=f"user-secret-{index}", hashes=[("MD5", "ab")]))
            for index in range(count)]


def alert_summary(alert):
    return alert["kind"], alert["key"], alert["window_start"][11:16], alert["count"]


def test_a_hash_flood_after_a_quiet_stretch_alerts_once_for_its_hour_and_writes_no_identifiers(tmp_path):
    quiet = [record for hour in range(4) for record in flood(hour * HOUR, 2, f"q{hour}-")]
    rules = {"esp": SpikeRule(min_count=10, ratio=3.0, warmup_windows=3)}
    with TestPipeline() as p:
        alerts = p | beam.Create(quiet + flood(5 * HOUR, 30, "f-")) | SpikeAlerts(str(tmp_path), rules=rules)
        assert_that(alerts | beam.Map(alert_summary), equal_to([
            ("signature", "md5:ab", "05:00", 30), ("esp", "esp-1", "05:00", 30)]))  # jurisdiction: min_count 50
    lines = [line for path in (tmp_path / "alerts").rglob("*.jsonl") for line in path.read_text().splitlines()]
    assert len(lines) == 2 and {json.loads(line)["window_end"] for line in lines} == {"1970-01-01T06:00:00Z"}
    assert not any("user-secret" in line or "203.0.113" in line for line in lines)


def test_in_a_stream_windows_are_judged_in_event_time_order_and_late_panes_do_not_alert(tmp_path):
    stream = (TestStream()
              .add_elements(flood(2 * HOUR, 12, "b-"))           # out of order: a later hour first
              .add_elements(flood(0, 2, "a-"))
              .advance_watermark_to(3 * HOUR)
              .add_elements(flood(HOUR, 40, "late-"))            # late for hour 1: ignored by the rule
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        alerts = p | stream | SpikeAlerts(str(tmp_path), rules={"esp": SpikeRule(10_000, 1.0),
                                                                 "jurisdiction": SpikeRule(10_000, 1.0)})
        # baseline 2 x 0.7 (hour 0) then an empty hour 1: 0.98; 12 >= 5 x max(0.98, 1)
        assert_that(alerts | beam.Map(alert_summary), equal_to([("signature", "md5:ab", "02:00", 12)]))


@pytest.mark.parametrize("signature", [
    "md5:" + "3a" * 16,  # digest bytes that are colons
    "sha256:" + "00" * 32,
    "md5:abc",  # odd-length hex stays text
    "md5:ABCD",  # so does upper case (content_signature lowers it; another text must not come back lowered)
    "bank:demo-known:3a3a",
    "esp-batch:r-1",
    "md5:",
])
def test_a_signature_comes_back_from_its_compact_count_key_as_it_was(signature):
    counted = counted_key("signature", signature)
    assert watched_key(counted) == ("signature", signature)
    assert counted != counted_key("signature", "md5:" + "3b" * 16)


def test_an_exact_hash_is_counted_under_fewer_bytes_than_its_text():
    signature = "md5:" + "ab" * 16
    assert isinstance(counted_key("signature", signature), bytes)
    assert sys.getsizeof(counted_key("signature", signature)) < sys.getsizeof(signature) - 20


def test_volume_keys_stay_kind_and_value():
    assert watched_key(counted_key("esp", "esp-1")) == ("esp", "esp-1")


def test_the_logged_counts_give_what_a_count_per_key_gives():
    """Signature keys logged (bytes and text, one with a NUL and non-ASCII), volume keys in a dict, across
    accumulators split, pickled and merged: the counts of KeyedCombineFn(CountCombineFn())."""
    rng = random.Random(5)
    signatures = [counted_key("signature", text) for text in (
        "md5:" + "00" * 16, "md5:" + "3a" * 16, "sha1:" + "ab" * 20, "bank:demo:x\x00y", "esp-batch:r-é", "md5:abc")]
    volumes = [("esp", "esp-1"), ("esp", "esp-2"), ("jurisdiction", "GB")]
    records = [(tuple(rng.sample(volumes, 2)) + ((rng.choice(signatures),) if rng.random() < 0.9 else ()), 1)
               for _ in range(500)]
    expected = KeyedCombineFn(beam.combiners.CountCombineFn())
    expected_counts = expected.extract_output(functools.reduce(expected.add_input, records,
                                                               expected.create_accumulator()))
    logged = KeyedTableCombineFn(WatchedCounts)
    parts = [functools.reduce(logged.add_input, records[start:start + 170], logged.create_accumulator())
             for start in range(0, 500, 170)]
    merged = logged.merge_accumulators([pickle.loads(pickle.dumps(part)) for part in parts])
    assert logged.extract_output(merged) == expected_counts
    assert len(expected_counts) == len(signatures) + len(volumes)
