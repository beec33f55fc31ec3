"""The scheduler's passes on a real store: only new slots per pass, horizon, min and max,
edits, pause and resume, paging, and two schedulers on one store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from dispatcher import operations, store
from dispatcher.engine import scheduler as scheduler_module
from dispatcher.engine.scheduler import Scheduler
from dispatcher.models import DeploymentApply, DeploymentUpdate, ScheduleSpec, WorkPoolCreate
from dispatcher.settings import Settings
from dispatcher.store import Database
from dispatcher.store.common import utcnow
from dispatcher.store.scheduled_runs import NewSlots, schedule_marks, store_new_slots
from dispatcher.store.tables import runs, schedules
from tests.fakes.scheduled_runs import active_schedules

MINUTE = timedelta(minutes=1)


@pytest.fixture
async def pool(db: Database) -> Database:
    await operations.pools.create_pool(db, WorkPoolCreate(name="p", type="process"))
    return db


def scheduler(db: Database, **settings: float) -> Scheduler:
    values = {"scheduler_horizon_seconds": 600, **settings}
    return Scheduler(db, Settings(**values), lambda: None)  # type: ignore[arg-type]


async def deploy(db: Database, spec: ScheduleSpec, name: str = "d") -> None:
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name=name, flow_name="f", pool_name="p", command=["true"], schedules=[spec]))


async def slots(db: Database, name: str = "d") -> list[datetime]:
    """The scheduled times of the deployment's runs, ascending; each slot must be unique."""
    found = await store.list_runs(db, deployment_ref=f"f/{name}")
    times = sorted(r.scheduled_time for r in found)
    assert len(set(times)) == len(times), "a slot has two runs"
    return times


async def materialised_until(db: Database) -> list[datetime | None]:
    return await db.run(lambda conn: list(conn.execute(
        select(schedules.c.materialised_until).order_by(schedules.c.id)).scalars()))


def minute_start() -> datetime:
    """A pass time half a minute past a minute and half an hour from an hour, so one-minute
    slots are never exactly 'now' and the next hourly slot is 30 minutes off."""
    return utcnow().replace(minute=30, second=30, microsecond=0) + timedelta(hours=1)


async def test_later_passes_insert_only_the_new_slots(pool: Database) -> None:
    await deploy(pool, ScheduleSpec(interval=60))
    sched, now = scheduler(pool), minute_start()
    assert await sched.schedule_once(now) == 10  # (now, now + 600 s]
    assert await materialised_until(pool) == [(await slots(pool))[-1]]
    assert await sched.schedule_once(now) == 0
    assert await sched.schedule_once(now + MINUTE) == 1
    assert await sched.schedule_once(now + 3 * MINUTE) == 2
    times = await slots(pool)
    assert len(times) == 13 and times[-1] == now + 13 * MINUTE - timedelta(seconds=30)
    assert await materialised_until(pool) == [times[-1]]


async def test_a_pass_after_a_long_gap_starts_from_now(pool: Database) -> None:
    await deploy(pool, ScheduleSpec(interval=60))
    sched, now = scheduler(pool), minute_start()
    await sched.schedule_once(now)
    later = now + timedelta(hours=2)
    assert await sched.schedule_once(later) == 10
    times = await slots(pool)
    assert len(times) == 20 and all(t > later for t in times[10:])


async def test_at_most_max_runs_ahead(pool: Database) -> None:
    await deploy(pool, ScheduleSpec(interval=10))  # 60 slots would fit in the horizon
    sched, now = scheduler(pool, scheduler_max_runs=5), minute_start()
    assert await sched.schedule_once(now) == 5
    assert await sched.schedule_once(now + timedelta(seconds=5)) == 0
    assert await sched.schedule_once(now + timedelta(seconds=10)) == 1
    assert await sched.schedule_once(now + timedelta(seconds=35)) == 2
    times = await slots(pool)
    assert len(times) == 8 and len([t for t in times if t > now + timedelta(seconds=35)]) == 5


async def test_at_least_min_runs_beyond_the_horizon(pool: Database) -> None:
    await deploy(pool, ScheduleSpec(interval=3600))  # none within a 600 s horizon
    sched, now = scheduler(pool, scheduler_min_runs=3), minute_start()
    assert await sched.schedule_once(now) == 3
    first = (await slots(pool))[0]
    assert first > now + timedelta(seconds=600)
    assert await sched.schedule_once(first - timedelta(seconds=1)) == 0
    # Once the first slot is past, a fourth keeps three ahead.
    assert await sched.schedule_once(first) == 1
    times = await slots(pool)
    assert len(times) == 4 and times[-1] == first + timedelta(hours=3)


