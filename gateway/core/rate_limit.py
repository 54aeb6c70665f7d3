"""Per-device token bucket (per gateway worker): ``rate`` requests/s sustained, ``burst``
at once. A line runs ~10 frames/s per camera; the default leaves room for retries."""

from __future__ import annotations

import time

from gateway.core.errors import RateLimited


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int):
        self.rate, self.burst = rate_per_s, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)

    def check(self, key: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = max(1, int((1 - tokens) / self.rate + 0.999))
            raise RateLimited(f"more than {self.rate:g} requests/s from {key}", headers={"Retry-After": str(wait)})
        self._buckets[key] = (tokens - 1, now)
