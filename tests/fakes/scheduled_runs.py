"""Scheduled runs made by hand, for tests that need runs "as the scheduler makes them" at
chosen slots (missed runs, metrics, the scale data's keys) without running a pass."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from dispatcher.models import ScheduleSpec
from dispatcher.store import Database, ScheduleTarget
from dispatcher.store.scheduled_runs import insert_run_rows
from dispatcher.store.tables import deployments, schedules, work_pools


async def active_schedules(db: Database) -> list[ScheduleTarget]:
    """Every active schedule of an unpaused deployment, with its pool's template."""
    def read(conn: Connection) -> list[ScheduleTarget]:
        rows = conn.execute(
            select(schedules.c.id, schedules.c.spec, deployments.c.id.label("deployment_id"),
                   deployments.c.name, deployments.c.pool_id, deployments.c.queue_id,
                   deployments.c.parameters, deployments.c.job_variables,
                   work_pools.c.base_job_template)
            .join(deployments, deployments.c.id == schedules.c.deployment_id)
            .join(work_pools, work_pools.c.id == deployments.c.pool_id)
            .where(schedules.c.active.is_(True), deployments.c.paused.is_(False)))
        return [ScheduleTarget(r.id, ScheduleSpec.model_validate(r.spec), r.deployment_id,
                               r.name, r.pool_id, r.queue_id, r.parameters, r.job_variables,
                               r.base_job_template) for r in rows]

    return await db.run(read)


async def insert_scheduled_runs(db: Database, rows: list[dict[str, Any]]) -> int:
    """Store runs made by ``scheduler.run_rows``; returns how many were new."""
    return await db.run(lambda conn: insert_run_rows(conn, rows), write=True)
