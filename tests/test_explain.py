"""`tipline explain`: every decision about one report, with its reason, as JSON."""
import argparse
import json

import pytest

from pipelines.cli import main
from pipelines.explain import explain_report, register
from tests.conftest import MAXMIND, SHARED, example_report
from transforms.location.geoip import GeoLocator
from transforms.demo.packaged import packaged
from transforms.location.jurisdiction_rules import JurisdictionRules
from transforms.matching.matcher import HashMatcher

CITY = str(MAXMIND / "GeoIP2-City-Test.mmdb")
ASN = str(MAXMIND / "GeoLite2-ASN-Test.mmdb")
ANONYMOUS = str(MAXMIND / "GeoIP2-Anonymous-IP-Test.mmdb")
EXAMPLE = str(SHARED / "contract" / "report-example.json")


def demo_matcher():
    """The real hash matcher over the demo bank: the contract example's file hashes are in no bank (new media)."""
    return HashMatcher.from_banks([packaged("demo-bank.csv")])


def test_explain_the_contract_example():
    explanation = explain_report(example_report(), GeoLocator(CITY, ASN), JurisdictionRules.load())
    assert (explanation["jurisdiction"], explanation["priority"], explanation["referralClass"]) == ("GB", "P3", "referral")
    assert explanation["geo"]["ip"] == "81.2.69.142" and explanation["geo"]["city"] == "London"
    assert [(c["source"], c["decision"]) for c in explanation["ipCandidates"]] == [
        ("file f-1 Upload", "chosen"), ("user Upload 2026-11-23T09:57:40Z", "not needed"),
        ("user Login 2026-11-20T18:00:00Z", "not needed")]
    assert explanation["notices"] == []
    text = json.dumps(explanation)
    assert "files.example.net/a" not in text and "file:///" not in text


def test_explain_with_anonymous_db_and_hash_matcher():
    report = example_report()
    explanation = explain_report(report, GeoLocator(CITY, ASN, ANONYMOUS), JurisdictionRules.load(), demo_matcher())
    assert explanation["jurisdiction"] == "UNKNOWN" and "proxy" in explanation["jurisdictionReason"]
    assert explanation["priority"] == "P2" and explanation["matchSummary"] == "new"
    assert "_hashes" not in report  # the caller's report is left alone


def test_explain_lists_skipped_ips_and_the_notice_of_an_unlocated_user():
    report = example_report()
    report["files"][0]["ipCaptureEvent"]["ipAddress"] = "192.168.1.1"
    report["personOrUserReported"]["ipCaptureEvents"] = [{"ipAddress": "nonsense", "eventName": "Login"}]
    report["personOrUserReported"]["estimatedLocation"] = None
    explanation = explain_report(report, GeoLocator(CITY), JurisdictionRules.load())
    assert [(c["decision"], c["reason"]) for c in explanation["ipCandidates"]] == [
        ("skipped", "private (RFC 1918)"), ("skipped", "malformed (not an IPv4 or IPv6 address)")]
    assert explanation["jurisdiction"] == "UNKNOWN"
    assert [n["host"] for n in explanation["notices"]] == ["files.example.net"]


def parse(argv):
    parser = argparse.ArgumentParser(prog="tipline")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_register_adds_the_explain_subcommand(capsys):
    args = parse(["explain", EXAMPLE, "--geoip-city-db", CITY, "--geoip-asn-db", ASN])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["jurisdiction"] == "GB" and printed["priority"] == "P2"  # its MD5 is in no demo bank: new
    assert printed["matchSummary"] == "new"


@pytest.mark.parametrize("argv, message", [
    (["explain", "/nonexistent/report.json", "--geoip-city-db", CITY], "report.json"),
    (["explain", EXAMPLE, "--geoip-city-db", "/nonexistent/city.mmdb"], "--geoip-city-db"),
    (["explain", EXAMPLE, "--geoip-city-db", CITY, "--geoip-anonymous-db", "/nope.mmdb"], "--geoip-anonymous-db"),
])
def test_explain_fails_clearly_on_a_bad_file(capsys, argv, message):
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("tipline explain: error: ") and message in line
