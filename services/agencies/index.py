"""The report index: routed Avro files plus referral and acknowledgement events, in one SQLite file.

The index is a cache: `refresh` adds routed files it has not seen (a file is visible only once the
pipeline renamed it into place, so it is complete) and replays new lines of the event logs; deleting
the SQLite file and refreshing rebuilds it. Events live in append-only logs beside it (`referrals.jsonl`,
`acks.jsonl`), so a rebuild keeps every referral and acknowledgement.

Each report has a current jurisdiction (its routing, or the last referral's target) and a feed position
(`feed_seq`), renewed when it is referred so the new agency's cursor picks it up. Agencies' reads all
filter on the current jurisdiction. The feed indexes hold every column of a page (covering indexes), so a
page of one agency's reports, scattered among everyone's, is read from the index alone.
"""
import datetime
import heapq
import json
import logging
import pathlib
import sqlite3
import threading

import fastavro

from services.agencies.events import EventLog

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, reports INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    report_id TEXT PRIMARY KEY, feed_seq INTEGER NOT NULL UNIQUE, jurisdiction TEXT NOT NULL,
    routed_jurisdiction TEXT NOT NULL, priority TEXT NOT NULL, submitted_at TEXT NOT NULL,
    submitted_epoch REAL NOT NULL, available_epoch REAL NOT NULL, incident_type TEXT, match_summary TEXT,
    bundle_id TEXT, esp_id TEXT, esp_name TEXT, user_id TEXT, screen_name TEXT, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reports_feed_page ON reports (jurisdiction, feed_seq, report_id, submitted_at, priority,
    incident_type, match_summary, bundle_id, routed_jurisdiction);
CREATE INDEX IF NOT EXISTS reports_priority_feed_page ON reports (jurisdiction, priority, feed_seq, report_id,
    submitted_at, incident_type, match_summary, bundle_id, routed_jurisdiction);
