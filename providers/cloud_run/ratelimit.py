"""A token bucket for ``run_job`` per project and region, that shrinks on 429.

Cloud Run meters "Job run requests per minute per region" per project (third-party
reports say 60 to 180 a minute by default): the default here is 1 run_job a second with a
burst of 10. A 429 halves the rate (at most once per ``cooldown``, so one overload counts
once) and drops saved-up tokens; successes add the rate back over ``recovery`` seconds.
A wait longer than ``max_wait`` is refused at once with a RetryableProviderError carrying
the wait, so the dispatcher backs off instead of holding a claim while it sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from providers.base import RetryableProviderError


class RunBucket:
    def __init__(self, rate: float, burst: float, *, min_rate: float = 0.1,
                 max_wait: float = 5.0, cooldown: float = 1.0, recovery: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("run_job_rate must be > 0 and run_job_burst >= 1")
        self.max_rate = float(rate)
        self.rate = float(rate)
        self.min_rate = min(float(min_rate), self.max_rate)
        self.burst = float(burst)
        self.max_wait = max_wait
        self.cooldown = cooldown
        self.recovery = recovery
        self.throttles = 0
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._last_decrease = float("-inf")

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self) -> float:
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    async def acquire(self) -> None:
        """Take a token, waiting for it up to ``max_wait``; beyond that, refuse.

        The token is reserved before the wait (the balance goes negative), so waiters
        are served in arrival order and no two take the same token."""
        wait = self.wait_time()
        if wait > self.max_wait:
            raise RetryableProviderError(
                f"holding back run_job for {wait:.1f}s to stay under Cloud Run's run "
                f"request quota ({self.rate:g}/s now; PUSHPOOL_CLOUD_RUN_RUN_JOB_RATE)",
                throttled=True, retry_after=wait)
        self._tokens -= 1
        if wait > 0:
            await asyncio.sleep(wait)

    def on_success(self) -> None:
        """Additive increase: at rate r successes come r a second, so adding
        ``max_rate / (recovery * r)`` each restores the full rate in ``recovery`` s."""
        if self.rate < self.max_rate:
            self.rate = min(self.max_rate,
                            self.rate + self.max_rate / (self.recovery * max(self.rate, 1e-9)))

    def on_throttle(self) -> None:
        self._refill()
        self.throttles += 1
        now = self._clock()
        if now - self._last_decrease >= self.cooldown:
            self._last_decrease = now
            self.rate = max(self.min_rate, self.rate / 2)
        self._tokens = min(self._tokens, 0.0)
