"""Provider faults through the real engine: retries with jittered backoff inside renewed
leases, exactly-once submission at the provider, permanent refusals, and the per-pool
circuit breaker (pause with a reason, half-open probe, resume; a user's pause is never
resumed by it). Two engines share one store where replicas matter."""

from __future__ import annotations

import itertools
import statistics
from datetime import timedelta

import pytest

from dispatcher import operations, store
from dispatcher.engine.backoff import backoff_delay
from dispatcher.engine.breaker import BreakerPolicy, CircuitBreakers
from dispatcher.engine.engine import Engine
from dispatcher.models import (
    FINAL_STATES,
    DeploymentApply,
    Run,
    RunCreate,
    RunState,
    WorkPoolCreate,
    WorkPoolUpdate,
)
from dispatcher.settings import Settings
from dispatcher.store import Database
from dispatcher.store.common import utcnow
from providers import registry
from tests.conftest import wait_for
from tests.fakes.faulty_provider import FAULTS
from tests.fakes.recording_provider import STATE

registry.register_provider("faulty", "tests.fakes.faulty_provider")

RUNS = 200
LEASE_SECONDS = 1.5
SUBMIT_TIMEOUT = 0.2


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = dict(
        lease_seconds=LEASE_SECONDS, watch_interval_seconds=0.05,
        scheduler_interval_seconds=3600, submit_timeout_seconds=SUBMIT_TIMEOUT,
        submit_backoff_base_seconds=0.02, submit_backoff_cap_seconds=0.3,
        submit_max_attempts=12, claim_batch_size=20, breaker_failure_threshold=10_000)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


pytestmark = pytest.mark.usefixtures("fresh_faulty_provider")


@pytest.fixture
async def pool(db: Database) -> Database:
    await operations.pools.create_pool(db, WorkPoolCreate(name="flaky", type="faulty"))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name="flaky", command=["job"]))
    return db


async def started(db: Database, config: Settings) -> Engine:
    engine = Engine(db, config)
    await engine.start()
    return engine


async def all_runs(db: Database) -> list[Run]:
    return await store.list_runs(db, limit=1000)


async def all_final(db: Database, count: int) -> bool:
    runs = await all_runs(db)
    return len(runs) == count and all(r.state in FINAL_STATES for r in runs)


async def history(db: Database, run_id: str) -> list[str]:
    return [h.message or "" for h in (await store.get_run(db, run_id)).history]


# ---------------------------------------------------------------------------- faults


async def test_every_run_is_submitted_once_or_fails_with_the_providers_message(
        pool: Database) -> None:
    FAULTS.retryable_share, FAULTS.hang_share = 0.30, 0.05
    ids = [(await operations.runs.create_run(pool, "f/d", RunCreate()))[0].id for _ in range(RUNS)]
    refused = {run_id: f"image not found: bad-{i}:latest" for i, run_id in enumerate(ids[:10])}
    FAULTS.permanent.update(refused)
    slow = ids[10:15]  # their first 8 calls hang: they retry for longer than a lease
    FAULTS.hang_first.update({run_id: 8 for run_id in slow})
    config = settings()
    first, second = await started(pool, config), await started(pool, config)
    try:
        first.wake()
        second.wake()
        await wait_for(lambda: all_final(pool, RUNS), timeout=60, interval=0.1,
                       what="every run final")
    finally:
        await first.stop()
        await second.stop()

    runs = {r.id: r for r in await all_runs(pool)}
    for run_id, run in runs.items():
        calls = FAULTS.calls_of(run_id)
        if run.state is RunState.COMPLETED:
            assert STATE.submits[run_id] == 1, (await history(pool, run_id), calls)
            assert not run.dead_letter and calls[-1].outcome == "submitted"
            continue
        assert run.state is RunState.FAILED and run.dead_letter, (run_id, run.state)
        assert STATE.submits[run_id] == 0
        # Every failed attempt is kept, and named in the message.
        assert [e.error for e in run.submit_errors] == [
            refused.get(run_id) or _error(c.outcome) for c in calls]
        if run_id in refused:
            assert run.state_message == f"submit refused by faulty: {refused[run_id]}"
        else:
            assert run.state_message is not None
            assert run.state_message.startswith("could not submit after 12 attempt(s): #1: ")
    assert {r for r in refused if runs[r].state is RunState.FAILED} == set(refused)
    assert sum(r.state is RunState.COMPLETED for r in runs.values()) >= RUNS - len(refused) - 2

    # No second replica ever took a run: one claim each, never a lease expiry, and both
    # replicas did claim runs.
    owners = set()
    for run_id in ids:
        messages = await history(pool, run_id)
        claims = [m for m in messages if m.startswith("claimed by ")]
        assert len(claims) == 1, (run_id, messages)
        assert not any("reclaimed" in m or "taken up again" in m for m in messages)
        owners.add(claims[0].removeprefix("claimed by "))
    assert owners == {first.owner, second.owner}

    # The slow runs retried inside their lease for longer than the lease itself lasts.
    for run_id in slow:
        calls = FAULTS.calls_of(run_id)
        assert [c.outcome for c in calls] == ["hang"] * 8 + ["submitted"]
        assert calls[-1].at - calls[0].at > LEASE_SECONDS
        assert STATE.submits[run_id] == 1

    # Retries back off with jitter: the waits before the first retry are spread out (their
    # spread, not their length, is checked: a busy test box stretches every wait).
    first_gaps = [calls[1].at - calls[0].at for run_id in ids
                  if len(calls := FAULTS.calls_of(run_id)) > 1
                  and calls[0].outcome in ("retryable", "throttled")]
    assert len(first_gaps) > 20
    assert statistics.pstdev(first_gaps) > 0.002


