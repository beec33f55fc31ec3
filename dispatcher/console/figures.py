"""The dashboard's store-wide figures: runs by state now and over the last hours.

Counting every run by pool and state (what /metrics reports as ``pushpool_runs``) walks an
index of every run, which takes hundreds of milliseconds at a million runs: too slow to
do per page view. So this replica keeps the snapshots in memory: one is taken when the
dashboard asks and the last is older than ``REFRESH_SECONDS``, in the background, and the
page shows the latest one with its age. The snapshots kept also make the chart of runs by
state over time. Nothing is counted while nobody looks at the dashboard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from dispatcher import store
from dispatcher.store.db import Database

log = logging.getLogger("pushpool.console")

REFRESH_SECONDS = 30.0
KEEP = 120  # snapshots: an hour at one per 30 s while someone watches
FIRST_WAIT_SECONDS = 0.05  # a page waits this long for a first count, then says "counting"


@dataclass(frozen=True)
class Snapshot:
    taken: float  # time.time()
    by_state: Counter[str]
    by_pool: dict[str, Counter[str]]
    breaker_paused: list[str]


@dataclass
class StoreFigures:
    history: deque[Snapshot] = field(default_factory=lambda: deque(maxlen=KEEP))
    _refreshing: asyncio.Task[None] | None = None

    @property
    def latest(self) -> Snapshot | None:
        return self.history[-1] if self.history else None

    async def current(self, db: Database) -> Snapshot | None:
        """The latest snapshot, refreshed in the background when it is stale; on the
        first call it waits briefly for one (None when that is not enough)."""
        latest = self.latest
        if latest is None or time.time() - latest.taken > REFRESH_SECONDS:
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = asyncio.create_task(self._refresh(db))
            if latest is None:
                await asyncio.wait({self._refreshing}, timeout=FIRST_WAIT_SECONDS)
        return self.latest

    async def _refresh(self, db: Database) -> None:
        try:
            stats = await store.store_stats(db)
        except Exception:  # the page says the figures are old; the log says why
            log.exception("counting runs for the dashboard failed")
            return
        by_state: Counter[str] = Counter()
        by_pool: dict[str, Counter[str]] = {}
        for pool_name, state, count in stats.runs:
            by_state[state] += count
            by_pool.setdefault(pool_name, Counter())[state] += count
        self.history.append(Snapshot(time.time(), by_state, by_pool,
                                     [name for name, paused in stats.pools if paused]))
