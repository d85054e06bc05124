"""`tipline check [run options]`: what a launch would use, looked at without running anything.

The preflight of `tipline run --check`, with remote reference files staged and opened exactly as a worker
does (checked by size and digest) instead of only named, and then the job graph built for the given
options and runner (translated, not run). A file that cannot be used stops it with one line naming its
flag (exit 2), before any worker starts.
"""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from pipelines.options import TiplineOptions, check_arguments
from pipelines.preflight import format_reference, preflight


def graph_line(argv):
    """Builds the pipeline for these options without running it; one line saying what was built."""
    from pipelines.tipline_pipeline import build_pipeline

    options = PipelineOptions(argv)
    options.view_as(SetupOptions).save_main_session = False
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    pipeline = beam.Pipeline(runner="DirectRunner", options=options)
    build_pipeline(pipeline, options.view_as(TiplineOptions))
    transforms = pipeline.to_runner_api().components.transforms
    return f"graph: {len(transforms)} transforms built for {runner} (not run)"


def check(argv):
    """Prints the reference data (every file opened) and the graph line; raises UsageError naming a bad flag."""
    check_arguments(argv)
    print(format_reference(preflight(PipelineOptions(argv).view_as(TiplineOptions), open_remote=True)))
    print(graph_line(argv))


def register(subparsers):
    """Lists `tipline check` in `tipline --help`; `pipelines.cli` hands it the arguments unparsed, as for run."""
    subparsers.add_parser("check", add_help=False,
                          help="preflight with remote reference files opened too, then build the job graph, "
                               "without running (takes tipline run's options)")
