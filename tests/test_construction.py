"""`memoize_construction_lookups`: Beam's `userstate.get_dofn_specs` asked once per DoFn instance, with the same
answers as Beam's own for every DoFn of the pipeline, stateful ones included; `PipelineOptions.view_as` made
once per options object and class, its views sharing their values as Beam's own do."""
import apache_beam as beam
from apache_beam.options.pipeline_options import (DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions,
                                                  TypeOptions)
from apache_beam.transforms import userstate
from apache_beam.utils.timestamp import Duration

from pipelines.options import TiplineOptions
from pipelines.tipline_pipeline import build_pipeline
from transforms.bundles import _StampIncidentsFn
from transforms.dedup import _FirstReportPerIdFn
from transforms.plumbing.construction import kept_dofn_specs, kept_views

STOCK = getattr(userstate.get_dofn_specs, "stock", userstate.get_dofn_specs)  # Beam's own, installed or not
STOCK_VIEW_AS = getattr(PipelineOptions.view_as, "stock", PipelineOptions.view_as)


def counted(stock):
    asked = []

    def ask(dofn):
        asked.append(dofn)
        return stock(dofn)
    return ask, asked


class _Unhashable(beam.DoFn):
    """Equal by value, so not hashable: cannot be a key of the kept specs."""

    def __eq__(self, other):
        return isinstance(other, _Unhashable)

    def process(self, element):
        yield element


def the_pipelines_dofns(*argv):
    """Every DoFn of the pipeline `tipline run argv` builds (not run), wrappers of caught errors included."""
    pipeline = beam.Pipeline(options=PipelineOptions(list(argv)))
    build_pipeline(pipeline, PipelineOptions(list(argv)).view_as(TiplineOptions))
    dofns = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, applied):
            if isinstance(applied.transform, beam.ParDo):
                dofns.append(applied.transform.fn)
    pipeline.visit(Visitor())
    return dofns


def test_every_dofn_of_the_pipeline_gets_beams_own_specs_asked_once(tmp_path):
    dofns = the_pipelines_dofns("--demo-data", "--output", str(tmp_path)) + [
        _StampIncidentsFn(3600, 3600), _FirstReportPerIdFn(Duration(seconds=24 * 3600)), _Unhashable()]
    ask, asked = counted(STOCK)
    memoized = kept_dofn_specs(ask)
    for _ in range(3):
        assert [memoized(dofn) for dofn in dofns] == [STOCK(dofn) for dofn in dofns]
    assert len(dofns) > 100 and any(isinstance(dofn, beam.transforms.core._ExceptionHandlingWrapperDoFn)
                                    for dofn in dofns)  # wrappers of caught errors, whose methods are the fn's
    assert len(asked) == len(dofns) + 2  # each once, the unhashable one all three times
    assert {spec.name for spec in memoized(dofns[-3])[0]} == {"incident"}  # stateful ones found stateful


def test_a_caller_changing_the_sets_it_got_changes_nothing_kept():
    memoized = kept_dofn_specs(STOCK)
    dofn = _StampIncidentsFn(3600, 3600)
    state_specs, timer_specs = memoized(dofn)
    state_specs.clear()
    timer_specs.clear()
    assert memoized(dofn) == STOCK(dofn) != (set(), set())


def test_a_kept_view_reads_and_writes_the_options_as_beams_own_views_do():
    calls = []

    def stock(options, cls):
        calls.append(cls)
        return STOCK_VIEW_AS(options, cls)
    view_as = kept_views(stock)
    options = PipelineOptions(["--runner", "DirectRunner", "--direct_num_workers", "3", "--project", "p"])
    for cls in (StandardOptions, DirectOptions, GoogleCloudOptions, TypeOptions, TiplineOptions):
        kept, beams = view_as(options, cls), STOCK_VIEW_AS(options, cls)
        assert kept.get_all_options() == beams.get_all_options()
        assert view_as(options, cls) is kept
    assert len(calls) == 5  # one per class
    view_as(options, DirectOptions).direct_num_workers = 7
    assert STOCK_VIEW_AS(options, DirectOptions).direct_num_workers == 7
    STOCK_VIEW_AS(options, StandardOptions).runner = "SwitchingDirectRunner"
    assert view_as(options, StandardOptions).runner == "SwitchingDirectRunner"
    other = PipelineOptions(["--runner", "DirectRunner"])
    assert view_as(other, DirectOptions).direct_num_workers == 1 and view_as(other, DirectOptions) is not \
        view_as(options, DirectOptions)
