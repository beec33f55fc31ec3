"""Exponential backoff with full jitter, shared by every retry loop in the engine."""

from __future__ import annotations

import random

DEFAULT_BASE_SECONDS = 0.5
DEFAULT_CAP_SECONDS = 30.0


def backoff_delay(attempt: int, *, base: float = DEFAULT_BASE_SECONDS,
                  cap: float = DEFAULT_CAP_SECONDS, hint: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): uniform in
    [0, min(cap, base * 2**(attempt-1))], so retries of many runs spread out instead of
    arriving together; a server's retry-after hint is a floor."""
    delay = random.uniform(0, min(cap, base * 2 ** (min(attempt, 64) - 1)))
    return max(delay, hint or 0.0)
