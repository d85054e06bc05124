"""The embedded demo data: the synthetic GeoIP City database and the demo hash banks."""
import csv
import ipaddress
import json
import random
import re
from importlib import resources

import geoip2.database
import geoip2.errors
import pytest

from tests.conftest import MAXMIND
from transforms.demo.synthetic import (BENIGN_IMAGE_SEEDS, KNOWN_IMAGE_SEEDS, SyntheticConfig, known_md5s,
                                  network_plan, synthetic_report)

DEMO = resources.files("transforms.demo").joinpath("data")
MAXMIND_CITY_IPS = ("81.2.69.142", "216.160.83.56", "89.160.20.112", "175.16.199.0", "2.125.160.216",
                    "2001:480:10::1")


@pytest.fixture(scope="module")
def demo_city():
    with geoip2.database.Reader(str(DEMO.joinpath("demo-city.mmdb"))) as reader:
        yield reader


@pytest.fixture(scope="module")
def build_script():
    from transforms.demo import build_data

    return build_data


def bank_rows(name):
    with DEMO.joinpath(name).open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["hash_type", "hash_value", "bank", "label", "external_id"]
        return list(reader)


def assert_located_at(record, place):
    assert record.country.iso_code == place.country and record.country.name == place.country_name
    assert [(s.iso_code, s.name) for s in record.subdivisions] == ([(place.state, place.state_name)]
                                                                   if place.state else [])
    assert record.city.name == place.city
    assert record.location.accuracy_radius == {"country": 1000, "state": 200, "city": 20}[place.level]


def test_the_database_is_a_synthetic_geoip2_city_database(demo_city):
    metadata = demo_city.metadata()
    assert metadata.database_type == "GeoIP2-City" and metadata.ip_version == 6
    assert "SYNTHETIC" in metadata.description["en"]


def test_every_place_of_the_plan_is_found_at_its_networks(demo_city):
    rng = random.Random(1)
    for place in network_plan():
        for network in (place.ipv4, place.ipv6):
            for address in (network[1], network[rng.randrange(network.num_addresses)], network[-1]):
                assert address.is_global
                assert_located_at(demo_city.city(str(address)), place)


def test_generated_ips_are_global_and_located_where_the_generator_meant(demo_city):
    located = 0
    for index in range(1500):
        synthetic = synthetic_report(SyntheticConfig(media_fraction=0.0), index)
        user = synthetic.report["personOrUserReported"] or {}
        for event in user.get("ipCaptureEvents") or []:
            address = ipaddress.ip_address(event["ipAddress"])
            if synthetic.place:
                assert address.is_global and not event["possibleProxy"]
                assert_located_at(demo_city.city(str(address)), synthetic.place)
                located += 1
            elif not event["possibleProxy"]:
                assert address.is_private
            else:
                assert address.is_global
    assert located > 1500


def test_the_demo_networks_stay_clear_of_maxmind_test_databases(demo_city, city_test_db, build_script):
    build_script.check_no_overlap_with_maxmind_tests(MAXMIND)
    for ip in MAXMIND_CITY_IPS:
        with pytest.raises(geoip2.errors.AddressNotFoundError):
            demo_city.city(ip)
    with geoip2.database.Reader(city_test_db) as maxmind:
        for place in network_plan():
            with pytest.raises(geoip2.errors.AddressNotFoundError):
                maxmind.city(str(place.ipv4[1]))


@pytest.mark.parametrize("network", ["::45.3.1.0/120", "46.0.0.0/7", "2a0c:5:1::/48"])
def test_the_overlap_check_notices_a_shadowed_network(tmp_path, build_script, network):
    (tmp_path / "Fake-Test.json").write_text(json.dumps([{network: {"country": {"iso_code": "SE"}}}]))
    with pytest.raises(ValueError, match="overlaps the demo networks"):
        build_script.check_no_overlap_with_maxmind_tests(tmp_path)


def test_the_banks_list_the_known_and_benign_pictures_and_the_known_md5s():
    known = bank_rows("demo-bank.csv")
    phashes = [row for row in known if row["hash_type"] == "PHASH"]
    assert [row["external_id"] for row in phashes] == [f"demo-image-{seed}" for seed in KNOWN_IMAGE_SEEDS]
    assert all(re.fullmatch("[0-9a-f]{16}", row["hash_value"]) for row in phashes)
    assert {row["bank"] for row in known} == {"demo-known"}
    assert {row["label"] for row in phashes} == {f"demo-known-series-{n}" for n in range(1, 21)}
    assert [row["hash_value"] for row in known if row["hash_type"] == "MD5"] == list(known_md5s())
    benign = bank_rows("demo-negative-bank.csv")
    assert [row["external_id"] for row in benign] == [f"demo-image-{seed}" for seed in BENIGN_IMAGE_SEEDS]
    assert {row["bank"] for row in benign} == {"demo-benign"}


def test_the_committed_files_are_what_the_build_script_makes(tmp_path, build_script):
    build_script.build_city_db(tmp_path / "demo-city.mmdb")
    assert (tmp_path / "demo-city.mmdb").read_bytes() == DEMO.joinpath("demo-city.mmdb").read_bytes()
    build_script.write_bank(tmp_path / "demo-negative-bank.csv", build_script.benign_bank_rows())
    assert (tmp_path / "demo-negative-bank.csv").read_text() == DEMO.joinpath("demo-negative-bank.csv").read_text()
    committed = [tuple(row.values()) for row in bank_rows("demo-bank.csv")]
    for seed in (KNOWN_IMAGE_SEEDS[0], KNOWN_IMAGE_SEEDS[-1]):
        assert ("PHASH", build_script.phash_of(seed)) in {row[:2] for row in committed}
