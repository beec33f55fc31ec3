"""The watcher: follows submitted runs to a final state.

Each pass reads the active runs, asks each provider for their status in one batch, pulls
new log lines, and applies what changed: RUNNING when the provider says so, a final state
when it ends (after its last log lines are stored), CANCELLED once a requested cancel
took effect, FAILED for a run past its timeout (cancelled first). Runs whose dispatcher
restarted are picked up like any other: the provider re-attaches by infra id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from dispatcher import sealing, store
from dispatcher.crypto import SecretBox
from dispatcher.models import RUNNING_MESSAGE, RunState
from dispatcher.settings import Settings
from dispatcher.store import Database, WatchedRun
from dispatcher.store.common import utcnow
from dispatcher.store.reachability import log_failure
from dispatcher.store.runs import StateChange, append_logs_in, steps_to, transition_many
from providers import registry
from providers.base import InfraPhase, InfraRef, InfraStatus, LogLine, Provider

log = logging.getLogger(__name__)

FAST_POLL_SECONDS = 0.2  # providers on this host (process) answer from local files
APPLY_CHUNK = 100  # runs whose changes one transaction writes
# A pass hands the event loop back after this many runs, so that a page of hundreds of
# runs never holds up a claim or an API request for the whole of its bookkeeping (an
# adapter answering from a cache returns without letting the loop run).
YIELD_EVERY = 50


@dataclass
class Change:
    """What one pass decided for one run."""

    state: RunState | None = None
    message: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    logs: list[LogLine] = field(default_factory=list)
    cursor: str | None = None


def infra_ref(run: WatchedRun, box: SecretBox) -> InfraRef:
    """What the adapter's submit returned for a submitted run, for its later calls (its
    connection opened: the adapter gets clear values)."""
    assert run.infra_id is not None
    return InfraRef(run.infra_id, sealing.open_json(run.infra_connection or {}, box),
                    run.console_url)


def state_for(status: InfraStatus, current: RunState) -> tuple[RunState, str] | None:
    """Map a provider status onto the run state machine (None: nothing to change)."""
    phase = status.phase
    if current is RunState.CANCELLING:
        if phase is InfraPhase.SUCCEEDED:
            return RunState.COMPLETED, "completed before the cancellation took effect"
        if phase.is_final:  # the provider's reason alone: it often says "cancelled" too
            return RunState.CANCELLED, status.reason or "cancelled"
        return None
    if phase is InfraPhase.PENDING:
        return None
    if phase is InfraPhase.RUNNING:
        return (RunState.RUNNING, status.reason or RUNNING_MESSAGE) \
            if current is RunState.PENDING else None
    if phase is InfraPhase.SUCCEEDED:
        return RunState.COMPLETED, status.reason or "completed"
    if phase is InfraPhase.FAILED:
        code = f"exited with code {status.exit_code}" if status.exit_code is not None else ""
        return RunState.FAILED, status.reason or code or "failed"
    if phase is InfraPhase.CANCELLED:
        return RunState.CANCELLED, status.reason or "cancelled outside pushpool"
    if phase is InfraPhase.MISSING:
        return RunState.CRASHED, status.reason or "the infrastructure disappeared"
    return RunState.CRASHED, status.reason or "crashed"


def _interval(provider: Provider, watcher: Watcher) -> float:
    return float(getattr(provider, "poll_interval", 0) or
                 watcher.settings.watch_interval_seconds)


class Watcher:
    def __init__(self, db: Database, settings: Settings,
                 is_in_flight: Callable[[str], bool], on_final: Callable[[], None]):
        self.db = db
        self.settings = settings
        self.is_in_flight = is_in_flight
        self.on_final = on_final
        self._wake = asyncio.Event()
        self._cancelling: dict[str, asyncio.Task[None]] = {}
        self._timed_out: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_poll: dict[str, float] = {}
        self._resume_after = ""
        self._sweep_types: set[str] = set()
        self._unavailable: dict[str, str] = {}
        self._cleanups: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="watch-loop")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Cancels already sent keep going at the provider; don't wait for their grace.
        for task in self._cancelling.values():
            task.cancel()
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=5)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            interval = self.settings.watch_interval_seconds
            try:
                interval = await self.watch_once()
            except Exception:
                log_failure(log, "watching runs failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    async def watch_once(self) -> float:
        """One pass over a page of active runs; returns how long to wait before the next.

        A sweep pages through all active runs (a page per pass, so no pass hogs the store)
        and covers the pool types whose poll interval has elapsed when the sweep starts."""
        starting = self._resume_after == ""
        watched = await store.runs_to_watch(self.db, after_id=self._resume_after,
                                            limit=self.settings.watch_batch_size)
        more = len(watched) == self.settings.watch_batch_size
        by_type: dict[str, list[WatchedRun]] = defaultdict(list)
        for run in watched:
            by_type[run.pool_type].append(run)
        providers = {t: self._provider(t, group) for t, group in by_type.items()}
        loop_time = asyncio.get_running_loop().time()
        if starting:
            woken = self._wake.is_set()
            self._sweep_types = {t for t, p in providers.items() if p is None or woken or
                                 loop_time - self._last_poll.get(t, 0.0) >= _interval(p, self)}
            self._last_poll.update({t: loop_time for t in self._sweep_types})
        changes: dict[str, Change] = {}
        now = utcnow()
        refs: dict[str, InfraRef] = {}  # opened once a pass: each is a decryption
        for pool_type, group in by_type.items():
            provider = providers[pool_type]
            if provider is None:
                changes.update({run.run_id: Change(RunState.CRASHED, self._unavailable[pool_type])
                                for run in group})
            elif pool_type in self._sweep_types:
                changes.update(await self._watch_group(provider, group, now, refs))
        if changes:
            await self._apply(changes, {
                r.run_id: (provider, refs[r.run_id]) for r in watched
                if r.run_id in changes and r.run_id in refs
                and (provider := providers[r.pool_type]) is not None})
        self._resume_after = watched[-1].run_id if more and self._sweep_types else ""
        if self._resume_after:
            return 0.0
        intervals = [_interval(p, self) for p in providers.values() if p is not None]
        return min(intervals, default=self.settings.watch_interval_seconds)

    def _provider(self, pool_type: str, group: list[WatchedRun]) -> Provider | None:
        try:
            return registry.get_provider(pool_type)
        except (registry.UnknownPoolType, registry.ProviderUnavailable) as exc:
            self._unavailable[pool_type] = f"cannot follow the run: {exc}"
            return None

    async def _watch_group(self, provider: Provider, group: list[WatchedRun],
                           now: datetime, refs: dict[str, InfraRef]) -> dict[str, Change]:
        changes: dict[str, Change] = {}
        submitted = [r for r in group if r.infra_id]
        for run in group:
            # No claim holds it, so nothing was sent for it. (One whose claimer died with a
            # lease is claimed again to find its job: store/claims.py.)
            if run.infra_id is None and run.state is RunState.CANCELLING and \
                    not self.is_in_flight(run.run_id) and run.lease_owner is None:
                changes[run.run_id] = Change(RunState.CANCELLED, "cancelled before submission")
        if not submitted:
            return changes
        for i, run in enumerate(submitted):
            refs[run.run_id] = infra_ref(run, self.db.secrets)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        try:
            statuses = await provider.status_many([refs[r.run_id] for r in submitted])
        except Exception as exc:
            # A provider hiccup must never end a run: keep watching (ACI #22077).
            log.warning("status of %d %s run(s) failed: %s", len(submitted),
                        provider.pool_type, exc)
            return changes
        for i, run in enumerate(submitted):
            assert run.infra_id is not None
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            status = statuses.get(run.infra_id)
            if status is None:
                continue
            change = Change()
            try:
                batch = await provider.logs(refs[run.run_id], run.log_cursor)
                change.logs, change.cursor = batch.lines, batch.cursor
            except Exception as exc:
                log.warning("logs of run %s failed: %s", run.run_id, exc)
            decided = state_for(status, run.state)
            if run.run_id in self._timed_out and decided and decided[0] in (
                    RunState.CANCELLED, RunState.CRASHED, RunState.FAILED):
                decided = (RunState.FAILED, f"timed out after {run.timeout_seconds}s "
                           "and was cancelled")
            if decided:
                change.state, change.message = decided
                if status.exit_code is not None:
                    change.fields["exit_code"] = status.exit_code
            elif run.state is RunState.CANCELLING:
                self._request_cancel(provider, run)
            elif self._timed_out_now(run, now):
                log.info("run %s exceeded its timeout of %ss", run.run_id, run.timeout_seconds)
                self._timed_out.add(run.run_id)
                self._request_cancel(provider, run)
            if change.state or change.logs or change.cursor != run.log_cursor:
                changes[run.run_id] = change
        return changes

    def _timed_out_now(self, run: WatchedRun, now: datetime) -> bool:
        if not run.timeout_seconds or run.run_id in self._timed_out:
            return False
        started = run.started_at or run.created
        return now - started > timedelta(seconds=run.timeout_seconds)

    def _request_cancel(self, provider: Provider, run: WatchedRun) -> None:
        if run.run_id in self._cancelling or run.infra_id is None:
            return
        ref = infra_ref(run, self.db.secrets)

        async def cancel() -> None:
            try:
                await provider.cancel(ref, self.settings.cancel_grace_seconds)
            except Exception as exc:
                log.warning("cancelling run %s failed (will retry): %s", run.run_id, exc)
                self._cancelling.pop(run.run_id, None)
            self.wake()

        self._cancelling[run.run_id] = asyncio.create_task(cancel())

    async def _apply(self, changes: dict[str, Change],
                     infra_ids: dict[str, tuple[Provider, InfraRef]]) -> None:
        moved: list[str] = []
        items = list(changes.items())
        # A transaction per chunk of runs, not one per page: a claim or a run's creation
        # waits on the store's writer behind one chunk at most (a page of 500 runs that
        # all started is half a second of SQLite writes on a busy host).
        for start in range(0, len(items), APPLY_CHUNK):
            chunk = items[start:start + APPLY_CHUNK]
            steps: list[StateChange] = []
            for run_id, change in chunk:
                if change.state is not None:
                    steps += steps_to(run_id, change.state, change.message, change.fields)

            def apply(conn: Connection, chunk: list[tuple[str, Change]] = chunk,
                      steps: list[StateChange] = steps) -> list[str]:
                append_logs_in(conn, {run_id: (c.logs, c.cursor)
                                      for run_id, c in chunk if c.logs or c.cursor})
                return transition_many(conn, steps) if steps else []

            moved += await self.db.run(apply, write=True)
        ended = [r for r in moved if (state := changes[r].state) is not None and state.is_final]
        for run_id in ended:
            self._timed_out.discard(run_id)
            self._cancelling.pop(run_id, None)
            if (infra := infra_ids.get(run_id)) is not None:
                self._clean_up(infra[0], infra[1])
        if ended:
            self.on_final()

    def _clean_up(self, provider: Provider, ref: InfraRef) -> None:
        async def clean() -> None:
            try:
                await provider.cleanup(ref)
            except Exception as exc:  # leftovers cost money or disk, never correctness
                log.warning("cleanup of %s failed: %s", ref.infra_id, exc)

        task = asyncio.create_task(clean())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
