"""A token bucket per client: ``rate`` tokens a second, up to ``burst``.

Servers use it to refuse (the sandbox answers 429 with ``Retry-After`` the returned seconds); clients
use :meth:`RateLimiter.wait` to pace themselves below a system's limit instead of provoking 429s.
"""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> int:
        """Take a token for ``client``; 0 when allowed, else whole seconds to wait (≥ 1)."""
        delay = self._take(client, reserve=False)
        return 0 if delay == 0 else max(1, math.ceil(delay))

    def wait(self, client: str = "", sleep=time.sleep) -> float:
        """Block until ``client`` may send; reserves the token so concurrent callers queue fairly."""
        delay = self._take(client, reserve=True)
        if delay > 0:
            sleep(delay)
        return delay

    def _take(self, client: str, reserve: bool) -> float:
        """Seconds until a token is available (0: taken now). With ``reserve`` the token is taken
        ahead of time, letting the bucket go negative, so the caller only has to sleep."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                return 0.0
            self._buckets[client] = (tokens - 1 if reserve else tokens, now)
        return (1 - tokens) / self.rate
