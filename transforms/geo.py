"""EnrichGeo: each report gets `_geo`, its chosen IP and location (the `Location` record of routed_report.avsc).

Readers and caches live once per worker process (`Shared`), memory-mapped with the C extension.
A bad IP never holds a report back: it is skipped and explained; only unexpected failures are dead letters.
"""
import apache_beam as beam
from apache_beam.utils import shared

from transforms.dead_letters import dead_letter_from_failure
from transforms.location.geoip import GeoLocator
from transforms.plumbing.metrics import LabelledCounters
from transforms.reports.enrichment import with_location

STAGE = "enrich_geo"


class _LocateFn(beam.DoFn):
    def __init__(self, city_db, asn_db, anonymous_db):
        self.databases = (city_db, asn_db, anonymous_db)
        self.shared_locator = shared.Shared()
        self.location_sources = LabelledCounters("geo_location_source")

    def setup(self):
        self.locator = self.shared_locator.acquire(lambda: GeoLocator(*self.databases), tag=repr(self.databases))

    def process(self, report):
        located = with_location(report, self.locator)
        self.location_sources.inc(located["_geo"]["locationSource"])
        yield located


class EnrichGeo(beam.PTransform):
    """Adds `_geo` to every report; returns `(enriched, dead_letters)`."""

    def __init__(self, city_db, asn_db=None, anonymous_db=None):
        super().__init__()
        self.city_db = city_db
        self.asn_db = asn_db
        self.anonymous_db = anonymous_db

    def expand(self, reports):
        enriched, failures = reports | "Locate" >> beam.ParDo(
            _LocateFn(self.city_db, self.asn_db, self.anonymous_db)).with_exception_handling()
        dead_letters = failures | "ToDeadLetters" >> beam.Map(dead_letter_from_failure(STAGE))
        return enriched, dead_letters
