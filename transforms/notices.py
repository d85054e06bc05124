"""TakedownNotices: one notice per (provider, URL) and UTC day to whoever hosts an unlocated user's public media.

The decisions are in transforms/takedown/ (which files call for a notice, who the provider is, whether a
machine may check the URL); this stage looks hosts up once per worker (ASN and City databases), counts the
sightings of each URL per day with the windowed-combine helper (one body for batch and streaming; a late
report fires its notice again with every report so far, the latest pane being the whole notice), and writes
each provider's daily batch under `<output>/notices/dt=YYYY-MM-DD/provider=<provider>/` twice: JSON Lines
for a mailer and CSV for a person. Notices hold URLs: a restricted output, written owner-only.

A report whose sightings cannot be made, a notice that cannot be built or a record a sink refuses fails
alone, as a side-stage dead letter `stage=notices` (transforms/dead_letters.py; restricted too).
"""
import functools
import re

import apache_beam as beam
from apache_beam.utils import shared

from transforms.dead_letters import WriteSideStageFailures
from transforms.location.geoip import GeoLocator, NetworkLookup
from transforms.plumbing.event_windows import CombinePerKeyAndWindow, TallyCombineFn, utc
from transforms.plumbing.metrics import counter
from transforms.plumbing.windowed_files import GROUPED_AS_LINES, CsvSink, JsonLinesSink, WriteWindowedFiles
from transforms.takedown.notices import NoticeTally, notice_record, sightings

STAGE = "notices"
DAY = 24 * 3600
CSV_COLUMNS = ("noticeId", "day", "provider", "url", "host", "hostingCountry", "reportCount", "reportIds",
               "checkable", "notCheckableReason", "pane_index")


class HostLookups:
    """ASN (and ISP) and City lookups of host addresses, shared by a worker's threads."""

    def __init__(self, city_db=None, asn_db=None, isp_db=None):
        self.network = NetworkLookup(asn_db, isp_db)
        self.locator = GeoLocator(city_db) if city_db else None

    def country_of(self, ip):
        placed = self.locator.city_of(ip) if self.locator is not None else None
        return placed[0]["countryCode"] if placed else None


class _SightingsFn(beam.DoFn):
    def __init__(self, city_db, asn_db, isp_db):
        self.databases = (city_db, asn_db, isp_db)
        self.shared_lookups = shared.Shared()

    def setup(self):
        self.lookups = self.shared_lookups.acquire(lambda: HostLookups(*self.databases), tag=repr(self.databases))

    def process(self, report):
        yield from sightings(report, self.lookups.network.network_of, self.lookups.country_of)


def key_and_sighting(keyed):
    """((provider, url), sighting) -> ([the key], the sighting), as CombinePerKeyAndWindow counts it."""
    return [keyed[0]], keyed[1]


def to_notice(result):
    """A `WindowResult` of one URL's day -> the notice record."""
    (provider, url), day = result.key, utc(result.start).strftime("%Y-%m-%d")
    return notice_record(provider, url, day, result.value, result.pane)


def batch_folder(notice):
    """`dt=YYYY-MM-DD/provider=<provider>`: one folder per daily send to one provider."""
    return f"dt={notice['day']}/provider={re.sub(r'[^A-Za-z0-9._-]', '_', notice['provider'])[:100]}"


def csv_row(notice):
    row = {column: notice.get(column) for column in CSV_COLUMNS}
    row["reportIds"] = ";".join(sorted({item["reportId"] for item in notice["reports"]}))
    return row


class WriteTakedownNotices(beam.PTransform):
    """Enriched, routed reports -> notices written under `<output>/notices/`; returns the notices."""

    def __init__(self, output_dir, asn_db=None, city_db=None, isp_db=None, allowed_lateness_seconds=7 * DAY):
        super().__init__()
        self.output_dir = output_dir
        self.databases = (city_db, asn_db, isp_db)
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(self, reports):
        found, sighting_failures = reports | "Sightings" >> beam.ParDo(
            _SightingsFn(*self.databases)).with_exception_handling()
        notices, notice_failures = (
            found
            | "NoticesPerDay" >> CombinePerKeyAndWindow(
                key_and_sighting, TallyCombineFn(NoticeTally), DAY, self.allowed_lateness_seconds,
                accumulate=True)
            | "ToNotice" >> beam.Map(to_notice).with_exception_handling())
        notices = notices | "Count" >> beam.Map(_count_notice)
        rows, row_failures = notices | "CsvRows" >> beam.Map(csv_row).with_exception_handling()
        failures = [sighting_failures, notice_failures, row_failures]
        for name, sink, suffix, records in (
                ("Json", JsonLinesSink, ".jsonl", notices),
                ("Csv", functools.partial(CsvSink, CSV_COLUMNS), ".csv", rows)):
            _, refused = records | f"Write{name}Files" >> WriteWindowedFiles(
                f"{self.output_dir}/notices", destination=batch_folder, sink=sink, suffix=suffix,
                window_seconds=DAY, allowed_lateness_seconds=self.allowed_lateness_seconds, grouped_as=GROUPED_AS_LINES,
                with_refusals=True)
            failures.append(refused)
        _ = tuple(failures) | "WriteFailures" >> WriteSideStageFailures(self.output_dir, STAGE)
        return notices


_NOTICES = counter("takedown_notices")


def _count_notice(notice):
    _NOTICES.inc()
    return notice
