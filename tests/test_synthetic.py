"""The synthetic stream: deterministic, shardable, contract-shaped, with the mix it promises."""
import base64
import collections
import csv
import io
import json
import random
from importlib import resources

import fastavro
import imagehash
import pytest
from PIL import Image

from schemas import avro_schema, reference_table
from transforms.reports.avro_validation import InvalidRecord
from transforms.reports.validation import ReportValidator, decode_message, parse_rfc3339
from transforms.demo.synthetic import (MALFORMED_KINDS, SyntheticConfig, expected_counts, generate_messages,
                                  network_plan, synthetic_report)
from transforms.demo.synthetic_images import VARIANT_KINDS, make_image, variant

SMALL = SyntheticConfig(count=300, seed=7)
NO_MEDIA = dict(media_fraction=0.0)


@pytest.fixture(scope="module")
def validator():
    return ReportValidator()


def verdict(validator, payload):
    """None when the pipeline's parser accepts the payload, else its reason."""
    try:
        validator.validate(decode_message(payload, 10 * 1024 * 1024))
    except InvalidRecord as error:
        return str(error)
    return None


def bank(name):
    with resources.files("transforms.demo").joinpath("data", name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def hamming(left, right):
    return (int(left, 16) ^ int(right, 16)).bit_count()


def test_a_seed_gives_the_same_bytes_and_another_seed_others():
    first = list(generate_messages(SMALL))
    assert first == list(generate_messages(SMALL))
    other = list(generate_messages(SyntheticConfig(count=300, seed=8)))
    assert not set(first) & set(other)


def test_shards_partition_the_stream_and_keep_redeliveries_with_their_original():
    config = SyntheticConfig(count=600, seed=11, redelivery_fraction=0.1, **NO_MEDIA)
    whole = list(generate_messages(config))
    shards = [list(generate_messages(config, shard, 4)) for shard in range(4)]
    assert sorted(whole) == sorted(message for shard in shards for message in shard)
    assert all(shards)
    owners = collections.defaultdict(set)
    for number, shard in enumerate(shards):
        for message in shard:
            owners[message].add(number)
    assert all(len(numbers) == 1 for numbers in owners.values())


def test_valid_payloads_follow_the_avro_contract_and_the_parser_accepts_exactly_them(validator):
    schema = avro_schema("report")
    counts = expected_counts(SMALL)
    accepted = 0
    for payload in generate_messages(SMALL):
        if verdict(validator, payload) is None:
            accepted += 1
            assert fastavro.validation.validate(json.loads(payload), schema, strict=False)
    assert accepted == counts.messages - counts.malformed


def test_expected_counts_match_a_full_generation(validator):
    config = SyntheticConfig(count=1500, seed=3, media_fraction=0.05)
    messages = list(generate_messages(config))
    malformed = [m for m in messages if verdict(validator, m) is not None]
    unique_valid = {m for m in messages if m not in malformed}
    assert expected_counts(config) == (len(messages), len(unique_valid), len(messages) - len(set(messages)),
                                       len(malformed))
    assert 0.02 < expected_counts(config).redeliveries / config.count < 0.04


def test_redeliveries_repeat_the_payload_byte_for_byte_later_in_the_stream():
    config = SyntheticConfig(count=800, seed=5, redelivery_fraction=0.05, malformed_fraction=0.0, **NO_MEDIA)
    messages = list(generate_messages(config))
    seen = {}
    repeats = 0
    for position, message in enumerate(messages):
        if message in seen:
            repeats += 1
            assert position > seen[message]
        else:
            seen[message] = position
    assert repeats == expected_counts(config).redeliveries > 20
    ids = collections.Counter(json.loads(m)["reportId"] for m in seen)
    assert max(ids.values()) == 1  # a repeated reportId always comes with the identical payload


def malformed_kind(validator, payload):
    """Which MALFORMED_KINDS a refused payload is, judged from the payload itself."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    try:
        report = json.loads(text)
    except ValueError:
        return "truncated_json" if text.startswith('{"reportId"') else "not_json"
    if isinstance(report, list):
        return "json_array"
    if "reportId" not in report:
        return "missing_report_id"
    if report["incidentSummary"]["incidentType"] not in {row["incident_type"]
                                                         for row in reference_table("incident_types")}:
        return "unknown_incident_type"
    try:
        parse_rfc3339(report["submittedAt"])
    except ValueError:
        return "bad_submitted_at"
    assert verdict(validator, payload).startswith("$.")  # the schema check names the field
    return "wrong_types"


def test_malformed_messages_come_at_the_configured_rate_in_every_kind(validator):
    config = SyntheticConfig(count=3000, seed=13, malformed_fraction=0.05, redelivery_fraction=0.0,
                             files_per_report=(0, 1), **NO_MEDIA)
    refused = [m for m in generate_messages(config) if verdict(validator, m) is not None]
    assert 0.04 < len(refused) / config.count < 0.06
    kinds = collections.Counter(malformed_kind(validator, payload) for payload in refused)
    assert set(kinds) == set(MALFORMED_KINDS)


def test_event_time_spans_the_configured_hours_mostly_in_order():
    config = SyntheticConfig(count=1000, seed=17, hours=2, malformed_fraction=0.0, redelivery_fraction=0.0,
                             **NO_MEDIA)
    times = [parse_rfc3339(json.loads(m)["submittedAt"]).timestamp() for m in generate_messages(config)]
    start = parse_rfc3339(config.start).timestamp()
    assert start <= min(times) < start + 120 and start + 2 * 3600 - 120 < max(times) <= start + 2 * 3600
    late = sum(later < earlier for earlier, later in zip(times, times[1:]))
    assert 0.01 < late / len(times) < 0.1


def test_the_mix_has_every_incident_type_proxies_ipv6_and_public_files():
    reports = [synthetic_report(SyntheticConfig(**NO_MEDIA), index).report for index in range(3000)]
    types = collections.Counter(r["incidentSummary"]["incidentType"] for r in reports)
    assert set(types) == {row["incident_type"] for row in reference_table("incident_types")}
    assert types.most_common(1)[0][0].startswith("Child Pornography")
    assert len({r["reporter"]["espId"] for r in reports}) == 12
    events = [e for r in reports for e in (r["personOrUserReported"] or {}).get("ipCaptureEvents") or []]
    assert any(e["possibleProxy"] for e in events) and any(":" in e["ipAddress"] for e in events)
    files = [f for r in reports for f in r["files"]]
    assert any(f["publiclyAvailable"] and f["locationOfFile"] for f in files)
    assert {f["fileViewedByEsp"] for f in files} == {True, False, None}
    assert any(r["batchedReport"] for r in reports) and any(r["incidentSummary"]["escalateToHighPriority"]
                                                           for r in reports)


@pytest.fixture(scope="module")
def places():
    """Where every other report of a 20,000-slot stream is located (None: no usable location)."""
    config = SyntheticConfig(count=20000, files_per_report=(0, 0), **NO_MEDIA)
    return [synthetic_report(config, index).place for index in range(0, config.count, 2)]


def test_located_reports_follow_the_country_mix(places):
    rows = reference_table("country_mix")
    total = sum(int(row["reports"]) for row in rows)
    null_share = next(int(row["reports"]) for row in rows if row["iso_alpha2"] == "null") / total
    assert places.count(None) / len(places) == pytest.approx(null_share, abs=0.01)
    located = collections.Counter(place.country for place in places if place)
    located_total = total * (1 - null_share)
    for row in rows:
        if row["iso_alpha2"] != "null" and int(row["reports"]) / located_total > 0.02:
            expected = int(row["reports"]) / located_total * sum(located.values())
            assert abs(located[row["iso_alpha2"]] - expected) < 5 * expected ** 0.5, row


def test_us_reports_spread_over_states_and_the_listed_cities(places):
    us = [place for place in places if place and place.country == "US"]
    assert len({place.state for place in us}) > 20
    city_weights = {place.city: place.weight for place in network_plan() if place.city}
    assert {"Los Angeles", "San Jose", "Fresno", "San Diego", "Sacramento", "Houston", "Dallas", "Austin", "Miami",
            "Orlando", "Jacksonville", "Chicago", "Springfield", "New York", "Buffalo", "Alexandria",
            "Richmond"} == set(city_weights)
    assert city_weights["Los Angeles"] > city_weights["Fresno"] > 0


def inline_pictures(config, count):
    for index in range(count):
        synthetic = synthetic_report(config, index)
        for media in synthetic.media:
            if media.video:
                continue  # the demo's videos: tests/test_video_pipeline.py
            data = base64.b64decode(synthetic.report["files"][media.file_index]["content"])
            yield media, data


def test_known_media_is_within_8_of_its_bank_entry_and_new_media_beyond_every_entry():
    known = {row["external_id"]: row["hash_value"] for row in bank("demo-bank.csv") if row["hash_type"] == "PHASH"}
    benign = {row["external_id"]: row["hash_value"] for row in bank("demo-negative-bank.csv")}
    every_entry = list(known.values()) + list(benign.values())
    config = SyntheticConfig(media_fraction=1.0, benign_media_fraction=0.1)
    kinds = collections.Counter()
    for media, data in inline_pictures(config, 100):
        assert len(data) < 40_000
        phash = str(imagehash.phash(Image.open(io.BytesIO(data))))
        kinds[media.kind] += 1
        if media.kind == "new":
            assert min(hamming(phash, entry) for entry in every_entry) > 8
        else:
            entry = (known if media.kind == "known" else benign)[f"demo-image-{media.seed}"]
            assert hamming(phash, entry) <= 8
    assert min(kinds["known"], kinds["new"]) > 25 and kinds["benign"] > 2


def test_provided_hashes_reuse_bank_md5s_and_come_in_several_types():
    bank_md5 = {row["hash_value"] for row in bank("demo-bank.csv") if row["hash_type"] == "MD5"}
    files = [f for index in range(1500) for f in synthetic_report(SyntheticConfig(**NO_MEDIA), index).report["files"]]
    hashes = [h for f in files for h in f["originalFileHashes"]]
    assert {h["hashType"] for h in hashes} == {"MD5", "SHA1", "PDQ", "PHASH"}
    assert 0.05 < sum(h["value"] in bank_md5 for h in hashes if h["hashType"] == "MD5") / len(files) < 0.15


def test_benchmark_config_has_three_hashed_files_and_nothing_else():
    config = SyntheticConfig.for_benchmark(300)
    assert expected_counts(config) == (300, 300, 0, 0)
    for payload in generate_messages(config):
        files = json.loads(payload)["files"]
        assert len(files) == 3 and all(f["content"] is None and f["originalFileHashes"] for f in files)


def test_different_pictures_have_far_apart_phashes():
    hashes = [row["hash_value"] for name in ("demo-bank.csv", "demo-negative-bank.csv")
              for row in bank(name) if row["hash_type"] == "PHASH"]
    assert len(hashes) == 208
    assert min(hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]) > 12


@pytest.mark.slow
def test_500_seeds_have_phashes_more_than_12_apart():
    hashes = [str(imagehash.phash(make_image(seed))) for seed in range(500)]
    assert min(hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]) > 12


def test_variants_keep_the_phash_within_8():
    rng = random.Random(1)
    for seed in range(5000, 5020):
        original = str(imagehash.phash(make_image(seed)))  # as the bank lists it
        picture = make_image(seed, 128)  # as the stream sends it
        for kind in VARIANT_KINDS:
            data = variant(picture, kind, rng)
            assert hamming(str(imagehash.phash(Image.open(io.BytesIO(data)))), original) <= 8, (seed, kind)


def test_an_unknown_variant_kind_is_refused():
    with pytest.raises(ValueError, match="unknown variant kind"):
        variant(make_image(1, 32), "gif", random.Random(1))
