"""`tipline trends report --html FILE`: one self-contained HTML page for policy and partner audiences.

Charts are PNGs embedded as data URIs and the style is inline, so the page opens anywhere without a
network. Each section has a one-line reading computed from the same rows as its chart. Everything is UTC
and over hourly windows (complete by construction); counts only, never ids, IPs or media.
"""
import base64
import datetime
import html

from pipelines import trends_charts
from pipelines.trends_cli import iso, range_clause, range_text

STYLE = """
body { font-family: DejaVu Sans, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.meta { color: #555; } .reading { font-size: 1.05em; margin: 0.3em 0 0.6em; }
figure { margin: 0; } img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
td.n { text-align: right; }
"""
# Counts the charts the browser decoded, so a headless check can read it from the DOM.
LOADED_SCRIPT = ("<script>window.addEventListener('load', function () { document.body.dataset.chartsRendered = "
                 "Array.prototype.filter.call(document.images, function (i) { return i.complete && i.naturalWidth > 0; })"
                 ".length; });</script>")


def rows_of(connection, sql, parameters):
    result = connection.execute(sql, list(parameters))
    columns = [description[0] for description in result.description]
    return [dict(zip(columns, row)) for row in result.fetchall()]


def hourly_rows(connection, args, table, columns):
    where, parameters = range_clause(args, "window_start")
    return rows_of(connection, f"SELECT window_start, window_end, {columns} FROM {table} {where} ORDER BY window_start",
                   parameters)


def percent(part, whole):
    return f"{100 * part / whole:.0f}%" if whole else "0%"


def totals_by(rows, key):
    totals = {}
    for row in rows:
        totals[row[key]] = totals.get(row[key], 0) + row["reports"]
    return sorted(totals.items(), key=lambda item: (-item[1], str(item[0])))


def total_reading(rows):
    if not rows:
        return "No reports in this period."
    total = sum(row["reports"] for row in rows)
    busiest = max(rows, key=lambda row: row["reports"])
    return (f"{total:,} reports from {iso(rows[0]['window_start'])} to {iso(rows[-1]['window_end'])}; "
            f"the busiest hour began {iso(busiest['window_start'])} with {busiest['reports']:,} reports.")


def share_reading(rows, key, noun, total):
    """`<top value> is the largest <noun>: n (p%) of all reports; k <noun>s in all.`"""
    ranked = totals_by(rows, key)
    if not ranked:
        return f"No {noun} recorded in this period."
    value, count = ranked[0]
    located = [name for name, _ in ranked if name is not None]
    return (f"{value or '(unlocated)'} is the largest {noun}: {count:,} reports ({percent(count, total)} of all); "
            f"{len(located)} {noun} values in all" + (", and unlocated reports." if len(located) < len(ranked) else "."))


def annotation_reading(rows, total):
    ranked = dict(totals_by(rows, "annotation"))
    if not ranked:
        return "No report carried an annotation in this period."
    sextortion = ranked.get("sextortion", 0)
    top, count = next(iter(ranked.items()))
    return (f"{sextortion:,} reports ({percent(sextortion, total)}) were annotated sextortion; the most frequent "
            f"annotation was {top} ({count:,}). A report counts once per annotation it carries.")


def content_reading(rows, total):
    shares = dict(totals_by(rows, "match_class"))
    return (f"{percent(shares.get('known', 0), total)} of reports held known content (a hash-bank match), "
            f"{percent(shares.get('new', 0), total)} new content (a possibly unidentified victim), "
            f"{percent(shares.get('no_media', 0), total)} no media.")


def bundle_reading(bundles, repeated):
    """`repeated`: how many bundles (all of them, not only those charted) hold more than one report."""
    if not repeated:
        return "No content was reported more than once in this period."
    largest = bundles[0]
    hours = (largest["last_seen"] - largest["first_seen"]).total_seconds() / 3600
    return (f"{repeated:,} incidents of repeated content; the largest ({largest['signature_kind']}) had "
            f"{largest['reports']:,} reports from {largest['esps']} ESPs across {largest['jurisdictions']} "
            f"jurisdictions over {hours:.1f} hours.")


