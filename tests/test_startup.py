"""What a run imports follows what it does: Dask and distributed (~0.2 s to import) only for `--runner dask`,
numba and PyAV (~0.2 s) only once media is hashed, so a run, its workers and the command line tools over
reports without media start that much sooner."""
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


def test_a_direct_run_over_reports_without_media_imports_neither_dask_numba_nor_pyav(tmp_path):
    reports = tmp_path / "reports.jsonl"
    reports.write_bytes(b"\n".join(generate_messages(SyntheticConfig.for_benchmark(40))) + b"\n")
    assert libraries_imported_by_a_run("--source", "files", "--input", str(reports), "--demo-data",
                                       "--output", str(tmp_path / "out")) == set()


def test_a_run_that_hashes_media_imports_numba_and_pyav_but_not_dask(tmp_path):
    assert libraries_imported_by_a_run("--synthetic-count", "20", "--output", str(tmp_path / "out")) == {"numba", "av"}
