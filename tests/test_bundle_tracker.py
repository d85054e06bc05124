"""The streaming DirectRunner with `count_every_bundle`: every bundle's counters counted, through a tracker
per bundle that leaves no reference cycle behind (a state sampler per bundle left one, with its metrics
container, for each bundle until a full collection)."""
import gc

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream

from transforms.plumbing.direct_runner import count_every_bundle

BUNDLES = 200
PER_BUNDLE = 5
PER_BUNDLE_KINDS = ("BundleTracker", "TrackedState", "StateSampler", "ScopedState", "MetricsContainer")


class _Counted(beam.DoFn):
    def __init__(self):
        self.seen = Metrics.counter("bundle_tracker_test", "seen")

    def process(self, element):
        self.seen.inc()
        yield element


def run_counted_stream():
    """Runs BUNDLES bundles through two counting steps; returns the committed count."""
    stream = TestStream()
    for bundle in range(BUNDLES):
        stream = stream.add_elements([bundle * PER_BUNDLE + n for n in range(PER_BUNDLE)])
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    _ = (pipeline | stream.advance_watermark_to_infinity()
         | "First" >> beam.ParDo(_Counted()) | "Second" >> beam.ParDo(_Counted()))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("seen"))["counters"]
    return sum(counter.committed for counter in counters)


def test_every_bundle_is_counted_and_no_bundle_leaves_a_cycle():
    count_every_bundle()
    gc.collect()  # what earlier tests left is not this run's
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        counted = run_counted_stream()
        gc.collect()
        left = [type(found).__name__ for found in gc.garbage if type(found).__name__ in PER_BUNDLE_KINDS]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert counted == 2 * BUNDLES * PER_BUNDLE
    assert "MetricsContainer" not in left
    assert len(left) < BUNDLES  # what is left: the runner's worker threads' own samplers, one a thread
