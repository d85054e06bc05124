"""Per-key token buckets: `rate` requests a second, bursts up to `burst`.

`RateLimiter` keeps its buckets in this process. `SharedBuckets` keeps them in a small memory-mapped file
that every worker process of a service opens, under a file lock, so a limit holds however uvicorn spreads
a client's requests over its workers; `SharedBuckets.limiter(...)` gives a limiter with the same methods.
Keys that have been idle long enough to be full again are dropped (or their slots reused), so a flood from
many addresses cannot grow a table without bound.
"""
import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time


class RateLimiter:
    def __init__(self, rate, burst=None, clock=time.monotonic, max_keys=100_000):
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1))
        self.clock = clock
        self.max_keys = max_keys
        self._buckets = {}
        self._lock = threading.Lock()

    def _tokens(self, key, now):
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def allow(self, key):
        """True and one token spent, or False when `key` has none left."""
        if self.rate <= 0:
            return True
        now = self.clock()
        with self._lock:
            tokens = self._tokens(key, now)
            allowed = tokens >= 1
            self._buckets[key] = (tokens - 1 if allowed else tokens, now)
            if len(self._buckets) > self.max_keys:
                self._drop_full(now)
            return allowed

    def exhausted(self, key):
        """True when `key` has no token left (nothing spent): lets a caller refuse before costly work."""
        if self.rate <= 0:
            return False
        with self._lock:
            return self._tokens(key, self.clock()) < 1

    def _drop_full(self, now):
        refill = self.burst / self.rate
        for key in [key for key, (_, last) in self._buckets.items() if now - last >= refill]:
            del self._buckets[key]

    def retry_after_seconds(self):
        """What a refused caller is told to wait (a Retry-After header): the time one token takes."""
        return max(1, int(1 / self.rate + 0.999)) if self.rate > 0 else 1


SLOT = struct.Struct("<Qddd")  # key digest (0: free), tokens, last update, time the bucket is full again
PROBES = 16


class SharedBuckets:
    """A fixed table of token buckets in a file shared by a service's worker processes.

    A key lives in one of `PROBES` slots after its digest; a slot whose bucket is full again may be taken by
    another key (a full bucket is what a new key starts with). When all of a key's slots hold busy buckets
    of other keys (a flood of that many addresses), the key falls back to a bucket of this process only.
    The clock is CLOCK_MONOTONIC, the same in every process of the machine; times in the file from before
    a reboot are treated as long past.
    """

    def __init__(self, path, slots=8192, clock=time.monotonic):
        self.slots, self.clock = slots, clock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size != slots * SLOT.size:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.ftruncate(fd, slots * SLOT.size)
                fcntl.flock(fd, fcntl.LOCK_UN)
            self.table = mmap.mmap(fd, slots * SLOT.size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._lock = threading.Lock()  # flock excludes other processes, not this one's threads

    def limiter(self, name, rate, burst=None):
        return SharedRateLimiter(self, name, rate, burst)

    def close(self):
        self.table.close()
        os.close(self.fd)

    def take(self, name, key, rate, burst, spend):
        """(tokens before, stored) for `key` of limiter `name`, one token spent when `spend` and there is one;
        stored is False when the table had no slot for it."""
        digest = int.from_bytes(hashlib.blake2b(f"{name}\0{key}".encode("utf-8", "surrogatepass"),
                                                digest_size=8).digest(), "little") or 1
        now = self.clock()
        with self._lock:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                offset = self._slot_of(digest, now)
                if offset is None:
                    return None, False
                stored_digest, tokens, last, _ = SLOT.unpack_from(self.table, offset)
                if stored_digest != digest or last > now:
                    tokens, last = burst, now
                tokens = min(burst, tokens + (now - last) * rate)
                left = tokens - 1 if spend and tokens >= 1 else tokens
                SLOT.pack_into(self.table, offset, digest, left, now, now + (burst - left) / rate)
                return tokens, True
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _slot_of(self, digest, now):
        reusable = None
        for probe in range(PROBES):
            offset = ((digest + probe) % self.slots) * SLOT.size
            stored_digest, _, last, full_at = SLOT.unpack_from(self.table, offset)
            if stored_digest == digest:
                return offset
            if reusable is None and (stored_digest == 0 or full_at <= now or last > now):
                reusable = offset
        return reusable


class SharedRateLimiter:
    """`RateLimiter`'s methods over `SharedBuckets`, under the limiter's name."""

    def __init__(self, buckets, name, rate, burst=None):
        self.buckets, self.name = buckets, name
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1))
        self.overflow = RateLimiter(rate, burst)

    def allow(self, key):
        if self.rate <= 0:
            return True
        tokens, stored = self.buckets.take(self.name, key, self.rate, self.burst, spend=True)
        return tokens >= 1 if stored else self.overflow.allow(key)

    def exhausted(self, key):
        if self.rate <= 0:
            return False
        tokens, stored = self.buckets.take(self.name, key, self.rate, self.burst, spend=False)
        return tokens < 1 if stored else self.overflow.exhausted(key)

    def retry_after_seconds(self):
        return self.overflow.retry_after_seconds()
