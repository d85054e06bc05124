"""Jurisdiction tables and rules, priority, referral class, and the AssignJurisdiction composite."""
import csv

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas import reference_table
from tests.conftest import MAXMIND, SHARED, example_report
from transforms.jurisdiction import AssignJurisdiction
from transforms.location.geoip import LOCATION_FIELDS, GeoLocator
from transforms.location.jurisdiction_rules import UNKNOWN, JurisdictionRules, legal_process_required, priority_of, referral_class_of

CITY = str(MAXMIND / "GeoIP2-City-Test.mmdb")
ANONYMOUS = str(MAXMIND / "GeoIP2-Anonymous-IP-Test.mmdb")


@pytest.fixture(scope="module")
def rules():
    return JurisdictionRules.load()


@pytest.fixture(scope="module")
def locator():
    return GeoLocator(CITY)


def geo(**fields):
    return {**dict.fromkeys(LOCATION_FIELDS), "locationSource": "geoip", **fields}


def located_report(locator, ip, proxy=False):
    report = example_report()
    report["files"][0]["ipCaptureEvent"] = {"ipAddress": ip, "eventName": "Upload", "possibleProxy": proxy}
    report["personOrUserReported"]["ipCaptureEvents"] = []
    report["_geo"] = locator.locate(report)
    return report


def test_every_ncmec_country_has_a_jurisdiction_row():
    codes = {row["country_code"] for row in reference_table("jurisdictions")}
    for year in (2022, 2023):
        with open(SHARED / "data" / "ncmec" / f"cybertipline_by_country_{year}.csv", newline="") as handle:
            ncmec = {row["iso_alpha2"] for row in csv.DictReader(handle) if row["iso_alpha2"]}
        assert ncmec <= codes


def test_icac_table_is_the_reference_copy_with_its_sources():
    with open(SHARED / "data" / "icac" / "icac_task_forces.csv", newline="") as handle:
        assert reference_table("icac_task_forces") == list(csv.DictReader(handle))


def test_every_city_row_names_a_task_force_of_its_state(rules):
    for row in reference_table("us_city_counties"):
        assert rules.task_forces[row["task_force_id"]]["state"] == row["state"]


@pytest.mark.parametrize("ip, jurisdiction, agency_part", [
    ("81.2.69.142", "GB", "National Crime Agency"),
    ("216.160.83.56", "US-WA", "Washington ICAC Task Force"),
    ("89.160.20.112", "SE", "INTERPOL"),
    ("175.16.199.0", "CN", "INTERPOL"),
    ("2001:480:10::1", "US-CA-SD", "San Diego ICAC Task Force"),
])
def test_located_ips_route_to_country_state_or_refined_task_force(rules, locator, ip, jurisdiction, agency_part):
    routing = rules.assign(located_report(locator, ip))
    assert routing["jurisdiction"] == jurisdiction and agency_part in routing["agency"]


@pytest.mark.parametrize("state, city, jurisdiction", [
    ("CA", "Los Angeles", "US-CA-LA"), ("CA", "san jose", "US-CA-SV"), ("CA", "Fresno", "US-CA-CEN"),
    ("CA", "Sacramento", "US-CA-SAC"), ("CA", "Tiny Town", "US-CA"), ("CA", None, "US-CA"),
    ("IL", "Chicago", "US-IL-COOK"), ("IL", "Springfield", "US-IL"), ("IL", None, "US-IL"),
    ("NY", "Brooklyn", "US-NY-NYC"), ("NY", "Buffalo", "US-NY"),
    ("TX", "Houston", "US-TX-HOU"), ("TX", "Dallas", "US-TX-N"), ("TX", "Austin", "US-TX-OAG"), ("TX", "Nowhere", "US-TX"),
    ("FL", "Miami", "US-FL-S"), ("FL", "Jacksonville", "US-FL-N"), ("FL", "Tampa", "US-FL-C"),
    ("VA", "Arlington", "US-VA-NOVADC"), ("VA", "Richmond", "US-VA-S"), ("VA", None, "US-VA"),
    ("OH", "Columbus", "US-OH"), ("DC", "Washington", "US-DC"),
])
def test_us_state_and_city_refinement(rules, state, city, jurisdiction):
    code, reason, agency = rules.jurisdiction_of(geo(countryCode="US", subdivisionCode=state, city=city))
    assert code == jurisdiction
    assert agency


def test_state_default_is_documented_in_the_reason(rules):
    code, reason, agency = rules.jurisdiction_of(geo(countryCode="US", subdivisionCode="CA", city="Tiny Town"))
    assert "state-level default" in reason and "US-CA-LA" in agency
    code, reason, agency = rules.jurisdiction_of(geo(countryCode="US", subdivisionCode="IL"))
    assert "rest-of-state" in reason and "Illinois ICAC Task Force" in agency


