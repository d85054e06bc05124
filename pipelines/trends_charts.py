"""Charts of `tipline trends` views an analyst can show: UTC axes, distinct colours, top-N plus "other",
legends outside the data, titles naming the measure and the date range, bars for counts per item.

Incomplete windows (`complete` false: a sliding window reaching past the data) are left out of line
charts, and the chart says how many were, so no edge reads as a decline.
"""
import datetime
import io
import textwrap

UTC = datetime.timezone.utc
OTHER_COLOUR = "#8c8c8c"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def iso_minutes(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")


def palette(count):
    """`count` distinct colours, none of them the grey of "other": tab10 without its grey plus black up to
    10 series, tab20 without its greys up to 18, then a sampled continuous map."""
    from matplotlib import colormaps

    if count <= 10:
        return ([colour for index, colour in enumerate(colormaps["tab10"].colors) if index != 7] + ["#000000"])[:count]
    if count <= 18:
        return [colour for index, colour in enumerate(colormaps["tab20"].colors) if index not in (14, 15)][:count]
    return [colormaps["turbo"](index / (count - 1)) for index in range(count)]


NONE_LABELS = {"country": "(unlocated)"}


def series_label(record, label_key):
    """The legend text of a row's series; long names (incident types) wrapped so the legend stays narrow."""
    value = record[label_key]
    return NONE_LABELS.get(label_key, "(none)") if value is None else textwrap.fill(str(value), 38)


def top_series(records, time_key, label_key, value_key, top):
    """{label: {time: value}} of the `top` labels by total, plus `other (N)` summing the rest per time."""
    totals = {}
    for record in records:
        label = series_label(record, label_key)
        totals[label] = totals.get(label, 0) + record[value_key]
    kept = sorted(totals, key=lambda label: (-totals[label], label))[:top]
    series = {label: {} for label in kept}
    rest = len(totals) - len(kept)
    other = f"other ({rest} more)"
    for record in records:
        label = series_label(record, label_key)
        target = series[label] if label in series else series.setdefault(other, {})
        target[record[time_key]] = target.get(record[time_key], 0) + record[value_key]
    times = {record[time_key] for record in records}
    for points in series.values():  # a window with data but no row for a series is a zero, not a gap
        for moment in times - points.keys():
            points[moment] = 0
    return series, other


def line_chart(records, label_key, value_key, window, top, title, range_text=None):
    """A time series per label (top-N plus other) over complete windows; a Figure."""
    from matplotlib import dates, ticker

    plt = pyplot()
    time_key = "window_end" if window == "sliding24h" else "window_start"
    complete = [record for record in records if record.get("complete", True) is not False]
    left_out = len({record[time_key] for record in records if record.get("complete", True) is False})
    series, other = top_series(complete, time_key, label_key, value_key, top)
    figure, axes = plt.subplots(figsize=(11, 5))
    colours = palette(len([label for label in series if label != other]))
    for index, (label, points) in enumerate(series.items()):
        times = sorted(points)
        axes.plot(times, [points[t] for t in times], marker=".", linewidth=1.6, label=label,
                  color=OTHER_COLOUR if label == other else colours[index],
                  linestyle="--" if label == other else "-")
    axes.xaxis.set_major_formatter(dates.DateFormatter("%m-%d %H:%M", tz=UTC))
    axes.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axes.set_ylim(bottom=0)
    window_text = "24 hours ending at (UTC)" if window == "sliding24h" else "hour starting at (UTC)"
    axes.set_xlabel(window_text + (f"; {left_out} incomplete windows left out" if left_out else ""))
    axes.set_ylabel(value_key)
    axes.set_title(with_range(title, complete, window, range_text))
    if series:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    return figure


def with_range(title, records, window, range_text):
    """The title plus the period shown: hourly windows from the first start to the last end, sliding ones
    by the ends of the first and last (or what was asked, when nothing is left to show)."""
    key = "window_end" if window == "sliding24h" else "window_start"
    times = [record[key] for record in records if isinstance(record.get(key), datetime.datetime)]
    if not times:
        return f"{title}\n{range_text or 'no data'}"
    if window == "sliding24h":
        return f"{title}\n24 hours ending {iso_minutes(min(times))} to 24 hours ending {iso_minutes(max(times))}"
    ends = [record["window_end"] for record in records if isinstance(record.get("window_end"), datetime.datetime)]
    return f"{title}\n{iso_minutes(min(times))} to {iso_minutes(max(ends or times))}"


def bar_chart(labels, values, measure, title):
    """Horizontal bars of a count per item, largest on top, integer ticks; a Figure."""
    from matplotlib import ticker

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(10, max(3.0, 0.35 * len(labels) + 1.5)))
    axes.barh(labels[::-1], values[::-1], color=palette(1)[0])
    axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axes.set_xlabel(measure)
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    return figure


def generic_chart(records, title):
    """`tipline trends sql --plot`: lines when a column holds times, else bars of the first numeric column."""
    columns = list(records[0])
    kinds = {column: next((type(r[column]) for r in records if r[column] is not None), type(None)) for column in columns}
    numbers = [c for c in columns if kinds[c] in (int, float)]
    if not numbers:
        raise SystemExit("tipline trends sql --plot: the result has no numeric column to draw")
    labels = [c for c in columns if kinds[c] is str]
    if any(issubclass(kinds[c], datetime.datetime) for c in columns):
        time_key = next(c for c in columns if issubclass(kinds[c], datetime.datetime))
        if labels:
            rows = records
        else:
            rows, labels = [{**r, "series": numbers[0]} for r in records], ["series"]
        rows = [{**r, "window_start": r[time_key], "window_end": r[time_key]} for r in rows]
        return line_chart(rows, labels[0], numbers[0], "hourly", 10, title)
    names = [str(r[labels[0]]) if labels else str(n) for n, r in enumerate(records)]
    return bar_chart(names, [r[numbers[0]] for r in records], numbers[0], title)


MEASURES = {"jurisdictions": "jurisdiction", "countries": "country", "incident-types": "incident_type",
            "annotations": "annotation", "new-vs-known": "match_class"}


def window_words(window):
    return "24-hour windows sliding hourly" if window == "sliding24h" else "hourly windows"


def chart_for(view, records, args, range_text):
    """The chart of a ready-made view (or of a free query) over its result rows."""
    name = getattr(args, "view", "")
    if name in MEASURES:
        dimension = MEASURES[name]
        title = f"Reports per {dimension.replace('_', ' ')}, {window_words(args.window)} (top {args.top} + other)"
        return line_chart(records, dimension, "reports", args.window, args.top, title, range_text)
    if name == "top-countries":
        return bar_chart([r["country"] for r in records], [r["reports"] for r in records], "reports",
                         f"Reports per country, top {len(records)}\n{range_text}")
    if name == "bundles":
        return bar_chart([f"{r['signature_kind']} {r['bundle_id'][:12]}" for r in records],
                         [r["reports"] for r in records], "reports in the bundle",
                         f"Largest incident bundles by reports\nactive {range_text}")
    return generic_chart(records, args.query[:80])


def save(figure, path):
    """A PNG file, legend included (it sits outside the axes)."""
    figure.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(figure)


def png_bytes(figure):
    buffer = io.BytesIO()
    save(figure, buffer)
    return buffer.getvalue()
