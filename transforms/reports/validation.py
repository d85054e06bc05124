"""What a contract report is (../shared/contract/REPORT_FORMAT.md), as plain Python: message decoding, the
schema check, event times a window can hold, and the reporter rules. The parse stage (transforms/parse.py)
and the intake service (services/intake/) both refuse with these, so a report one accepts the other does too.
"""
import json
import re
from datetime import datetime, timedelta, timezone

import orjson

from schemas import avro_schema, reference_table
from transforms.reports.avro_validation import INFINITIES, InvalidRecord, compile_validator

DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # Pub/Sub's own message limit
DEFAULT_MAX_FILES_PER_REPORT = 1000  # each file may be media to fetch and hash
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


DEFAULT_MAX_CLOCK_SKEW_HOURS = 24  # how far past the run's clock a producer's clock may run
# Event times must fit every window, partition and sink: no report predates the Unix epoch (nor the
# CyberTipline), and a day-long sliding window, a `dt=YYYY-MM-DD` partition and a datetime must all hold it.
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


# The form nearly every producer sends (UTC, whole seconds, `Z`), in ASCII digits only: Python's 3.11
# `fromisoformat` reads it as `parse_rfc3339` would after its rewriting, in a third of the time.
PLAIN_UTC_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def parse_rfc3339(text):
    """A timezone-aware UTC datetime for an RFC 3339 string; `ValueError` for anything else."""
    if isinstance(text, str) and PLAIN_UTC_RFC3339.fullmatch(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # e.g. a 31st of November: the general path below names the fault
    match = RFC3339.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text[:40]!r} is not an RFC 3339 date-time")
    if not match.group(2):
        raise ValueError(f"{text!r} has no UTC offset")
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(timezone.utc)
    except (ValueError, OverflowError):  # e.g. year 1 with a positive offset falls before year 1 in UTC
        raise ValueError(f"{text!r} is not a valid date-time") from None


def check_event_time(moment, latest, skew):
    """Refuses an event time (aware datetime) before 1970 or after `latest` (the run's clock plus the allowed
    `skew`): windows, `dt=` partitions and sinks cannot all represent it, or no producer could have meant it.
    The reason does not quote the clock, so a replay writes the same dead letter (and skips its file)."""
    if moment < EARLIEST_EVENT_TIME:
        raise ValueError(f"{moment.isoformat()} is before {EARLIEST_EVENT_TIME.isoformat()}")
    if moment > latest:
        raise ValueError(f"{moment.isoformat()} is later than the run's clock plus {skew.total_seconds() / 3600:g} "
                         "hours (--max-clock-skew-hours)")


def now_utc():
    return datetime.now(timezone.utc)


class ReportValidator:
    """Checks a decoded message against schemas/report.avsc and the rules Avro cannot express."""

    def __init__(self, max_files=DEFAULT_MAX_FILES_PER_REPORT, max_clock_skew_hours=DEFAULT_MAX_CLOCK_SKEW_HOURS):
        self.check_schema = compile_validator(avro_schema("report"))
        self.incident_types = frozenset(row["incident_type"] for row in reference_table("incident_types"))
        self.max_files = max_files
        self.skew = timedelta(hours=max_clock_skew_hours)

    def validate(self, report):
        """The report's event time (UTC datetime); raises `InvalidRecord` with the reason otherwise."""
        self.check_schema(report)
        files = report.get("files") or []
        if len(files) > self.max_files:
            raise InvalidRecord(f"$.files: {len(files)} files exceed the limit of {self.max_files} per report")
        if not report["reportId"].strip():
            raise InvalidRecord("$.reportId: must not be empty")
        self._check_reporter(report["reporter"])
        incident_type = report["incidentSummary"]["incidentType"]
        if incident_type not in self.incident_types:
            raise InvalidRecord(f"$.incidentSummary.incidentType: unknown incident type {incident_type[:80]!r}")
        latest = self.latest()
        incident_time = report["incidentSummary"].get("incidentDateTime")
        if incident_time is not None:
            self._rfc3339("$.incidentSummary.incidentDateTime", incident_time, latest)
        return self._rfc3339("$.submittedAt", report["submittedAt"], latest)

    @staticmethod
    def _check_reporter(reporter):
        """A provider's report names the provider; a member of the public is no provider."""
        public = reporter.get("kind") == "public"
        if public and reporter.get("espId") is not None:
            raise InvalidRecord("$.reporter.espId: a public report (kind public) has no espId")
        if not public and reporter.get("espId") is None:
            raise InvalidRecord("$.reporter.espId: required field is missing (a provider's report, kind esp)")

    def _rfc3339(self, path, text, latest):
        try:
            moment = parse_rfc3339(text)
            check_event_time(moment, latest, self.skew)
            return moment
        except ValueError as error:
            raise InvalidRecord(f"{path}: {error}") from None

    def latest(self):
        """The clock now plus the skew allowed to producers' clocks (read per report: a streaming worker
        lives for days)."""
        return now_utc() + self.skew

    def check_source_time(self, timestamp):
        """The event time a source stamped (Pub/Sub's `submittedAt` attribute) obeys the body's rules."""
        try:
            check_event_time(utc_of(timestamp), self.latest(), self.skew)
        except (ValueError, OverflowError) as error:
            raise InvalidRecord(f"the submittedAt attribute: {error}") from None


