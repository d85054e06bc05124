"""Replays (issue #7.2): the same input run twice into the same output must not duplicate a report in any sink.

Files are content-addressed (transforms/plumbing/windowed_files.py): a second run yields the same names and skips
them (a replay used to write every record again); and a run reads the reportIds its output already holds and
routes none of them again (counted as duplicates), so a replay adds no routed record, trend row, bundle, alert
or notice at all.
"""
import json

import pytest

from pipelines.tipline_pipeline import run
from tests import hostile
from tests.test_pipeline_end_to_end import variant

IPS = {"GB": "81.2.69.160", "US-WA": "216.160.83.56", "SE": "89.160.20.112"}


@pytest.fixture(scope="module")
def two_runs(city_test_db):
    """The same input (reports, a redelivery, two bad messages) run twice into one output folder."""
    root, (first, second, after_first, reports) = hostile.once_per_session(
        "replay", lambda root: _two_runs(root, city_test_db))
    return root / "out", first, second, {k: v for k, v in after_first.items()}, reports


def _two_runs(root, city_test_db):
    reports = [variant(f"r-{code}-{i}", ip=ip) for code, ip in IPS.items() for i in range(3)]
    lines = [json.dumps(report) for report in reports] + [json.dumps(reports[0]), "{not json", "[]"]
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["--source", "files", "--input", str(root / "in.jsonl"), "--output", str(root / "out"),
            "--geoip-city-db", city_test_db, "--demo-data"]
    first = run(argv)
    after_first = hostile.read_routed(root / "out")
    second = run(argv)
    return first, second, after_first, reports


def ids(routed):
    return sorted(record["reportId"] for records in routed.values() for record in records)


def test_the_first_run_routes_every_report_once_and_the_replay_none_again(two_runs):
    out, first, second, after_first, reports = two_runs
    assert ids(after_first) == sorted(report["reportId"] for report in reports)
    assert first["routed"] == len(reports) and first["reconciled"] and second["reconciled"]
    # the replay reads the reportIds the output holds and routes none of them again
    assert (second["routed"], second["duplicates"]) == (0, len(reports) + 1)
    assert second["other_counts"]["already_in_output"] == len(reports) + 1


def test_a_replay_into_the_same_output_does_not_duplicate_routed_reports(two_runs):
    out, _, _, _, reports = two_runs
    assert ids(hostile.read_routed(out)) == sorted(report["reportId"] for report in reports)


def test_a_replay_into_the_same_output_does_not_duplicate_dead_letters(two_runs):
    out = two_runs[0]
    letters = [letter["payload"] for records in hostile.read_jsonl(out / "dead_letter").values() for letter in records]
    assert sorted(letters) == ["[]", "{not json"]


def test_the_replay_writes_no_file_and_skips_the_dead_letters_the_first_run_wrote(two_runs):
    out, first, second, _, _ = two_runs
    files = [path for path in out.rglob("*")
             if path.is_file() and path.name != "summary.json" and path.parent.name != "summaries"]
    letter_files = [path for path in files if "dead_letter" in path.parts]
    assert first["other_counts"].get("files_already_written", 0) == 0
    assert second["other_counts"]["files_already_written"] == len(letter_files) > 0
    assert len({path.name for path in files}) == len(files)  # one file per pane: nothing written twice
    assert not [path for path in files if path.name.startswith(".")]  # no temporary file left behind


def test_a_replay_keeps_every_report_in_its_own_jurisdiction(two_runs):
    out = two_runs[0]
    for folder, records in hostile.read_routed(out).items():
        assert {f"jurisdiction={record['jurisdiction']}" for record in records} == {folder}
