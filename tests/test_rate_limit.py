"""The token bucket behind the services' rate limits, on a clock the test moves."""
from services.common.rate_limit import RateLimiter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_bucket_allows_its_burst_then_refills_at_its_rate():
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.exhausted("a") and not limiter.exhausted("b")
    assert limiter.allow("b")  # keys are independent
    clock.now += 0.5
    assert limiter.allow("a") and not limiter.allow("a")
    clock.now += 10
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]  # never more than the burst


def test_idle_keys_are_dropped_when_the_table_is_full_and_busy_ones_are_kept():
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock, max_keys=10)
    for address in range(10):
        limiter.allow(address)
    clock.now += 5
    limiter.allow("busy")
    limiter.allow("busy")
    limiter.allow("new")  # the table passes max_keys: the idle (full again) keys go
    assert set(limiter._buckets) == {"busy", "new"}
    assert not limiter.allow("busy")
