"""IP choice policy, GeoIP lookups on MaxMind's official test databases, and the EnrichGeo composite."""
import ipaddress
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from schemas import avro_schema
from tests.conftest import MAXMIND, example_report
from transforms.geo import EnrichGeo
from transforms.location.geoip import (LOCATION_FIELDS, GeoIPDatabaseError, GeoLocator, _ipv4_int, check_databases,
                                       classify_ip)
from transforms.location.jurisdiction_rules import JurisdictionRules

CITY = str(MAXMIND / "GeoIP2-City-Test.mmdb")
ASN = str(MAXMIND / "GeoLite2-ASN-Test.mmdb")
ANONYMOUS = str(MAXMIND / "GeoIP2-Anonymous-IP-Test.mmdb")


@pytest.fixture(scope="module")
def locator():
    return GeoLocator(CITY, ASN)


def report_with(file_events=(), user_events=(), estimated=None):
    """The contract example with the given file events (one file each) and user capture events."""
    report = example_report()
    template = report["files"][0]
    report["files"] = [{**template, "fileId": f"f-{i + 1}", "ipCaptureEvent": event} for i, event in enumerate(file_events)]
    report["personOrUserReported"]["ipCaptureEvents"] = list(user_events)
    report["personOrUserReported"]["estimatedLocation"] = estimated
    return report


def event(ip, name="Login", when=None, proxy=False):
    return {"ipAddress": ip, "eventName": name, "dateTime": when, "possibleProxy": proxy, "port": None}


@pytest.mark.parametrize("text, expected", [
    ("81.2.69.142", ("81.2.69.142", None)),
    (" 81.2.69.142 ", ("81.2.69.142", None)),
    ("::ffff:81.2.69.142", ("81.2.69.142", None)),
    ("::ffff:10.0.0.1", ("10.0.0.1", "private (RFC 1918)")),
    ("2001:480:10::1", ("2001:480:10::1", None)),
    ("10.1.2.3", ("10.1.2.3", "private (RFC 1918)")),
    ("192.168.0.9", ("192.168.0.9", "private (RFC 1918)")),
    ("100.64.3.4", ("100.64.3.4", "CGNAT shared address space (RFC 6598)")),
    ("127.0.0.1", ("127.0.0.1", "loopback")),
    ("169.254.1.1", ("169.254.1.1", "link-local")),
    ("224.0.0.251", ("224.0.0.251", "multicast")),
    ("198.51.100.7", ("198.51.100.7", "documentation (TEST-NET-2)")),
    ("240.1.1.1", ("240.1.1.1", "reserved (240.0.0.0/4, broadcast)")),
    ("0.1.2.3", ("0.1.2.3", "unspecified ('this network', 0.0.0.0/8)")),
    ("::1", ("::1", "loopback")),
    ("fe80::1", ("fe80::1", "link-local")),
    ("fd00::5", ("fd00::5", "private (unique local, RFC 4193)")),
    ("2001:db8::1", ("2001:db8::1", "documentation (RFC 3849)")),
    ("ff02::1", ("ff02::1", "multicast")),
    ("300.1.2.3", (None, "malformed (not an IPv4 or IPv6 address)")),
    ("01.2.3.4", (None, "malformed (not an IPv4 or IPv6 address)")),
    ("81.2.69.142:443", (None, "malformed (not an IPv4 or IPv6 address)")),
    ("not an ip", (None, "malformed (not an IPv4 or IPv6 address)")),
    ("", (None, "missing")),
    (None, (None, "missing")),
])
def test_classify_ip_skips_every_kind_of_unusable_address(text, expected):
    assert classify_ip(text) == expected


def _strict_ipv4(text):
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def test_ipv4_text_is_read_as_the_standard_library_reads_it():
    """The fast IPv4 reader (inet_pton) accepts exactly what `ipaddress` accepts: four decimal octets, none
    over 255 and none with a leading zero, nothing around them."""
    rng = random.Random(20)
    tricky = ["1.2.3.4", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3.04", "000.1.2.3", "1.2.3",
              "1.2.3.4.5", "1..3.4", " 1.2.3.4", "1.2.3.4 ", "1.2.3.4\x00", "0x1.2.3.4", "+1.2.3.4", "1.2.3.-4",
              "\u0661.2.3.4", "1.2.3.4/32", "::ffff:1.2.3.4", "2001:db8::1", "", "1.2.3.1000", "1.2.3.4%eth0"]
    octet = lambda: rng.choice([str(rng.randrange(256)), str(rng.randrange(256, 1000)), "0" + str(rng.randrange(100)),
                                "", "00", "-1", "1a"])
    generated = [".".join(octet() for _ in range(rng.choice([3, 4, 4, 4, 5]))) for _ in range(5000)]
    for text in tricky + generated:
        assert _ipv4_int(text) == _strict_ipv4(text), text


