"""Budgets for ARM calls: ACI's create limits, ARM's read limits, and Retry-After.

ACI limits container group creates per subscription to 100 per 5 minutes and 300 per
hour by default (both adjustable by Azure support). ``CreateBudget`` holds one token
bucket per window and a pause set by a 429's Retry-After; a create that would have to
wait longer than ``max_wait`` is refused at once with a RetryableProviderError carrying
the wait, so the dispatcher backs off instead of holding a claim for minutes.

``TokenBucket`` is the plain bucket both use; reads (lists, GETs, logs) take from one
that never waits: over budget, a read is skipped and happens on a later pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from providers.base import RetryableProviderError


class TokenBucket:
    def __init__(self, capacity: float, per_second: float, *,
                 clock: Callable[[], float] = time.monotonic):
        if capacity < 1 or per_second <= 0:
            raise ValueError("capacity must be >= 1 and per_second > 0")
        self.capacity = float(capacity)
        self.per_second = float(per_second)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.per_second)
        self._stamp = now

    def wait_time(self) -> float:
        """Seconds until one token is there (0: now)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.per_second

    def take(self) -> None:
        self._refill()
        self._tokens -= 1

    def try_take(self) -> bool:
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def drain(self) -> None:
        self._refill()
        self._tokens = min(self._tokens, 0.0)


class CreateBudget:
    """Several windows (count per seconds) and a Retry-After pause, for one subscription."""

    def __init__(self, windows: Sequence[tuple[int, float]], *, max_wait: float,
                 clock: Callable[[], float] = time.monotonic):
        self.buckets = [TokenBucket(count, count / seconds, clock=clock)
                        for count, seconds in windows]
        self.max_wait = max_wait
        self.throttles = 0
        self._clock = clock
        self._paused_until = 0.0

    def wait_time(self) -> float:
        pause = max(0.0, self._paused_until - self._clock())
        return max([pause, *(b.wait_time() for b in self.buckets)])

    async def acquire(self) -> None:
        """Take a create token, waiting up to ``max_wait``; beyond that, refuse."""
        while True:
            wait = self.wait_time()
            if wait <= 0:
                for bucket in self.buckets:
                    bucket.take()
                return
            if wait > self.max_wait:
                raise RetryableProviderError(
                    f"holding back container group creates for {wait:.0f}s to stay under "
                    "ACI's create limit (create_limits)", throttled=True, retry_after=wait)
            await asyncio.sleep(wait)

    def on_throttle(self, retry_after: float | None) -> None:
        """A 429 from Azure: no creates until Retry-After (default 60 s) has passed, and
        tokens saved up are dropped, since the limit is evidently shared with others."""
        self.throttles += 1
        pause = retry_after if retry_after and retry_after > 0 else 60.0
        self._paused_until = max(self._paused_until, self._clock() + pause)
        for bucket in self.buckets:
            bucket.drain()
