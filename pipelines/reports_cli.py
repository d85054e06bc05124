"""`tipline reports`: analysts search the routed output and re-refer reports (the index the agency service uses).

    tipline reports find --user user-1726342                     # by account id or screen name
    tipline reports find --hash 23a83c9ab80e521dcf7a5f8f96e92fdb --format json
    tipline reports find --jurisdiction IN --priority P1 --since 2026-11-23T00:00:00Z --format csv
    tipline reports refer ESP02-2026-0000218 --to PH --reason "user moved: ESP account data"
    tipline reports unacked --priority P1 --minutes 30           # not picked up by the receiving agency
    tipline reports reindex                                      # rebuild the index from the sink files
    tipline reports audit --verify                               # check the audit log's chain

Each command first indexes routed files not seen yet. Referrals are appended events: the routed record
keeps its original routing, and from then on only the new jurisdiction's agencies see the report.
Searches and referrals are written to the audit log like the service's calls.
"""
import argparse
import datetime
import getpass
import sys

from pipelines.errors import UsageError
from pipelines.options import DEFAULT_OUTPUT_DIR
from pipelines.trends_cli import print_result
from services.agencies.directory import JURISDICTION_CODE, AgencyDirectory, DirectoryError
from services.agencies.events import AuditLog
from services.agencies.index import FIND_COLUMNS, UnknownReport, iso, open_index, utc_now




def _time(text):
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def audit_log(args):
    index = args.index
    return AuditLog(index.path.parent / "audit.jsonl")


def _audit(args, what, served):
    audit_log(args).append({"at": iso(utc_now()), "agency": None, "claimed": None, "analyst": getpass.getuser(), "client": "cli",
                            "method": "CLI", "route": f"reports {what}", "reportId": None, "query": args.audited,
                            "status": 0, "served": served})


def _open(args):
    args.index = open_index(args.output, args.state_dir)
    args.index.refresh()


def run_find(args):
    _open(args)
    filters = {"report_id": args.report_id, "user": args.user, "hash_value": args.hash, "bundle_id": args.bundle,
               "esp": args.esp, "jurisdiction": args.jurisdiction, "priority": args.priority,
               "since": args.since, "until": args.until}
    args.audited = {key: str(value) for key, value in filters.items() if value is not None}
    rows = args.index.find(**filters, limit=args.limit)
    _audit(args, "find", [row["report_id"] for row in rows])
    print_result(list(FIND_COLUMNS), [[row[column] for column in FIND_COLUMNS] for row in rows], args.format)
    return 0


def load_directory(args):
    """The agencies table of --agencies; UsageError (exit 2) naming the flag when it cannot be used."""
    try:
        return AgencyDirectory.load(args.agencies)
    except (OSError, DirectoryError) as error:
        raise UsageError(f"--agencies: {error}") from None


def run_refer(args):
    directory = load_directory(args)
    receivers = [agency.agency_id for agency in directory.agencies.values() if args.to in agency.jurisdictions]
    if not JURISDICTION_CODE.match(args.to) or not receivers:
        raise UsageError(f"--to {args.to!r}: no agency in {args.agencies} receives this jurisdiction code")
    _open(args)
    args.audited = {"to": args.to, "reason": args.reason[:200]}
    try:
        event = args.index.refer(args.report_id, args.to, args.reason, args.by or getpass.getuser())
    except UnknownReport:
        print(f"tipline reports refer: no report {args.report_id!r} in the routed output", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"tipline reports refer: {error}", file=sys.stderr)
        return 1
    _audit(args, "refer", [args.report_id])
    print(f"referred {args.report_id}: {event['from']} -> {event['to']} (now seen by {', '.join(receivers)})")
    return 0


def run_unacked(args):
    directory = load_directory(args)
    _open(args)
    older_than = utc_now() - datetime.timedelta(minutes=args.minutes)
    rows = args.index.unacknowledged(args.priority, older_than)
    for row in rows:
        row["agencies"] = " ".join(agency.agency_id for agency in directory.agencies.values()
                                   if row["jurisdiction"] in agency.jurisdictions) or "(none)"
    columns = ["report_id", "jurisdiction", "agencies", "submitted_at", "available_since"]
    print_result(columns, [[row[column] for column in columns] for row in rows], args.format)
    return 0