def test_file_upload_events_come_first_then_other_file_events_then_user_events_newest_first(locator):
    report = report_with(
        file_events=[event("89.160.20.112", "Login"), event("216.160.83.56", "Upload")],
        user_events=[event("175.16.199.0", "Login", "2026-11-01T00:00:00Z"),
                     event("81.2.69.142", "Login", "2026-11-20T00:00:00+01:00"),
                     event("2.125.160.216", "Login", None)])
    sources = [(entry["source"], entry["decision"]) for entry in locator.consider(report)]
    assert sources == [("file f-2 Upload", "chosen"), ("file f-1 Login", "not needed"),
                       ("user Login 2026-11-20T00:00:00+01:00", "not needed"),
                       ("user Login 2026-11-01T00:00:00Z", "not needed"),
                       ("user Login (no dateTime)", "not needed")]
    geo = locator.locate(report)
    assert (geo["ip"], geo["ipSource"], geo["countryCode"], geo["subdivisionCode"]) == (
        "216.160.83.56", "file f-2 Upload", "US", "WA")


def test_skipped_ips_are_explained_and_the_first_located_ip_is_chosen(locator):
    report = report_with(
        file_events=[event("10.0.0.7", "Upload"), event("garbage", "Upload")],
        user_events=[event("8.8.8.8", "Login", "2026-11-22T00:00:00Z"),
                     event("::ffff:81.2.69.142", "Login", "2026-11-21T00:00:00Z")])
    decisions = [(entry["ipAddress"], entry["decision"], entry["reason"]) for entry in locator.consider(report)]
    assert decisions == [
        ("10.0.0.7", "skipped", "private (RFC 1918)"),
        ("garbage", "skipped", "malformed (not an IPv4 or IPv6 address)"),
        ("8.8.8.8", "skipped", "public, but the GeoIP City database places it in no country"),
        ("::ffff:81.2.69.142", "chosen", "first IP in policy order placed in a country")]
    geo = locator.locate(report)
    assert geo["ip"] == "81.2.69.142" and geo["countryCode"] == "GB" and geo["city"] == "London"
    for skipped in ("10.0.0.7", "garbage", "8.8.8.8"):
        assert skipped in geo["ipChoiceReason"]


@pytest.mark.parametrize("ip, country, subdivision, city, radius", [
    ("81.2.69.142", "GB", "ENG", "London", 10),
    ("216.160.83.56", "US", "WA", "Milton", 22),
    ("89.160.20.112", "SE", "E", "Linköping", 76),
    ("175.16.199.0", "CN", "22", "Changchun", 100),
    ("2.125.160.216", "GB", "ENG", "Boxford", 100),
    ("2001:480:10::1", "US", "CA", "San Diego", 20),
])
def test_city_lookups_match_maxmind_expected_results(locator, ip, country, subdivision, city, radius):
    geo = locator.locate(report_with(file_events=[event(ip, "Upload")]))
    assert (geo["countryCode"], geo["subdivisionCode"], geo["city"], geo["locationSource"]) == (
        country, subdivision, city, "geoip")
    assert geo["accuracyRadiusKm"] == radius


def test_raw_reader_fields_agree_with_geoip2_city(locator):
    import geoip2.database

    with geoip2.database.Reader(CITY) as reader:
        for ip in ("81.2.69.142", "216.160.83.56", "89.160.20.112", "175.16.199.0", "2001:480:10::1"):
            model = reader.city(ip)
            fields, _ = locator.city_of(ip)
            assert fields == {"countryCode": model.country.iso_code,
                              "subdivisionCode": model.subdivisions.most_specific.iso_code
                              if len(model.subdivisions) == 1 else model.subdivisions[0].iso_code,
                              "city": model.city.name, "accuracyRadiusKm": model.location.accuracy_radius}


def test_ips_absent_from_the_database_leave_the_user_unlocated_but_keep_the_ip(locator):
    geo = locator.locate(report_with(user_events=[event("8.8.8.8", "Login", "2026-11-22T00:00:00Z"),
                                                  event("2a02:d500::1", "Login", "2026-11-21T00:00:00Z")]))
    assert geo["locationSource"] == "none" and geo["countryCode"] is None
    assert geo["ip"] == "8.8.8.8" and "no candidate IP" in geo["unlocatedReason"]


def test_no_ip_at_all_is_unlocated_with_a_reason(locator):
    geo = locator.locate(report_with())
    assert geo["ip"] is None and geo["locationSource"] == "none"
    assert geo["unlocatedReason"] == "no IP in the report"


def test_asn_database_fills_asn_and_organisation(locator):
    geo = locator.locate(report_with(file_events=[event("149.101.100.1", "Upload")]))
    assert (geo["countryCode"], geo["asn"], geo["asOrganization"]) == ("US", 6167, "CELLCO-PART")


