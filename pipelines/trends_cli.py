"""`tipline trends`: ready-made analyst views and free SQL over the trend tables, bundles and alerts (DuckDB).

    tipline trends tables                                  # what the output folder holds
    tipline trends top-countries --since 2026-11-01 --plot countries.png
    tipline trends jurisdictions --plot jurisdictions.png  # reports per jurisdiction over time
    tipline trends new-vs-known --window sliding24h --since 2026-11-23T06:00:00Z
    tipline trends bundles --limit 20
    tipline trends alerts
    tipline trends report --html report.html              # one self-contained page for partners
    tipline trends sql "SELECT * FROM hourly_by_esp ORDER BY reports DESC LIMIT 5" --format csv

Everything is UTC: the views, --since/--until (a date, 2026-11-23, is its midnight UTC; an RFC 3339 time
keeps its offset; a time without one is read as UTC) and every timestamp printed (ISO 8601 with Z, in every
format). Every table is a view that keeps the latest pane per window (the right total once late reports fired
it again); `<table>_panes` keeps every pane. Trend views add `complete`: false for a window that reaches
before the first or past the last hour holding data (a sliding 24-hour window at either edge), which
charts leave out. Sliding windows are listed by both ends and filtered and drawn by their end.
"""
import argparse
import csv
import datetime
import json
import pathlib
import sys

from pipelines.errors import UsageError
from pipelines.options import DEFAULT_OUTPUT_DIR
from schemas.tables import ALERT_SCHEMA, BUNDLE_SCHEMA, DIMENSIONS, TABLES, WINDOW_KIND_NAMES
UTC = datetime.timezone.utc


def parse_time(text):
    """A date (its midnight UTC) or an RFC 3339 time, as an aware UTC datetime; a naive time is UTC."""
    try:
        if len(text) == 10:
            moment = datetime.datetime.combine(datetime.date.fromisoformat(text), datetime.time())
        else:
            moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2026-11-23) or an RFC 3339 time (2026-11-23T10:00:00Z)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def iso(moment):
    """The one timestamp format of every output: ISO 8601 in UTC with `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table_dimension(table):
    return next((dimension for dimension in DIMENSIONS if table.endswith(f"_by_{dimension}")), None)


def panes_view(name, source):
    return f'CREATE VIEW "{name}_panes" AS SELECT * FROM {source};'


def latest_pane_view(name, partition_columns, extra_columns="", extra_from=""):
    return (f'CREATE VIEW "{name}" AS SELECT *{extra_columns} FROM "{name}_panes"{extra_from} QUALIFY row_number() '
            f'OVER (PARTITION BY {", ".join(partition_columns)} ORDER BY pane_index DESC) = 1;')


def coverage_view(hourly_tables):
    """The hours holding data: from the first hourly window's start to the last one's end, over every table."""
    spans = " UNION ALL ".join(f'SELECT min(window_start) AS s, max(window_end) AS e FROM "{name}_panes"'
                               for name in hourly_tables)
    return f"CREATE VIEW coverage AS SELECT min(s) AS first_start, max(e) AS last_end FROM ({spans});"


def parquet_source(folder):
    return f"read_parquet('{folder.as_posix()}/*/*.parquet', hive_partitioning = true)"


def source_or_empty(connection, name, folder, schema, pattern="*/*.parquet"):
    """The files' reader, or an empty table of the right schema: an empty table is an answer, not an error."""
    if any(folder.glob(pattern)):
        return parquet_source(folder), True
    connection.register(f"{name}_empty", schema.empty_table())
    return f'"{name}_empty"', False


COMPLETE = (", (window_start >= coverage.first_start AND window_end <= coverage.last_end) AS complete",
            ", coverage")


