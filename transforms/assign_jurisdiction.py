"""AssignJurisdiction: each located report gets `_routing` (jurisdiction, reason, agency, priority, referral class).

The rules are data (schemas/*.csv, see transforms/jurisdiction.py), loaded once per worker process.
"""
import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.dead_letters import METRICS_NAMESPACE, dead_letter_from_failure
from transforms.jurisdiction import JurisdictionRules

STAGE = "assign_jurisdiction"


class _AssignFn(beam.DoFn):
    def setup(self):
        self.rules = JurisdictionRules.load()

    def process(self, report):
        routing = self.rules.assign(report)
        Metrics.counter(f"{METRICS_NAMESPACE}.priority", routing["priority"]).inc()
        Metrics.counter(f"{METRICS_NAMESPACE}.referral_class", routing["referralClass"]).inc()
        yield {**report, "_routing": routing}


class AssignJurisdiction(beam.PTransform):
    """Adds `_routing` to every report (which needs `_geo`, and `_hashes` when hashed); returns `(assigned, dead_letters)`."""

    def expand(self, reports):
        assigned, failures = reports | "Assign" >> beam.ParDo(_AssignFn()).with_exception_handling()
        dead_letters = failures | "ToDeadLetters" >> beam.Map(dead_letter_from_failure(STAGE))
        return assigned, dead_letters
