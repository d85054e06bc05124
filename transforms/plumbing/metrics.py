"""tipline's Beam metrics: one namespace, counters made once, and the one way to read them back.

Every count in a run's summary is a counter in the `tipline` namespace (or `tipline.<family>` for counters
named by a label such as a jurisdiction or a stage), so a remote runner's metrics hold the same figures.
"""
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

NAMESPACE = "tipline"


def counter(name):
    """The counter `tipline.<name>`."""
    return Metrics.counter(NAMESPACE, name)


class LabelledCounters:
    """Counters `tipline.<family>` named by a label (a jurisdiction, a stage), each made once:
    making a counter per element costs more than the work it counts."""

    def __init__(self, family):
        self.namespace = f"{NAMESPACE}.{family}"
        self.counters = {}

    def inc(self, label, n=1):
        found = self.counters.get(label)
        if found is None:
            found = self.counters[label] = Metrics.counter(self.namespace, label)
        found.inc(n)


def read_counters(pipeline_result, committed=True):
    """{(namespace, name): value} for every tipline counter of a run.

    committed: the final values of a finished run (attempted where the runner commits none); False: the
    attempted values so far, which the DirectRunner updates as bundles finish (progress lines)."""
    totals = {}
    for result in pipeline_result.metrics().query(MetricsFilter())["counters"]:
        namespace = result.key.metric.namespace
        if namespace == NAMESPACE or namespace.startswith(NAMESPACE + "."):
            value = result.committed if committed and result.committed is not None else result.attempted
            key = (namespace, result.key.metric.name)
            totals[key] = totals.get(key, 0) + value
    return totals


def top_level_counts(totals):
    """{name: value} of the un-labelled counters, from `read_counters`."""
    return {name: value for (namespace, name), value in totals.items() if namespace == NAMESPACE}
