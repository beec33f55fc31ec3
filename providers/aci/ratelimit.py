"""Budgets for ARM writes: ACI's create and delete limits, and Retry-After.

ACI limits container group creates per subscription to 100 per 5 minutes and 300 per
hour by default, and deletes the same way (both adjustable by Azure support). A
``WindowBudget`` holds one fixed-rate bucket per window (the shared
``providers.ratelimit.AdaptiveTokenBucket``, never told to adapt: these limits are
published numbers, not something to discover) and a pause set by a 429's Retry-After.
An operation that would have to wait longer than its ``max_wait`` is refused at once
with a RetryableProviderError carrying the wait, so a submit backs off instead of
holding its claim for minutes; cleanup, which nothing retries, passes a longer wait.

It stays ACI's rather than shared: several windows per operation is the shape of ACI's
limits alone (ECS and Cloud Run publish one rate each, which one bucket serves).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from providers.base import RetryableProviderError
from providers.ratelimit import AdaptiveTokenBucket


class WindowBudget:
    """Several windows (count per seconds) and a Retry-After pause, for one kind of ARM
    write in one subscription. ``what`` names the writes and ``settings`` the knobs, for
    the refusal's message."""

    def __init__(self, what: str, settings: str, windows: Sequence[tuple[int, float]], *,
                 max_wait: float, clock: Callable[[], float] = time.monotonic):
        self.what = what
        self.settings = settings
        self.buckets = [AdaptiveTokenBucket(count / seconds, count, clock=clock)
                        for count, seconds in windows]
        self.max_wait = max_wait
        self.throttles = 0
        self._clock = clock
        self._paused_until = 0.0

    def wait_time(self) -> float:
        pause = max(0.0, self._paused_until - self._clock())
        return max([pause, *(b.wait_time() for b in self.buckets)])

    async def acquire(self, max_wait: float | None = None) -> None:
        """Take a token of every window, waiting up to ``max_wait`` (default: the
        budget's); beyond that, refuse."""
        limit = self.max_wait if max_wait is None else max_wait
        while True:
            wait = self.wait_time()
            if wait <= 0:
                for bucket in self.buckets:
                    bucket.reserve()
                return
            if wait > limit:
                raise RetryableProviderError(
                    f"holding back {self.what} for {wait:.0f}s to stay under ACI's limit "
                    f"({self.settings})", throttled=True, retry_after=wait)
            await asyncio.sleep(wait)

    def on_throttle(self, retry_after: float | None) -> None:
        """A 429 from Azure: nothing until Retry-After (default 60 s) has passed, and
        tokens saved up are dropped, since the limit is evidently shared with others."""
        self.throttles += 1
        pause = retry_after if retry_after and retry_after > 0 else 60.0
        self._paused_until = max(self._paused_until, self._clock() + pause)
        for bucket in self.buckets:
            bucket.drain()
