"""`tipline trends`: latest panes, ready-made views, free SQL, formats and plots over hand-written tables."""
import argparse
import datetime
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.trends_cli import register
from schemas.tables import BUNDLE_SCHEMA, TABLES

UTC = datetime.timezone.utc


def hour(n):
    return datetime.datetime(2026, 11, 23, n, tzinfo=UTC)


def write_table(root, table, rows, schema):
    folder = root / table / "dt=2026-11-23"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"part-{len(list(folder.iterdir()))}.parquet")


def trend_row(start, pane, reports, **dimension):
    return {"window_start": hour(start), "window_end": hour(start + 1), **dimension, "reports": reports,
            "files": reports * 2, "users": 1, "bundles": 1, "pane_index": pane,
            "pane_timing": "ON_TIME" if pane == 0 else "LATE"}


@pytest.fixture
def output(tmp_path):
    trends = tmp_path / "trends"
    country = TABLES["hourly_by_country"]
    write_table(trends, "hourly_by_country", [trend_row(1, 0, 5, country="GB"), trend_row(1, 0, 7, country="US")], country)
    write_table(trends, "hourly_by_country", [trend_row(1, 1, 9, country="GB")], country)  # a late pane: 9, not 5
    write_table(trends, "hourly_by_country", [trend_row(2, 0, 1, country="GB")], country)
    write_table(trends, "hourly_by_jurisdiction",
                [trend_row(n, 0, n, jurisdiction=j) for n in (1, 2, 3) for j in ("GB", "US-WA")],
                TABLES["hourly_by_jurisdiction"])
    write_table(tmp_path, "bundles", [
        {"bundle_id": "bnd-1", "signature": "md5:aa", "signature_kind": "exact_hash", "window_start": hour(1),
         "window_end": hour(2), "first_seen": hour(1), "last_seen": hour(1), "reports": 3, "users": 2, "esps": 1,
         "jurisdictions": ["GB", "US-WA"], "pane_index": 0, "pane_timing": "ON_TIME"}], BUNDLE_SCHEMA)
    return tmp_path


def tipline_trends(capsys, *argv):
    parser = argparse.ArgumentParser(prog="tipline")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["trends", *argv])
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_top_countries_uses_the_latest_pane_per_window(output, capsys):
    code, out, _ = tipline_trends(capsys, "top-countries", "--output", str(output), "--format", "json")
    assert code == 0
    assert [(row["country"], row["reports"]) for row in json.loads(out)] == [("GB", 10), ("US", 7)]


def test_the_table_format_aligns_columns_and_panes_stay_queryable(output, capsys):
    code, out, _ = tipline_trends(capsys, "sql", "--output", str(output),
                                  "SELECT country, count(*) AS panes FROM hourly_by_country_panes GROUP BY 1 ORDER BY 1")
    assert code == 0
    assert out.splitlines() == ["country  panes", "-------  -----", "GB           3", "US           1"]


def test_bundles_view_and_csv_output(output, capsys):
    code, out, _ = tipline_trends(capsys, "bundles", "--output", str(output), "--format", "csv")
    assert code == 0
    assert out.splitlines()[1] == "bnd-1,exact_hash,md5:aa,2026-11-23T01:00:00+00:00,3,2,1,2"


def test_a_time_series_plot_is_written(output, capsys, tmp_path):
    chart = tmp_path / "jurisdictions.png"
    code, out, _ = tipline_trends(capsys, "jurisdictions", "--output", str(output), "--plot", str(chart))
    assert code == 0 and len(out.splitlines()) == 2 + 6
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000


def test_errors_are_reported_with_exit_codes(output, tmp_path, capsys):
    assert tipline_trends(capsys, "sql", "--output", str(output), "SELECT nope FROM nowhere")[0] == 1
    code, _, err = tipline_trends(capsys, "top-countries", "--output", str(tmp_path / "empty"))
    assert code == 2 and "no trend tables" in err
