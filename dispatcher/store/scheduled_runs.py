"""Materialising scheduled runs: the schedules a scheduler pass reads, page by page, and
storing the runs of their new slots together with how far each schedule is materialised.

``schedules.materialised_until`` is the last slot a run was stored for; a pass makes only
the slots after it. It is NULL for a new schedule and is reset to NULL when a deployment is
edited or paused (store/deployments.py), so the scheduler remakes that deployment's slots
from the current time. The per-slot idempotency key (``schedule_slot_key``) stays the safety
net: two replicas making the same slot store one run.

Storing a page re-checks, in the writing transaction, that each schedule still exists, is
active, belongs to an unpaused deployment and is materialised exactly as far as when it was
read; schedules that changed meanwhile are left for the next pass. On PostgreSQL those rows
are locked (deployments FOR SHARE, then schedules FOR NO KEY UPDATE, in id order), so an
edit or pause either waits for the runs and then drops them, or goes first and is seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from dispatcher.models import RunState, ScheduleSpec
from dispatcher.store.common import utcnow
from dispatcher.store.db import Database
from dispatcher.store.tables import (
    as_utc,
    deployments,
    run_states,
    runs,
    schedules,
    work_pools,
)

SCHEDULED = RunState.SCHEDULED.value
ROWS_PER_STATEMENT = 1000  # runs per multi-row INSERT (well under both backends' bind limits)


@dataclass(frozen=True)
class ScheduleTarget:
    schedule_id: str
    spec: ScheduleSpec
    deployment_id: str
    deployment_name: str
    pool_id: str
    queue_id: str
    parameters: dict[str, Any]
    job_variables: dict[str, Any]
    base_job_template: dict[str, Any]


@dataclass(frozen=True)
class ScheduleMark:
    """An active schedule of an unpaused deployment and how far it is materialised."""

    schedule_id: str
    deployment_id: str
    spec: dict[str, Any]  # as stored; dispatcher.schedules.parse_spec caches the parse
    materialised_until: datetime | None


@dataclass(frozen=True)
class DeploymentFields:
    """What a scheduled run copies from its deployment."""

    name: str
    pool_id: str
    queue_id: str
    parameters: dict[str, Any]
    job_variables: dict[str, Any]


@dataclass(frozen=True)
class NewSlots:
    """One schedule's new runs and the last of their slots, stored only if the schedule is
    still materialised until ``seen_until`` when the write happens."""

    schedule_id: str
    seen_until: datetime | None
    until: datetime
    rows: list[dict[str, Any]]


_SCHEDULED_NOW = and_(schedules.c.active.is_(True), deployments.c.paused.is_(False))


async def schedule_marks(db: Database, after_id: str, limit: int, horizon_end: datetime,
                         *, within_horizon: bool) -> list[ScheduleMark]:
    """The next ``limit`` schedules by id after ``after_id``: with ``within_horizon`` those
    materialised until before ``horizon_end`` (or not at all), otherwise the others."""
    until = schedules.c.materialised_until
    reach: ColumnElement[bool] = (or_(until.is_(None), until < horizon_end) if within_horizon
                                  else until >= horizon_end)
    query = (select(schedules.c.id, schedules.c.deployment_id, schedules.c.spec, until)
             .join(deployments, deployments.c.id == schedules.c.deployment_id)
             .where(_SCHEDULED_NOW, reach, schedules.c.id > after_id)
             .order_by(schedules.c.id).limit(limit))

    def read(conn: Connection) -> list[ScheduleMark]:
        return [ScheduleMark(r.id, r.deployment_id, r.spec, r.materialised_until)
                for r in conn.execute(query)]

    return await db.run(read)


async def deployment_fields(db: Database, deployment_ids: Iterable[str]
                            ) -> dict[str, DeploymentFields]:
    ids = sorted(set(deployment_ids))

    def read(conn: Connection) -> dict[str, DeploymentFields]:
        return {r.id: DeploymentFields(r.name, r.pool_id, r.queue_id, r.parameters,
                                       r.job_variables)
                for r in conn.execute(
                    select(deployments.c.id, deployments.c.name, deployments.c.pool_id,
                           deployments.c.queue_id, deployments.c.parameters,
                           deployments.c.job_variables).where(deployments.c.id.in_(ids)))}

    return await db.run(read)


async def pool_templates(db: Database) -> dict[str, dict[str, Any]]:
    """Every pool's base job template by pool id (read once per scheduler pass)."""
    def read(conn: Connection) -> dict[str, dict[str, Any]]:
        return {r.id: r.base_job_template for r in conn.execute(
            select(work_pools.c.id, work_pools.c.base_job_template))}

    return await db.run(read)