def test_anonymous_ip_database_marks_anonymous_and_a_clean_ip_false():
    with_anonymous = GeoLocator(CITY, ASN, ANONYMOUS)
    hidden = with_anonymous.locate(report_with(file_events=[event("81.2.69.142", "Upload")]))
    assert hidden["anonymous"] is True and "public proxy" in hidden["ipChoiceReason"]
    clean = with_anonymous.locate(report_with(file_events=[event("216.160.83.56", "Upload")]))
    assert clean["anonymous"] is False


def test_possible_proxy_on_the_chosen_event_marks_anonymous(locator):
    geo = locator.locate(report_with(file_events=[event("216.160.83.56", "Upload", proxy=True)]))
    assert geo["anonymous"] is True and "possibleProxy" in geo["ipChoiceReason"]
    assert locator.locate(report_with(file_events=[event("216.160.83.56", "Upload")]))["anonymous"] is None


@pytest.fixture(scope="module")
def legacy_city_db(tmp_path_factory):
    """A City-style db with the legacy satellite/anonymous-proxy traits and pseudo-countries, written by mmdb-writer."""
    writer = MMDBWriter(ip_version=6, database_type="GeoIP2-City", languages=["en"], ipv4_compatible=True)
    us = {"iso_code": "US", "names": {"en": "United States"}}
    writer.insert_network(IPSet(["5.0.0.0/24"]), {"country": us, "traits": {"is_satellite_provider": True}})
    writer.insert_network(IPSet(["5.0.1.0/24"]), {"country": us, "traits": {"is_anonymous_proxy": True}})
    writer.insert_network(IPSet(["5.0.2.0/24"]), {"country": {"iso_code": "A1"}})
    writer.insert_network(IPSet(["5.0.3.0/24"]), {"country": {"iso_code": "EU"}})
    path = tmp_path_factory.mktemp("mmdb") / "legacy-city.mmdb"
    writer.to_db_file(str(path))
    return str(path)


@pytest.mark.parametrize("ip, country, anonymous, hint", [
    ("5.0.0.9", "US", True, "satellite provider"),
    ("5.0.1.9", "US", True, "anonymous proxy"),
    ("5.0.2.9", "A1", True, "pseudo-country A1"),
    ("5.0.3.9", "EU", None, None),
])
def test_legacy_traits_and_pseudo_countries(legacy_city_db, ip, country, anonymous, hint):
    geo = GeoLocator(legacy_city_db).locate(report_with(file_events=[event(ip, "Upload")]))
    assert (geo["countryCode"], geo["anonymous"]) == (country, anonymous)
    if hint:
        assert hint in geo["ipChoiceReason"]


def test_estimated_location_is_the_fallback_only_without_a_located_ip(locator):
    estimated = {"countryCode": "se", "region": None, "city": "Stockholm"}
    fallback = locator.locate(report_with(file_events=[event("10.0.0.1", "Upload")], estimated=estimated))
    assert (fallback["locationSource"], fallback["countryCode"], fallback["city"]) == ("estimatedLocation", "SE", "Stockholm")
    assert "estimatedLocation" in fallback["unlocatedReason"]
    located = locator.locate(report_with(file_events=[event("81.2.69.142", "Upload")], estimated=estimated))
    assert (located["locationSource"], located["countryCode"]) == ("geoip", "GB")


def test_location_has_exactly_the_routed_record_location_fields(locator):
    schema_fields = next(f for f in avro_schema("routed_report")["fields"] if f["name"] == "location")["type"]["fields"]
    assert tuple(field["name"] for field in schema_fields) == LOCATION_FIELDS
    assert tuple(locator.locate(example_report())) == LOCATION_FIELDS


@pytest.mark.parametrize("kwargs, kind", [
    ({"city_db": "/nonexistent/city.mmdb"}, "city"),
    ({"city_db": None}, "city"),
    ({"city_db": CITY, "asn_db": "/nonexistent/asn.mmdb"}, "asn"),
    ({"city_db": CITY, "anonymous_db": str(MAXMIND / "README.md")}, "anonymous"),
])
def test_check_databases_names_the_kind_of_a_missing_or_unreadable_file(kwargs, kind):
    """The kind, not a flag: the options layer names the flag (tests/test_misconfiguration.py)."""
    with pytest.raises(GeoIPDatabaseError) as raised:
        check_databases(**kwargs)
    assert raised.value.kind == kind and "--" not in str(raised.value)


def test_check_databases_accepts_the_test_databases():
    check_databases(CITY, ASN, ANONYMOUS)


