"""AssignJurisdiction: each located report gets `_routing` (jurisdiction, reason, agency, priority, referral class).

The rules are data (schemas/*.csv, see transforms/location/jurisdiction_rules.py), loaded once per worker process.
"""
import apache_beam as beam

from transforms.dead_letters import dead_letter_from_failure
from transforms.location.jurisdiction_rules import JurisdictionRules
from transforms.plumbing.metrics import LabelledCounters
from transforms.reports.enrichment import with_routing

STAGE = "assign_jurisdiction"


class _AssignFn(beam.DoFn):
    def __init__(self):
        self.priorities = LabelledCounters("priority")
        self.referral_classes = LabelledCounters("referral_class")

    def setup(self):
        self.rules = JurisdictionRules.load()

    def process(self, report):
        assigned = with_routing(report, self.rules)
        self.priorities.inc(assigned["_routing"]["priority"])
        self.referral_classes.inc(assigned["_routing"]["referralClass"])
        yield assigned


class AssignJurisdiction(beam.PTransform):
    """Adds `_routing` to every report (which needs `_geo`, and `_hashes` when hashed); returns `(assigned, dead_letters)`."""

    def expand(self, reports):
        assigned, failures = reports | "Assign" >> beam.ParDo(_AssignFn()).with_exception_handling()
        dead_letters = failures | "ToDeadLetters" >> beam.Map(dead_letter_from_failure(STAGE))
        return assigned, dead_letters
