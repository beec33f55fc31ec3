"""The dispatch loop: claim due runs, render each into a JobSpec, submit it to its provider.

Wake-ups are events, not polling: ``wake()`` (a new or changed run, a freed slot) starts a
claim at once; otherwise the loop sleeps until the next due run, lease expiry or breaker
probe. Runs due within ``claim_ahead_seconds`` are claimed early and held until their
scheduled time, so a slot shared by many schedules is not submitted one claim batch after
another. Each claimed run is submitted in its own task under a per-provider concurrency
bound; retryable errors back off with jitter inside the run's lease, which a background
task keeps renewed while submits are in flight. Successful submissions are recorded in
batches.

A run that cannot be submitted ends FAILED as a dead letter with every attempt's error
(store/dead_letters.py): at once when the provider refuses it (PermanentProviderError),
after ``submit_max_attempts`` retryable failures, or when the next retry would pass its
deployment's ``submit_deadline_seconds`` (counted from its first failed attempt, across
claims and replicas). When a pool's circuit breaker opens (engine/breaker.py), its
retrying runs are parked instead, and a claimed probe run is submitted exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from dispatcher import metrics, sealing, store, templates
from dispatcher.crypto import SecretBox, SecretDecryptError
from dispatcher.engine import heap
from dispatcher.engine.backoff import backoff_delay
from dispatcher.engine.breaker import BreakerPolicy, CircuitBreakers
from dispatcher.engine.jobspec import BuiltJob, IdentityEnv, build_job
from dispatcher.models import RunState
from dispatcher.settings import Settings
from dispatcher.store import Claim, ClaimedRun, Database, SubmissionRecord
from dispatcher.store.common import utcnow
from dispatcher.store.dead_letters import (
    SubmitErrors,
    counted_attempts,
    dead_letter_message,
    first_attempt_at,
    submit_error,
)
from dispatcher.store.reachability import log_failure
from providers import registry
from providers.base import (
    InfraRef,
    JobSpec,
    PermanentProviderError,
    Provider,
    RetryableProviderError,
)

log = logging.getLogger(__name__)

IDLE_RECHECK_SECONDS = 5.0  # runs due but held back by limits: look again this often anyway
MAX_SLEEP_SECONDS = 60.0
MAX_RUNS_IN_HAND = 10_000  # claimed and not yet submitted, including those held for their time
JUST_DUE_SECONDS = 1.0  # a wake-up time this recent may not have been claimable yet...
JUST_DUE_RECHECK_SECONDS = 0.05  # ...so it is looked at again this soon


@dataclass(frozen=True)
class _Failed:
    """One submit attempt that the provider did not answer usefully: retry it."""

    error: str
    retry_after: float | None = None
    cause: BaseException | None = None  # the provider's error: one shared call, one failure


class _HeldBack:
    """The pool's circuit breaker opened while the run waited for its turn: no call made."""


HELD_BACK = _HeldBack()
Attempt = InfraRef | PermanentProviderError | _Failed | _HeldBack


def _no_op() -> None:
    return None


