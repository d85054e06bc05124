"""Misconfiguration fails loudly: strict flags, demo data only on purpose, preflight, the reference data
named in every run's own summary, one-line errors for every subcommand, a batch progress line.

Real parts: the `tipline` command (in-process through `pipelines.cli.main`, or as a real process where
what reaches the terminal is the point), the DirectRunner, MaxMind's test databases, real bank files.
"""
import contextlib
import hashlib
import io
import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

import apache_beam as beam

from pipelines import streaming
from pipelines.cli import main
from pipelines.tipline_pipeline import run
from tests.conftest import MAXMIND, REPO, example_report
from tests.test_pipeline_end_to_end import variant
from transforms.demo.packaged import packaged, resolve
from transforms.matching.banks import read_bank

CITY = str(MAXMIND / "GeoIP2-City-Test.mmdb")
ASN = str(MAXMIND / "GeoLite2-ASN-Test.mmdb")
ANONYMOUS = str(MAXMIND / "GeoIP2-Anonymous-IP-Test.mmdb")
DEMO_BANK = resolve(packaged("demo-bank.csv"))
BANK_HEADER = "hash_type,hash_value,bank,label,external_id\n"


def tipline(*argv, **kwargs):
    """The installed `tipline` command as a real process: (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], capture_output=True, text=True,
                          cwd=kwargs.pop("cwd", REPO), timeout=kwargs.pop("timeout", 300), **kwargs)
    return done.returncode, done.stdout, done.stderr


def stderr_lines(text):
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def reports_file(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(variant(f"r-{i}", ip="81.2.69.160")) for i in range(3)) + "\n")
    return path


def files_run(reports_file, *extra):
    return ["run", "--source", "files", "--input", str(reports_file), "--output", str(reports_file.parent / "out"),
            *extra]


# --- 1. strict flags, demo data only on purpose ------------------------------------------------------------

def test_beam_style_snake_case_flags_are_tiplines_own(reports_file, capsys):
    assert main(files_run(reports_file, "--geoip_city_db", CITY, "--hash_bank", DEMO_BANK, "--check")) == 0
    found = capsys.readouterr().out
    assert f"--geoip-city-db: {CITY}  GeoIP2-City, built " in found
    entries = read_bank(DEMO_BANK)
    names = ", ".join(sorted({entry.bank for entry in entries}))
    assert f"--hash-bank: {DEMO_BANK}  banks {names}, {len(entries)} rows" in found
    assert "DEMO DATA" not in found


@pytest.mark.parametrize("flag, closest", [("--geoip-citydb", "--geoip-city-db"),
                                           ("--hash_banks", "--hash_bank"),
                                           ("--runnr", "--runner")])
def test_an_unknown_flag_is_an_error_naming_it_and_the_closest_known_one(reports_file, capsys, flag, closest):
    assert main(files_run(reports_file, flag, CITY, "--no-hash-banks")) == 2
    err = capsys.readouterr().err
    assert stderr_lines(err) == [f"tipline run: error: unknown argument {flag}; did you mean {closest}?"]
    assert not (reports_file.parent / "out").exists()


def test_files_without_reference_data_say_what_is_missing(reports_file, capsys):
    assert main(files_run(reports_file)) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert "--source files needs real reference data: --geoip-city-db and --hash-bank (or --no-hash-banks) " \
           "missing (or --demo-data" in line
    assert main(files_run(reports_file, "--geoip-city-db", CITY)) == 2
    assert "--hash-bank (or --no-hash-banks) missing" in capsys.readouterr().err


def test_a_bank_and_no_banks_contradict(reports_file, capsys):
    assert main(files_run(reports_file, "--geoip-city-db", CITY, "--hash-bank", DEMO_BANK, "--no-hash-banks")) == 2
    assert stderr_lines(capsys.readouterr().err) == [
        "tipline run: error: --hash-bank and --no-hash-banks contradict each other; pass one of them"]


def test_demo_data_on_purpose_is_named_as_such(reports_file, capsys):
    assert main(files_run(reports_file, "--demo-data", "--check")) == 0
    assert "DEMO DATA for --geoip-city-db, --hash-bank: synthetic, not for real reports" in capsys.readouterr().out


def test_the_demo_needs_no_flags(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--check"]) == 0
    assert "packaged:demo-city.mmdb  GeoIP2-City" in capsys.readouterr().out


# --- 2. a database of the wrong type -----------------------------------------------------------------------

@pytest.mark.parametrize("flag, database, declared", [("--geoip-anonymous-db", CITY, "GeoIP2-City"),
                                                      ("--geoip-city-db", ASN, "GeoLite2-ASN"),
                                                      ("--geoip-asn-db", CITY, "GeoIP2-City")])
def test_a_database_of_the_wrong_type_is_refused_naming_its_flag(reports_file, capsys, flag, database, declared):
    argv = files_run(reports_file, "--geoip-city-db", CITY, "--no-hash-banks")
    assert main(argv + [flag, database]) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith(f"tipline run: error: {flag}: '{database}' is a {declared} database; this needs a *-")


def test_databases_of_the_right_type_pass(reports_file, capsys):
    argv = files_run(reports_file, "--geoip-city-db", CITY, "--geoip-asn-db", ASN, "--geoip-anonymous-db",
                     ANONYMOUS, "--no-hash-banks", "--check")
    assert main(argv) == 0
    found = capsys.readouterr().out
    assert "GeoLite2-ASN, built 2026-02-04" in found and "GeoIP2-Anonymous-IP, built 2026-02-04" in found


def test_file_uris_are_checked_like_the_paths_they_name(reports_file, capsys):
    """`file:///...` reference files were waved through as "checked on the workers", which then failed."""
    city_uri = pathlib.Path(CITY).as_uri()
    assert main(files_run(reports_file, "--geoip-city-db", city_uri, "--no-hash-banks", "--check")) == 0
    assert f"--geoip-city-db: {city_uri}  GeoIP2-City, built 2026-02-04" in capsys.readouterr().out
    assert main(files_run(reports_file, "--geoip-city-db", city_uri + ".missing", "--no-hash-banks", "--check")) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith("tipline run: error: --geoip-city-db") and "not found" in line


# --- 3 and 6. the reference data of each run, in its own summary; 5. the batch progress line ---------------

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A run of three reports, then an empty follow-up run into the same output, with a progress line
    asked for every 0.2 s; returns (output folder, first summary, second summary, first run's stdout)."""
    root = tmp_path_factory.mktemp("two-runs")
    (root / "in.jsonl").write_text("\n".join(json.dumps(variant(f"r-{i}", ip="81.2.69.160")) for i in range(3)))
    (root / "empty.jsonl").write_text("")
    bank = root / "known.csv"
    bank.write_text(BANK_HEADER + "MD5," + "ab" * 16 + ",known-a,,e1\nMD5," + "cd" * 16 + ",known-b,,e2\n")
    common = ["--output", str(root / "out"), "--geoip-city-db", CITY, "--hash-bank", str(bank),
              "--source", "files"]
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(streaming, "PROGRESS_EVERY_SECONDS", 0.2)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            first = run(common + ["--input", str(root / "in.jsonl")])
            second = run(common + ["--input", str(root / "empty.jsonl")])
    finally:
        monkeypatch.undo()
    return root / "out", first, second, printed.getvalue().splitlines()


