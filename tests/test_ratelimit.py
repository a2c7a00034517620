"""The token bucket shared by the sandbox (refusing) and the connectors (pacing)."""

from hub.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_refuses_beyond_the_burst_and_refills():
    clock = FakeClock()
    limiter = RateLimiter(rate=2, burst=2, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 1]
    assert limiter.acquire("b") == 0  # buckets are per client
    clock.now += 0.5
    assert limiter.acquire("a") == 0


def test_wait_paces_callers_to_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=1, clock=clock)
    for _ in range(21):
        limiter.wait("c", sleep=clock.sleep)
    assert 1.9 <= clock.now <= 2.1  # 21 requests at 10/s after the first: 2 seconds
