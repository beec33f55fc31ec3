"""The one asyncio token bucket adapters share; its rate may adapt to throttling (AIMD).

Clouds meter their calls (ECS RunTask, Cloud Run run_job, ARM writes and reads, log
reads) per account, project or subscription with token buckets of their own. Ours keeps
a dispatcher under that limit: callers wait for a token; a throttling answer halves the
rate (multiplicative decrease, at most once per ``cooldown`` so one overload episode
counts once) and successes add it back linearly (additive increase, the full range in
about ``recovery`` seconds), so several replicas sharing one account settle under its
limit without talking to each other. A bucket whose ``on_success`` and ``on_throttle``
are never called is a plain fixed-rate bucket (ACI's windowed budgets are built so).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class AdaptiveTokenBucket:
    def __init__(self, rate: float, burst: float, *, min_rate: float = 1.0,
                 decrease: float = 0.5, cooldown: float = 1.0, recovery: float = 20.0,
                 clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.max_rate = float(rate)
        self.burst = float(burst)
        self.min_rate = min(float(min_rate), self.max_rate)
        self.decrease = decrease
        self.cooldown = cooldown
        self.recovery = recovery
        self.rate = self.max_rate
        self.lowest_rate = self.max_rate
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
        """How long a caller asking now would wait for its token (nothing is taken)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def reserve(self) -> float:
        """Take one token now, going into debt if none is left; return the wait in seconds.

        Reservation instead of a lock: each caller's slot is fixed when it asks, so
        waiters are served in arrival order and nothing binds to one event loop.
        """
        self._refill()
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def try_acquire(self) -> bool:
        """Take one token if there is one now; never waits, never goes into debt."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    def on_success(self) -> None:
        """Additive increase: at the current rate, ``max_rate / recovery`` per second."""
        self._refill()
        step = self.max_rate / (self.recovery * max(self.rate, 1.0))
        self.rate = min(self.max_rate, self.rate + step)

    def drain(self) -> None:
        """Drop the tokens saved up (the rate stays): the limit is evidently shared."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)

    def on_throttle(self) -> None:
        """Multiplicative decrease, once per cooldown; saved-up tokens are dropped so the
        next calls do not burst into a limit that is already exceeded."""
        self.drain()
        self.throttles += 1
        now = self._clock()
        if now - self._last_decrease >= self.cooldown:
            self._last_decrease = now
            self.rate = max(self.min_rate, self.rate * self.decrease)
            self.lowest_rate = min(self.lowest_rate, self.rate)