def connect(output_dir):
    """A DuckDB connection (UTC) with a view per table; (connection, names of tables that have files)."""
    import duckdb

    root = pathlib.Path(output_dir)
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")  # not the machine's zone: casts, dates and results in UTC
    found = []
    for table in sorted(TABLES):
        source, present = source_or_empty(connection, table, root / "trends" / table, TABLES[table])
        connection.execute(panes_view(table, source))
        found += [table] if present else []
    connection.execute(coverage_view([table for table in sorted(TABLES) if table.startswith("hourly_")]))
    for table in sorted(TABLES):
        dimension = table_dimension(table)
        connection.execute(latest_pane_view(table, ["window_start"] + ([dimension] if dimension else []), *COMPLETE))
    source, present = source_or_empty(connection, "bundles", root / "bundles", BUNDLE_SCHEMA)
    connection.execute(panes_view("bundles", source) + latest_pane_view("bundles", ["bundle_id"]))
    found += ["bundles"] if present else []
    connection.execute(f"CREATE VIEW alerts AS SELECT * FROM {alerts_source(connection, root / 'alerts')}")
    found += ["alerts"] if any((root / "alerts").glob("*/*.jsonl")) else []
    return connection, found


def alerts_source(connection, folder):
    """Alerts are JSON Lines with ISO times: read with typed columns (UTC timestamps), or an empty table."""
    if not any(folder.glob("*/*.jsonl")):
        connection.register("alerts_empty", ALERT_SCHEMA.empty_table())
        return '"alerts_empty"'
    columns = {"alert_id": "VARCHAR", "kind": "VARCHAR", "key": "VARCHAR", "window_start": "TIMESTAMPTZ",
               "window_end": "TIMESTAMPTZ", "count": "BIGINT", "baseline": "DOUBLE", "ratio": "DOUBLE",
               "history_windows": "BIGINT"}
    return f"read_json('{folder.as_posix()}/*/*.jsonl', format = 'newline_delimited', columns = {columns})"


def label_column(window):
    """Sliding windows are named, filtered and drawn by their end (the day they sum up), hourly by their start."""
    return "window_end" if window == "sliding24h" else "window_start"


def range_clause(args, column, first="WHERE"):
    """Bound parameters for --since/--until on `column`: [since, until)."""
    conditions, parameters = [], []
    if getattr(args, "since", None):
        conditions.append(f"{column} >= ?")
        parameters.append(args.since)
    if getattr(args, "until", None):
        conditions.append(f"{column} < ?")
        parameters.append(args.until)
    return (f"{first} " + " AND ".join(conditions) if conditions else ""), parameters


def over_time(dimension, measures):
    """A view of `measures` per `dimension` value and window, with both window ends and `complete`."""
    def query(args):
        where, parameters = range_clause(args, label_column(args.window))
        return (f"SELECT window_start, window_end, {dimension}, {measures}, complete "
                f"FROM {args.window}_by_{dimension} {where} ORDER BY window_start, {dimension}"), parameters
    return query


def top_countries(args):
    where, parameters = range_clause(args, "window_start")
    return (f"SELECT coalesce(country, '(unlocated)') AS country, sum(reports) AS reports, sum(files) AS files "
            f"FROM hourly_by_country {where} GROUP BY ALL ORDER BY reports DESC, country LIMIT {args.limit}"), parameters


def biggest_bundles(args):
    where, parameters = range_clause(args, "last_seen")
    return (f"SELECT bundle_id, signature_kind, signature, first_seen, last_seen, reports, users, esps, "
            f"len(jurisdictions) AS jurisdictions FROM bundles {where} "
            f"ORDER BY reports DESC, bundle_id LIMIT {args.limit}"), parameters


def latest_alerts(args):
    where, parameters = range_clause(args, "window_start")
    return (f"SELECT window_start, window_end, kind, key, count, baseline, ratio FROM alerts {where} "
            f"ORDER BY window_start DESC, ratio DESC LIMIT {args.limit}"), parameters


class View:
    """A ready-made view: its query, what it measures, the chart it supports and the options it takes."""

    def __init__(self, help_text, query, chart=None, options=(), what="rows"):
        self.help_text, self.query, self.chart, self.options, self.what = help_text, query, chart, options, what


