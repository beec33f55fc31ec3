"""The dispatch loop: claim due runs, render each into a JobSpec, submit it to its provider.

Wake-ups are events, not polling: ``wake()`` (a new or changed run, a freed slot) starts a
claim at once; otherwise the loop sleeps until the next due run or lease expiry. Each
claimed run is submitted in its own task under a per-provider concurrency bound; retryable
errors back off with jitter inside the run's lease, which a background task keeps renewed
while submits are in flight. Successful submissions are recorded in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from dispatcher import store, templates
from dispatcher.engine.backoff import backoff_delay
from dispatcher.engine.jobspec import build_job_spec
from dispatcher.models import RunState
from dispatcher.settings import Settings
from dispatcher.store import ClaimedRun, Database, SubmissionRecord
from dispatcher.store.common import utcnow
from providers import registry
from providers.base import JobSpec, PermanentProviderError, RetryableProviderError

log = logging.getLogger(__name__)

IDLE_RECHECK_SECONDS = 5.0  # runs due but held back by limits: look again this often anyway
MAX_SLEEP_SECONDS = 60.0


class Dispatcher:
    def __init__(self, db: Database, settings: Settings, owner: str,
                 identity_env: Callable[[ClaimedRun], dict[str, str]]):
        self.db = db
        self.settings = settings
        self.owner = owner
        self.identity_env = identity_env
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._began: set[str] = set()  # runs whose provider submit was called at least once
        self._bounds: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.submit_concurrency))
        self._records: asyncio.Queue[SubmissionRecord] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        self._wake.set()

    def is_in_flight(self, run_id: str) -> bool:
        return run_id in self._in_flight

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._claim_loop(), name="claim-loop"),
                       asyncio.create_task(self._record_loop(), name="record-loop"),
                       asyncio.create_task(self._lease_loop(), name="lease-loop")]

    async def stop(self) -> None:
        """Stop claiming; let in-flight submits finish, hand unstarted claims back."""
        self._stopping = True
        self._wake.set()
        claim_loop = self._tasks[0] if self._tasks else None
        if claim_loop:
            with contextlib.suppress(asyncio.CancelledError):
                await claim_loop
        # Runs whose submit never began go back to SCHEDULED, claimable at once. Runs whose
        # submit began keep their lease: the next claim retries with the same attempt, so an
        # idempotent provider finds what this one may have made.
        unstarted = {rid: t for rid, t in self._in_flight.items() if rid not in self._began}
        for task in unstarted.values():
            task.cancel()
        await asyncio.gather(*unstarted.values(), return_exceptions=True)
        if self._in_flight:
            _, pending = await asyncio.wait(list(self._in_flight.values()),
                                            timeout=self.settings.submit_timeout_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._flush_records()
        try:
            await store.release_claims(self.db, self.owner, list(unstarted),
                                       "handed back: the dispatcher stopped before submitting")
        except Exception:
            log.exception("could not hand back %d claimed run(s); their leases will expire",
                          len(unstarted))
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(*self._tasks[1:], return_exceptions=True)

    # ------------------------------------------------------------------ claiming

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                claimed = await self.claim_once()
            except Exception:
                log.exception("claiming runs failed; retrying")
                await self._sleep(backoff_delay(3))
                continue
            if claimed and not self._stopping:
                continue  # more may be due right now
            await self._sleep(await self._seconds_until_next())

    async def claim_once(self) -> int:
        room = self.settings.submit_concurrency * 4 - len(self._in_flight)
        if room <= 0:
            return 0
        claimed = await store.claim_due_runs(
            self.db, self.owner, limit=min(self.settings.claim_batch_size, room),
            lease_seconds=self.settings.lease_seconds)
        for run in claimed:
            task = asyncio.create_task(self._submit(run), name=f"submit-{run.run_id}")
            self._in_flight[run.run_id] = task
            task.add_done_callback(self._forget)
        return len(claimed)

    def _forget(self, task: asyncio.Task[None]) -> None:
        run_id = task.get_name().removeprefix("submit-")
        self._in_flight.pop(run_id, None)
        if not self._stopping:
            self._began.discard(run_id)

    async def _seconds_until_next(self) -> float:
        try:
            when = await store.next_wakeup(self.db)
        except Exception:
            log.exception("reading the next wake-up time failed")
            return IDLE_RECHECK_SECONDS
        if when is None:
            return MAX_SLEEP_SECONDS
        seconds = (when - utcnow()).total_seconds()
        # Past due but not claimable (paused, at a limit): an event will wake us.
        return IDLE_RECHECK_SECONDS if seconds <= 0 else min(seconds, MAX_SLEEP_SECONDS)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0))

    # ------------------------------------------------------------------ submitting

    async def _submit(self, run: ClaimedRun) -> None:
        try:
            spec = build_job_spec(run, self.identity_env(run))
            provider = registry.get_provider(run.pool_type)
        except (templates.TemplateError, registry.UnknownPoolType,
                registry.ProviderUnavailable, ValueError) as exc:
            await self._end(run, RunState.FAILED, f"could not build the job: {exc}")
            return
        errors: list[str] = []
        deadline = time.monotonic() + self.settings.submit_deadline_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._bounds[run.pool_type]:
                    self._began.add(run.run_id)
                    submission = await asyncio.wait_for(
                        provider.submit(spec), timeout=self.settings.submit_timeout_seconds)
            except PermanentProviderError as exc:
                await self._end(run, RunState.FAILED, f"submit refused by {run.pool_type}: {exc}")
                return
            except asyncio.CancelledError:
                raise
            except (RetryableProviderError, TimeoutError) as exc:
                errors.append(_describe(exc, self.settings.submit_timeout_seconds))
                hint = exc.retry_after if isinstance(exc, RetryableProviderError) else None
            except Exception as exc:  # an adapter bug or an unmapped SDK error
                log.exception("submit of run %s raised unexpectedly", run.run_id)
                errors.append(f"{type(exc).__name__}: {exc}")
                hint = None
            else:
                await self._records.put(_record(run, spec, submission.infra_id,
                                                submission.console_url))
                return
            delay = backoff_delay(attempt, hint=hint)
            if attempt >= self.settings.submit_max_attempts or \
                    time.monotonic() + delay > deadline:
                summary = "; ".join(f"#{i + 1}: {e}" for i, e in enumerate(errors))
                await self._end(run, RunState.FAILED,
                                f"could not submit after {attempt} attempt(s): {summary}")
                return
            log.info("submit of run %s failed (%s); retrying in %.2fs", run.run_id,
                     errors[-1], delay)
            await asyncio.sleep(delay)

    async def _end(self, run: ClaimedRun, state: RunState, message: str) -> None:
        log.warning("run %s %s: %s", run.run_id, state.value, message)
        try:
            await store.end_claimed_runs(self.db, self.owner, [(run.run_id, state, message)])
        except Exception:
            # The lease will expire and the next claim retries: nothing is lost.
            log.exception("could not record the end of run %s", run.run_id)

    # ------------------------------------------------------------------ recording

    async def _record_loop(self) -> None:
        while True:
            first = await self._records.get()
            batch = [first]
            while not self._records.empty() and len(batch) < 500:
                batch.append(self._records.get_nowait())
            await self._write_records(batch)

    async def _flush_records(self) -> None:
        batch: list[SubmissionRecord] = []
        while not self._records.empty():
            batch.append(self._records.get_nowait())
        if batch:
            await self._write_records(batch)

    async def _write_records(self, batch: list[SubmissionRecord]) -> None:
        for attempt in range(1, 6):
            try:
                await store.record_submissions(self.db, self.owner, batch)
                return
            except Exception:
                log.exception("recording %d submission(s) failed (attempt %d)", len(batch),
                              attempt)
                await asyncio.sleep(backoff_delay(attempt))
        # Leases expire; the next claim resubmits and idempotent providers return these.
        log.error("gave up recording %d submission(s); they will be reconciled", len(batch))

    # ------------------------------------------------------------------ leases

    async def _lease_loop(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            if not self._in_flight:
                continue
            try:
                await store.renew_leases(self.db, self.owner, list(self._in_flight),
                                         self.settings.lease_seconds)
            except Exception:
                log.exception("renewing leases failed")


def _record(run: ClaimedRun, spec: JobSpec, infra_id: str,
            console_url: str | None) -> SubmissionRecord:
    return SubmissionRecord(run_id=run.run_id, infra_id=infra_id, console_url=console_url,
                            job_configuration=spec.config, timeout_seconds=spec.timeout,
                            message=f"submitted to {run.pool_type} as {infra_id}")


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    return str(exc) or type(exc).__name__
