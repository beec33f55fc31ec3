"""Circuit breaker per work pool: pause a pool whose provider keeps failing, probe it after
a cool-down, resume it when a probe gets through.

Closed: every retryable submit failure (throttling, 5xx, a timeout, an unexpected error)
of a pool is counted, once per provider call: submits that waited on one shared call (a
task definition looked up once for fifty runs) fail with the same exception object, which
counts once. Any answer from the provider (a success, or a permanent refusal, which
proves it is reachable) resets the count. ``failure_threshold`` failures in a row,
across runs, within ``window_seconds`` open the breaker: the pool is paused in the store
with ``paused_by = "breaker"`` and a reason that ``work-pool ls/inspect`` show, and this
replica parks its retrying runs of that pool instead of hammering the provider.

Open -> half-open: from ``breaker_retry_at`` (``cooldown_seconds`` later) the next claim on
any replica takes one run of the pool as a probe (store/pool_breaker.py) and the dispatcher
submits it once. Success (or a permanent refusal): the pool resumes and every waiting run
goes. Failure: the probe run is parked again and the next probe waits another cool-down.

A user's pause is never touched (the store's compare-and-set needs ``paused_by =
"breaker"``), and a user's resume of a breaker-paused pool closes the breaker too: this
replica notices when it claims the pool's runs again.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from dispatcher import metrics, store
from dispatcher.store import Database
from dispatcher.store.common import utcnow
from dispatcher.store.reachability import log_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 10
    window_seconds: float = 60.0
    cooldown_seconds: float = 30.0


@dataclass
class _PoolState:
    failures: deque[float] = field(default_factory=deque)  # times of the current streak
    opened_at: float | None = None  # monotonic time this replica saw it open
    # Errors already counted, held weakly: while any submit still holds one it is the
    # same failure, and none is kept once every submit that saw it has moved on.
    counted: weakref.WeakSet[BaseException] = field(default_factory=weakref.WeakSet)


class CircuitBreakers:
    """This replica's breakers, one per pool name (created on first use)."""

    def __init__(self, db: Database, policy: BreakerPolicy, wake: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic):
        self.db = db
        self.policy = policy
        self.wake = wake  # the claim loop: a pool resumed, or the next probe's time moved
        self.clock = clock
        self._pools: dict[str, _PoolState] = {}

    def _state(self, pool: str) -> _PoolState:
        return self._pools.setdefault(pool, _PoolState())

    def is_open(self, pool: str) -> bool:
        return self._state(pool).opened_at is not None

    def record_answer(self, pool: str) -> None:
        """The provider answered (a submission or a permanent refusal): the streak ends."""
        self._state(pool).failures.clear()

    def saw_claimable(self, pool: str, claim_began: float) -> None:
        """A claim that began at ``claim_began`` (monotonic) got runs of ``pool`` the normal
        way: the pool is not paused any more (a user or another replica resumed it)."""
        state = self._state(pool)
        if state.opened_at is not None and claim_began > state.opened_at:
            log.info("work pool %s is claimable again; its circuit breaker is closed", pool)
            state.opened_at = None
            state.failures.clear()

    async def record_failure(self, pool: str, error: str,
                             cause: BaseException | None = None) -> bool:
        """Count a retryable failure, once per ``cause`` (the exception raised, when there
        is one); True if the breaker is open (now or already)."""
        state = self._state(pool)
        if state.opened_at is not None:
            return True
        if cause is not None:
            if cause in state.counted:
                return False
            state.counted.add(cause)
        now = self.clock()
        state.failures.append(now)
        while state.failures and now - state.failures[0] > self.policy.window_seconds:
            state.failures.popleft()
        if len(state.failures) < self.policy.failure_threshold:
            return False
        await self._open(pool, state, error)
        return True

    async def _open(self, pool: str, state: _PoolState, error: str) -> None:
        count = len(state.failures)
        reason = (f"circuit breaker: {count} submit failures in a row within "
                  f"{self.policy.window_seconds:g}s (last: {error}); probing the provider "
                  f"every {self.policy.cooldown_seconds:g}s and resuming when it answers")
        retry_at = utcnow() + timedelta(seconds=self.policy.cooldown_seconds)
        state.opened_at = self.clock()  # before the write: failures meanwhile see it open
        state.failures.clear()
        try:
            opened = await store.open_pool_breaker(self.db, pool, reason, retry_at)
        except Exception:
            # Park our runs anyway; the pool stays claimable and trips again if need be.
            log_failure(log, "could not pause work pool %s for its circuit breaker", pool)
            opened = False
        if opened:
            metrics.BREAKER_TRIPS.labels(pool).inc()
            log.warning("work pool %s paused: %s", pool, reason)
            self.wake()  # the claim loop must wake for the first probe

    async def probe_succeeded(self, pool: str) -> None:
        """The provider answered a probe: resume the pool."""
        metrics.BREAKER_PROBES.labels(pool, "answered").inc()
        state = self._state(pool)
        state.opened_at = None
        state.failures.clear()
        try:
            resumed = await store.close_pool_breaker(self.db, pool)
        except Exception:
            # The probe's retry time passes, and the next probe resumes it.
            log_failure(log, "could not resume work pool %s after a successful probe", pool)
            return
        if resumed:
            log.warning("work pool %s resumed: its provider answered a probe", pool)
            self.wake()

    async def probe_failed(self, pool: str, error: str) -> None:
        """The probe failed too: stay open, probe again after a cool-down."""
        metrics.BREAKER_PROBES.labels(pool, "failed").inc()
        state = self._state(pool)
        if state.opened_at is None:
            state.opened_at = self.clock()
        retry_at = utcnow() + timedelta(seconds=self.policy.cooldown_seconds)
        try:
            await store.delay_breaker_probe(self.db, pool, retry_at)
        except Exception:
            log_failure(log, "could not delay the next probe of work pool %s", pool)
        self.wake()  # the claim loop sleeps until the time the probe's claim set
        log.info("probe of work pool %s failed (%s); next probe in %gs", pool, error,
                 self.policy.cooldown_seconds)