def test_the_summary_names_the_reference_data_that_decided_the_run(two_runs):
    out, first, _, _ = two_runs
    written = json.loads((out / "summaries" / f"{first['run_id']}.json").read_text())
    reference = written["reference_data"]
    city = reference["geoip"]["--geoip-city-db"]
    assert (city["path"], city["database_type"], city["build_date"]) == (CITY, "GeoIP2-City", "2026-02-04")
    (bank,) = reference["hash_banks"]
    assert (bank["banks"], bank["rows"]) == (["known-a", "known-b"], 2)
    with open(bank["path"], "rb") as handle:
        assert bank["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert reference["negative_hash_banks"] == [] and reference["demo_data"] == []
    assert len(reference["jurisdiction_tables"]["sha256"]) == 64
    assert set(reference["jurisdiction_tables"]["tables"]) == {"jurisdictions.csv", "icac_task_forces.csv",
                                                               "us_city_counties.csv"}
    assert reference["tipline_version"] == "0.1.0"


def test_an_empty_follow_up_run_keeps_the_earlier_runs_account(two_runs):
    out, first, second, _ = two_runs
    accounts = {path.stem: json.loads(path.read_text()) for path in (out / "summaries").glob("*.json")}
    assert {run_id: account["read"] for run_id, account in accounts.items()} == {first["run_id"]: 3,
                                                                                 second["run_id"]: 0}
    assert first["run_id"] < second["run_id"]  # sortable by start time
    assert json.loads((out / "summary.json").read_text()) == accounts[second["run_id"]]


def test_a_batch_run_prints_progress_while_it_runs(two_runs):
    _, first, _, printed = two_runs
    progress = [line for line in printed if line.startswith("[") and "reports/s" in line]
    assert progress, printed  # a run takes seconds; a line is asked for every 0.2 s
    for line in progress:
        words = line.split()
        read, routed = int(words[words.index("read") + 1]), int(words[words.index("routed") + 1])
        assert 0 <= routed <= read <= first["read"]


def test_the_progress_taps_count_what_the_summary_counts(tmp_path):
    """The taps see every message read, routed record and dead letter of the in-process workers."""
    from pipelines import batch_progress

    with beam.Pipeline() as pipeline:
        outputs = {"messages": pipeline | "M" >> beam.Create(range(7)),
                   "routed": pipeline | "R" >> beam.Create(range(5)),
                   "dead_letters": pipeline | "D" >> beam.Create(range(2))}
        batch_progress.add_taps(outputs, "taps-test")
    assert batch_progress.counts_of("taps-test") == {"read": 7, "routed": 5, "dead_lettered": 2}
    line = batch_progress.format_batch_progress(2.0, batch_progress.counts_of("taps-test"))
    assert line == "[   2.0s] read 7  routed 5  dead-lettered 2  4 reports/s"


# --- 4. one-line errors, before anything runs ---------------------------------------------------------------

def test_a_bad_bank_row_stops_the_start_naming_file_and_line(reports_file, tmp_path):
    bank = tmp_path / "bad.csv"
    bank.write_text(BANK_HEADER + "MD5," + "ab" * 16 + ",known,,e1\nMD5,not-a-hash,known,,e2\n")
    code, out, err = tipline(*files_run(reports_file, "--geoip-city-db", CITY, "--hash-bank", str(bank)))
    assert code == 2, err
    (line,) = stderr_lines(err)
    assert line.startswith(f"tipline run: error: --hash-bank {bank} line 3: ")
    assert out == "" and not (reports_file.parent / "out").exists()  # nothing ran


def test_an_output_that_is_a_file_stops_the_start(reports_file, tmp_path):
    (tmp_path / "taken").write_text("a file")
    argv = ["run", "--source", "files", "--input", str(reports_file), "--output", str(tmp_path / "taken"),
            "--geoip-city-db", CITY, "--no-hash-banks"]
    code, out, err = tipline(*argv)
    assert code == 2
    assert stderr_lines(err) == [f"tipline run: error: --output {tmp_path / 'taken'}: {tmp_path / 'taken'} is a "
                                 "file, not a folder; name a folder"]


def test_an_input_matching_no_file_stops_the_start(tmp_path, capsys):
    argv = ["run", "--source", "files", "--input", str(tmp_path / "none" / "*.jsonl"), "--output",
            str(tmp_path / "out"), "--geoip-city-db", CITY, "--no-hash-banks"]
    assert main(argv) == 2
    assert stderr_lines(capsys.readouterr().err) == [
        f"tipline run: error: --input {tmp_path / 'none' / '*.jsonl'}: no file matches; name JSON Lines or .avro "
        "files that exist"]


def test_an_input_named_as_a_file_uri_is_read_as_the_path_it_names(reports_file, capsys):
    """Preflight checks `--input file:///...` as the local path it names; the run reads that path too (Beam's
    own filesystems know no `file://` scheme), rather than stopping after preflight passed."""
    argv = ["run", "--source", "files", "--input", reports_file.as_uri(), "--output",
            str(reports_file.parent / "out"), "--demo-data"]
    assert main(argv) == 0
    assert "read 3  routed 3" in capsys.readouterr().out


def closed_port_host():
    """host:port where nothing listens: a stopped emulator."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return f"localhost:{probe.getsockname()[1]}"


def test_a_pubsub_outage_is_one_line(tmp_path):
    """The source's grace is cut to 2 s in the child process (30 s otherwise); everything else is the CLI's."""
    code = ("import sys; from transforms.plumbing import pubsub_source as s; s.OUTAGE_GRACE_SECONDS = 2; "
            "from pipelines.cli import main; sys.exit(main())")
    argv = ["run", "--source", "pubsub", "--subscription", "projects/tipline-test/subscriptions/tips", "--duration", "60",
            "--output", str(tmp_path / "out"), "--geoip-city-db", CITY, "--no-hash-banks"]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PUBSUB_EMULATOR_HOST": closed_port_host()}, timeout=300)
    assert done.returncode == 1, done.stderr
    lines = stderr_lines(done.stderr)
    assert "Traceback" not in done.stderr
    assert lines[-1].startswith("tipline run: failed: PubSubUnavailable: Pub/Sub subscription "
                                "projects/tipline-test/subscriptions/tips unreachable for 2 s")
    assert len(lines) <= 2, lines  # at most the source's own "retrying" warning before it


def test_a_name_beam_refuses_is_a_usage_error(tmp_path, capsys):
    argv = ["run", "--source", "pubsub", "--subscription", "projects/p/subscriptions/s", "--duration", "5",
            "--output", str(tmp_path / "out"), "--geoip-city-db", CITY, "--no-hash-banks"]
    assert main(argv) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith("tipline run: error: Invalid PubSub project name: 'p'")


def test_debug_shows_the_traceback(tmp_path):
    code, _, err = tipline("run", "--source", "files", "--input", "x", "--output", str(tmp_path),
                           "--geoip-city-db", ASN, "--no-hash-banks", "--debug")
    assert code == 2
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("tipline run:")


def test_bank_import_of_a_bad_list_is_one_line(tmp_path, capsys):
    listing = tmp_path / "list.csv"
    listing.write_text("hash_type,hash_value\nMD5,zz\n")
    assert main(["bank", "import", "--csv", str(listing), "--out", str(tmp_path / "b.csv")]) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith(f"tipline bank: error: {listing} line 2: ")
    assert not (tmp_path / "b.csv").exists()


def test_match_with_a_missing_bank_or_folder_is_one_line(tmp_path, capsys):
    assert main(["match", "--bank", str(tmp_path / "none.csv"), "--images", str(tmp_path)]) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith("tipline match: error: ") and "none.csv" in line
    assert main(["match", "--bank", DEMO_BANK, "--images", str(tmp_path / "no-folder")]) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith("tipline match: error: ") and "no-folder" in line


def test_a_usage_error_of_a_subcommand_is_one_line(capsys):
    assert main(["bank", "build", "--images", "x"]) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith("tipline bank: error: the following arguments are required: --signal, --out")


def test_publish_from_a_missing_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", closed_port_host())
    assert main(["publish", "--project", "p", "--topic", "t", "--from", str(tmp_path / "none.jsonl")]) == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith("tipline publish: error: ") and "none.jsonl" in line


def test_publish_to_a_stopped_emulator_gives_up_within_the_stated_time():
    code, out, err = tipline("publish", "--project", "p", "--topic", "t", "--count", "3", "--give-up-seconds", "2",
                             env={**os.environ, "PUBSUB_EMULATOR_HOST": closed_port_host()})
    assert code == 1
    (line,) = stderr_lines(err)
    assert line.startswith("tipline publish: failed: PubSubUnreachable: Pub/Sub at localhost:")
    assert "unreachable for projects/p/topics/t: gave up after 2 s (--give-up-seconds;" in line


def test_explain_into_a_reader_that_left_ends_quietly(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(example_report()))
    child = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "explain", str(report)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # `| head` that has read what it wanted
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0 and err.decode() == ""


def test_every_failure_becomes_one_line_with_its_exit_code(capsys):
    from pipelines.errors import UsageError, run_command

    def failing(error):
        def command(argv):
            raise error
        return command

    assert run_command("tipline x", failing(UsageError("--a: not a folder")), []) == 2
    assert run_command("tipline x", failing(ValueError("--connect-to: expected HOST:PORT")), []) == 2
    assert run_command("tipline x", failing(RuntimeError("boom\n  Traceback, step names...")), []) == 1
    assert capsys.readouterr().err.splitlines() == [
        "tipline x: error: --a: not a folder", "tipline x: error: --connect-to: expected HOST:PORT",
        "tipline x: failed: RuntimeError: boom (--debug shows the traceback)"]


@pytest.mark.parametrize("argv, expected", [
    (["bank", "build", "--signal", "vpdq", "--images", ".", "--out", "x.csv"],
     "tipline bank: error: --signal vpdq hashes videos: give --videos DIR"),
    (["bank", "build", "--signal", "vpdq", "--videos", ".", "--seconds-per-frame", "0", "--out", "x.csv"],
     "tipline bank: error: --seconds-per-frame 0.0: must be positive"),
])
def test_every_subcommand_refuses_a_bad_flag_with_the_same_one_line_form(argv, expected, capsys, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert stderr_lines(capsys.readouterr().err) == [expected]
    assert not (tmp_path / "x.csv").exists()