async def test_an_edit_remakes_the_slots_of_the_new_schedule(pool: Database) -> None:
    await deploy(pool, ScheduleSpec(interval=60))
    sched, now = scheduler(pool), utcnow()
    assert await sched.schedule_once(now) == 10
    await deploy(pool, ScheduleSpec(interval=120))
    assert await materialised_until(pool) == [None]
    assert await sched.schedule_once(now) == 5
    times = await slots(pool)
    assert len(times) == 5 and {t.timestamp() % 120 for t in times} == {0.0}
    assert await sched.schedule_once(now) == 0


async def test_pause_and_resume_neither_lose_nor_duplicate_slots(pool: Database) -> None:
    await deploy(pool, ScheduleSpec(interval=60))
    sched = scheduler(pool)
    assert await sched.schedule_once(utcnow()) == 10
    await store.update_deployment(pool, "f/d", DeploymentUpdate(paused=True))
    assert await slots(pool) == [] and await materialised_until(pool) == [None]
    assert await sched.schedule_once(utcnow()) == 0  # paused: nothing made
    await store.update_deployment(pool, "f/d", DeploymentUpdate(paused=False))
    now = utcnow()
    assert await sched.schedule_once(now) == 10
    times = await slots(pool)
    assert times == [times[0] + i * MINUTE for i in range(10)] and times[0] > now
    assert await sched.schedule_once(now) == 0


async def test_two_schedulers_on_one_store_make_each_slot_once(pool: Database) -> None:
    for i in range(3):
        await deploy(pool, ScheduleSpec(interval=60), name=f"d{i}")
    one, two, now = scheduler(pool), scheduler(pool), minute_start()
    made = await asyncio.gather(one.schedule_once(now), two.schedule_once(now))
    assert sum(made) == 30
    made = await asyncio.gather(one.schedule_once(now + MINUTE),
                                two.schedule_once(now + 2 * MINUTE))
    # A scheduler whose schedules the other moved on meanwhile leaves them to its next pass.
    made.append(await two.schedule_once(now + 2 * MINUTE))
    assert sum(made) == 6  # two new slots per deployment, each made once
    for i in range(3):
        assert len(await slots(pool, f"d{i}")) == 12
    keys = await pool.run(lambda conn: list(conn.execute(
        select(runs.c.idempotency_key)).scalars()))
    assert len(keys) == len(set(keys)) == 36


async def test_a_schedule_changed_since_it_was_read_is_left_alone(pool: Database) -> None:
    await deploy(pool, ScheduleSpec(interval=60))
    now = minute_start()
    (target,) = await active_schedules(pool)
    (mark,) = await schedule_marks(pool, "", 10, now + MINUTE, within_horizon=True)
    slot = now + timedelta(seconds=30)
    new = NewSlots(mark.schedule_id, None, slot, scheduler_module.run_rows(target, [slot], now))
    await store.update_deployment(pool, "f/d", DeploymentUpdate(paused=True))
    assert await store_new_slots(pool, [new]) == 0  # paused since it was read
    await store.update_deployment(pool, "f/d", DeploymentUpdate(paused=False))
    moved = NewSlots(new.schedule_id, now, new.until, new.rows)  # another pass went on
    assert await store_new_slots(pool, [moved]) == 0
    assert await slots(pool) == [] and await materialised_until(pool) == [None]
    assert await store_new_slots(pool, [new]) == 1
    assert await materialised_until(pool) == [slot]


async def test_passes_page_through_many_schedules(pool: Database,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler_module, "PAGE_SIZE", 2)
    monkeypatch.setattr(scheduler_module, "ROWS_PER_TRANSACTION", 7)
    for i in range(5):
        await deploy(pool, ScheduleSpec(interval=60), name=f"d{i}")
    await deploy(pool, ScheduleSpec(interval=3600), name="hourly")
    sched, now = scheduler(pool, scheduler_min_runs=3), minute_start()
    assert await sched.schedule_once(now) == 5 * 10 + 3
    assert await sched.schedule_once(now + MINUTE) == 5
    assert all(until is not None for until in await materialised_until(pool))