def utc_of(timestamp):
    """A Beam Timestamp as an aware datetime; beyond datetime's years 1-9999 it is clamped to them."""
    try:
        return timestamp.to_utc_datetime(has_tz=True)
    except (OverflowError, ValueError):
        return (datetime.min if timestamp.micros < 0 else datetime.max).replace(tzinfo=timezone.utc)


def decode_message(payload, max_bytes):
    """The JSON object in a message; raises `InvalidRecord` naming what is wrong with it.

    Only what JSON holds: NaN, infinities and numbers past a double's range are refused, as orjson refuses
    them, so a decoded report dumps to JSON that loads back equal (transforms/plumbing/packed_records.py)."""
    if len(payload) > max_bytes:
        raise InvalidRecord(f"message of {len(payload)} bytes exceeds the limit of {max_bytes} bytes")
    # The fast path, ~4x json.loads: orjson refuses all that json.loads refuses below and more (lone
    # surrogates, integers past 64 bits), which the slow path then accepts or explains.
    try:
        report = orjson.loads(payload)
        if isinstance(report, dict):
            return report
    except orjson.JSONDecodeError:
        pass  # the slow path below accepts what json accepts, or names what is wrong
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    except UnicodeDecodeError as error:
        raise InvalidRecord(f"message is not UTF-8: {error.reason} at byte {error.start}") from None
    try:
        report = json.loads(text, parse_constant=_refuse_non_json_number, parse_float=_finite_float)
    except json.JSONDecodeError as error:
        raise InvalidRecord(f"message is not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except InvalidRecord:
        raise
    except RecursionError:
        raise InvalidRecord("message is nested too deeply") from None
    except ValueError as error:  # an integer literal over Python's 4,300-digit limit
        raise InvalidRecord(f"message is not acceptable JSON: {str(error)[:80]}") from None
    if not isinstance(report, dict):
        raise InvalidRecord(f"message is a JSON {type(report).__name__}, not an object")
    if SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(report)
    return report


def _refuse_non_json_number(name):
    """json.loads reads NaN and Infinity, which JSON does not have (nor the Avro-checked JSON outputs)."""
    raise InvalidRecord(f"message is not JSON: {name} is not a JSON number")


def _finite_float(text):
    number = float(text)
    if number in INFINITIES:
        raise InvalidRecord(f"message holds a number past a double's range: {text[:40]}")
    return number


def _refuse_lone_surrogates(report):
    """json.loads joins valid surrogate pairs; a lone half is not Unicode and no coder can write it."""
    try:
        json.dumps(report, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecord("message holds a lone UTF-16 surrogate escape (not valid Unicode)") from None


def report_id_of(payload):
    """The reportId of a refused message when it can be read, to help whoever replays it."""
    try:  # strict UTF-8 first: json.loads(bytes) would let encoded surrogates through
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        report_id = json.loads(text).get("reportId")
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None
    if not isinstance(report_id, str):
        return None
    return report_id.encode("utf-8", "replace").decode("utf-8")[:200]