CREATE INDEX IF NOT EXISTS reports_user ON reports (user_id);
CREATE INDEX IF NOT EXISTS reports_screen_name ON reports (screen_name);
CREATE INDEX IF NOT EXISTS reports_bundle ON reports (bundle_id);
CREATE INDEX IF NOT EXISTS reports_esp ON reports (esp_id);
CREATE INDEX IF NOT EXISTS reports_submitted ON reports (submitted_epoch);
CREATE TABLE IF NOT EXISTS hashes (value TEXT NOT NULL, report_id TEXT NOT NULL, PRIMARY KEY (value, report_id));
CREATE TABLE IF NOT EXISTS referrals (seq INTEGER PRIMARY KEY, report_id TEXT NOT NULL, from_code TEXT NOT NULL,
    to_code TEXT NOT NULL, reason TEXT NOT NULL, referred_by TEXT, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS referrals_report ON referrals (report_id);
CREATE TABLE IF NOT EXISTS acks (report_id TEXT NOT NULL, agency_id TEXT NOT NULL, jurisdiction TEXT NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (report_id, agency_id, jurisdiction));
"""
SUMMARY_COLUMNS = ("feed_seq", "report_id", "submitted_at", "priority", "incident_type", "match_summary",
                   "bundle_id", "jurisdiction", "routed_jurisdiction")
FIND_COLUMNS = SUMMARY_COLUMNS[1:] + ("esp_id", "esp_name", "user_id", "screen_name")
EVENT_LOGS = ("referrals", "acks")
log = logging.getLogger(__name__)


class UnknownReport(LookupError):
    """A report id the index does not hold."""


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_of(moment):
    """Seconds since the epoch of an instant: a datetime (routed records from version 3 on, whose instants
    are `timestamp-micros`) or RFC 3339 text (earlier versions, and the event logs)."""
    if isinstance(moment, datetime.datetime):
        return moment.timestamp()
    return datetime.datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def instant_text(moment):
    """An instant as the service prints it: ISO 8601 UTC with `Z`, a fraction only when there is one; text
    from a version 1 or 2 record as it was written."""
    if isinstance(moment, datetime.datetime):
        return moment.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    return moment


def _json_instant(value):
    if isinstance(value, datetime.datetime):
        return instant_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def report_row(record, available_epoch):
    """The index columns of one routed record (its hashes apart); its JSON has instants as ISO 8601 text."""
    user = record.get("reportedUser") or {}
    return (record["reportId"], record["jurisdiction"], record["jurisdiction"], record["priority"],
            instant_text(record["submittedAt"]), epoch_of(record["submittedAt"]), available_epoch,
            record.get("incidentType"), record.get("matchSummary"), record.get("bundleId"), record.get("espId"),
            record.get("espName"), user.get("espIdentifier"), user.get("screenName"),
            json.dumps(record, separators=(",", ":"), default=_json_instant))


def hash_values(record):
    return {hash_value["value"].lower() for file in record.get("files") or () for hash_value in file.get("hashes") or ()}


def routed_files(output_dir):
    """Every complete routed file, oldest window first (files are named `<window start>--…`)."""
    root = pathlib.Path(output_dir) / "routed"
    paths = [path for path in root.glob("jurisdiction=*/*.avro") if not path.name.startswith(".")]
    return sorted(paths, key=lambda path: (path.name, str(path)))


class ReportIndex:
    def __init__(self, index_path, output_dir=None, state_dir=None):
        self.path = pathlib.Path(index_path)
        self.output_dir = pathlib.Path(output_dir) if output_dir else None
        state = pathlib.Path(state_dir) if state_dir else self.path.parent
        self.logs = {name: EventLog(state / f"{name}.jsonl") for name in EVENT_LOGS}
        self.local = threading.local()
        self.unreadable = {}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.connection().executescript(SCHEMA)

    def connection(self):
        found = getattr(self.local, "connection", None)
        if found is None:
            found = self.local.connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            found.execute("PRAGMA journal_mode=WAL")
            found.execute("PRAGMA synchronous=NORMAL")
            self.path.chmod(0o600)
        return found

    def _write(self):
        return _WriteTransaction(self.connection())

    # --- keeping the index up to date -------------------------------------------------------------
    def refresh(self):
        """Indexes routed files not seen yet, then new events; returns how many reports were added.

        A file that cannot be read is logged once, named, and skipped: it stops no other file."""
        added = 0
        if self.output_dir is not None:
            known = {row[0] for row in self.connection().execute("SELECT path FROM files")}
            for path in routed_files(self.output_dir):
                if str(path) not in known and path not in self.unreadable:
                    added += self._index_file_or_skip(path)
        self.apply_events()
        return added

    def _index_file_or_skip(self, path):
        try:
            return self._index_file(path)
        except (OSError, ValueError, KeyError, TypeError, EOFError) as error:
            self.unreadable[path] = f"{type(error).__name__}: {error}"
            log.error("routed file %s cannot be indexed, skipped: %s", path, self.unreadable[path])
            return 0

    def _index_file(self, path):
        with open(path, "rb") as handle:
            records = sorted(fastavro.reader(handle), key=lambda record: epoch_of(record["submittedAt"]))
        available = path.stat().st_mtime
        with self._write() as connection:
            if connection.execute("SELECT 1 FROM files WHERE path = ?", (str(path),)).fetchone():
                return 0
            added = self.add_records(records, available, connection)
            connection.execute("INSERT INTO files VALUES (?, ?)", (str(path), len(records)))
        return added

    def add_records(self, records, available_epoch, connection):
        """Inserts records not indexed yet (a reportId seen before is skipped) inside the caller's transaction."""
        next_seq = self._next_seq(connection)
        added = 0
        for record in records:
            row = report_row(record, available_epoch)
            cursor = connection.execute(
                "INSERT OR IGNORE INTO reports (report_id, feed_seq, jurisdiction, routed_jurisdiction, priority, "
                "submitted_at, submitted_epoch, available_epoch, incident_type, match_summary, bundle_id, esp_id, "
                "esp_name, user_id, screen_name, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row[0], next_seq + added, *row[1:]))
            if cursor.rowcount:
                added += 1
                connection.executemany("INSERT OR IGNORE INTO hashes VALUES (?, ?)",
                                       [(value, row[0]) for value in hash_values(record)])
        self._set_meta(connection, "next_seq", next_seq + added)
        return added

    def _next_seq(self, connection):
        row = connection.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        return row[0] if row else 1

    @staticmethod
    def _set_meta(connection, key, value):
        connection.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                           (key, value))

    def apply_events(self):
        """Replays event-log lines written since the last call (by this process or another)."""
        with self._write() as connection:
            for name, log in self.logs.items():
                key = f"offset_{name}"
                row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                events, offset = log.read_from(row[0] if row else 0)
                for event in events:
                    (self._apply_referral if name == "referrals" else self._apply_ack)(connection, event)
                self._set_meta(connection, key, offset)

    def _apply_referral(self, connection, event):
        seq = self._next_seq(connection)
        moved = connection.execute(
            "UPDATE reports SET jurisdiction = ?, feed_seq = ?, available_epoch = ? WHERE report_id = ?",
            (event["to"], seq, epoch_of(event["at"]), event["reportId"])).rowcount
        if moved:
            self._set_meta(connection, "next_seq", seq + 1)
            connection.execute(
                "INSERT INTO referrals (report_id, from_code, to_code, reason, referred_by, at) VALUES (?, ?, ?, ?, ?, ?)",
                (event["reportId"], event["from"], event["to"], event["reason"], event.get("by"), event["at"]))

    @staticmethod
    def _apply_ack(connection, event):
        connection.execute("INSERT OR IGNORE INTO acks VALUES (?, ?, ?, ?)",
                           (event["reportId"], event["agency"], event["jurisdiction"], event["at"]))

    # --- what an agency may read: always filtered on its own codes ---------------------------------
    def list_for(self, codes, *, since=None, before=None, priority=None, limit=100):
        """Summaries of the reports currently in `codes`: newest first (older than `before`), or, with
        `since`, the ones that entered the feed after that position, oldest first."""
        ascending = since is not None
        queries = [self._feed_query(code, ascending, since, before, priority, limit) for code in sorted(set(codes))]
        merged = heapq.merge(*queries, key=lambda row: row[0], reverse=not ascending)
        return [dict(zip(SUMMARY_COLUMNS, row)) for _, row in zip(range(limit), merged)]

    def _feed_query(self, code, ascending, since, before, priority, limit):
        where, params = ["jurisdiction = ?"], [code]
        if priority:
            where.append("priority = ?")
            params.append(priority)
        if ascending:
            where.append("feed_seq > ?")
            params.append(since)
        elif before is not None:
            where.append("feed_seq < ?")
            params.append(before)
        order = "ASC" if ascending else "DESC"
        return self.connection().execute(
            f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM reports WHERE {' AND '.join(where)} "
            f"ORDER BY feed_seq {order} LIMIT ?", (*params, limit)).fetchall()

    def count_for(self, codes, priority=None):
        """How many reports are currently in `codes` (of `priority`)."""
        codes = sorted(set(codes))
        sql = f"SELECT count(*) FROM reports WHERE jurisdiction IN ({', '.join('?' * len(codes))})"
        params = list(codes)
        if priority:
            sql += " AND priority = ?"
            params.append(priority)
        return self.connection().execute(sql, params).fetchone()[0]

    def get_for(self, codes, report_id):
        """The report with its referrals when it is currently in `codes`; None otherwise (absent or elsewhere alike)."""
        codes = sorted(set(codes))
        row = self.connection().execute(
            f"SELECT {', '.join(SUMMARY_COLUMNS)}, record FROM reports WHERE report_id = ? "
            f"AND jurisdiction IN ({', '.join('?' * len(codes))})", (report_id, *codes)).fetchone()
        if row is None:
            return None
        found = dict(zip(SUMMARY_COLUMNS + ("record",), row))
        found["record"] = json.loads(found["record"])
        found["referrals"] = self.referrals_of(report_id)
        return found

    def referrals_of(self, report_id):
        rows = self.connection().execute(
            "SELECT from_code, to_code, reason, at FROM referrals WHERE report_id = ? ORDER BY seq", (report_id,))
        return [dict(zip(("from", "to", "reason", "at"), row)) for row in rows]

    def acknowledged_by(self, agency_id, report_ids):
        """The ids among `report_ids` this agency acknowledged while they were in their current jurisdiction."""
        report_ids = list(report_ids)
        if not report_ids:
            return set()
        rows = self.connection().execute(
            f"SELECT a.report_id FROM acks a JOIN reports r ON r.report_id = a.report_id AND r.jurisdiction = a.jurisdiction "
            f"WHERE a.agency_id = ? AND a.report_id IN ({', '.join('?' * len(report_ids))})", (agency_id, *report_ids))
        return {row[0] for row in rows}

    def acknowledge(self, agency_id, report_id, jurisdiction):
        """Appends an acknowledgement event (once per agency and jurisdiction) and applies it."""
        if report_id not in self.acknowledged_by(agency_id, [report_id]):
            self.logs["acks"].append({"reportId": report_id, "agency": agency_id, "jurisdiction": jurisdiction,
                                      "at": iso(utc_now())})
            self.apply_events()

    # --- clearinghouse tools -----------------------------------------------------------------------
    def refer(self, report_id, to_code, reason, referred_by=None):
        """Appends a referral event moving the report to `to_code`; the routing in the record is kept."""
        row = self.connection().execute("SELECT jurisdiction FROM reports WHERE report_id = ?", (report_id,)).fetchone()
        if row is None:
            raise UnknownReport(report_id)
        if row[0] == to_code:
            raise ValueError(f"report {report_id} is already in {to_code}")
        event = {"reportId": report_id, "from": row[0], "to": to_code, "reason": reason, "by": referred_by,
                 "at": iso(utc_now())}
        self.logs["referrals"].append(event)
        self.apply_events()
        return event

    def find(self, *, report_id=None, user=None, hash_value=None, bundle_id=None, esp=None, jurisdiction=None,
             priority=None, since=None, until=None, limit=1000):
        """Reports matching every given filter, newest submitted first (filters combine with AND)."""
        where, params = [], []
        for column, value in (("report_id", report_id), ("bundle_id", bundle_id), ("jurisdiction", jurisdiction),
                              ("priority", priority)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if user is not None:
            where.append("(user_id = ? OR screen_name = ?)")
            params += [user, user]
        if esp is not None:
            where.append("(esp_id = ? OR esp_name = ? COLLATE NOCASE)")
            params += [esp, esp]
        if hash_value is not None:
            where.append("report_id IN (SELECT report_id FROM hashes WHERE value = ?)")
            params.append(hash_value.lower())
        if since is not None:
            where.append("submitted_epoch >= ?")
            params.append(since.timestamp())
        if until is not None:
            where.append("submitted_epoch < ?")
            params.append(until.timestamp())
        sql = f"SELECT {', '.join(FIND_COLUMNS)} FROM reports"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.connection().execute(sql + " ORDER BY submitted_epoch DESC, report_id LIMIT ?", (*params, limit))
        return [dict(zip(FIND_COLUMNS, row)) for row in rows]

    def unacknowledged(self, priority, older_than):
        """Reports of `priority` available before `older_than` that no agency acknowledged in their current jurisdiction."""
        rows = self.connection().execute(
            "SELECT report_id, jurisdiction, submitted_at, available_epoch FROM reports r WHERE priority = ? "
            "AND available_epoch < ? AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.report_id = r.report_id "
            "AND a.jurisdiction = r.jurisdiction) ORDER BY available_epoch", (priority, older_than.timestamp()))
        return [{"report_id": report_id, "jurisdiction": code, "submitted_at": submitted,
                 "available_since": iso(datetime.datetime.fromtimestamp(available, datetime.timezone.utc))}
                for report_id, code, submitted, available in rows]

    def counts(self):
        connection = self.connection()
        return {"reports": connection.execute("SELECT count(*) FROM reports").fetchone()[0],
                "files": connection.execute("SELECT count(*) FROM files").fetchone()[0]}


class _WriteTransaction:
    """`BEGIN IMMEDIATE` … `COMMIT` (or `ROLLBACK`): one writer at a time across processes."""

    def __init__(self, connection):
        self.connection = connection

    def __enter__(self):
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind, error, traceback):
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


def open_index(output_dir, state_dir=None):
    """The index of `output_dir`, its event logs and the audit log kept in `state_dir` (default `<output>/agencies-state`)."""
    state = pathlib.Path(state_dir) if state_dir else pathlib.Path(output_dir) / "agencies-state"
    return ReportIndex(state / "index.sqlite", output_dir, state)