RANGE = ("since", "until")
VIEWS = {
    "top-countries": View("reports per country (top --limit)", top_countries, "bars", RANGE + ("limit",),
                          "trend rows"),
    "jurisdictions": View("reports per jurisdiction over time", over_time("jurisdiction", "reports, users, bundles"),
                          "lines", RANGE + ("window", "top"), "trend rows"),
    "countries": View("reports per country over time", over_time("country", "reports, users, bundles"),
                      "lines", RANGE + ("window", "top"), "trend rows"),
    "incident-types": View("reports per incident type over time", over_time("incident_type", "reports, files"),
                           "lines", RANGE + ("window", "top"), "trend rows"),
    "annotations": View("reports per report annotation (e.g. sextortion) over time",
                        over_time("annotation", "reports, files"), "lines", RANGE + ("window", "top"), "trend rows"),
    "new-vs-known": View("reports of new and known content over time", over_time("match_class", "reports, files"),
                         "lines", RANGE + ("window", "top"), "trend rows"),
    "bundles": View("biggest incident bundles", biggest_bundles, "bars", RANGE + ("limit",), "bundles"),
    "alerts": View("latest spike alerts", latest_alerts, None, RANGE + ("limit",), "alerts"),
}


def cell(value):
    if isinstance(value, datetime.datetime):
        return iso(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def plain(value):
    """A value as CSV and JSON print it: timestamps as `iso`, the rest as they are."""
    return iso(value) if isinstance(value, datetime.datetime) else value


def format_table(columns, rows):
    """Aligned columns; numbers right-aligned."""
    texts = [[cell(value) for value in row] for row in rows]
    widths = [max([len(column)] + [len(text[i]) for text in texts]) for i, column in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
                                  for row in rows if row[i] is not None) for i in range(len(columns))]
    align = lambda text, i: text.rjust(widths[i]) if numeric[i] else text.ljust(widths[i])
    lines = ["  ".join(align(column, i) for i, column in enumerate(columns)),
             "  ".join("-" * width for width in widths)]
    lines += ["  ".join(align(text, i) for i, text in enumerate(row_texts)) for row_texts in texts]
    return "\n".join(line.rstrip() for line in lines)


def print_result(columns, rows, output_format):
    out = sys.stdout
    if output_format == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([[plain(value) for value in row] for row in rows])
    elif output_format == "json":
        out.write(json.dumps([{column: plain(value) for column, value in zip(columns, row)} for row in rows],
                             indent=1) + "\n")
    else:
        out.write(format_table(columns, rows) + "\n")


def range_text(args):
    """What --since/--until asked for, in words (UTC)."""
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since and until:
        return f"from {iso(since)} to {iso(until)}"
    if since:
        return f"from {iso(since)}"
    return f"until {iso(until)}" if until else "all data"


def shown_text(columns, rows):
    """The time range the rows cover, and how many windows are incomplete."""
    times = sorted(value for row in rows for value in row if isinstance(value, datetime.datetime))
    text = f"{len(rows)} rows"
    if times:
        text += f", {iso(times[0])} to {iso(times[-1])} (UTC)"
    if "complete" in columns:
        incomplete = sum(1 for row in rows if row[columns.index("complete")] is False)
        text += f", {incomplete} incomplete windows (complete = false)" if incomplete else ""
    return text


def period_shown(connection, args):
    """The period a chart covers, in words: the hours holding data, cut to --since/--until (UTC)."""
    first, last = connection.execute("SELECT first_start, last_end FROM coverage").fetchone()
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    first = max(filter(None, (first, since)), default=None)
    last = min(filter(None, (last, until)), default=None)
    if first is None or last is None:
        return range_text(args)
    return f"{first.astimezone(UTC):%Y-%m-%d %H:%MZ} to {last.astimezone(UTC):%Y-%m-%d %H:%MZ}"


def no_trend_tables(args):
    raise UsageError(f"--output {args.output}: no trend tables there (run the pipeline first, or pass --output)")