def alert_reading(alerts):
    if not alerts:
        return "No spike alerts in this period."
    top = max(alerts, key=lambda alert: alert["ratio"])
    return (f"{len(alerts)} spike alerts; the sharpest was {top['kind']} {top['key']} at {top['ratio']:.1f}x its "
            f"baseline in the hour from {iso(top['window_start'])}.")


def image(figure, alt):
    data = base64.b64encode(trends_charts.png_bytes(figure)).decode("ascii")
    return f'<img class="chart" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def section(title, reading, body):
    return f'<section><h2>{html.escape(title)}</h2><p class="reading">{html.escape(reading)}</p>{body}</section>'


def alert_table(alerts):
    if not alerts:
        return ""
    head = "<tr><th>hour from (UTC)</th><th>kind</th><th>key</th><th>count</th><th>baseline</th><th>ratio</th></tr>"
    body = "".join(f"<tr><td>{iso(a['window_start'])}</td><td>{html.escape(a['kind'])}</td>"
                   f"<td>{html.escape(str(a['key']))}</td><td class=n>{a['count']}</td>"
                   f"<td class=n>{a['baseline']:.1f}</td><td class=n>{a['ratio']:.1f}</td></tr>" for a in alerts)
    return f"<table>{head}{body}</table>"


def series_section(connection, args, table, dimension, title, reading):
    rows = hourly_rows(connection, args, table, f"{dimension}, reports")
    chart_title = f"{title}, hourly (top {args.top} + other)"
    figure = trends_charts.line_chart(rows, dimension, "reports", "hourly", args.top, chart_title, range_text(args))
    return section(title, reading(rows), image(figure, chart_title))


def html_report(connection, args):
    """The whole page as a string."""
    totals = hourly_rows(connection, args, "hourly_total", "reports")
    total = sum(row["reports"] for row in totals)
    total_figure = trends_charts.line_chart([{**row, "series": "all reports"} for row in totals], "series", "reports",
                                            "hourly", 1, "Reports per hour", range_text(args))
    where, parameters = range_clause(args, "last_seen")
    bundles = rows_of(connection, "SELECT bundle_id, signature_kind, first_seen, last_seen, reports, esps, "
                      f"len(jurisdictions) AS jurisdictions FROM bundles {where} ORDER BY reports DESC, bundle_id LIMIT 15",
                      parameters)
    repeated = rows_of(connection, f"SELECT count(*) AS n FROM bundles {where}{' AND' if where else ' WHERE'} "
                       "reports > 1", parameters)[0]["n"]
    where, parameters = range_clause(args, "window_start")
    alerts = rows_of(connection, f"SELECT * FROM alerts {where} ORDER BY window_start, kind, key", parameters)
    sections = [
        section("Reports over time", total_reading(totals), image(total_figure, "Reports per hour")),
        series_section(connection, args, "hourly_by_country", "country", "Reports per country",
                       lambda rows: share_reading(rows, "country", "country", total)),
        series_section(connection, args, "hourly_by_incident_type", "incident_type", "Reports per incident type",
                       lambda rows: share_reading(rows, "incident_type", "incident type", total)),
        series_section(connection, args, "hourly_by_annotation", "annotation", "Reports per annotation",
                       lambda rows: annotation_reading(rows, total)),
        series_section(connection, args, "hourly_by_match_class", "match_class", "Known and new content",
                       lambda rows: content_reading(rows, total)),
        section("Incident bundles (viral content)", bundle_reading(bundles, repeated), image(trends_charts.bar_chart(
            [f"{b['signature_kind']} {b['bundle_id'][:12]}" for b in bundles], [b["reports"] for b in bundles],
            "reports in the bundle", "Largest incident bundles by reports"), "Largest incident bundles")),
        section("Spike alerts", alert_reading(alerts), alert_table(alerts)),
    ]
    generated = iso(datetime.datetime.now(datetime.timezone.utc))
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>tipline trends report</title>"
            f"<style>{STYLE}</style></head><body><h1>Tip line trends</h1>"
            f'<p class="meta">{html.escape(range_text(args))}; all times UTC; generated {generated}. '
            "Counts of reports; no user ids, IP addresses or media.</p>"
            + "".join(sections) + LOADED_SCRIPT + "</body></html>")
