"""Each schedule slot is materialised once, however many replicas and ticks run the
scheduler at once on one PostgreSQL: several processes run scheduler passes together,
with the schedules' progress reset between passes (as an edit that keeps the spec does),
and every (deployment, slot) has one run. The slot's idempotency key, unique in the
schema, is what holds when the progress marks cannot."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from datetime import datetime
from multiprocessing.synchronize import Barrier
from typing import Any

from sqlalchemy import inspect, select, update

from dispatcher import operations
from dispatcher.models import DeploymentApply, ScheduleSpec, WorkPoolCreate
from dispatcher.store import Database
from dispatcher.store.common import utcnow
from dispatcher.store.tables import runs, schedules
from tests.conftest import _run_sync, truncate_postgres

PROCESSES = 4
PASSES = 3
DEPLOYMENTS = 10


def _scheduler_process(url: str, now: datetime, barrier: Barrier, results: Any) -> None:
    from dispatcher.engine.scheduler import Scheduler
    from dispatcher.settings import Settings

    async def passes() -> list[int]:
        db = await Database.connect(url, migrate=False)
        scheduler = Scheduler(db, Settings(scheduler_horizon_seconds=3600,
                                           scheduler_max_runs=60), on_new_runs=lambda: None)
        inserted = []
        try:
            for _ in range(PASSES):
                await asyncio.to_thread(barrier.wait, 60)
                inserted.append(await scheduler.schedule_once(now))
                await asyncio.to_thread(barrier.wait, 60)
                # Every process forgets how far the schedules are materialised, at once.
                await db.run(lambda conn: conn.execute(
                    update(schedules).values(materialised_until=None)), write=True)
        finally:
            await db.close()
        return inserted

    results.put(asyncio.run(passes()))


async def _deploy(url: str) -> None:
    db = await Database.connect(url, migrate=False)
    try:
        await operations.pools.create_pool(db, WorkPoolCreate(name="p", type="process"))
        for n in range(DEPLOYMENTS):
            await operations.deployments.apply_deployment(db, DeploymentApply(
                name=f"d{n}", flow_name="f", pool_name="p", command=["true"],
                schedules=[ScheduleSpec(interval=60), ScheduleSpec(interval=120)]))
    finally:
        await db.close()


def test_concurrent_scheduler_passes_materialise_each_slot_once(postgres_url: str) -> None:
    truncate_postgres(postgres_url)
    _run_sync(_deploy(postgres_url))
    now = utcnow()  # one clock for every pass: the same target slots each time
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [context.Process(target=_scheduler_process,
                                 args=(postgres_url, now, barrier, results))
                 for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    inserted = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    rows = _run_sync(_read_runs(postgres_url))
    per_slot = Counter(rows)
    assert per_slot and max(per_slot.values()) == 1, per_slot.most_common(3)
    # Two schedules of one deployment share their even minutes: one run for both.
    assert len(per_slot) == DEPLOYMENTS * 60
    assert sum(map(sum, inserted)) == len(rows)  # no pass counted a run it did not store
    assert sum(first for first, *_ in inserted) == len(rows)  # later passes: all taken


async def _read_runs(url: str) -> list[tuple[str, Any]]:
    db = await Database.connect(url, migrate=False)
    try:
        def read(conn: Any) -> list[tuple[str, Any]]:
            return [(r.deployment_id, r.scheduled_time) for r in conn.execute(
                select(runs.c.deployment_id, runs.c.scheduled_time))]

        def unique_keys(conn: Any) -> list[list[str]]:
            return [c["column_names"] for c in inspect(conn).get_unique_constraints("runs")]

        assert ["idempotency_key"] in await db.run(unique_keys)
        return await db.run(read)
    finally:
        await db.close()
