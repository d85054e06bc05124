"""HTTP Basic authentication against a file of hashed credentials.

The file is JSON Lines, one `{"user", "name", "hash"}` per account, the hash a salted scrypt
(`scrypt$n$r$p$salt$digest`, hex). Passwords are never stored or logged. Checking an unknown user costs
the same scrypt as checking a known one, so the answer and its timing do not tell whether a user exists.
A successful check is remembered (keyed by a digest of the credentials, in memory only) so that a
provider's steady stream of requests does not pay scrypt each time.
"""
import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
from pathlib import Path

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class CredentialsError(ValueError):
    """A credentials file that cannot be used; str() names the file and the line."""


def hash_password(password, salt=None):
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def password_matches(password, stored):
    _, n, r, p, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                               dklen=len(digest) // 2)
    return hmac.compare_digest(candidate.hex(), digest)


def add_account(path, user, name, password):
    """Appends an account (owner-only file); refuses a user that is already there."""
    path = Path(path)
    if user in load_accounts(path, missing_ok=True):
        raise CredentialsError(f"{path}: user {user!r} already exists")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"user": user, "name": name, "hash": hash_password(password)}) + "\n")


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
            if not (isinstance(user, str) and user and isinstance(stored, str) and stored.count("$") == 5):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise CredentialsError(f"{path} line {number}: not a {{user, name, hash}} account") from None
        accounts[user] = {"name": row.get("name"), "hash": stored}
    return accounts


class BasicAuthenticator:
    """Checks an `Authorization: Basic ...` header; returns the user, or None for anything wrong."""

    def __init__(self, accounts):
        self.accounts = accounts
        self._decoy = hash_password(secrets.token_hex(16))
        self._verified = {}
        self._lock = threading.Lock()

    def remembered_user(self, header):
        """The user of credentials already verified (cheap); None when they must go through `user_of`."""
        user, password = _basic_credentials(header)
        if user is None:
            return None
        with self._lock:
            return user if self._verified.get(_memo_key(user, password)) == user else None

    def user_of(self, header):
        """The user of good credentials, or None; costs one scrypt unless they were verified before."""
        user, password = _basic_credentials(header)
        if user is None:
            return None
        key = _memo_key(user, password)
        with self._lock:
            if self._verified.get(key) == user:
                return user
        account = self.accounts.get(user)
        matches = password_matches(password, account["hash"] if account else self._decoy)
        if not (account and matches):
            return None
        with self._lock:
            self._verified[key] = user
        return user

    def name_of(self, user):
        return (self.accounts.get(user) or {}).get("name")


def _memo_key(user, password):
    return hashlib.sha256(f"{user}\0{password}".encode("utf-8", "surrogatepass")).digest()


def _basic_credentials(header):
    if not header or not header[:6].lower() == "basic ":
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None, None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon and user else (None, None)