def schedule_slot_key(deployment_id: str, slot: datetime) -> str:
    """One run per deployment and slot, whatever restarts or schedule edits happen."""
    return f"scheduled:{deployment_id}:{slot.isoformat()}"


async def store_new_slots(db: Database, batch: list[NewSlots]) -> int:
    """Store the runs of the schedules in ``batch`` that nobody changed since they were read,
    skipping slots that already have a run, and advance their ``materialised_until``, all in
    one transaction; returns how many runs were inserted."""
    def write(conn: Connection) -> int:
        current = _lock_unchanged(conn, batch)
        kept = [s for s in batch if s.schedule_id in current]
        if not kept:
            return 0
        conn.execute(update(schedules).where(schedules.c.id == bindparam("b_id"))
                     .values(materialised_until=bindparam("b_until")),
                     [{"b_id": s.schedule_id, "b_until": s.until} for s in kept])
        return insert_run_rows(conn, [row for s in kept for row in s.rows])

    return await db.run(write, write=True)


def _lock_unchanged(conn: Connection, batch: list[NewSlots]) -> set[str]:
    """The ids in ``batch`` whose schedule is still due for these slots (see module doc)."""
    ids = sorted(s.schedule_id for s in batch)
    query = (select(schedules.c.id, schedules.c.materialised_until)
             .join(deployments, deployments.c.id == schedules.c.deployment_id)
             .where(schedules.c.id.in_(ids), _SCHEDULED_NOW).order_by(schedules.c.id))
    if conn.dialect.name == "postgresql":
        # Deployments first, as edits and pauses update them before their schedules.
        conn.execute(select(deployments.c.id).where(deployments.c.id.in_(
            select(schedules.c.deployment_id).where(schedules.c.id.in_(ids))))
            .order_by(deployments.c.id).with_for_update(read=True))
        query = query.with_for_update(of=schedules, key_share=True)
    seen = {s.schedule_id: s.seen_until for s in batch}
    return {r.id for r in conn.execute(query) if r.materialised_until == seen[r.id]}


# One statement, compiled once: SQLAlchemy's "insertmanyvalues" sends the rows given to
# it as multi-row INSERTs of ROWS_PER_STATEMENT rows each. (A statement with the rows in
# .values() would be compiled anew for every batch, which cost more than the inserts.)
_INSERT_NEW_RUNS = {
    "postgresql": postgresql.insert(runs).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(runs).on_conflict_do_nothing(),
}


def insert_run_rows(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert scheduled runs and their first history rows, skipping slots that already
    have a run; returns how many were inserted."""
    now = utcnow()
    stmt = (_INSERT_NEW_RUNS[conn.dialect.name]
            .returning(runs.c.id, runs.c.scheduled_time)
            .execution_options(insertmanyvalues_page_size=ROWS_PER_STATEMENT))
    inserted = [(r.id, r.scheduled_time) for r in conn.execute(stmt, rows)] if rows else []
    if inserted:
        conn.execute(insert(run_states), [
            {"run_id": run_id, "state": SCHEDULED, "timestamp": now,
             "message": f"scheduled for {as_utc(when).isoformat()} by its schedule"}
            for run_id, when in inserted])
    return len(inserted)
