"""`tipline trends`: latest panes, ready-made views, free SQL, formats, charts and the HTML report over
hand-written tables, in a non-UTC local zone (America/New_York) so that anything local would show."""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from schemas.tables import BUNDLE_SCHEMA, TABLES

UTC = datetime.timezone.utc


@pytest.fixture(autouse=True)
def new_york(monkeypatch):
    """Every test runs with the process in New York time: what it prints must still be UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def hour(n):
    return datetime.datetime(2026, 11, 23, tzinfo=UTC) + datetime.timedelta(hours=n)


def write_table(root, table, rows, schema):
    folder = root / table / "dt=2026-11-23"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"part-{len(list(folder.iterdir()))}.parquet")


def trend_row(start, pane, reports, **dimension):
    return {"window_start": hour(start), "window_end": hour(start + 1), **dimension, "reports": reports,
            "files": reports * 2, "users": 1, "bundles": 1, "pane_index": pane,
            "pane_timing": "ON_TIME" if pane == 0 else "LATE"}


def sliding_row(end, pane, reports, **dimension):
    """A 24-hour window ending at hour `end` (its start is the day before)."""
    return {**trend_row(end, pane, reports, **dimension), "window_start": hour(end) - datetime.timedelta(days=1),
            "window_end": hour(end)}


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
    write_table(trends, "hourly_total", [trend_row(n, 0, 2 * n) for n in (1, 2, 3)], TABLES["hourly_total"])
    write_table(trends, "sliding24h_by_jurisdiction",
                [sliding_row(end, 0, end, jurisdiction="GB") for end in (2, 3, 4, 5)], TABLES["sliding24h_by_jurisdiction"])
    write_table(tmp_path, "bundles", [
        {"bundle_id": "bnd-1", "signature": "md5:aa", "signature_kind": "exact_hash", "window_start": hour(1),
         "window_end": hour(2), "first_seen": hour(1), "last_seen": hour(1), "reports": 3, "users": 2, "esps": 1,
         "jurisdictions": ["GB", "US-WA"], "pane_index": 0, "pane_timing": "ON_TIME"}], BUNDLE_SCHEMA)
    return tmp_path


def tipline_trends(capsys, *argv):
    """`tipline trends ...` through the CLI's entry point, one-line errors and exit codes included."""
    code = main(["trends", *argv])
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
    assert out.splitlines()[1] == "bnd-1,exact_hash,md5:aa,2026-11-23T01:00:00Z,2026-11-23T01:00:00Z,3,2,1,2"


def test_a_time_series_plot_is_written(output, capsys, tmp_path):
    chart = tmp_path / "jurisdictions.png"
    code, out, _ = tipline_trends(capsys, "jurisdictions", "--output", str(output), "--plot", str(chart))
    assert code == 0 and len(out.splitlines()) == 2 + 6
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000


def test_errors_are_reported_with_exit_codes(output, tmp_path, capsys):
    assert tipline_trends(capsys, "sql", "--output", str(output), "SELECT nope FROM nowhere")[0] == 1
    code, _, err = tipline_trends(capsys, "top-countries", "--output", str(tmp_path / "empty"))
    assert code == 2 and err.strip().startswith("tipline trends: error: --output ") and "no trend tables" in err


def test_times_are_utc_with_z_in_every_format_whatever_the_local_zone(output, capsys):
    _, table, _ = tipline_trends(capsys, "jurisdictions", "--output", str(output))
    _, as_csv, _ = tipline_trends(capsys, "jurisdictions", "--output", str(output), "--format", "csv")
    _, as_json, _ = tipline_trends(capsys, "jurisdictions", "--output", str(output), "--format", "json")
    first = "2026-11-23T01:00:00Z"
    assert table.splitlines()[2].split()[0] == first
    assert as_csv.splitlines()[1].split(",")[0] == first
    assert json.loads(as_json)[0]["window_start"] == first


def test_since_and_until_take_dates_and_rfc3339_times_and_say_what_was_shown(output, capsys):
    code, out, err = tipline_trends(capsys, "jurisdictions", "--output", str(output), "--format", "json",
                                    "--since", "2026-11-22T21:00:00-05:00", "--until", "2026-11-23T03:00:00Z")
    assert code == 0
    assert {row["window_start"] for row in json.loads(out)} == {"2026-11-23T02:00:00Z"}  # 21:00 New York is 02:00Z
    assert "asked: from 2026-11-23T02:00:00Z to 2026-11-23T03:00:00Z" in err
    _, out, _ = tipline_trends(capsys, "top-countries", "--output", str(output), "--format", "json", "--since", "2026-11-23")
    assert [(row["country"], row["reports"]) for row in json.loads(out)] == [("GB", 10), ("US", 7)]
    code, _, err = tipline_trends(capsys, "jurisdictions", "--output", str(output), "--since", "23/11/2026")
    assert code == 2 and err.startswith("tipline trends: error: ") and "--since" in err


def test_a_subprocess_in_another_zone_prints_utc(output):
    """The real command, in a New York process: DuckDB's own time zone must not leak into the output."""
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "trends", "top-countries", "--output", str(output), "--format", "csv",
         "--since", "2026-11-23T02:00:00Z"],
        capture_output=True, text=True, env={**os.environ, "TZ": "Asia/Kolkata"}, check=True)
    assert result.stdout.splitlines() == ["country,reports,files", "GB,1,2"]


