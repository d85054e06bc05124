"""`tipline trends`: ready-made analyst views and free SQL over the trend tables, bundles and alerts (DuckDB).

    tipline trends tables                                  # what the output folder holds
    tipline trends top-countries --since 2026-11-01
    tipline trends jurisdictions --plot jurisdictions.png  # reports per jurisdiction over time
    tipline trends new-vs-known --window sliding24h
    tipline trends bundles --limit 20
    tipline trends alerts
    tipline trends sql "SELECT * FROM hourly_by_esp ORDER BY reports DESC LIMIT 5" --format csv

Every table is a view that keeps the latest pane per window (the right total once late reports fired
it again); `<table>_panes` keeps every pane. Options: --output DIR (default ./tipline-out),
--format table|csv|json, --plot FILE.png, --limit N.
"""
import argparse
import csv
import datetime
import json
import pathlib
import sys

from pipelines.options import DEFAULT_OUTPUT_DIR
from transforms.trends import DIMENSIONS, TABLES, WINDOW_KINDS


def table_dimension(table):
    return next((dimension for dimension in DIMENSIONS if table.endswith(f"_by_{dimension}")), None)


def latest_pane_view(name, source, partition_columns):
    return (f'CREATE VIEW "{name}_panes" AS SELECT * FROM {source};\n'
            f'CREATE VIEW "{name}" AS SELECT * FROM "{name}_panes" QUALIFY row_number() OVER '
            f'(PARTITION BY {", ".join(partition_columns)} ORDER BY pane_index DESC) = 1;')


def parquet_source(folder):
    return f"read_parquet('{folder.as_posix()}/*/*.parquet', hive_partitioning = true)"


def connect(output_dir):
    """A DuckDB connection with one view per table found under `output_dir`; (connection, table names)."""
    import duckdb

    root = pathlib.Path(output_dir)
    connection = duckdb.connect()
    found = []
    for table in sorted(TABLES):
        folder = root / "trends" / table
        if any(folder.glob("*/*.parquet")):
            dimension = table_dimension(table)
            connection.execute(latest_pane_view(
                table, parquet_source(folder), ["window_start"] + ([dimension] if dimension else [])))
            found.append(table)
    if any((root / "bundles").glob("*/*.parquet")):
        connection.execute(latest_pane_view("bundles", parquet_source(root / "bundles"), ["bundle_id"]))
        found.append("bundles")
    if any((root / "alerts").glob("*/*.jsonl")):
        connection.execute(f"CREATE VIEW alerts AS SELECT * FROM read_json_auto('{(root / 'alerts').as_posix()}/*/*.jsonl')")
        found.append("alerts")
    return connection, found


def since_clause(args):
    return f"WHERE window_start >= TIMESTAMPTZ '{args.since}'" if args.since else ""


VIEWS = {
    "top-countries": ("countries by reports (files, bundles) since --since",
                      lambda a: f"SELECT coalesce(country, '(unlocated)') AS country, sum(reports) AS reports, "
                                f"sum(files) AS files, sum(bundles) AS bundles FROM hourly_by_country {since_clause(a)} "
                                f"GROUP BY ALL ORDER BY reports DESC, country LIMIT {a.limit}"),
    "jurisdictions": ("reports per jurisdiction over time",
                      lambda a: f"SELECT window_start, jurisdiction, reports, users, bundles FROM {a.window}_by_jurisdiction "
                                f"{since_clause(a)} ORDER BY window_start, jurisdiction"),
    "new-vs-known": ("reports of new and known content over time",
                     lambda a: f"SELECT window_start, match_class, reports, files FROM {a.window}_by_match_class "
                               f"{since_clause(a)} ORDER BY window_start, match_class"),
    "bundles": ("biggest incident bundles",
                lambda a: f"SELECT bundle_id, signature_kind, signature, window_start, reports, users, esps, "
                          f"len(jurisdictions) AS jurisdictions FROM bundles {since_clause(a)} "
                          f"ORDER BY reports DESC, bundle_id LIMIT {a.limit}"),
    "alerts": ("latest spike alerts",
               lambda a: f"SELECT window_start, kind, key, count, baseline, ratio FROM alerts "
                         f"ORDER BY window_start DESC, ratio DESC LIMIT {a.limit}"),
}


