"""The intake's durable state: open reports, their files, and what finish assembled (SQLite, WAL).

A report is `open` from submit until `finished` or `retracted`. Finish assembles the contract message
and marks the report finished in one transaction, so a retried finish finds it finished and publishes
nothing; the message stays in the store (an outbox) until the publish is confirmed, so a crash between
the two publishes it at the next start instead of losing it.
"""
import orjson
import secrets
import sqlite3
import threading
import time
from datetime import datetime, timezone

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'finished', 'retracted')),
    submitted_at TEXT NOT NULL,
    draft TEXT NOT NULL,
    message BLOB,
    finished_at REAL,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id INTEGER NOT NULL REFERENCES reports(id),
    md5 TEXT NOT NULL,
    uri TEXT NOT NULL,
    upload_name TEXT,
    details TEXT
);
CREATE INDEX IF NOT EXISTS files_by_report ON files (report_id);
CREATE INDEX IF NOT EXISTS unpublished ON reports (published) WHERE state = 'finished' AND published = 0;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS direct_reports (
    provider TEXT NOT NULL,
    report_id TEXT NOT NULL,
    PRIMARY KEY (provider, report_id)
);
"""


class Refused(Exception):
    """A request the state of a report does not allow; `code` is the API response code."""

    def __init__(self, code, description):
        super().__init__(description)
        self.code = code
        self.description = description


REPORT_DOES_NOT_EXIST, FILE_DOES_NOT_EXIST = 5001, 5002
ALREADY_RETRACTED, ALREADY_FINISHED = 5101, 5102
NOT_AUTHORIZED = 3000
TOO_MANY_FILES = 4220
REPORT_ID_PREFIX = "IN-"
IS_OPEN_REPORT = "EXISTS (SELECT 1 FROM reports WHERE id = ? AND provider = ? AND state = 'open')"


def now_rfc3339():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")




class IntakeStore:
    def __init__(self, path):
        self.connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute("PRAGMA foreign_keys=ON")
        self.connection.executescript(SCHEMA)
        self.connection.execute("INSERT OR IGNORE INTO meta VALUES ('instance', ?)", (secrets.token_hex(4),))
        (self.instance,) = self.connection.execute("SELECT value FROM meta WHERE name = 'instance'").fetchone()
        self.lock = threading.Lock()

    def contract_report_id(self, number):
        """The contract reportId of the API's numeric id: unique across stores, so a new store never
        repeats an earlier store's ids (the pipeline would drop them as redeliveries)."""
        return f"{REPORT_ID_PREFIX}{self.instance}-{number}"

    def close(self):
        self.connection.close()

    def _transaction(self):
        return _Transaction(self)

    def _statement(self, sql, parameters):
        """One statement, its own transaction: the common case of a request in one round trip to SQLite."""
        with self.lock:
            return self.connection.execute(sql, parameters)

    def open_report(self, provider, draft):
        """A new open report's numeric id."""
        return self._statement("INSERT INTO reports (provider, state, submitted_at, draft) VALUES (?, 'open', ?, ?)",
                               (provider, now_rfc3339(), orjson.dumps(draft))).lastrowid

    def _open_report_of(self, db, provider, report_id, columns=""):
        """The report's `columns` (a SQL list after provider and state), refused unless it is `provider`'s
        open report."""
        row = db.execute(f"SELECT provider, state{columns} FROM reports WHERE id = ?", (report_id,)).fetchone()
        if row is None:
            raise Refused(REPORT_DOES_NOT_EXIST, f"report {report_id} does not exist")
        if row[0] != provider:
            raise Refused(NOT_AUTHORIZED, f"report {report_id} belongs to another provider")
        if row[1] == "retracted":
            raise Refused(ALREADY_RETRACTED, f"report {report_id} was retracted")
        if row[1] == "finished":
            raise Refused(ALREADY_FINISHED, f"report {report_id} is already finished")
        return row[2:]

    def add_file(self, provider, report_id, md5, uri, upload_name, max_files):
        """The new file's id; refused when the report is not the provider's open report or is full.

        One conditional INSERT; only a refused one looks again to say why (a report only ever leaves `open`
        and gains files, so what stopped the insert is still true when looked at)."""
        cursor = self._statement(
            f"INSERT INTO files (report_id, md5, uri, upload_name) SELECT ?, ?, ?, ? WHERE {IS_OPEN_REPORT} "
            "AND (SELECT COUNT(*) FROM files WHERE report_id = ?) < ?",
            (report_id, md5, uri, upload_name, report_id, provider, report_id, max_files))
        if cursor.rowcount == 1:
            return cursor.lastrowid
        self.check_open(provider, report_id)
        raise Refused(TOO_MANY_FILES, f"report {report_id} already has {max_files} files, the limit per report")

    def check_open(self, provider, report_id):
        """Refuses early (no write lock taken) what `add_file` would refuse for the report's state."""
        with self.lock:
            self._open_report_of(self.connection, provider, report_id)

    def set_file_details(self, provider, report_id, file_id, details):
        """One conditional UPDATE, like `add_file`."""
        cursor = self._statement(f"UPDATE files SET details = ? WHERE id = ? AND report_id = ? AND {IS_OPEN_REPORT}",
                                 (orjson.dumps(details), file_id, report_id, report_id, provider))
        if cursor.rowcount == 0:
            self.check_open(provider, report_id)
            raise Refused(FILE_DOES_NOT_EXIST, f"file {file_id} does not exist in report {report_id}")

    def finish(self, provider, report_id, esp_name):
        """(message bytes, file ids): the assembled contract report, now finished and waiting to be published."""
        with self._transaction() as db:
            submitted_at, draft = self._open_report_of(db, provider, report_id, ", submitted_at, draft")
            files = db.execute("SELECT id, uri, upload_name, details FROM files WHERE report_id = ? ORDER BY id",
                               (report_id,)).fetchall()
            report = assemble(orjson.loads(draft), self.contract_report_id(report_id), submitted_at, provider, esp_name,
                              files)
            message = orjson.dumps(report)
            db.execute("UPDATE reports SET state = 'finished', message = ?, finished_at = ? WHERE id = ?",
                       (message, time.time(), report_id))
            return message, [row[0] for row in files]

    def retract(self, provider, report_id):
        with self._transaction() as db:
            self._open_report_of(db, provider, report_id)
            db.execute("UPDATE reports SET state = 'retracted', draft = '{}' WHERE id = ?", (report_id,))

    def accept_direct(self, provider, report_id):
        """Records a report taken whole (JSON endpoint); refused when the provider already sent that reportId."""
        with self._transaction() as db:
            try:
                db.execute("INSERT INTO direct_reports (provider, report_id) VALUES (?, ?)", (provider, report_id))
            except sqlite3.IntegrityError:
                raise Refused(ALREADY_FINISHED, f"report {report_id[:80]!r} was already accepted") from None

    def add_finished(self, provider, build_message):
        """Stores a report assembled whole (public and JSON reports) as finished: (numeric id, message)."""
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO reports (provider, state, submitted_at, draft) "
                                "VALUES (?, 'finished', ?, '{}')", (provider, now_rfc3339()))
            message = build_message(cursor.lastrowid)
            db.execute("UPDATE reports SET message = ?, finished_at = ? WHERE id = ?",
                       (message, time.time(), cursor.lastrowid))
            return cursor.lastrowid, message

    def mark_published(self, report_ids):
        """Records confirmed publishes, many in one transaction."""
        with self._transaction() as db:
            db.executemany("UPDATE reports SET published = 1, message = NULL WHERE id = ?",
                           [(report_id,) for report_id in report_ids])

    def unpublished(self, min_age_seconds):
        """[(report id, message)] finished at least `min_age_seconds` ago and not yet confirmed published
        (the outbox); the age leaves a publish in progress in another worker process alone."""
        with self.lock:
            return self.connection.execute(
                "SELECT id, message FROM reports WHERE state = 'finished' AND published = 0 AND finished_at <= ? "
                "ORDER BY id", (time.time() - min_age_seconds,)).fetchall()

    def state_of(self, report_id):
        with self.lock:
            row = self.connection.execute("SELECT state, published FROM reports WHERE id = ?", (report_id,)).fetchone()
        return row