def test_enrich_geo_composite_adds_geo_and_dead_letters_failures():
    good = report_with(file_events=[event("216.160.83.56", "Upload")])
    broken = {**example_report(), "reportId": "broken", "files": "not a list"}
    with TestPipeline() as p:
        enriched, dead = p | beam.Create([good, broken]) | EnrichGeo(CITY, ASN, ANONYMOUS)
        assert_that(enriched | "Where" >> beam.Map(lambda r: (r["reportId"], r["_geo"]["subdivisionCode"],
                                                              r["_geo"]["anonymous"])),
                    equal_to([(good["reportId"], "WA", False)]), label="Enriched")
        assert_that(dead | "Who" >> beam.Map(lambda d: (d["stage"], d["reportId"], d["reason"].split(":")[0])),
                    equal_to([("enrich_geo", "broken", "enrich_geo failed")]), label="DeadLetters")


@pytest.mark.parametrize("ip", ["10.0.0.1", "not-an-ip", "100.64.1.1"])
def test_possible_proxy_on_an_unusable_ip_still_hides_the_user(locator, ip):
    """The estimated location in California used to send these to a state task force."""
    estimated = {"countryCode": "US", "region": "CA", "city": "Los Angeles"}
    geo = locator.locate(report_with(file_events=[event(ip, "Upload", proxy=True)], estimated=estimated))
    assert geo["anonymous"] is True and "possibleProxy flagged by the provider" in geo["ipChoiceReason"]
    assert JurisdictionRules.load().jurisdiction_of(geo)[0] == "UNKNOWN"


def test_possible_proxy_on_any_candidate_hides_the_user_whichever_ip_locates(locator):
    geo = locator.locate(report_with(file_events=[event("10.0.0.1", "Upload", proxy=True),
                                                  event("216.160.83.56", "Upload")]))
    assert geo["ip"] == "216.160.83.56" and geo["anonymous"] is True
    assert JurisdictionRules.load().jurisdiction_of(geo)[0] == "UNKNOWN"


@pytest.mark.parametrize("estimated, country, region", [
    ({"countryCode": "81.2.69.142"}, None, None),       # an IP address is no country
    ({"countryCode": "uſ", "region": "WA"}, None, "WA"),  # "uſ".upper() == "US"
    ({"countryCode": "ıe"}, None, None),                # "ıe".upper() == "IE"
    ({"countryCode": "ZZ"}, None, None),                # well-formed, not in schemas/jurisdictions.csv
    ({"countryCode": "us", "region": "ẘa"}, "US", None),
    ({"countryCode": "us", "region": "wa"}, "US", "WA"),
])
def test_estimated_codes_are_validated_against_the_tables_before_they_route_or_count(locator, estimated, country,
                                                                                    region):
    geo = locator.locate(report_with(file_events=[event("10.0.0.1", "Upload")],
                                     estimated={"region": None, "city": None, **estimated}))
    assert (geo["countryCode"], geo["subdivisionCode"]) == (country, region)
    if country is None:
        assert "is not an ISO 3166 alpha-2 code" in geo["unlocatedReason"]
        assert not JurisdictionRules.load().jurisdiction_of(geo)[0].startswith(("US", "IE"))


def test_a_state_or_city_that_only_folds_to_ascii_matches_nothing():
    rules = JurisdictionRules.load()
    assert rules.jurisdiction_of({"locationSource": "geoip", "countryCode": "US", "subdivisionCode": "ẘa"})[0] == "UNKNOWN"
    folded = rules.jurisdiction_of({"locationSource": "geoip", "countryCode": "US", "subdivisionCode": "CA",
                                    "city": "Loſ Angeles"})
    plain = rules.jurisdiction_of({"locationSource": "geoip", "countryCode": "US", "subdivisionCode": "CA",
                                   "city": "los angeles"})
    assert (folded[0], plain[0]) == ("US-CA", "US-CA-LA")


@pytest.mark.parametrize("flagged", [(), (0,), (0, 2), (0, 1, 2)])
def test_proxies_flagged_after_the_chosen_ip_are_named_newest_first(locator, flagged):
    """locate() puts the user's events in order only when it reads that order: here two or more flagged proxies
    after a chosen file IP. Its reason names them as consider(), which orders every candidate, lists them."""
    times = ["2026-11-01T00:00:00Z", "2026-11-20T00:00:00+01:00", "2026-11-10T00:00:00Z"]
    users = [event(f"175.16.199.{n}", "Login", when, proxy=n in flagged) for n, when in enumerate(times)]
    report = report_with(file_events=[event("216.160.83.56", "Upload")], user_events=users)
    listed = [entry["ipAddress"] for entry in locator.consider(report) if entry["possibleProxy"] is True]
    assert listed == [ip for ip in ("175.16.199.1", "175.16.199.2", "175.16.199.0") if int(ip[-1]) in flagged]
    reason = locator.locate(report)["ipChoiceReason"]
    if flagged:
        assert reason.endswith(f"hides the user: possibleProxy flagged by the provider on {', '.join(listed)}")
    else:
        assert "possibleProxy" not in reason
