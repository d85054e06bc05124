"""The agencies table: who may call the service, which jurisdiction codes each receives, and its hashed credential.

CSV columns: agency_id, agency_name, jurisdictions (codes separated by spaces), credential_hash (from
`services.common.credentials.hash_secret`, empty: cannot sign in), status (active | revoked), expires_at
(RFC 3339, empty: never). A bad row stops the load with the file and line named.
"""
import base64
import binascii
import csv
import dataclasses
import datetime
import hmac
import os
import re
import secrets
import time

from services.common import credentials

AGENCY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
JURISDICTION_CODE = re.compile(r"^(UNKNOWN|[A-Z]{2}(-[A-Z0-9]+)*)$")
_MAX_REMEMBERED = 10_000
COLUMNS = ("agency_id", "agency_name", "jurisdictions", "credential_hash", "status", "expires_at")


class DirectoryError(ValueError):
    """A row of the agencies table that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Agency:
    agency_id: str
    name: str
    jurisdictions: tuple
    credential_hash: str | None
    status: str
    expires_at: datetime.datetime | None

    def usable_at(self, now):
        return self.status == "active" and (self.expires_at is None or now < self.expires_at)


def _parse_time(text):
    parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return parsed


def _agency_from_row(row):
    agency_id = row["agency_id"]
    if not AGENCY_ID.match(agency_id or ""):
        raise ValueError(f"agency_id {agency_id!r} must match {AGENCY_ID.pattern}")
    codes = tuple((row["jurisdictions"] or "").split())
    bad = [code for code in codes if not JURISDICTION_CODE.match(code)]
    if not codes or bad:
        raise ValueError(f"jurisdictions {row['jurisdictions']!r}: each code must match {JURISDICTION_CODE.pattern}")
    if row["status"] not in ("active", "revoked"):
        raise ValueError(f"status {row['status']!r} must be active or revoked")
    stored = row["credential_hash"] or None
    if stored is not None:
        credentials.check_stored_hash(stored)
    expires = _parse_time(row["expires_at"]) if row["expires_at"] else None
    return Agency(agency_id, row["agency_name"], codes, stored, row["status"], expires)


class AgencyDirectory:
    def __init__(self, agencies, remember_seconds=300.0):
        self.agencies = {agency.agency_id: agency for agency in agencies}
        self.remember_seconds = remember_seconds
        self._verified = {}
        self._cache_key = secrets.token_bytes(32)

    @classmethod
    def load(cls, path):
        """The table at `path`; DirectoryError names the file and line of a bad row."""
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = set(COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise DirectoryError(f"{path}: missing columns {', '.join(sorted(missing))}")
            agencies = []
            for row in reader:
                try:
                    agencies.append(_agency_from_row(row))
                except (ValueError, KeyError) as error:
                    raise DirectoryError(f"{path}:{reader.line_num}: {error}") from None
        return cls(agencies)

    def get(self, agency_id):
        return self.agencies.get(agency_id)

    def authenticate(self, agency_id, secret, now=None):
        """The agency when `secret` is its credential and it is active and unexpired, else None.

        Every refusal derives exactly one scrypt key, so an unknown, revoked, expired or wrong credential
        takes the same time and gets the same answer. A credential verified in the last `remember_seconds`
        is remembered (by a keyed digest, never in clear), so a signed-in agency does not pay scrypt on
        every page; its status and expiry are still checked on every call."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        agency = self.agencies.get(agency_id)
        digest = hmac.new(self._cache_key, f"{agency_id}:{secret}".encode(), "sha256").digest()
        if agency is not None and self._recently_verified(digest):
            if agency.usable_at(now):
                return agency
            credentials.spend_one_derivation()
            return None
        if not credentials.verify(agency.credential_hash if agency else None, secret):
            return None
        self._remember(digest)
        return agency if agency.usable_at(now) else None

    def _recently_verified(self, digest):
        verified_at = self._verified.get(digest)
        return verified_at is not None and time.monotonic() - verified_at < self.remember_seconds

    def _remember(self, digest):
        if len(self._verified) >= _MAX_REMEMBERED:
            self._verified.clear()
        self._verified[digest] = time.monotonic()


class WatchedDirectory:
    """The agencies table at `path`, read again when the file changes, so a revocation or a new agency takes
    effect without a restart; a bad new version raises (the caller logs it) and the last good one stays."""

    def __init__(self, path):
        self.path = path
        self.stamp = self._stamp()
        self.current = AgencyDirectory.load(path)

    def _stamp(self):
        status = os.stat(self.path)
        return status.st_mtime_ns, status.st_size

    def reload_if_changed(self):
        stamp = self._stamp()
        if stamp != self.stamp:
            self.current = AgencyDirectory.load(self.path)
            self.stamp = stamp

    def authenticate(self, agency_id, secret, now=None):
        return self.current.authenticate(agency_id, secret, now)


def credential_from_header(header):
    """`(agency_id, secret)` from `Bearer <agency>:<secret>` or HTTP Basic, or None when absent or malformed."""
    scheme, _, value = (header or "").strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            value = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif scheme != "bearer":
        return None
    agency_id, separator, secret = value.strip().partition(":")
    if not separator or not secret or len(secret) > 256 or not AGENCY_ID.match(agency_id):
        return None
    return agency_id, secret
