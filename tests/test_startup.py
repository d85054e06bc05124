"""What a run's start costs: Dask and distributed (~0.2 s to import) only for `--runner dask`, numba and
PyAV (~0.2 s) only once media is hashed, so a run, its workers and the command line tools over reports
without media start that much sooner; and Beam asked once per DoFn for its state and timer specs, once per
options object and class for a view."""
import subprocess
import sys

from tests.conftest import REPO
from transforms.demo.synthetic import SyntheticConfig, generate_messages

OPTIONAL = ("dask", "distributed", "numba", "av")


def libraries_imported_by_a_run(*args):
    """Which of OPTIONAL a `tipline run` with `args` imported, run in a fresh interpreter."""
    ran = subprocess.run([sys.executable, "-c", "import sys; from pipelines.tipline_pipeline import run; "
                          "run(sys.argv[1:]); print(','.join(sorted({name.split('.')[0] for name in sys.modules} "
                          f"& {set(OPTIONAL)!r})))", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return set(filter(None, ran.stdout.splitlines()[-1].split(",")))


def benchmark_reports(tmp_path, count=40):
    reports = tmp_path / "reports.jsonl"
    reports.write_bytes(b"\n".join(generate_messages(SyntheticConfig.for_benchmark(count))) + b"\n")
    return reports


def test_a_direct_run_over_reports_without_media_imports_neither_dask_numba_nor_pyav(tmp_path):
    reports = benchmark_reports(tmp_path)
    assert libraries_imported_by_a_run("--source", "files", "--input", str(reports), "--demo-data",
                                       "--output", str(tmp_path / "out")) == set()


def test_a_run_that_hashes_media_imports_numba_and_pyav_but_not_dask(tmp_path):
    assert libraries_imported_by_a_run("--synthetic-count", "20", "--output", str(tmp_path / "out")) == {"numba", "av"}


def test_a_run_asks_beam_once_per_dofn_for_its_specs_and_once_per_options_and_class_for_a_view(tmp_path):
    counting = "\n".join([  # what each ask was about is held, so nothing else can take its id
        "import sys, collections",
        "from apache_beam.options.pipeline_options import PipelineOptions",
        "from apache_beam.transforms import userstate",
        "stock_specs, stock_view_as, dofns, views = userstate.get_dofn_specs, PipelineOptions.view_as, [], []",
        "def counted_specs(dofn):",
        "    dofns.append(dofn)",
        "    return stock_specs(dofn)",
        "def counted_view_as(options, cls):",
        "    views.append((options, cls))",
        "    return stock_view_as(options, cls)",
        "userstate.get_dofn_specs, PipelineOptions.view_as = counted_specs, counted_view_as",
        "from pipelines.tipline_pipeline import run",
        "run(sys.argv[1:])",
        "specs = collections.Counter(map(id, dofns))",
        "viewed = collections.Counter((id(options), cls) for options, cls in views)",
        "print(len(specs), max(specs.values()), max(viewed.values()), len(views),",
        "      userstate.get_dofn_specs.stock is counted_specs, PipelineOptions.view_as.stock is counted_view_as)"])
    ran = subprocess.run([sys.executable, "-c", counting, "--source", "files", "--input",
                          str(benchmark_reports(tmp_path)), "--demo-data", "--output", str(tmp_path / "out")],
                         cwd=REPO, capture_output=True, text=True, check=True)
    dofns, most_spec_asks, most_views, views, *installed = ran.stdout.splitlines()[-1].split()
    assert int(dofns) > 100 and (most_spec_asks, installed) == ("1", ["True", "True"])
    assert most_views == "1" and int(views) < 100  # ~930 views made before