def test_sliding_windows_show_both_ends_and_flag_those_past_the_data(output, capsys):
    _, out, err = tipline_trends(capsys, "jurisdictions", "--output", str(output), "--window", "sliding24h",
                                 "--format", "json")
    rows = json.loads(out)
    assert [(row["window_end"], row["complete"]) for row in rows] == [
        ("2026-11-23T02:00:00Z", False), ("2026-11-23T03:00:00Z", False),  # they start before the first hour
        ("2026-11-23T04:00:00Z", False), ("2026-11-23T05:00:00Z", False)]  # the data covers 01:00 to 04:00 only
    assert "4 incomplete windows" in err
    _, out, _ = tipline_trends(capsys, "jurisdictions", "--output", str(output), "--format", "json")
    assert all(row["complete"] for row in json.loads(out))


def test_an_empty_view_says_so_and_exits_0(output, capsys):
    code, out, err = tipline_trends(capsys, "alerts", "--output", str(output))
    assert code == 0 and out.splitlines()[0].split() == ["window_start", "window_end", "kind", "key", "count",
                                                         "baseline", "ratio"]
    assert "no alerts in" in err
    shutil.rmtree(output / "bundles")
    code, out, err = tipline_trends(capsys, "bundles", "--output", str(output), "--format", "json")
    assert (code, json.loads(out)) == (0, []) and "no bundles in" in err
    code, out, _ = tipline_trends(capsys, "tables", "--output", str(output), "--format", "json")
    counts = {row["table"]: row["rows"] for row in json.loads(out)}
    assert code == 0 and counts["alerts"] == 0 and counts["bundles"] == 0 and counts["hourly_by_country"] == 3


def test_an_option_a_view_does_not_support_is_refused(output, capsys):
    for argv in (["tables", "--plot", "x.png"], ["alerts", "--plot", "x.png"], ["top-countries", "--window", "sliding24h"]):
        code, _, err = tipline_trends(capsys, *argv, "--output", str(output))
        assert code == 2 and err.startswith("tipline trends: error: unrecognized arguments"), err


def many_jurisdictions(count=14, hours=4):
    return [{"window_start": hour(n), "window_end": hour(n + 1), "jurisdiction": f"J{j:02d}", "reports": j + n,
             "complete": True} for j in range(count) for n in range(hours)]


def test_a_line_chart_has_distinct_colours_top_n_plus_other_and_its_legend_outside_the_data():
    from pipelines.trends_charts import line_chart

    figure = line_chart(many_jurisdictions(), "jurisdiction", "reports", "hourly", 10, "Reports per jurisdiction")
    axes = figure.axes[0]
    labels = [line.get_label() for line in axes.get_lines()]
    assert labels[:10] == [f"J{j:02d}" for j in range(13, 3, -1)] and labels[10] == "other (4 more)"
    assert len({line.get_color() for line in axes.get_lines()}) == 11
    other = axes.get_lines()[10]
    assert list(other.get_ydata()) == [sum(j + n for j in range(4)) for n in range(4)]  # the rest, summed per hour
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    assert axes.get_legend().get_window_extent(renderer).x0 >= axes.get_window_extent(renderer).x1
    assert axes.get_title().endswith("2026-11-23 00:00Z to 2026-11-23 04:00Z")  # from the first start to the last end


def test_incomplete_windows_are_left_out_of_a_chart_and_counted():
    from pipelines.trends_charts import line_chart

    rows = [{"window_start": hour(n) - datetime.timedelta(days=1), "window_end": hour(n), "jurisdiction": "GB",
             "reports": 5, "complete": n < 3} for n in range(1, 6)]
    axes = line_chart(rows, "jurisdiction", "reports", "sliding24h", 10, "t").axes[0]
    assert len(axes.get_lines()[0].get_xdata()) == 2
    assert "24 hours ending at (UTC); 3 incomplete windows left out" == axes.get_xlabel()


def test_the_bundles_chart_has_whole_number_ticks(output, capsys, tmp_path):
    from pipelines.trends_charts import bar_chart

    axes = bar_chart(["a", "b"], [3, 1], "reports", "t").axes[0]
    assert all(float(tick).is_integer() for tick in axes.get_xticks())
    chart = tmp_path / "bundles.png"
    assert tipline_trends(capsys, "bundles", "--output", str(output), "--plot", str(chart))[0] == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_chart_title_states_the_period_shown_cut_to_since_and_until(output):
    from pipelines.trends_charts import chart_for
    from pipelines.trends_cli import connect, period_shown

    connection, _ = connect(output)
    args = argparse.Namespace(since=hour(2), until=None, view="top-countries")
    assert period_shown(connection, args) == "2026-11-23 02:00Z to 2026-11-23 04:00Z"  # the data ends at 04:00
    figure = chart_for(None, [{"country": "GB", "reports": 3}], args, period_shown(connection, args))
    assert figure.axes[0].get_title() == "Reports per country, top 1\n2026-11-23 02:00Z to 2026-11-23 04:00Z"


def test_a_series_without_a_row_in_a_window_is_drawn_at_zero_not_bridged():
    from pipelines.trends_charts import line_chart

    rows = [{"window_start": hour(n), "window_end": hour(n + 1), "annotation": "sextortion", "reports": 4,
             "complete": True} for n in range(3)]
    rows += [{"window_start": hour(n), "window_end": hour(n + 1), "annotation": "spam", "reports": 2,
              "complete": True} for n in (0, 2)]
    axes = line_chart(rows, "annotation", "reports", "hourly", 10, "t").axes[0]
    spam = next(line for line in axes.get_lines() if line.get_label() == "spam")
    assert list(spam.get_ydata()) == [2, 0, 2]
