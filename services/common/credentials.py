"""Credentials stored as salted scrypt hashes, checked with the same work whether or not the caller exists.

A stored hash reads `scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>`. `verify` always derives one key, against a
throw-away hash when there is nothing stored, so an unknown caller costs the same time as a wrong secret.
"""
import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
KEY_BYTES = 32
_MAX_MEMORY = 64 * 2**20


def _derive(secret, salt, n, r, p):
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=KEY_BYTES)


def hash_secret(secret, salt=None):
    """The stored form of `secret` (a fresh random salt unless one is given)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    key = _derive(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def _parse(stored):
    kind, n, r, p, salt, key = stored.split("$")
    if kind != "scrypt":
        raise ValueError(f"not an scrypt hash: {kind!r}")
    return int(n), int(r), int(p), bytes.fromhex(salt), bytes.fromhex(key)


# Compared against when no hash is stored, so that path derives a key like every other.
_DUMMY = hash_secret(secrets.token_hex(16))


def check_stored_hash(stored):
    """Raises ValueError when `stored` is not a hash this module wrote (checked when a table is loaded)."""
    n, r, p, salt, key = _parse(stored)
    if n != SCRYPT_N or r != SCRYPT_R or p != SCRYPT_P or len(key) != KEY_BYTES or len(salt) < 16:
        raise ValueError("unexpected scrypt parameters")


def verify(stored, secret):
    """Whether `secret` matches `stored` (None: nothing stored, always False after the same work)."""
    n, r, p, salt, key = _parse(stored or _DUMMY)
    derived = _derive(secret, salt, n, r, p)
    return hmac.compare_digest(derived, key) and stored is not None


def spend_one_derivation():
    """The work of one `verify`, for a path that already knows its answer but must not answer faster."""
    verify(None, "")


class CredentialsError(ValueError):
    """A credentials file that cannot be used; str() names the file and the line."""


def add_account(path, user, name, password):
    """Appends a provider account to a JSON Lines credentials file (owner-only); refuses a user already there."""
    path = Path(path)
    if user in load_accounts(path, missing_ok=True):
        raise CredentialsError(f"{path}: user {user!r} already exists")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"user": user, "name": name, "hash": hash_secret(password)}) + "\n")


def load_accounts(path, missing_ok=False):
    """{user: {"name", "hash"}} from a credentials file; CredentialsError naming the file and line."""
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return {}
        raise CredentialsError(f"credentials file {path} does not exist")
    accounts = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            user, stored = row["user"], row["hash"]
            if not (isinstance(user, str) and user and isinstance(stored, str)):
                raise ValueError
            check_stored_hash(stored)
        except (ValueError, KeyError, TypeError):
            raise CredentialsError(f"{path} line {number}: not a {{user, name, hash}} account") from None
        accounts[user] = {"name": row.get("name"), "hash": stored}
    return accounts


class BasicAuthenticator:
    """Checks an `Authorization: Basic ...` header against accounts; returns the user, or None for anything
    wrong. A successful check is remembered for `remember_seconds` so that a provider's steady stream of
    requests does not pay scrypt each time: keyed by an HMAC of the header under a key this process drew at
    random, so the table in memory gives no fast way to test password guesses. Failures are not remembered:
    each costs one scrypt, known provider or not."""

    def __init__(self, accounts, remember_seconds=300.0, clock=time.monotonic):
        self.accounts = accounts
        self.remember_seconds, self.clock = remember_seconds, clock
        self._memo_key = hmac.new(secrets.token_bytes(32), digestmod=hashlib.sha256)
        self._verified = {}
        self._lock = threading.Lock()

    def remembered_user(self, header):
        """The user of credentials already verified (cheap); None when they must go through `user_of`."""
        if not header:
            return None
        key = self._key(header)
        with self._lock:
            user, until = self._verified.get(key, (None, 0.0))
        return user if self.clock() < until else None

    def user_of(self, header):
        """The user of good credentials, or None; costs one scrypt unless they were verified before."""
        remembered = self.remembered_user(header)
        if remembered is not None:
            return remembered
        user, password = basic_credentials(header)
        if user is None:
            return None
        account = self.accounts.get(user)
        if not verify(account["hash"] if account else None, password):
            return None
        with self._lock:
            if len(self._verified) > 10_000:
                now = self.clock()
                self._verified = {key: entry for key, entry in self._verified.items() if entry[1] > now}
            self._verified[self._key(header)] = (user, self.clock() + self.remember_seconds)
        return user

    def _key(self, header):
        mac = self._memo_key.copy()
        mac.update(header.encode("utf-8", "surrogatepass"))
        return mac.digest()

    def name_of(self, user):
        return (self.accounts.get(user) or {}).get("name")


def basic_credentials(header):
    """(user, password) of an `Authorization: Basic` header, or (None, None)."""
    if not header or not header[:6].lower() == "basic ":
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None, None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon and user else (None, None)
