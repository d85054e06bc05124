"""Takedown notices: who gets one, what it names (host, ASN), and that no URL ever leaks into it."""
import glob
import json
import os

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from tests.conftest import MAXMIND, example_report
from transforms.location.geoip import GeoLocator, NetworkLookup
from transforms.notices import WriteTakedownNotices, host_of, takedown_notices

ASN = str(MAXMIND / "GeoLite2-ASN-Test.mmdb")
ISP = str(MAXMIND / "GeoIP2-ISP-Test.mmdb")
URLS = ("https://Files.Example.NET:8443/a/b.jpg?token=secret", "http://1.128.0.1/media/c.jpg", "not a url")


def unlocated_report(urls=URLS):
    report = example_report()
    template = report["files"][0]
    report["files"] = [{**template, "fileId": f"f-{i + 1}", "locationOfFile": url} for i, url in enumerate(urls)]
    report["files"].append({**template, "fileId": "private", "publiclyAvailable": False})
    report["_geo"] = {"locationSource": "none"}
    report["_routing"] = {"jurisdiction": "UNKNOWN"}
    return report


def test_host_of():
    assert host_of("https://user:pw@Files.Example.NET:8443/a") == "files.example.net"
    assert host_of("http://[2001:db8::1]/x") == "2001:db8::1"
    assert host_of("http://[::1") is None and host_of("not a url") is None and host_of(None) is None


def test_notices_name_the_host_and_the_asn_of_an_ip_host_but_never_the_url():
    notices = takedown_notices(unlocated_report(), NetworkLookup(ASN, ISP))
    assert [(n["fileId"], n["host"], n["hostIsIp"], n["hostAsn"], n["hostAsOrganization"], n["hostIsp"])
            for n in notices] == [("f-1", "files.example.net", False, None, None, None),
                                  ("f-2", "1.128.0.1", True, 1221, "Telstra Pty Ltd", "Telstra Internet")]
    assert notices[0]["hashes"] == [{"signalType": "MD5", "value": "9e107d9d372bb6826bd81d3542a419d6",
                                     "source": "provided"}]
    assert all(n["reportId"] == "ESP17-2026-000123" and n["jurisdiction"] == "UNKNOWN" for n in notices)
    text = json.dumps(notices)
    for fragment in ("/a/b.jpg", "token", "secret", "/media/", "http", "file://", "contentUri"):
        assert fragment not in text


def test_notices_use_the_hash_stage_hashes_when_present():
    report = unlocated_report(URLS[:1])
    report["_hashes"] = {"matchSummary": "known",
                         "files": [{"hashes": [{"signalType": "pdq", "value": "ff00", "source": "computed"}]}]}
    assert takedown_notices(report)[0]["hashes"] == [{"signalType": "pdq", "value": "ff00", "source": "computed"}]


def test_located_users_get_no_notices():
    report = unlocated_report()
    report["_geo"] = {"locationSource": "geoip"}
    assert takedown_notices(report) == []
    report["_geo"] = {"locationSource": "estimatedLocation"}
    assert takedown_notices(report) == []


def test_a_user_hidden_behind_an_anonymiser_counts_as_unlocated():
    report = unlocated_report(URLS[:1])
    report["_geo"] = {"locationSource": "geoip", "anonymous": True}
    assert [n["host"] for n in takedown_notices(report)] == ["files.example.net"]


def test_example_report_with_an_unlocatable_ip_calls_for_one_notice():
    locator = GeoLocator(str(MAXMIND / "GeoIP2-City-Test.mmdb"), ASN)
    report = example_report()
    report["files"][0]["ipCaptureEvent"]["ipAddress"] = "10.0.0.1"
    report["personOrUserReported"]["ipCaptureEvents"] = []
    report["personOrUserReported"]["estimatedLocation"] = None
    report["_geo"] = locator.locate(report)
    assert [n["host"] for n in takedown_notices(report, locator)] == ["files.example.net"]


def test_write_takedown_notices_writes_json_lines_per_jurisdiction(tmp_path):
    report = unlocated_report()
    with TestPipeline() as p:
        notices = (p | beam.Create([report]) | beam.Map(lambda r: TimestampedValue(r, 1795428005))
                   | WriteTakedownNotices(str(tmp_path), asn_db=ASN))
        assert_that(notices | beam.Map(lambda n: (n["fileId"], n["hostAsn"])), equal_to([("f-1", None), ("f-2", 1221)]))
    files = glob.glob(os.path.join(tmp_path, "notices", "jurisdiction=UNKNOWN", "*.jsonl"))
    lines = [json.loads(line) for path in files for line in open(path)]
    assert sorted(n["fileId"] for n in lines) == ["f-1", "f-2"]
    assert "/a/b.jpg" not in "".join(open(path).read() for path in files)
