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


def test_shared_buckets_hold_one_limit_for_every_process_that_maps_the_file(tmp_path):
    from services.common.rate_limit import SharedBuckets

    clock = Clock()
    first, second = SharedBuckets(tmp_path / "limits", clock=clock), SharedBuckets(tmp_path / "limits", clock=clock)
    in_one, in_other = first.limiter("provider", rate=1, burst=4), second.limiter("provider", rate=1, burst=4)
    assert [limiter.allow("esp-17") for limiter in (in_one, in_other) * 3] == [True] * 4 + [False] * 2
    assert in_one.exhausted("esp-17") and in_other.exhausted("esp-17")
    assert in_other.allow("esp-42")  # keys are independent
    assert second.limiter("public", rate=1, burst=4).allow("esp-17")  # and so are limiters' names
    clock.now += 1
    assert in_other.allow("esp-17") and not in_one.allow("esp-17")
    first.close()
    second.close()


def test_a_full_table_reuses_idle_slots_and_falls_back_to_this_process_when_every_slot_is_busy(tmp_path):
    from services.common.rate_limit import SharedBuckets

    clock = Clock()
    buckets = SharedBuckets(tmp_path / "limits", slots=4, clock=clock)
    limiter = buckets.limiter("public", rate=1, burst=2)
    for address in range(4):
        assert limiter.allow(address) and limiter.allow(address) and not limiter.allow(address)
    assert limiter.allow("new") and limiter.allow("new") and not limiter.allow("new")  # this process's bucket
    assert not limiter.overflow.allow("new")
    clock.now += 5  # every bucket full again: their slots may be taken
    assert [limiter.allow("newer") for _ in range(3)] == [True, True, False]
    assert "newer" not in limiter.overflow._buckets
    buckets.close()
