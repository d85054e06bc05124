"""DedupRedeliveries: a redelivered report (same reportId) is dropped and counted.

Built on Beam's `DeduplicatePerKey` over event time: a reportId is remembered until the watermark passes
its event time plus the horizon, so a redelivery arriving within that horizon never reaches a sink twice.
Runs in the global window (the stock transform does not dedup across windows).
"""
import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.utils.timestamp import Duration

from transforms.dead_letters import METRICS_NAMESPACE

DEFAULT_HORIZON_HOURS = 24

_UNIQUE = Metrics.counter(METRICS_NAMESPACE, "unique")


def _count_unique(report):
    _UNIQUE.inc()
    return report


class DedupRedeliveries(beam.PTransform):
    """Keeps the first report per reportId within `horizon_hours` of event time.

    Duplicates are counted as `valid - unique` (the stock transform drops them silently).
    """

    def __init__(self, horizon_hours=DEFAULT_HORIZON_HOURS):
        super().__init__()
        self.horizon = Duration(seconds=int(horizon_hours * 3600))

    def expand(self, reports):
        return (
            reports
            | "KeyByReportId" >> beam.Map(lambda report: (report["reportId"], report))
            | "DeduplicatePerKey" >> DeduplicatePerKey(event_time_duration=self.horizon)
            | "DropKey" >> beam.Map(lambda keyed: _count_unique(keyed[1])))
