"""Exponential backoff with full jitter, shared by every retry loop in the engine."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0,
                  hint: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based); a server hint is a floor."""
    delay = random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
    return max(delay, hint or 0.0)
