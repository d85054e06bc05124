"""EnrichGeo: each report gets `_geo`, its chosen IP and location (the `Location` record of routed_report.avsc).

Readers and caches live once per worker process (`Shared`), memory-mapped with the C extension, from
local copies of remote databases (transforms/plumbing/reference_files.py). Like the banks, the databases
are re-checked at most every `refresh_seconds`: a replaced database is read from the next report on.
A bad IP never holds a report back: it is skipped and explained; only unexpected failures are dead letters.
"""
import apache_beam as beam
from apache_beam.utils import shared

from transforms.dead_letters import dead_letter_from_failure
from transforms.location.geoip import GeoLocator
from transforms.plumbing.metrics import LabelledCounters, counter
from transforms.plumbing.reference_files import RefreshedOnChange
from transforms.reports.enrichment import with_location

STAGE = "enrich_geo"


class _LocateFn(beam.DoFn):
    def __init__(self, city_db, asn_db, anonymous_db, refresh_seconds=60):
        self.databases = (city_db, asn_db, anonymous_db)
        self.refresh_seconds = refresh_seconds
        self.shared_locator = shared.Shared()
        self.location_sources = LabelledCounters("geo_location_source")
        self.reloads = counter("geoip_reloads")
        self.reload_failures = counter("geoip_reload_failures")

    def setup(self):
        self.locators = RefreshedOnChange(
            self.shared_locator, self.databases, lambda: GeoLocator(*self.databases), self.refresh_seconds,
            self.reloads, self.reload_failures, "GeoIP database")

    def process(self, report):
        located = with_location(report, self.locators.get())
        self.location_sources.inc(located["_geo"]["locationSource"])
        yield located


class EnrichGeo(beam.PTransform):
    """Adds `_geo` to every report; returns `(enriched, dead_letters)`."""

    def __init__(self, city_db, asn_db=None, anonymous_db=None, refresh_seconds=60):
        super().__init__()
        self.city_db = city_db
        self.asn_db = asn_db
        self.anonymous_db = anonymous_db
        self.refresh_seconds = refresh_seconds

    def expand(self, reports):
        enriched, failures = reports | "Locate" >> beam.ParDo(
            _LocateFn(self.city_db, self.asn_db, self.anonymous_db, self.refresh_seconds)).with_exception_handling()
        dead_letters = failures | "ToDeadLetters" >> beam.Map(dead_letter_from_failure(STAGE))
        return enriched, dead_letters
