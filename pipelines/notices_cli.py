"""`tipline notices follow-up`: check every takedown notice that is due, record each check, update outcomes.

A batch Beam job, run daily. It reads the notices (`<output>/notices/`, the latest pane of each) and the
checks recorded so far (`<output>/notice_checks/`), checks each due notice's URL (transforms/takedown/
checker.py: HEAD then a first-byte GET, never the body; private and metadata addresses refused), one host
at a time per host, and writes each check as soon as it is done, under its (notice id, attempt): a run
killed midway loses nothing it recorded and a re-run repeats nothing recorded. Last, it rewrites
`<output>/notice_outcomes/outcomes.parquet` (schemas/takedown.py), the table `tipline notices takedown`
and analysts read.
"""
import argparse
import datetime
import io
import json
import os
import statistics
import sys

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import DEFAULT_OUTPUT_DIR
from schemas.takedown import NOTICE_OUTCOMES
from transforms.plumbing.metrics import LabelledCounters, read_counters
from transforms.plumbing.windowed_files import OWNER_ONLY
from transforms.takedown.checker import CheckPolicy, check_url
from transforms.takedown.followup import check_record, is_due, notice_state, outcome_row, parse_time

NOTICE_FILES = "notices/dt=*/provider=*/*.jsonl"
CHECKS = "notice_checks"


def latest_pane(notices):
    """The notice's latest pane: it lists every report seen so far."""
    return max(notices, key=lambda notice: notice.get("pane_index", 0))


class _CheckHostFn(beam.DoFn):
    """(host, [(notice, attempt)]) -> each check, written to notice_checks/ the moment it is done."""

    def __init__(self, output_dir, policy, as_of):
        self.output_dir = output_dir
        self.policy = policy
        self.as_of = as_of
        self.outcomes = LabelledCounters("notice_checks")

    def setup(self):
        os.umask(OWNER_ONLY)

    def process(self, host_and_due):
        _, due = host_and_due
        for notice, attempt in sorted(due, key=lambda item: item[0]["noticeId"]):
            path = FileSystems.join(self.output_dir, CHECKS, f"{notice['noticeId']}-{attempt}.json")
            if FileSystems.exists(path):  # recorded by a run that stopped before it finished
                continue
            record = check_record(notice["noticeId"], attempt, self.as_of, check_url(notice["url"], self.policy))
            write_atomically(path, json.dumps(record, sort_keys=True).encode("utf-8"))
            self.outcomes.inc(record["status"])
            yield record


def write_atomically(path, data):
    temporary = path + ".tmp"
    with FileSystems.create(temporary) as handle:
        handle.write(data)
    FileSystems.rename([temporary], [path])


def due_checks(as_of, after_hours, max_attempts):
    def due(joined):
        _, grouped = joined
        if not grouped["notices"]:
            return
        notice = latest_pane(grouped["notices"])
        state = notice_state(notice, grouped["checks"], max_attempts)
        if is_due(state, as_of, after_hours):
            yield notice["host"], (notice, state["attempts"] + 1)

    return due


def outcomes(max_attempts):
    def to_row(joined):
        _, grouped = joined
        if grouped["notices"]:
            notice = latest_pane(grouped["notices"])
            yield outcome_row(notice, notice_state(notice, grouped["checks"], max_attempts))

    return to_row


def recorded_checks(output_dir):
    pattern = FileSystems.join(output_dir, CHECKS, "*.json")
    matched = FileSystems.match([pattern])[0].metadata_list
    return [json.loads(FileSystems.open(item.path).read()) for item in matched]


def build_follow_up(p, args, policy):
    """The job's graph; returns the new checks and the outcome rows."""
    output, as_of = args.output, args.as_of
    notices = (p | "ReadNotices" >> beam.io.ReadFromText(FileSystems.join(output, NOTICE_FILES))
               | "ParseNotices" >> beam.Map(json.loads)
               | "KeyNotices" >> beam.Map(lambda notice: (notice["noticeId"], notice)))
    earlier = (p | "EarlierChecks" >> beam.Create(recorded_checks(output))
               | "KeyEarlier" >> beam.Map(lambda check: (check["noticeId"], check)))
    new_checks = (
        {"notices": notices, "checks": earlier}
        | "JoinEarlier" >> beam.CoGroupByKey()
        | "DueChecks" >> beam.FlatMap(due_checks(as_of, args.after_hours, args.max_attempts))
        | "PerHost" >> beam.GroupByKey()
        | "Check" >> beam.ParDo(_CheckHostFn(output, policy, as_of)))
    every_check = ((earlier, new_checks | "KeyNew" >> beam.Map(lambda check: (check["noticeId"], check)))
                   | "AllChecks" >> beam.Flatten())
    rows = ({"notices": notices, "checks": every_check}
            | "JoinAll" >> beam.CoGroupByKey()
            | "Outcomes" >> beam.FlatMap(outcomes(args.max_attempts)))
    _ = (rows
         | "OneTable" >> beam.combiners.ToList()
         | "WriteOutcomes" >> beam.Map(write_outcomes, FileSystems.join(output, "notice_outcomes")))
    return new_checks, rows


