"""`--dedup-state auto` picks the bucketed form on the DirectRunner and per-key on any other runner (the
pipelines are built, not run: the FnApiRunner stands for a runner that is not the DirectRunner)."""
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_stream import TestStream

from tests.test_dedup import report
from transforms.dedup import DedupRedeliveries


def step_labels(pipeline):
    labels = []

    class Labels(beam.pipeline.PipelineVisitor):
        def visit_transform(self, applied):
            labels.append(applied.full_label)

    pipeline.visit(Labels())
    return labels


def built_with(runner, state):
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(runner=runner, options=options)
    _ = pipeline | TestStream().add_elements([report("a", 1)]) | DedupRedeliveries(state=state)
    return step_labels(pipeline)


@pytest.mark.parametrize("state, runner, step", [
    ("auto", None, "DedupRedeliveries/FirstPerReportIdInBucket"),
    ("auto", "BundleBasedDirectRunner", "DedupRedeliveries/FirstPerReportIdInBucket"),
    ("auto", FnApiRunner(), "DedupRedeliveries/FirstPerReportId"),
    ("per-key", None, "DedupRedeliveries/FirstPerReportId"),
    ("bucketed", FnApiRunner(), "DedupRedeliveries/FirstPerReportIdInBucket"),
])
def test_the_form_follows_the_flag_and_the_runner(state, runner, step):
    labels = built_with(runner, state)
    assert step in labels
    other = ({"DedupRedeliveries/FirstPerReportId", "DedupRedeliveries/FirstPerReportIdInBucket"} - {step}).pop()
    assert other not in labels