def run_reindex(args):
    index_path = open_index(args.output, args.state_dir).path
    for suffix in ("", "-wal", "-shm"):
        index_path.with_name(index_path.name + suffix).unlink(missing_ok=True)
    _open(args)
    counts = args.index.counts()
    print(f"indexed {counts['reports']} reports from {counts['files']} routed files into {index_path}")
    return 0


def run_audit(args):
    _open(args)
    log = audit_log(args)
    lines, broken = log.verify_chain()
    if broken:
        print(f"audit log {log.path}: {lines} lines, chain broken at line {broken}", file=sys.stderr)
        return 1
    if not args.verify:
        for entry in log.entries()[-args.limit:]:
            print(entry)
    print(f"audit log {log.path}: {lines} lines, chain intact")
    return 0


def _common():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output", default=DEFAULT_OUTPUT_DIR, help=f"the pipeline's output folder (default {DEFAULT_OUTPUT_DIR})")
    common.add_argument("--state-dir", default=None,
                        help="index, referral/ack events and audit log (default <output>/agencies-state)")
    return common


def register(subparsers):
    """Adds `tipline reports find|refer|unacked|reindex|audit` to the `tipline` command."""
    reports = subparsers.add_parser("reports", help="search routed reports, re-refer one, audit (analysts)",
                                    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = reports.add_subparsers(dest="reports_command", required=True)
    common = _common()
    find = commands.add_parser("find", parents=[common], help="reports matching every given filter, newest first")
    find.add_argument("--report-id")
    find.add_argument("--user", help="reported user's ESP account id or screen name")
    find.add_argument("--hash", help="any hash value of any file (MD5, SHA-1, SHA-256, pHash, dHash, PDQ)")
    find.add_argument("--bundle", help="bundle id")
    find.add_argument("--esp", help="ESP id or name")
    find.add_argument("--jurisdiction", help="current jurisdiction code (after referrals)")
    find.add_argument("--priority", choices=("P1", "P2", "P3"))
    find.add_argument("--since", type=_time, help="submitted at or after (ISO 8601; UTC when no offset)")
    find.add_argument("--until", type=_time, help="submitted before (ISO 8601)")
    find.add_argument("--format", choices=("table", "csv", "json"), default="table")
    find.add_argument("--limit", type=int, default=1000)
    find.set_defaults(func=run_find)
    refer = commands.add_parser("refer", parents=[common], help="re-refer a report to another jurisdiction")
    refer.add_argument("report_id")
    refer.add_argument("--to", required=True, help="the jurisdiction code that receives it from now on")
    refer.add_argument("--reason", required=True)
    refer.add_argument("--by", help="who refers it (default: the OS user)")
    refer.add_argument("--agencies", default=default_agencies_table(),
                       help="agencies table, to check that --to reaches an agency (default: the demo table)")
    refer.set_defaults(func=run_refer)
    unacked = commands.add_parser("unacked", parents=[common], help="reports no receiving agency acknowledged in time")
    unacked.add_argument("--priority", choices=("P1", "P2", "P3"), default="P1")
    unacked.add_argument("--minutes", type=float, default=60.0, help="available for at least this long (default 60)")
    unacked.add_argument("--format", choices=("table", "csv", "json"), default="table")
    unacked.add_argument("--agencies", default=default_agencies_table(),
                         help="agencies table, to name who has not picked each report up (default: the demo table)")
    unacked.set_defaults(func=run_unacked)
    commands.add_parser("reindex", parents=[common], help="rebuild the index from the sink files and event logs"
                        ).set_defaults(func=run_reindex)
    audit = commands.add_parser("audit", parents=[common], help="the audit log's last entries and its chain check")
    audit.add_argument("--verify", action="store_true", help="only check the chain (exit 1 when broken)")
    audit.add_argument("--limit", type=int, default=20)
    audit.set_defaults(func=run_audit)
    return reports


def default_agencies_table():
    from importlib import resources

    return str(resources.files("schemas").joinpath("agencies.csv"))