def write_outcomes(rows, folder):
    """The whole outcomes table, replacing the previous one at once (a reader never sees half of it)."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(sorted(rows, key=lambda row: row["notice_id"]), schema=NOTICE_OUTCOMES),
                   buffer)
    if not FileSystems.exists(folder):
        FileSystems.mkdirs(folder)
    write_atomically(FileSystems.join(folder, "outcomes.parquet"), buffer.getvalue())


def run_follow_up(args):
    os.umask(OWNER_ONLY)
    args.as_of = args.as_of or datetime.datetime.now(datetime.timezone.utc)
    if not FileSystems.match([FileSystems.join(args.output, NOTICE_FILES)])[0].metadata_list:
        print(f"tipline notices follow-up: no notices under {args.output}/notices/ (run the pipeline first)")
        return 0
    policy = CheckPolicy(args.timeout_seconds, frozenset(args.allow_private_hosts or ()),
                         connect_to(args.connect_to or ()), args.ca_file)
    pipeline = beam.Pipeline(options=PipelineOptions(args.beam_args))
    build_follow_up(pipeline, args, policy)
    result = pipeline.run()
    result.wait_until_finish()
    checked = {name: value for (namespace, name), value in read_counters(result).items()
               if namespace.endswith(".notice_checks")}
    print(f"checked {sum(checked.values())} notices as of {args.as_of:%Y-%m-%dT%H:%M:%SZ}: "
          + (", ".join(f"{status} {count}" for status, count in sorted(checked.items())) or "none due"))
    print(f"outcomes: {FileSystems.join(args.output, 'notice_outcomes', 'outcomes.parquet')}")
    return 0


def takedown_summary(output):
    """Per provider: notices, removed, median and p90 hours to removal, share removed within 24 h and 72 h,
    still available after the last attempt."""
    rows = pq.read_table(FileSystems.join(output, "notice_outcomes", "outcomes.parquet")).to_pylist()
    by_provider = {}
    for row in rows:
        by_provider.setdefault(row["provider"], []).append(row)
    return [provider_figures(provider, rows) for provider, rows in sorted(by_provider.items())]


def provider_figures(provider, rows):
    hours = sorted(row["hours_to_removal"] for row in rows if row["hours_to_removal"] is not None)
    share = lambda limit: round(sum(1 for h in hours if h <= limit) / len(rows), 3)
    return {"provider": provider, "notices": len(rows), "removed": len(hours),
            "median_hours": statistics.median(hours) if hours else None,
            "p90_hours": hours[min(len(hours) - 1, int(0.9 * len(hours)))] if hours else None,
            "removed_within_24h": share(24), "removed_within_72h": share(72),
            "escalated": sum(1 for row in rows if row["status"] == "escalated"),
            "unreachable": sum(1 for row in rows if row["status"] == "unreachable"),
            "not_checkable": sum(1 for row in rows if row["status"] == "not_checkable")}


def plot_takedown(figures, path):
    """Bars per provider: median and p90 hours to removal, and how many notices are still up (escalated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    providers = [row["provider"] for row in figures]
    figure, (hours, counts) = plt.subplots(1, 2, figsize=(12, max(3, 0.4 * len(providers) + 1.5)), sharey=True)
    positions = range(len(providers))
    for offset, key, label in ((-0.2, "median_hours", "median"), (0.2, "p90_hours", "p90")):
        hours.barh([p + offset for p in positions], [row[key] or 0 for row in figures], height=0.4, label=label)
    hours.set_yticks(list(positions), providers)
    hours.set_xlabel("hours from notice to removal (removed notices)")
    hours.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    counts.barh(positions, [row["removed"] for row in figures], label="removed")
    counts.barh(positions, [row["escalated"] for row in figures], left=[row["removed"] for row in figures],
                label="still up after the last check")
    counts.set_xlabel("notices")
    counts.xaxis.get_major_locator().set_params(integer=True)
    counts.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    figure.suptitle("Time to takedown per provider")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_takedown(args):
    figures = takedown_summary(args.output)
    if args.plot and figures:
        plot_takedown(figures, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    columns = ("provider", "notices", "removed", "median_hours", "p90_hours", "removed_within_24h",
               "removed_within_72h", "escalated", "unreachable", "not_checkable")
    print("  ".join(columns))
    for row in figures:
        print("  ".join("-" if row[column] is None else str(row[column]) for column in columns))
    if not figures:
        print("(no notices)")
    return 0


def notice_urls(output):
    """The checkable URLs of the notices under `output` (latest pane or not: the URL is the same)."""
    urls = set()
    for item in FileSystems.match([FileSystems.join(output, NOTICE_FILES)])[0].metadata_list:
        for line in FileSystems.open(item.path).read().decode("utf-8").splitlines():
            notice = json.loads(line)
            if notice["checkable"]:
                urls.add(notice["url"])
    return sorted(urls)


def run_demo(args):
    """The takedown lifecycle on a run's notices: three daily follow-ups against local stand-in hosts."""
    from transforms.demo.takedown_host import DemoHosts

    urls = notice_urls(args.output)
    if not urls:
        print(f"tipline notices demo: no checkable notices under {args.output}/notices/ (run `tipline run` first)")
        return 2
    days = sorted(set(notice_days(args.output)))
    with DemoHosts(urls) as hosts:
        for day in (1, 2, 3):
            hosts.day = day
            sent = datetime.datetime.fromisoformat(days[-1]).replace(tzinfo=datetime.timezone.utc) + \
                datetime.timedelta(days=1)  # the last daily batch goes out at the end of its day
            as_of = sent + datetime.timedelta(days=day, hours=1)
            print(f"--- day {day}: follow-up as of {as_of:%Y-%m-%dT%H:%M:%SZ}")
            follow = argparse.Namespace(
                output=args.output, after_hours=24, max_attempts=3, timeout_seconds=5, as_of=as_of,
                allow_private_hosts=[f"127.0.0.1:{hosts.port}"], connect_to=hosts.connect_to(),
                ca_file=str(hosts.cert), beam_args=[])
            run_follow_up(follow)
    return run_takedown(argparse.Namespace(output=args.output, json=False, plot=None))


def notice_days(output):
    return [item.path.split("dt=")[1][:10]
            for item in FileSystems.match([FileSystems.join(output, NOTICE_FILES)])[0].metadata_list]


def connect_to(items):
    """{"host:port": (address, port)} from HOST:PORT:ADDRESS:PORT2 items (IPv4 addresses)."""
    table = {}
    for item in items:
        parts = item.split(":")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[3].isdigit():
            raise ValueError(f"--connect-to: expected HOST:PORT:ADDRESS:PORT2, got {item!r}")
        table[f"{parts[0]}:{parts[1]}"] = (parts[2], int(parts[3]))
    return table


def utc_time(text):
    try:
        moment = parse_time(text)
    except ValueError:
        raise ValueError(f"--as-of: not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"--as-of: give the time zone (e.g. {text}Z)")
    return moment.astimezone(datetime.timezone.utc)


def register(subparsers):
    """Adds `tipline notices follow-up|takedown`."""
    parser = subparsers.add_parser("notices", help="follow takedown notices up until the content is gone",
                                   description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    follow = verbs.add_parser("follow-up", help="check the notices that are due and update their outcomes")
    follow.add_argument("--output", default=DEFAULT_OUTPUT_DIR, help="the pipeline's output folder")
    follow.add_argument("--after-hours", type=float, default=24, help="hours between a notice (or check) and the next check")
    follow.add_argument("--max-attempts", type=int, default=3, help="checks before a notice is escalated")
    follow.add_argument("--timeout-seconds", type=float, default=5, help="per request; a host that hangs is unreachable")
    follow.add_argument("--as-of", type=utc_time, default=None,
                        help="the time the run acts at (RFC 3339; default now)")
    follow.add_argument("--allow-private-hosts", action="append", metavar="ADDRESS:PORT",
                        help="an exact private address:port the checker may reach (tests and local demos only)")
    follow.add_argument("--connect-to", action="append", metavar="HOST:PORT:ADDRESS:PORT2",
                        help="connect to ADDRESS:PORT2 for HOST:PORT instead of asking DNS (like curl --connect-to)")
    follow.add_argument("--ca-file", default=None, help="also trust the certificate authorities in this PEM file")
    follow.set_defaults(func=run_follow_up, beam_args=[])
    demo = verbs.add_parser("demo", help="the takedown lifecycle of a run's notices against local stand-in hosts")
    demo.add_argument("--output", default=DEFAULT_OUTPUT_DIR, help="the pipeline's output folder")
    demo.set_defaults(func=run_demo)
    takedown = verbs.add_parser("takedown", help="time to takedown per provider, from notice_outcomes/")
    takedown.add_argument("--output", default=DEFAULT_OUTPUT_DIR, help="the pipeline's output folder")
    takedown.add_argument("--json", action="store_true", help="JSON instead of a table")
    takedown.add_argument("--plot", metavar="FILE.png", help="also draw the figures per provider as a chart")
    takedown.set_defaults(func=run_takedown)
    return parser

