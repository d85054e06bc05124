"""A per-key token bucket: `rate` requests a second, bursts up to `burst`, in memory (one process).

Keys that have been idle long enough to be full again are dropped once there are more than `max_keys`,
so a flood from many addresses cannot grow the table without bound.
"""
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