def _error(outcome: str) -> str:
    return {"retryable": "retryable: try again later", "throttled": "throttled: try again later",
            "hang": f"no answer within {SUBMIT_TIMEOUT:g}s",
            "down": "503 Service Unavailable: the provider is down"}.get(outcome, outcome)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    for attempt in range(1, 12):
        delays = [backoff_delay(attempt, base=0.5, cap=30) for _ in range(200)]
        ceiling = min(30, 0.5 * 2 ** (attempt - 1))
        assert all(0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 150  # jitter: no two replicas retry in lockstep
    assert backoff_delay(1, hint=7.5) >= 7.5  # a provider's retry-after is a floor


# ---------------------------------------------------------------------------- breaker


def breaker_settings(**overrides: object) -> Settings:
    return settings(**{"breaker_failure_threshold": 5, "breaker_window_seconds": 30,
                       "breaker_cooldown_seconds": 0.3, "submit_max_attempts": 100,
                       "submit_backoff_cap_seconds": 0.05, **overrides})


async def pool_row(db: Database) -> tuple[bool, str | None, str | None]:
    pool = await store.get_pool(db, "flaky")
    return pool.paused, pool.paused_by, pool.paused_reason


async def test_breaker_pauses_a_failing_pool_probes_it_and_resumes_it(pool: Database) -> None:
    FAULTS.down = True
    ids = [(await operations.runs.create_run(pool, "f/d", RunCreate()))[0].id for _ in range(12)]
    engine = await started(pool, breaker_settings())
    try:
        engine.wake()
        await wait_for(lambda: _paused_by_breaker(pool), timeout=10, what="breaker opened")
        _, _, reason = await pool_row(pool)
        assert reason is not None and reason.startswith("circuit breaker: 5 submit failures")
        assert "503 Service Unavailable" in reason
        await wait_for(lambda: not engine.dispatcher._in_flight, what="retries parked")
        waiting = await all_runs(pool)
        assert {r.state for r in waiting} <= {RunState.PENDING, RunState.SCHEDULED}
        parked = [r for r in waiting if r.state is RunState.PENDING]
        assert parked and all("circuit breaker" in (r.state_message or "") for r in parked)

        # Half-open: while the provider stays down, one probe per cool-down, no hammering.
        tripped_at = len(FAULTS.calls)
        await wait_for(lambda: len(FAULTS.calls) >= tripped_at + 3, timeout=10,
                       what="three probes")
        probes = FAULTS.calls[tripped_at:]
        assert all(b.at - a.at >= 0.25 for a, b in itertools.pairwise(probes))
        assert (await pool_row(pool))[0]

        FAULTS.down = False  # the provider recovers: the next probe resumes the pool
        await wait_for(lambda: all_final(pool, len(ids)), timeout=20, what="all runs done")
        assert await pool_row(pool) == (False, None, None)
        for run_id in ids:
            run = await store.get_run(pool, run_id)
            assert run.state is RunState.COMPLETED and STATE.submits[run_id] == 1
            assert not run.dead_letter
            # Parked runs kept their attempt: the provider saw one job name per run.
            assert STATE.specs[run_id].attempt == 1
    finally:
        await engine.stop()


async def _paused_by_breaker(db: Database) -> bool:
    paused, by, _ = await pool_row(db)
    return paused and by == "breaker"


async def test_any_replica_probes_a_breaker_paused_pool(pool: Database) -> None:
    """The replica that tripped the breaker may be gone: another one probes and resumes."""
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    assert await store.open_pool_breaker(pool, "flaky", "circuit breaker: test",
                                         utcnow() - timedelta(seconds=1))
    engine = await started(pool, breaker_settings())
    try:
        engine.wake()
        await wait_for(lambda: _is(pool, run.id, RunState.COMPLETED), timeout=10,
                       what="probe run completed")
        assert await pool_row(pool) == (False, None, None)
        assert [c.outcome for c in FAULTS.calls] == ["submitted"]
    finally:
        await engine.stop()


async def _is(db: Database, run_id: str, state: RunState) -> bool:
    return (await store.get_run(db, run_id)).state is state


async def test_breaker_never_touches_a_users_pause(pool: Database) -> None:
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    await store.update_pool(pool, "flaky", WorkPoolUpdate(paused=True))
    # The breaker cannot take over a user's pause, nor resume it...
    assert not await store.open_pool_breaker(pool, "flaky", "circuit breaker: x", utcnow())
    assert not await store.close_pool_breaker(pool, "flaky")
    assert await pool_row(pool) == (True, "user", "paused by a user")
    # ...nor probe it, however long it has been paused.
    later = utcnow() + timedelta(hours=1)
    claim = await store.claim_runs(pool, "me", limit=10, lease_seconds=5, now=later)
    assert claim.runs == []
    # A user pausing a breaker-paused pool takes it over: no probe, no resume.
    await store.update_pool(pool, "flaky", WorkPoolUpdate(paused=False))
    assert await store.open_pool_breaker(pool, "flaky", "circuit breaker: y", utcnow())
    await store.update_pool(pool, "flaky", WorkPoolUpdate(paused=True))
    claim = await store.claim_runs(pool, "me", limit=10, lease_seconds=5, now=later)
    assert claim.runs == [] and await pool_row(pool) == (True, "user", "paused by a user")
    assert (await store.get_run(pool, run.id)).state is RunState.SCHEDULED


async def test_probe_is_one_run_per_pool_and_blocks_other_probers(pool: Database) -> None:
    ids = [(await operations.runs.create_run(pool, "f/d", RunCreate()))[0].id for _ in range(3)]
    await store.open_pool_breaker(pool, "flaky", "circuit breaker: test", utcnow())
    later = utcnow() + timedelta(seconds=1)
    claim = await store.claim_runs(pool, "a", limit=10, lease_seconds=30, now=later)
    assert [(r.run_id, r.probe) for r in claim.runs] == [(ids[0], True)]
    # Another replica right after: the probe holds the pool for a lease.
    again = await store.claim_runs(pool, "b", limit=10, lease_seconds=30, now=later)
    assert again.runs == []
    assert (await store.get_run(pool, ids[1])).state is RunState.SCHEDULED


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_counts_consecutive_failures_within_the_window(pool: Database) -> None:
    clock = _Clock()
    woken: list[bool] = []
    breakers = CircuitBreakers(pool, BreakerPolicy(failure_threshold=3, window_seconds=10,
                                                   cooldown_seconds=60),
                               wake=lambda: woken.append(True), clock=clock)
    assert not await breakers.record_failure("flaky", "boom")
    assert not await breakers.record_failure("flaky", "boom")
    breakers.record_answer("flaky")  # an answer ends the streak
    assert not await breakers.record_failure("flaky", "boom")
    assert not await breakers.record_failure("flaky", "boom")
    clock.now = 11.0  # the first two are now outside the window
    assert not await breakers.record_failure("flaky", "boom")
    assert not (await pool_row(pool))[0]
    assert not await breakers.record_failure("flaky", "boom")
    assert await breakers.record_failure("flaky", "last straw")
    assert breakers.is_open("flaky")
    paused, by, reason = await pool_row(pool)
    assert paused and by == "breaker" and reason is not None and "last straw" in reason
    await breakers.probe_succeeded("flaky")
    assert not breakers.is_open("flaky") and woken == [True, True]  # opened, resumed
    assert await pool_row(pool) == (False, None, None)
