"""API credentials stored as salted scrypt hashes, checked with the same work whether or not the caller exists.

A stored hash reads `scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>`. `verify` always derives one key, against a
throw-away hash when there is nothing stored, so an unknown caller costs the same time as a wrong secret.
"""
import hashlib
import hmac
import secrets

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
