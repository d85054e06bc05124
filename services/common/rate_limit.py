"""A token bucket per key (a client address): `rate` requests a second on average, bursts up to `burst`."""
import threading
import time

_MAX_KEYS = 100_000


class TokenBuckets:
    def __init__(self, rate, burst, clock=time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.buckets = {}
        self.lock = threading.Lock()

    def allow(self, key):
        """Takes a token for `key` if one is left; False means the caller is over its rate."""
        now = self.clock()
        with self.lock:
            if len(self.buckets) >= _MAX_KEYS and key not in self.buckets:
                self.buckets.clear()
            tokens, last = self.buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            self.buckets[key] = (tokens - 1 if allowed else tokens, now)
            return allowed

    def retry_after_seconds(self):
        return max(1, int(1 / self.rate + 0.999))