def cell(value):
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def format_table(columns, rows):
    """Aligned columns; numbers right-aligned."""
    texts = [[cell(value) for value in row] for row in rows]
    widths = [max([len(column)] + [len(text[i]) for text in texts]) for i, column in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(row[i], (int, float)) for row in rows if row[i] is not None)
               for i in range(len(columns))]
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
        writer.writerows([[value.isoformat() if isinstance(value, datetime.datetime) else value for value in row]
                          for row in rows])
    elif output_format == "json":
        out.write(json.dumps([dict(zip(columns, row)) for row in rows], default=str, indent=1) + "\n")
    else:
        out.write(format_table(columns, rows) + "\n")


def plot(columns, rows, path, title):
    """A time series per label when the result has a timestamp column, else a bar chart of the first number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [next((type(row[i]) for row in rows if row[i] is not None), type(None)) for i in range(len(columns))]
    time_column = next((i for i, kind in enumerate(kinds) if kind is datetime.datetime), None)
    label_column = next((i for i, kind in enumerate(kinds) if kind is str), None)
    value_column = next((i for i, kind in enumerate(kinds) if kind in (int, float)), None)
    if value_column is None:
        raise ValueError("nothing to plot: the result has no numeric column")
    figure, axes = plt.subplots(figsize=(10, 5))
    if time_column is not None:
        series = {}
        for row in rows:
            label = cell(row[label_column]) if label_column is not None else columns[value_column]
            series.setdefault(label, []).append((row[time_column], row[value_column]))
        for label, points in sorted(series.items(), key=lambda item: -sum(v for _, v in item[1]))[:12]:
            points.sort()
            axes.plot([t for t, _ in points], [v for _, v in points], marker=".", label=label)
        axes.legend(loc="upper left", fontsize="small")
        figure.autofmt_xdate()
        axes.set_xlabel(f"{columns[time_column]} (UTC)")
    else:
        labels = [cell(row[label_column]) if label_column is not None else str(n) for n, row in enumerate(rows)]
        axes.barh(labels[::-1], [row[value_column] for row in rows][::-1])
    axes.set_ylabel(columns[value_column]) if time_column is not None else axes.set_xlabel(columns[value_column])
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_query(args, sql, title):
    connection, found = connect(args.output)
    if not found:
        print(f"no trend tables under {args.output} (run the pipeline first, or pass --output)", file=sys.stderr)
        return 2
    try:
        result = connection.execute(sql)
    except Exception as error:  # DuckDB raises one class per error kind; all are the user's query to fix
        print(f"query failed: {error}", file=sys.stderr)
        return 1
    columns = [description[0] for description in result.description]
    rows = result.fetchall()
    print_result(columns, rows, args.format)
    if args.plot:
        plot(columns, rows, args.plot, title)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def list_tables(args):
    connection, found = connect(args.output)
    rows = [(name, connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]) for name in found]
    print_result(["table", "rows"], rows, args.format)
    return 0 if found else 2


def common_options():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output", default=DEFAULT_OUTPUT_DIR, help=f"the pipeline's output folder (default {DEFAULT_OUTPUT_DIR})")
    common.add_argument("--format", choices=("table", "csv", "json"), default="table")
    common.add_argument("--plot", metavar="FILE.png", help="also draw the result as a chart")
    common.add_argument("--limit", type=int, default=20, help="rows of top-N views")
    common.add_argument("--since", help="only windows starting at or after this UTC time (ISO 8601)")
    common.add_argument("--window", choices=tuple(WINDOW_KINDS), default="hourly",
                        help="hourly windows or 24-hour windows sliding hourly")
    return common


def register(subparsers):
    """Adds `trends` and its views to the `tipline` command."""
    trends = subparsers.add_parser("trends", help="query trend tables, bundles and alerts (DuckDB)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    views = trends.add_subparsers(dest="view", required=True)
    common = common_options()
    views.add_parser("tables", parents=[common], help="tables found and their row counts").set_defaults(func=list_tables)
    for name, (help_text, query) in VIEWS.items():
        view = views.add_parser(name, parents=[common], help=help_text)
        view.set_defaults(func=lambda args, query=query, title=help_text: run_query(args, query(args), title))
    free = views.add_parser("sql", parents=[common], help="any SQL over the tables (latest panes; <table>_panes)")
    free.add_argument("query")
    free.set_defaults(func=lambda args: run_query(args, args.query, args.query[:80]))
    return trends
