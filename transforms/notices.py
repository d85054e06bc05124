"""Takedown notices: when a report's user cannot be located, ask whoever hosts public media to take it down.

A notice goes to the hosting provider of each `publiclyAvailable` file with a `locationOfFile`, for reports
whose `_geo.locationSource` is "none". It names the host (and, for an IP-address host, its ASN, organisation
and ISP), the report, the file, its hashes and the jurisdiction. It never carries the URL or its path:
media URIs must not appear in any output or log, so the clearinghouse hands the URL over by its own channel.
"""
import logging
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.utils import shared

from transforms.location.geoip import NetworkLookup, classify_ip
from transforms.location.jurisdiction_rules import UNKNOWN
from transforms.plumbing.metrics import counter
from transforms.plumbing.windowed_files import JsonLinesSink, WriteWindowedFiles


def host_of(url):
    """The lower-case host name (or IP address) of a URL; None when it has none."""
    try:
        return urlsplit(url.strip()).hostname or None
    except (AttributeError, ValueError):
        return None


def host_network(host, locator):
    """Who runs an IP-address host (ASN, organisation, ISP); a named host is left to DNS and WHOIS."""
    ip, problem = classify_ip(host)
    if ip is None:
        return {"hostIsIp": False, "hostAsn": None, "hostAsOrganization": None, "hostIsp": None}
    network = locator.network_of(ip) if locator is not None and problem is None else {}
    return {"hostIsIp": True, "hostAsn": network.get("asn"), "hostAsOrganization": network.get("asOrganization"),
            "hostIsp": network.get("isp")}


def file_hashes(report, index, file):
    """The hash stage's hashes of the file, else the provider's original hashes."""
    hashed_files = (report.get("_hashes") or {}).get("files") or []
    if index < len(hashed_files):
        return list(hashed_files[index].get("hashes") or [])
    return [{"signalType": value.get("hashType"), "value": value.get("value"), "source": "provided"}
            for value in file.get("originalFileHashes") or []]


def user_unlocated(geo):
    """No location an agency could act on: none at all, or only an anonymiser's or proxy's."""
    return geo["locationSource"] == "none" or geo.get("anonymous") is True


def takedown_notices(report, locator=None):
    """The notices a report calls for (see the module docstring); `locator` needs only `network_of(ip)`."""
    if not user_unlocated(report["_geo"]):
        return []
    jurisdiction = (report.get("_routing") or {}).get("jurisdiction") or UNKNOWN
    notices = []
    for index, file in enumerate(report.get("files") or []):
        if file.get("publiclyAvailable") is not True or not file.get("locationOfFile"):
            continue
        host = host_of(file["locationOfFile"])
        if host is None:
            continue
        notices.append({
            "reportId": report["reportId"],
            "submittedAt": report.get("submittedAt"),
            "fileId": file.get("fileId"),
            "host": host,
            **host_network(host, locator),
            "hashes": file_hashes(report, index, file),
            "jurisdiction": jurisdiction,
            "reason": "publicly available media of a user who could not be located",
        })
    return notices


class _TakedownNoticesFn(beam.DoFn):
    def __init__(self, asn_db, isp_db):
        self.databases = (asn_db, isp_db)
        self.shared_lookup = shared.Shared()

    def setup(self):
        self.lookup = self.shared_lookup.acquire(lambda: NetworkLookup(*self.databases), tag=repr(self.databases))
        self.notices = counter("takedown_notices")

    def process(self, report):
        for notice in takedown_notices(report, self.lookup):
            self.notices.inc()
            yield notice


def _log_failure(failure):
    """Logs which report failed and the error type only: the message could quote a media URL."""
    report, (exc_type, _, _) = failure[0], failure[1][:3]
    counter("takedown_notice_failures").inc()
    logging.error("takedown notices failed for report %s: %s", report.get("reportId"), exc_type.__name__)


def notice_folder(notice):
    return f"jurisdiction={notice['jurisdiction']}"


class WriteTakedownNotices(beam.PTransform):
    """Writes the notices as JSON Lines under `<output>/notices/jurisdiction=<code>/`; returns the notices."""

    def __init__(self, output_dir, asn_db=None, isp_db=None, window_seconds=3600):
        super().__init__()
        self.output_dir = output_dir
        self.asn_db = asn_db
        self.isp_db = isp_db
        self.window_seconds = window_seconds

    def expand(self, reports):
        notices, failures = reports | "Notices" >> beam.ParDo(
            _TakedownNoticesFn(self.asn_db, self.isp_db)).with_exception_handling()
        _ = failures | "LogFailures" >> beam.Map(_log_failure)
        _ = notices | "WriteNoticeFiles" >> WriteWindowedFiles(
            f"{self.output_dir}/notices", destination=notice_folder, sink=JsonLinesSink, suffix=".jsonl",
            window_seconds=self.window_seconds if notices.is_bounded else None,  # never drop a late one
            json_records=True)
        return notices
