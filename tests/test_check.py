"""`tipline check`: the graph built and every reference file opened through FileSystems, without running."""
import hashlib
import re

import pytest

from pipelines.cli import main
from tests import gcs_standin
from tests.conftest import MAXMIND
from transforms.plumbing import reference_files

BANK = b"hash_type,hash_value,bank,label,external_id\nMD5,9e107d9d372bb6826bd81d3542a419d6,known,,\nPDQ,%s,known,,\n" % (
    b"f" * 64)


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """The City and ASN test databases and a bank on the fakegcs:// stand-in for GCS."""
    monkeypatch.setenv(gcs_standin.ROOT_ENV, str(tmp_path / "gcs"))
    monkeypatch.setenv(reference_files.CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "gcs" / "ref").mkdir(parents=True)
    for name in ("GeoIP2-City-Test.mmdb", "GeoLite2-ASN-Test.mmdb"):
        (tmp_path / "gcs" / "ref" / name).write_bytes((MAXMIND / name).read_bytes())
    (tmp_path / "gcs" / "ref" / "known.csv").write_bytes(BANK)
    (tmp_path / "gcs" / "ref" / "in").mkdir()
    (tmp_path / "gcs" / "ref" / "in" / "reports.jsonl").write_bytes(b"{}\n")
    return ["--geoip-city-db", "fakegcs://ref/GeoIP2-City-Test.mmdb", "--geoip-asn-db", "fakegcs://ref/GeoLite2-ASN-Test.mmdb",
            "--hash-bank", "fakegcs://ref/known.csv", "--negative-hash-bank", "packaged:demo-negative-bank.csv",
            "--source", "files", "--input", "fakegcs://ref/in/*.jsonl", "--output", str(tmp_path / "out")]


def test_check_prints_every_reference_file_and_the_graph(remote, capsys, tmp_path):
    assert main(["check", *remote]) == 0
    lines = capsys.readouterr().out.splitlines()
    city_bytes = (MAXMIND / "GeoIP2-City-Test.mmdb").read_bytes()
    assert lines[0].startswith("reference data (tipline ")
    assert re.fullmatch(r"  --geoip-city-db: fakegcs://ref/GeoIP2-City-Test.mmdb  GeoIP2-City, built \d{4}-\d\d-\d\d, "
                        rf"{len(city_bytes):,} bytes, sha256 {hashlib.sha256(city_bytes).hexdigest()[:16]}",
                        lines[1]), lines[1]
    assert lines[2].startswith("  --geoip-asn-db: fakegcs://ref/GeoLite2-ASN-Test.mmdb  GeoLite2-ASN, built ")
    assert lines[3] == (f"  --hash-bank: fakegcs://ref/known.csv  banks known, 2 rows (MD5 1, PDQ 1), {len(BANK)} bytes, "
                        f"sha256 {hashlib.sha256(BANK).hexdigest()[:16]}")
    assert lines[4].startswith("  --negative-hash-bank: packaged:demo-negative-bank.csv  banks demo-benign, ")
    assert re.fullmatch(r"graph: \d+ transforms built for DirectRunner \(not run\)", lines[-1])
    assert not (tmp_path / "out").exists()  # nothing ran


def test_run_check_only_names_what_check_opens(remote, capsys):
    """`tipline run --check` leaves remote files to the workers; `tipline check` opens them: one preflight."""
    assert main(["run", *remote, "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "  --geoip-city-db: fakegcs://ref/GeoIP2-City-Test.mmdb  on the workers"
    assert lines[3] == "  --hash-bank: fakegcs://ref/known.csv  on the workers"


def test_check_names_the_flag_of_a_missing_file_and_exits_2(remote, capsys):
    missing = [arg.replace("known.csv", "gone.csv") for arg in remote]
    assert main(["check", *missing]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "tipline check: error: --hash-bank fakegcs://ref/gone.csv: expected one file, found 0"


def test_check_refuses_a_misspelt_flag_like_run(remote, capsys):
    assert main(["check", *remote, "--geoip-citydb", "x"]) == 2
    assert "did you mean --geoip-city-db?" in capsys.readouterr().err


def test_run_help_lists_the_option_groups_a_remote_run_needs(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for group, flag in (("DaskEngineOptions", "--dask-address"), ("GoogleCloudOptions", "--temp_location"),
                        ("WorkerOptions", "--sdk_container_image"), ("SetupOptions", "--setup_file"),
                        ("PortableOptions", "--environment_type"), ("FlinkRunnerOptions", "--flink_master"),
                        ("SparkRunnerOptions", "--spark_master_url")):
        assert f"\n{group}:\n" in out and flag in out.split(f"\n{group}:\n")[1], group
