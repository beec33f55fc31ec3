"""The engine end to end in one process: event-driven dispatch, exactly-once after a lost
lease, retries, permanent errors, cancel, timeout, pause and resume, scheduling."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from dispatcher import operations, store
from dispatcher.engine.engine import Engine
from dispatcher.engine.watcher import state_for
from dispatcher.models import (
    DeploymentApply,
    RunCreate,
    RunState,
    ScheduleSpec,
    WorkPoolCreate,
    WorkPoolUpdate,
)
from dispatcher.settings import Settings
from dispatcher.store import Database
from dispatcher.store.common import utcnow
from dispatcher.store.runs import steps_to
from providers import registry
from providers.base import InfraPhase, InfraStatus
from tests.conftest import wait_for
from tests.fakes.recording_provider import STATE

registry.register_provider("recording", "tests.fakes.recording_provider")


def fast_settings(**overrides: object) -> Settings:
    values: dict[str, object] = dict(
        lease_seconds=30, watch_interval_seconds=0.05, scheduler_interval_seconds=3600,
        cancel_grace_seconds=0.5, submit_timeout_seconds=5)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _fresh_provider() -> None:
    STATE.reset()


@pytest.fixture
async def pool(db: Database) -> Database:
    await operations.pools.create_pool(db, WorkPoolCreate(name="rec", type="recording"))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name="rec", command=["job"]))
    return db


@pytest.fixture
async def engine(pool: Database) -> AsyncIterator[Engine]:
    eng = Engine(pool, fast_settings())
    await eng.start()
    yield eng
    await eng.stop()


async def state_of(db: Database, run_id: str) -> RunState:
    return (await store.get_run(db, run_id)).state


async def test_run_for_now_reaches_the_provider_without_polling(pool: Database) -> None:
    # The idle dispatcher sleeps up to a minute; only the wake-up event can be this fast.
    eng = Engine(pool, fast_settings())
    await eng.start()
    try:
        await wait_for(lambda: eng.dispatcher._wake.is_set() is False, what="idle loop")
        run, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
        eng.wake()
        await wait_for(lambda: STATE.submits[run.id] == 1, timeout=3, what="submit")
        await wait_for(lambda: state_of(pool, run.id), what="state")
        assert await state_of(pool, run.id) in (RunState.PENDING, RunState.RUNNING)
    finally:
        await eng.stop()


async def test_next_scheduled_run_is_a_timer(engine: Engine, pool: Database) -> None:
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate(
        scheduled_time=utcnow() + timedelta(seconds=0.5)))
    engine.wake()
    assert STATE.submits[run.id] == 0
    await wait_for(lambda: STATE.submits[run.id] == 1, timeout=5, what="timed submit")
    spec = STATE.specs[run.id]
    assert spec.command == ["job"]
    assert spec.env["PUSHPOOL_RUN_ID"] == run.id
    assert spec.labels["pushpool-pool"] == "rec"


async def test_runs_due_soon_are_claimed_ahead_and_submitted_at_their_time(
        pool: Database) -> None:
    # Many runs sharing one slot must not wait for claim after claim once it comes: they
    # are claimed ahead (PENDING before their time) and called in at their time, not before.
    eng = Engine(pool, fast_settings(claim_ahead_seconds=5.0, claim_batch_size=5))
    slot = utcnow() + timedelta(seconds=3)
    created = [await operations.runs.create_run(pool, "f/d", RunCreate(scheduled_time=slot))
               for _ in range(12)]
    run_ids = [run.id for run, _ in created]
    await eng.start()
    try:
        async def all_claimed() -> bool:
            return all([await _is(pool, run_id, RunState.PENDING) for run_id in run_ids])

        await wait_for(all_claimed, timeout=5, what="every run claimed")
        claimed_at = utcnow()
        await wait_for(lambda: all(STATE.submits[r] == 1 for r in run_ids), timeout=10,
                       what="every run submitted")
        assert claimed_at < slot, "the runs were not claimed ahead of their time"
        assert min(STATE.submitted_at[r] for r in run_ids) >= slot, "a job started early"
    finally:
        await eng.stop()


async def test_run_follows_provider_to_completion(engine: Engine, pool: Database) -> None:
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    engine.wake()
    await wait_for(lambda: STATE.submits[run.id] == 1, what="submit")
    await wait_for(lambda: _is(pool, run.id, RunState.RUNNING), what="RUNNING")
    STATE.phases[run.id] = InfraPhase.FAILED
    STATE.exit_codes[run.id] = 3
    await wait_for(lambda: _is(pool, run.id, RunState.FAILED), what="FAILED")
    final = await store.get_run(pool, run.id)
    assert final.exit_code == 3
    assert final.state_message == "exited with code 3"
    assert [h.state for h in final.history] == [
        RunState.SCHEDULED, RunState.PENDING, RunState.PENDING, RunState.RUNNING,
        RunState.FAILED]


async def _is(db: Database, run_id: str, state: RunState) -> bool:
    return await state_of(db, run_id) is state


async def test_lost_lease_is_submitted_exactly_once_by_the_next_dispatcher(
        pool: Database) -> None:
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    # A dispatcher claims the run, then vanishes before submitting.
    claimed = await store.claim_due_runs(pool, "vanished", limit=10, lease_seconds=0.3)
    assert [c.run_id for c in claimed] == [run.id]
    eng = Engine(pool, fast_settings())
    await eng.start()
    try:
        await wait_for(lambda: _is(pool, run.id, RunState.RUNNING), timeout=10,
                       what="reclaimed run running")
        assert STATE.submits[run.id] == 1
        assert STATE.specs[run.id].attempt == 1
    finally:
        await eng.stop()


async def test_retryable_errors_back_off_then_submit_once(engine: Engine,
                                                          pool: Database) -> None:
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    STATE.retryable_failures[run.id] = 2
    engine.wake()
    await wait_for(lambda: STATE.submits[run.id] == 1, timeout=10, what="submit")
    assert STATE.retryable_failures[run.id] == 0


async def test_permanent_error_fails_the_run_with_the_providers_message(
        engine: Engine, pool: Database) -> None:
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    STATE.permanent[run.id] = "image not found: nope:latest"
    engine.wake()
    await wait_for(lambda: _is(pool, run.id, RunState.FAILED), what="FAILED")
    final = await store.get_run(pool, run.id)
    assert "image not found: nope:latest" in (final.state_message or "")
    assert STATE.submits[run.id] == 0


async def test_cancel_running_run(engine: Engine, pool: Database) -> None:
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    engine.wake()
    await wait_for(lambda: _is(pool, run.id, RunState.RUNNING), what="RUNNING")
    cancelling = await store.cancel_run(pool, run.id)
    assert cancelling.state is RunState.CANCELLING
    engine.notify_cancel(run.id)
    await wait_for(lambda: _is(pool, run.id, RunState.CANCELLED), what="CANCELLED")
    assert STATE.cancels == [f"rec-{run.id}"]


def test_state_messages_say_a_thing_once_whichever_provider_said_it() -> None:
    cancelling = RunState.CANCELLING
    # The process provider's reason is "cancelled": not "cancelled: cancelled".
    assert state_for(InfraStatus(InfraPhase.CANCELLED, -15, "cancelled"), cancelling) == (
        RunState.CANCELLED, "cancelled")
    assert state_for(InfraStatus(InfraPhase.CANCELLED, None, "the task was stopped"),
                     cancelling) == (RunState.CANCELLED, "the task was stopped")
    assert state_for(InfraStatus(InfraPhase.FAILED, 1), cancelling) == (
        RunState.CANCELLED, "cancelled")
    # RUNNING reads the same seen by a poll or filled in before a final state.
    seen = state_for(InfraStatus(InfraPhase.RUNNING), RunState.PENDING)
    filled_in = steps_to("r", RunState.COMPLETED, "completed")[0]
    assert seen == (RunState.RUNNING, filled_in.message) == (RunState.RUNNING, "running")


async def test_cancel_scheduled_run_never_submits(engine: Engine, pool: Database) -> None:
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate(
        scheduled_time=utcnow() + timedelta(hours=1)))
    assert (await store.cancel_run(pool, run.id)).state is RunState.CANCELLED
    assert STATE.submits[run.id] == 0


async def test_timeout_cancels_and_fails_the_run(engine: Engine, pool: Database) -> None:
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate(job_variables={"timeout": 1}))
    engine.wake()
    await wait_for(lambda: _is(pool, run.id, RunState.FAILED), timeout=10, what="timeout")
    final = await store.get_run(pool, run.id)
    assert "timed out after 1s" in (final.state_message or "")
    assert STATE.cancels == [f"rec-{run.id}"]


async def test_paused_pool_keeps_runs_scheduled_until_resumed(engine: Engine,
                                                               pool: Database) -> None:
    await store.update_pool(pool, "rec", WorkPoolUpdate(paused=True, late_after_seconds=0))
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate(
        scheduled_time=utcnow() - timedelta(seconds=5)))
    engine.wake()
    listed = await store.list_runs(pool)
    assert [(r.id, r.display_state) for r in listed] == [(run.id, "LATE")]
    await engine.dispatcher.claim_once()
    assert STATE.submits[run.id] == 0
    await store.update_pool(pool, "rec", WorkPoolUpdate(paused=False))
    engine.wake()
    await wait_for(lambda: STATE.submits[run.id] == 1, what="submit after resume")


async def test_scheduler_materialises_ahead_without_duplicates(pool: Database) -> None:
    await operations.deployments.apply_deployment(pool, DeploymentApply(
        name="every-minute", flow_name="f", pool_name="rec", command=["job"],
        schedules=[ScheduleSpec(interval=60)]))
    eng = Engine(pool, fast_settings(scheduler_horizon_seconds=600, scheduler_max_runs=5))
    first = await eng.scheduler.schedule_once()
    assert first == 5
    assert await eng.scheduler.schedule_once() == 0  # same slots: nothing new
    runs = await store.list_runs(pool, deployment_ref="f/every-minute")
    slots = sorted(r.scheduled_time for r in runs)
    assert len(set(slots)) == 5
    assert all((b - a) == timedelta(seconds=60) for a, b in itertools.pairwise(slots))
    # An edit replaces the future runs; a restart (new engine) adds none twice.
    await operations.deployments.apply_deployment(pool, DeploymentApply(
        name="every-minute", flow_name="f", pool_name="rec", command=["job"],
        schedules=[ScheduleSpec(interval=120)]))
    assert await Engine(pool, fast_settings(scheduler_horizon_seconds=600,
                                            scheduler_max_runs=5)).scheduler.schedule_once() == 5
    assert await eng.scheduler.schedule_once() == 0
    runs = await store.list_runs(pool, deployment_ref="f/every-minute")
    assert len(runs) == 5
    assert {r.scheduled_time.timestamp() % 120 for r in runs} == {0.0}


async def test_pool_limit_holds_while_runs_are_active(pool: Database) -> None:
    await store.update_pool(pool, "rec", WorkPoolUpdate(concurrency_limit=2))
    eng = Engine(pool, fast_settings())
    await eng.start()
    try:
        ids = [(await operations.runs.create_run(pool, "f/d", RunCreate()))[0].id for _ in range(5)]
        eng.wake()
        await wait_for(lambda: sum(STATE.submits.values()) == 2, what="two submits")
        await eng.dispatcher.claim_once()
        assert sum(STATE.submits.values()) == 2
        first = next(i for i in ids if STATE.submits[i])
        STATE.phases[first] = InfraPhase.SUCCEEDED
        await wait_for(lambda: sum(STATE.submits.values()) == 3, what="slot freed")
    finally:
        await eng.stop()



async def test_stop_hands_back_unstarted_claims_and_keeps_started_ones_leased(
        pool: Database) -> None:
    STATE.hang = True
    eng = Engine(pool, fast_settings(submit_concurrency=1, submit_timeout_seconds=0.5))
    await eng.start()
    first, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    second, _ = await operations.runs.create_run(pool, "f/d", RunCreate(
        scheduled_time=utcnow() + timedelta(milliseconds=1)))
    eng.wake()
    await wait_for(lambda: eng.dispatcher.is_in_flight(second.id), what="both claimed")
    await eng.stop()
    began, waiting = await store.get_run(pool, first.id), await store.get_run(pool, second.id)
    assert began.state is RunState.PENDING and began.infra_id is None  # lease expires, retried
    assert waiting.state is RunState.SCHEDULED
    assert "dispatcher stopped" in (waiting.state_message or "")


async def test_a_watch_pass_over_many_runs_hands_the_loop_back_and_writes_every_change(
        pool: Database) -> None:
    # 260 runs started at once: one pass reads them all, lets other work run between
    # slices of its bookkeeping (the recording provider answers without suspending, as an
    # adapter answering from a cache does), and writes every change, in several chunks.
    from dispatcher.engine import watcher
    from dispatcher.engine.tick import run_tick

    count = 260
    assert count > watcher.APPLY_CHUNK
    run_ids = [(await operations.runs.create_run(pool, "f/d", RunCreate()))[0].id
               for _ in range(count)]
    await run_tick(pool, fast_settings(claim_batch_size=500), 30)
    assert all(STATE.submits[r] == 1 for r in run_ids)
    ticks = 0
    marks: list[int] = []
    STATE.on_logs = lambda: marks.append(ticks)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        eng = Engine(pool, fast_settings(watch_batch_size=500))
        await eng.watcher.watch_once()
    finally:
        task.cancel()
    assert len(marks) == count
    # Without the hand-backs every logs call of the pass runs in one step of the loop.
    assert len(set(marks)) >= count // 50
    states = [await state_of(pool, r) for r in run_ids]
    assert states == [RunState.RUNNING] * count