def run_query(args, sql, parameters=(), view=None):
    connection, found = connect(args.output)
    if not any(name in TABLES for name in found):
        return no_trend_tables(args)
    try:
        result = connection.execute(sql, list(parameters))
    except Exception as error:  # DuckDB raises one class per error kind; all are the user's query to fix
        print(f"query failed: {error}", file=sys.stderr)
        return 1
    columns = [description[0] for description in result.description]
    rows = result.fetchall()
    print_result(columns, rows, args.format)
    if not rows:
        print(f"no {view.what if view else 'rows'} in {args.output} for {range_text(args)}", file=sys.stderr)
        return 0
    print(f"shown: {shown_text(columns, rows)}; asked: {range_text(args)}", file=sys.stderr)
    if getattr(args, "plot", None):
        from pipelines import trends_charts

        records = [dict(zip(columns, row)) for row in rows]
        trends_charts.save(trends_charts.chart_for(view, records, args, period_shown(connection, args)), args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def run_view(view):
    def run(args):
        sql, parameters = view.query(args)
        return run_query(args, sql, parameters, view)
    return run


def list_tables(args):
    connection, found = connect(args.output)
    if not any(name in TABLES for name in found):
        return no_trend_tables(args)
    names = sorted(TABLES) + ["bundles", "alerts"]
    rows = [(name, connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]) for name in names]
    print_result(["table", "rows"], rows, args.format)
    return 0


def write_report(args):
    from pipelines import trends_report

    connection, found = connect(args.output)
    if not any(name in TABLES for name in found):
        return no_trend_tables(args)
    pathlib.Path(args.html).write_text(trends_report.html_report(connection, args), encoding="utf-8")
    print(f"report: {args.html}", file=sys.stderr)
    return 0


def add_options(parser, options, chart=None):
    """Only the options a view uses: argparse refuses the others (exit 2) rather than ignore them."""
    parser.add_argument("--output", default=DEFAULT_OUTPUT_DIR, help=f"the pipeline's output folder (default {DEFAULT_OUTPUT_DIR})")
    if "format" in options:
        parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                            help="timestamps are ISO 8601 UTC with Z in every format")
    if chart:
        parser.add_argument("--plot", metavar="FILE.png", help=f"also draw the result as a chart ({chart})")
    if "limit" in options:
        parser.add_argument("--limit", type=int, default=20, help="rows of the top-N view")
    if "top" in options:
        parser.add_argument("--top", type=int, default=10,
                            help="series drawn in a chart; the rest are summed as one 'other' series (default 10)")
    if "since" in options:
        parser.add_argument("--since", type=parse_time, metavar="TIME",
                            help="windows from this date or RFC 3339 time on (UTC unless an offset is given)")
        parser.add_argument("--until", type=parse_time, metavar="TIME",
                            help="windows before this date or RFC 3339 time (UTC unless an offset is given)")
    if "window" in options:
        parser.add_argument("--window", choices=WINDOW_KIND_NAMES, default="hourly",
                            help="hourly windows or 24-hour windows sliding hourly (shown by their end)")


def register(subparsers):
    """Adds `trends` and its views to the `tipline` command."""
    trends = subparsers.add_parser("trends", help="query trend tables, bundles and alerts (DuckDB)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    views = trends.add_subparsers(dest="view", required=True)
    tables = views.add_parser("tables", help="tables and their row counts")
    add_options(tables, ("format",))
    tables.set_defaults(func=list_tables)
    for name, view in VIEWS.items():
        parser = views.add_parser(name, help=view.help_text)
        add_options(parser, ("format",) + view.options, view.chart)
        parser.set_defaults(func=run_view(view))
    report = views.add_parser("report", help="one self-contained HTML page of charts and readings")
    add_options(report, RANGE + ("top",))
    report.add_argument("--html", required=True, metavar="FILE.html", help="the page to write")
    report.set_defaults(func=write_report)
    free = views.add_parser("sql", help="any SQL over the tables (latest panes; <table>_panes)")
    add_options(free, ("format",), "lines when the result has a time column, else bars")
    free.add_argument("query")
    free.set_defaults(func=lambda args: run_query(args, args.query))
    takedown = views.add_parser("takedown", help="time to takedown per provider (notice_outcomes/, as "
                                                 "tipline notices takedown)")
    takedown.add_argument("--output", default=DEFAULT_OUTPUT_DIR, help="the pipeline's output folder")
    takedown.add_argument("--json", action="store_true", help="JSON instead of a table")
    takedown.add_argument("--plot", metavar="FILE.png", help="also draw the figures per provider as a chart")
    takedown.set_defaults(func=run_takedown_view)
    return trends


def run_takedown_view(args):
    from pipelines.notices_cli import run_takedown

    return run_takedown(args)