def test_anonymous_ip_database_hit_routes_to_unknown_never_a_task_force(rules):
    report = located_report(GeoLocator(CITY, anonymous_db=ANONYMOUS), "81.2.69.142")
    routing = rules.assign(report)
    assert routing["jurisdiction"] == UNKNOWN and "proxy" in routing["jurisdictionReason"]


def test_possible_proxy_in_the_us_routes_to_unknown(rules, locator):
    routing = rules.assign(located_report(locator, "216.160.83.56", proxy=True))
    assert routing["jurisdiction"] == UNKNOWN and not routing["jurisdiction"].startswith("US")


@pytest.mark.parametrize("location, reason_part", [
    (geo(locationSource="none", unlocatedReason="no IP in the report"), "no usable location"),
    (geo(countryCode="A2", anonymous=True), "proxy"),
    (geo(countryCode="AP"), "pseudo-country"),
    (geo(locationSource="estimatedLocation", countryCode="UK"), "not an ISO 3166 alpha-2"),
    (geo(locationSource="estimatedLocation", subdivisionCode="WA"), "subdivision 'WA' without a country"),
    (geo(countryCode="US", subdivisionCode=None), "no state"),
    (geo(locationSource="estimatedLocation", countryCode="US", subdivisionCode="California"), "not a state"),
    (geo(countryCode="US", subdivisionCode="PR"), "not a state with an ICAC task force"),
])
def test_unusable_or_inconsistent_locations_route_to_unknown_with_a_reason(rules, location, reason_part):
    code, reason, agency = rules.jurisdiction_of(location)
    assert code == UNKNOWN and reason_part in reason and agency


def test_estimated_location_routes_and_says_so(rules):
    code, reason, _ = rules.jurisdiction_of(geo(locationSource="estimatedLocation", countryCode="SE"))
    assert code == "SE" and "estimatedLocation" in reason
    code, _, agency = rules.jurisdiction_of(geo(locationSource="estimatedLocation", countryCode="PR"))
    assert code == "US-PR" and "federal" in agency


def with_summary(report, summary, escalate=None):
    report["incidentSummary"]["escalateToHighPriority"] = escalate
    if summary is not None:
        report["_hashes"] = {"matchSummary": summary, "files": []}
    return report


@pytest.mark.parametrize("summary, escalate, priority", [
    ("known", "child in imminent danger", "P1"), ("new", None, "P2"), ("known", None, "P3"),
    ("no_media", None, "P3"), (None, None, "P3"), ("new", "   ", "P2"),
])
def test_priority(summary, escalate, priority):
    assert priority_of(with_summary(example_report(), summary, escalate))[0] == priority


def test_referral_class_rules(locator):
    located = located_report(locator, "216.160.83.56")
    assert referral_class_of(located) == ("referral", "user located (geoip)")
    unlocated = located_report(locator, "10.0.0.1")
    unlocated["personOrUserReported"]["estimatedLocation"] = None
    unlocated["_geo"] = locator.locate(unlocated)
    assert referral_class_of(unlocated)[0] == "referral"  # account identifier plus provided hashes
    bare = located_report(locator, "10.0.0.1")
    bare["personOrUserReported"] = None
    bare["files"][0]["originalFileHashes"] = None
    bare["_geo"] = locator.locate(bare)
    assert referral_class_of(bare)[0] == "informational"
    escalated = with_summary(bare, None, "imminent danger")
    assert referral_class_of(escalated) == ("referral", "escalated by the provider")
    batched = {**located, "batchedReport": {"reason": "VIRAL_POTENTIAL_MEME"}}
    assert referral_class_of(batched)[0] == "informational"


@pytest.mark.parametrize("viewed, required", [(True, False), (False, True), (None, True)])
def test_legal_process_required_unless_the_provider_viewed_the_file(viewed, required):
    assert legal_process_required({"fileViewedByEsp": viewed}) is required


def test_assign_jurisdiction_composite(locator):
    wa = with_summary(located_report(locator, "216.160.83.56"), "new")
    hidden = located_report(locator, "216.160.83.56", proxy=True)
    hidden["reportId"] = "hidden"
    no_geo = {**example_report(), "reportId": "no-geo"}
    with TestPipeline() as p:
        assigned, dead = p | beam.Create([wa, hidden, no_geo]) | AssignJurisdiction()
        assert_that(assigned | "Routing" >> beam.Map(lambda r: (r["reportId"], r["_routing"]["jurisdiction"],
                                                                r["_routing"]["priority"], r["_routing"]["referralClass"])),
                    equal_to([(wa["reportId"], "US-WA", "P2", "referral"), ("hidden", UNKNOWN, "P3", "referral")]),
                    label="Assigned")
        assert_that(dead | "Who" >> beam.Map(lambda d: (d["stage"], d["reportId"])),
                    equal_to([("assign_jurisdiction", "no-geo")]), label="DeadLetters")
