"""Takedown notices: who gets one, what it names, one per (provider, URL) and day, and strict host parsing."""
import csv
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.transforms.window import TimestampedValue

from tests.conftest import MAXMIND, example_report
from transforms.location.geoip import GeoLocator, NetworkLookup
from transforms.notices import WriteTakedownNotices
from transforms.takedown.notices import FACT_FIELDS, FEW, NoticeTally, Sighting, host_facts, notice_id, sightings
from transforms.takedown.providers import provider_of, registrable_domain
from transforms.takedown.urls import parse_url

ASN = str(MAXMIND / "GeoLite2-ASN-Test.mmdb")
CITY = str(MAXMIND / "GeoIP2-City-Test.mmdb")
ISP = str(MAXMIND / "GeoIP2-ISP-Test.mmdb")
URLS = ("https://cdn3.Files.Example.NET:8443/a/b.jpg?token=secret", "http://1.128.0.1/media/c.jpg", "not a url")


def unlocated_report(urls=URLS, report_id="ESP17-2026-000123"):
    report = example_report()
    report["reportId"] = report_id
    template = report["files"][0]
    report["files"] = [{**template, "fileId": f"f-{i + 1}", "locationOfFile": url} for i, url in enumerate(urls)]
    report["files"].append({**template, "fileId": "private", "publiclyAvailable": False})
    report["_geo"] = {"locationSource": "none"}
    report["_routing"] = {"jurisdiction": "UNKNOWN"}
    return report


def facts_of(report, lookup=None):
    network_of = lookup.network_of if lookup else None
    return [(sighting.file_id, sighting.facts) for _, sighting in sightings(report, network_of)]


@pytest.mark.parametrize("url, host, problem", [
    ("https://user:pw@Files.Example.NET:8443/a", "files.example.net", None),
    ("http://[2001:db8::1]/x", "2001:db8::1", None),
    ("http://1.128.0.1/x", "1.128.0.1", None),
    ("ftp://files.example.net/x", "files.example.net", "scheme 'ftp' is not http or https"),
    ("https://files%2Fexample.net/x", None, "host holds characters a host name cannot"),
    ("https://files.example.net\\evil.com/x", None, "host holds characters a host name cannot"),
    ("https://xn--bcher-kva.example/x", "xn--bcher-kva.example", "punycode (internationalised) host: an analyst checks it"),
    ("https://bücher.example/x", None, "host is not ASCII (an internationalised name): an analyst checks it"),
    ("https:///no-host", None, "no host"),
    ("http://[::1", None, "URL cannot be parsed (ValueError)"),
    ("https://files.example.net/" + "a" * 2100, None, "URL longer than 2048 characters"),
    ("not a url", None, "no host"),
])
def test_hosts_are_parsed_strictly_and_never_guessed(url, host, problem):
    parsed = parse_url(url)
    assert (parsed.host, parsed.not_checkable) == (host, problem)


def test_the_provider_is_the_registrable_domain_or_the_network_that_announces_an_ip():
    assert registrable_domain("cdn3.files.example.co.uk") == "example.co.uk"
    assert provider_of(parse_url("http://1.128.0.1/x"), {"asn": 1221, "asOrganization": "Telstra Pty Ltd"}) == \
        "Telstra Pty Ltd"
    assert provider_of(parse_url("http://1.128.0.1/x"), {"asn": 1221}) == "AS1221"
    assert provider_of(parse_url("http://192.0.2.7/x"), None) == "ip:192.0.2.7"
    assert provider_of(parse_url("not a url"), None) is None


def test_sightings_name_provider_host_network_and_country():
    locator = GeoLocator(CITY)
    found = dict(facts_of(unlocated_report(), NetworkLookup(ASN, ISP)))
    assert set(found) == {"f-1", "f-2", "f-3"}  # the private file calls for nothing
    assert (found["f-1"]["provider"], found["f-1"]["host"], found["f-1"]["checkable"]) == \
        ("example.net", "cdn3.files.example.net", True)
    assert (found["f-2"]["provider"], found["f-2"]["hostAsn"], found["f-2"]["hostIsp"]) == \
        ("Telstra Pty Ltd", 1221, "Telstra Internet")
    assert (found["f-3"]["provider"], found["f-3"]["checkable"]) == ("unknown", False)
    country = [s.facts["hostingCountry"] for _, s in sightings(
        unlocated_report(URLS[1:2] + ("http://89.160.20.112/d.jpg",)), None,
        lambda ip: (locator.city_of(ip) or [{}])[0].get("countryCode"))]
    assert country == [None, "SE"]  # unknown stays unknown: 1.128.0.1 is not in MaxMind's City test database