class _Transaction:
    def __init__(self, store):
        self.store = store

    def __enter__(self):
        self.store.lock.acquire()
        self.store.connection.execute("BEGIN IMMEDIATE")
        return self.store.connection

    def __exit__(self, kind, error, traceback):
        try:
            self.store.connection.execute("ROLLBACK" if kind else "COMMIT")
        finally:
            self.store.lock.release()


def assemble(draft, report_id, submitted_at, provider, esp_name, files):
    """The contract report: the submitted draft, the provider, and each uploaded file with its details."""
    reporter = {**draft.get("reporter", {}), "kind": "esp", "espId": provider, "espName": esp_name}
    report = {"reportId": report_id, "submittedAt": submitted_at, **draft, "reporter": reporter, "files": []}
    for file_id, uri, upload_name, details in files:
        details = orjson.loads(details) if details else {}
        report["files"].append({
            "fileId": str(file_id),
            "fileName": details.get("fileName") or upload_name,
            "fileViewedByEsp": details.get("fileViewedByEsp"),
            "publiclyAvailable": details.get("publiclyAvailable"),
            "locationOfFile": details.get("locationOfFile"),
            "industryClassification": details.get("industryClassification"),
            "fileAnnotations": details.get("fileAnnotations") or [],
            "originalFileHashes": details.get("originalFileHashes") or [],
            "ipCaptureEvent": details.get("ipCaptureEvent"),
            "content": None,
            "contentUri": uri,
        })
    return report
