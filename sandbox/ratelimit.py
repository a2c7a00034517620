"""Per-client request rate limit of each sandbox system (§0: default 50 requests/s).

A token bucket per client: ``rate`` tokens a second, up to ``burst``. A request that finds the
bucket empty is refused with the number of seconds after which a token will be there, which the
service answers as 429 with ``Retry-After``.
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
        if self.rate <= 0:
            return 0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                return 0
            self._buckets[client] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / self.rate))