def test_located_users_get_no_notices_and_an_anonymiser_does_not_hide_them():
    report = unlocated_report()
    report["_geo"] = {"locationSource": "geoip"}
    assert sightings(report) == []
    report["_geo"] = {"locationSource": "geoip", "anonymous": True}
    assert len(sightings(report)) == 3


def test_notice_ids_are_deterministic_per_provider_url_and_day():
    assert notice_id("example.net", "https://x/1", "2026-11-23") == notice_id("example.net", "https://x/1", "2026-11-23")
    assert len({notice_id("example.net", "https://x/1", day) for day in ("2026-11-23", "2026-11-24")}) == 2


def run_notices(tmp_path, reports):
    with TestPipeline() as p:
        _ = (p | beam.Create(reports) | beam.Map(lambda r: TimestampedValue(r[0], r[1]))
             | WriteTakedownNotices(str(tmp_path), asn_db=ASN, city_db=CITY))
    notices = {}
    for path in (tmp_path / "notices").rglob("*.jsonl"):
        for line in path.open():
            notice = json.loads(line)
            notices[notice["noticeId"]] = (path.parent.relative_to(tmp_path / "notices").as_posix(), notice)
    return notices


def test_a_viral_url_in_many_reports_is_one_notice_per_provider_and_day(tmp_path):
    day_one, day_two = 1795392000 + 3600, 1795392000 + 86400 + 3600  # 2026-11-23 and -24, 01:00 UTC
    viral = [(unlocated_report(URLS[:1], f"r-{n}"), day_one + n) for n in range(30)]
    viral.append((unlocated_report(URLS[:1], "r-next-day"), day_two))
    swedish = "http://89.160.20.112/d.jpg"
    notices = run_notices(tmp_path, viral + [(unlocated_report((swedish,), "r-ip"), day_one)])
    by_folder = sorted((folder, notice["reportCount"], notice["url"]) for folder, notice in notices.values())
    assert by_folder == [("dt=2026-11-23/provider=Bredband2_AB", 1, swedish),
                         ("dt=2026-11-23/provider=example.net", 30, URLS[0]),
                         ("dt=2026-11-24/provider=example.net", 1, URLS[0])]
    bredband = next(notice for _, notice in notices.values() if notice["provider"] == "Bredband2 AB")
    assert (bredband["hostingCountry"], bredband["hostAsn"], bredband["jurisdictions"]) == ("SE", 29518, ["UNKNOWN"])
    rows = [row for path in (tmp_path / "notices").rglob("*.csv") for row in csv.DictReader(path.open())]
    assert sorted(row["reportCount"] for row in rows) == ["1", "1", "30"]
    assert {row["noticeId"] for row in rows} == set(notices)


def test_a_url_no_machine_may_check_is_still_a_notice_with_its_reason(tmp_path):
    notices = run_notices(tmp_path, [(unlocated_report(["https://files%2Fexample.net/x"]), 1795392000)])
    [(folder, notice)] = notices.values()
    assert folder == "dt=2026-11-23/provider=unknown"
    assert (notice["checkable"], notice["host"], notice["notCheckableReason"]) == \
        (False, None, "host holds characters a host name cannot")


def test_a_notice_tally_holds_what_sets_would_across_adds_and_merges():
    """Tuples for a few values, a set past FEW: the same distinct files, hashes and jurisdictions as plain
    sets, whatever the split into tallies; the facts come back as host_facts gave them."""
    import pickle
    import random

    rng = random.Random(3)
    facts = host_facts("https://cdn3.files.example.net/a.jpg")
    assert tuple(facts) == FACT_FIELDS
    for count in (1, 3, FEW, FEW + 1, 200):
        seen = [Sighting(facts, f"r-{rng.randrange(count)}", rng.choice([None, "f-1", "f-2"]),
                         tuple(sorted({("md5", f"{rng.randrange(count):032x}"), ("pdq", "0" * 64)})),
                         rng.choice([None, "GB", "US-ICAC-WA", f"J{rng.randrange(count)}"]))
                for _ in range(count)]
        cut = rng.randrange(count + 1)
        parts = []
        for part in (seen[:cut], seen[cut:]):
            tally = NoticeTally()
            for sighting in part:
                tally.add(sighting)
            parts.append(pickle.loads(pickle.dumps(tally)))
        merged = NoticeTally()
        for part in parts:
            merged.merge(part)
        assert set(merged.files) == {(s.report_id, s.file_id or "") for s in seen}
        assert len(merged.files) == len(set(merged.files))
        assert set(merged.hashes) == {pair for s in seen for pair in s.hashes}
        assert set(merged.jurisdictions) == {s.jurisdiction for s in seen if s.jurisdiction}
        assert merged.facts == facts
    assert NoticeTally().facts is None