class Dispatcher:
    def __init__(self, db: Database, settings: Settings, owner: str,
                 identity_env: IdentityEnv,
                 on_cancel_requested: Callable[[], None] = _no_op):
        self.db = db
        self.settings = settings
        self.owner = owner
        self.identity_env = identity_env
        self.on_cancel_requested = on_cancel_requested  # overlap=cancel-previous stopped runs
        self.breakers = CircuitBreakers(db, BreakerPolicy(
            failure_threshold=settings.breaker_failure_threshold,
            window_seconds=settings.breaker_window_seconds,
            cooldown_seconds=settings.breaker_cooldown_seconds), wake=self.wake)
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._claimed: dict[str, ClaimedRun] = {}
        self._began: set[str] = set()  # runs whose provider submit was called at least once
        self._held: set[str] = set()  # claimed ahead, waiting for their scheduled time
        self._bounds: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.submit_concurrency))
        self._records: asyncio.Queue[SubmissionRecord] = asyncio.Queue()
        # Submitted, not yet recorded: their leases are renewed too, or another replica
        # could take a run the provider already has while the record waits for the store.
        # Counted: a run resubmitted after an outage can have two records queued.
        self._unrecorded: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        self._wake.set()

    def is_in_flight(self, run_id: str) -> bool:
        return run_id in self._in_flight

    async def wait_in_flight(self, seconds: float) -> int:
        """Wait until one submit in flight ends, or ``seconds`` pass; answer how many
        are still in flight (a serverless tick's bounded pass, engine/tick.py)."""
        tasks = [task for task in self._in_flight.values() if not task.done()]
        if tasks and seconds > 0:
            await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        return sum(not task.done() for task in self._in_flight.values())

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
        # Runs whose submit never began are handed back, claimable at once: SCHEDULED again,
        # or parked with their attempt if they were taken up again (an earlier claimer may
        # have called the provider). Runs whose submit began keep their lease: the next
        # claim retries with the same attempt, so an idempotent provider finds what this
        # one may have made.
        unstarted = {rid: t for rid, t in self._in_flight.items() if rid not in self._began}
        unstarted_runs = [self._claimed[rid] for rid in unstarted if rid in self._claimed]
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
        await self._hand_back(unstarted_runs,
                              "handed back: the dispatcher stopped before submitting")
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
                log_failure(log, "claiming runs failed; retrying")
                await self._sleep(backoff_delay(3))
                continue
            if claimed and not self._stopping:
                continue  # more may be due right now
            await self._sleep(await self._seconds_until_next())

    async def claim_once(self) -> int:
        # Runs held for their time cost a sleeping task each; only the ones submitting
        # count against the submit backlog.
        submitting = len(self._in_flight) - len(self._held)
        room = min(self.settings.submit_concurrency * 4 - submitting,
                   MAX_RUNS_IN_HAND - len(self._in_flight))
        if room <= 0:
            return 0
        began = time.monotonic()
        claim = await store.claim_runs(
            self.db, self.owner, limit=min(self.settings.claim_batch_size, room),
            lease_seconds=self.settings.lease_seconds,
            ahead_seconds=self.settings.claim_ahead_seconds)
        self._count_policies(claim)
        for run in claim.runs:
            if run.lease_expired:
                metrics.LEASE_EXPIRIES.labels(run.pool_type).inc()
            if not run.probe:
                self.breakers.saw_claimable(run.pool_name, began)
            task = asyncio.create_task(self._submit(run), name=f"submit-{run.run_id}")
            self._in_flight[run.run_id] = task
            self._claimed[run.run_id] = run
            task.add_done_callback(self._forget)
        return len(claim.runs)

    def _count_policies(self, claim: Claim) -> None:
        for reason in claim.skipped.values():
            metrics.SKIPPED_RUNS.labels(reason).inc()
        if claim.dead_lettered:
            metrics.DEAD_LETTERS.labels("deadline").inc(len(claim.dead_lettered))
            log.warning("%d parked run(s) passed their submit deadline and failed",
                        len(claim.dead_lettered))
        if claim.cancelling:
            log.info("cancelling %d run(s) that newer runs replace (overlap=cancel-previous)",
                     len(claim.cancelling))
            self.on_cancel_requested()

    def _forget(self, task: asyncio.Task[None]) -> None:
        run_id = task.get_name().removeprefix("submit-")
        self._in_flight.pop(run_id, None)
        if not self._stopping:
            self._claimed.pop(run_id, None)
            self._began.discard(run_id)
        self._held.discard(run_id)

    async def _seconds_until_next(self) -> float:
        try:
            when = await store.next_wakeup(self.db)
        except Exception:
            log_failure(log, "reading the next wake-up time failed")
            return IDLE_RECHECK_SECONDS
        if when is None:
            return MAX_SLEEP_SECONDS
        seconds = (when - utcnow()).total_seconds()
        ahead = self.settings.claim_ahead_seconds
        if seconds > ahead:
            return min(seconds - ahead, MAX_SLEEP_SECONDS)  # claim it that much early
        if seconds > 0:
            # Within the claim-ahead window yet not claimed: a lease or breaker probe (not
            # claimable early), or a run held back by a limit. Look again when it is due.
            return seconds
        if seconds <= -JUST_DUE_SECONDS:
            # Past due but not claimable (paused, at a limit): an event will wake us.
            return IDLE_RECHECK_SECONDS
        # Due just now (a lease that ran out between the claim and this read): look again
        # at once rather than after the idle recheck.
        return JUST_DUE_RECHECK_SECONDS

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0))

    # ------------------------------------------------------------------ submitting

    async def _submit(self, run: ClaimedRun) -> None:
        try:
            job = build_job(run, self.identity_env, self.db.secrets)
            spec = job.spec
            provider = registry.get_provider(run.pool_type)
        except (templates.TemplateError, registry.UnknownPoolType,
                registry.ProviderUnavailable, SecretDecryptError, ValueError) as exc:
            await self._dead_letter(run, "build", f"could not build the job: {exc}",
                                    list(run.submit_errors))
            return
        await self._hold_until_due(run)
        errors: SubmitErrors = list(run.submit_errors)
        deadline = (first_attempt_at(errors) or utcnow()) + timedelta(
            seconds=run.submit_deadline_seconds)
        first_call = not run.reclaimed and not errors  # the dispatch latency is measured once
        while True:
            call = spec if first_call else dataclasses.replace(spec, retried=True)
            outcome = await self._attempt(run, call, provider, first_call)
            first_call = False
            if isinstance(outcome, _HeldBack):
                await self._hand_back([run], _waiting(run), errors)
                return
            if isinstance(outcome, InfraRef):
                self._unrecorded[run.run_id] += 1
                await self._records.put(_record(run, job, outcome, self.db.secrets))
                await self._provider_answered(run)
                # The adapter's SDK, clients and sessions are loaded now, for good.
                heap.freeze_long_lived(run.pool_type)
                return
            if isinstance(outcome, PermanentProviderError):
                errors.append(submit_error(str(outcome), utcnow(), probe=run.probe))
                await self._dead_letter(run, "refused",
                                        f"submit refused by {run.pool_type}: {outcome}", errors)
                await self._provider_answered(run)
                return
            errors.append(submit_error(outcome.error, utcnow(), probe=run.probe))
            if not await self._retry_after_failure(run, outcome, errors, deadline):
                return

    async def _hold_until_due(self, run: ClaimedRun) -> None:
        """A run claimed ahead waits for its scheduled time: a job never starts early. (A
        cancel asked for meanwhile is seen when the submit is recorded, as for any claimed
        run: the watcher then cancels the job.)"""
        seconds = (run.scheduled_time - utcnow()).total_seconds()
        if seconds <= 0:
            return
        self._held.add(run.run_id)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._held.discard(run.run_id)

    async def _attempt(self, run: ClaimedRun, spec: JobSpec, provider: Provider,
                       first_call: bool) -> Attempt:
        """One provider call under the pool type's concurrency bound, outcome counted."""
        pool_type = run.pool_type
        timeout = self.settings.submit_timeout_seconds
        try:
            async with self._bounds[pool_type]:
                if not run.probe and self.breakers.is_open(run.pool_name):
                    return HELD_BACK
                self._began.add(run.run_id)
                if first_call:
                    metrics.observe_dispatch_latency(pool_type, run.scheduled_time,
                                                     run.created, utcnow())
                submission = await asyncio.wait_for(provider.submit(spec), timeout=timeout)
        except PermanentProviderError as exc:
            metrics.SUBMITS.labels(pool_type, "permanent").inc()
            return exc
        except asyncio.CancelledError:
            raise
        except RetryableProviderError as exc:
            metrics.SUBMITS.labels(pool_type, "throttled" if exc.throttled else "retryable").inc()
            if exc.throttled:
                metrics.THROTTLES.labels(pool_type).inc()
            return _Failed(str(exc) or type(exc).__name__, exc.retry_after, cause=exc)
        except TimeoutError:
            metrics.SUBMITS.labels(pool_type, "timeout").inc()
            return _Failed(f"no answer within {timeout:g}s")
        except Exception as exc:  # an adapter bug or an unmapped SDK error
            log.exception("submit of run %s raised unexpectedly", run.run_id)
            metrics.SUBMITS.labels(pool_type, "error").inc()
            return _Failed(f"{type(exc).__name__}: {exc}")
        metrics.SUBMITS.labels(pool_type, "submitted").inc()
        return submission

    async def _retry_after_failure(self, run: ClaimedRun, failed: _Failed,
                                   errors: SubmitErrors, deadline: datetime) -> bool:
        """After a failed attempt: True to try again (after a backoff); False once the run
        was parked, dead-lettered or cancelled."""
        if run.probe:
            await self._park_or_expire(run, errors, deadline)
            await self.breakers.probe_failed(run.pool_name, failed.error)
            return False
        breaker_open = await self.breakers.record_failure(run.pool_name, failed.error,
                                                          failed.cause)
        attempts = counted_attempts(errors)
        delay = backoff_delay(attempts, base=self.settings.submit_backoff_base_seconds,
                              cap=self.settings.submit_backoff_cap_seconds,
                              hint=failed.retry_after)
        if attempts >= self.settings.submit_max_attempts:
            await self._dead_letter(run, "attempts",
                                    f"could not submit after {attempts} attempt(s)", errors)
            return False
        if utcnow() + timedelta(seconds=delay) > deadline:
            await self._dead_letter(run, "deadline", _past_deadline(run, errors), errors)
            return False
        if breaker_open:
            await self._hand_back([run], _waiting(run), errors)
            return False
        log.info("submit of run %s failed (%s); retrying in %.2fs", run.run_id, failed.error,
                 delay)
        metrics.SUBMIT_RETRIES.labels(run.pool_type).inc()
        await asyncio.sleep(delay)
        return await self._still_ours(run)

    async def _still_ours(self, run: ClaimedRun) -> bool:
        """Between retries: a run cancelled meanwhile is not submitted."""
        try:
            state = await store.run_state(self.db, run.run_id)
        except Exception:
            log_failure(log, "reading the state of run %s failed; retrying its submit", run.run_id)
            return True
        if state is RunState.CANCELLING:
            await self._end(run, RunState.CANCELLED, "cancelled before submission")
        return state is RunState.PENDING

    async def _provider_answered(self, run: ClaimedRun) -> None:
        if run.probe:
            await self.breakers.probe_succeeded(run.pool_name)
        else:
            self.breakers.record_answer(run.pool_name)

    async def _park_or_expire(self, run: ClaimedRun, errors: SubmitErrors,
                              deadline: datetime) -> None:
        if utcnow() >= deadline:
            await self._dead_letter(run, "deadline", _past_deadline(run, errors), errors)
        else:
            await self._hand_back([run], _waiting(run), errors)

    async def _hand_back(self, runs: list[ClaimedRun], reason: str,
                         errors: SubmitErrors | None = None) -> None:
        """Return claimed runs: SCHEDULED again if nothing was ever sent for them, else
        parked with their attempt number (store/dead_letters.py), so an idempotent provider
        finds what an unanswered call made. ``errors``: the single run's attempts so far."""
        fresh = [r.run_id for r in runs if not r.reclaimed and not r.submit_errors
                 and not errors and r.run_id not in self._began]
        parked = [(r.run_id, errors if errors is not None else list(r.submit_errors))
                  for r in runs if r.run_id not in fresh]
        try:
            if fresh:
                await store.release_claims(self.db, self.owner, fresh, reason)
            if parked:
                await store.park_runs(self.db, self.owner, parked, reason)
        except Exception:
            log_failure(log, "could not hand back %d claimed run(s); their leases will expire "
                          "and another claim takes them up", len(runs))

    async def _dead_letter(self, run: ClaimedRun, kind: str, reason: str,
                           errors: SubmitErrors) -> None:
        message = reason if kind in ("refused", "build") else dead_letter_message(reason, errors)
        log.warning("run %s failed: %s", run.run_id, message)
        metrics.DEAD_LETTERS.labels(kind).inc()
        try:
            await store.dead_letter_runs(self.db, [(run.run_id, message, errors)])
        except Exception:
            # The lease will expire and the next claim retries: nothing is lost.
            log_failure(log, "could not record the end of run %s", run.run_id)

    async def _end(self, run: ClaimedRun, state: RunState, message: str) -> None:
        log.warning("run %s %s: %s", run.run_id, state.value, message)
        try:
            await store.end_claimed_runs(self.db, self.owner, [(run.run_id, state, message)])
        except Exception:
            # The lease will expire and the next claim retries: nothing is lost.
            log_failure(log, "could not record the end of run %s", run.run_id)

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
        try:
            for attempt in range(1, 6):
                try:
                    await store.record_submissions(self.db, self.owner, batch)
                    return
                except Exception:
                    log_failure(log, "recording %d submission(s) failed (attempt %d)",
                                  len(batch), attempt)
                    await asyncio.sleep(backoff_delay(attempt))
            # Leases expire; the next claim resubmits and idempotent providers return these.
            log.error("gave up recording %d submission(s); they will be reconciled",
                      len(batch))
        finally:
            for record in batch:
                left = self._unrecorded[record.run_id] - 1
                if left > 0:
                    self._unrecorded[record.run_id] = left
                else:
                    self._unrecorded.pop(record.run_id, None)

    # ------------------------------------------------------------------ leases

    async def _lease_loop(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            held = set(self._in_flight) | set(self._unrecorded)
            if not held:
                continue
            try:
                await store.renew_leases(self.db, self.owner, sorted(held),
                                         self.settings.lease_seconds)
            except Exception:
                log_failure(log, "renewing leases failed")


def _record(run: ClaimedRun, job: BuiltJob, ref: InfraRef, box: SecretBox
            ) -> SubmissionRecord:
    infra_id = ref.infra_id
    connection = sealing.seal_connection(dict(ref.connection), sealing.sealer(box))
    return SubmissionRecord(run_id=run.run_id, infra_id=infra_id, console_url=ref.console_url,
                            connection=connection,
                            job_configuration=job.stored_configuration,
                            timeout_seconds=job.spec.timeout,
                            message=f"submitted to {run.pool_type} as {infra_id}")


def _waiting(run: ClaimedRun) -> str:
    return (f"waiting: work pool {run.pool_name!r} is paused by its circuit breaker; the "
            "run is submitted when the provider answers again")


def _past_deadline(run: ClaimedRun, errors: SubmitErrors) -> str:
    return (f"not submitted within its submit deadline of {run.submit_deadline_seconds:g}s "
            f"({len(errors)} attempt(s))")
