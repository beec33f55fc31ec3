"""Runs: creation (validated, idempotent), reads, state changes with history, cancel, logs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dispatcher import templates
from dispatcher.errors import Conflict, InvalidInput, NotFound
from dispatcher.models import (
    FINAL_STATES,
    LogEntry,
    Run,
    RunCreate,
    RunState,
    StateRecord,
    can_transition,
    display_state,
)
from dispatcher.store.common import new_id, utcnow
from dispatcher.store.db import Database
from dispatcher.store.deployments import deployment_row, validate_parameters
from dispatcher.store.tables import (
    deployments,
    run_logs,
    run_states,
    runs,
    work_pools,
    work_queues,
)
from providers.base import LogLine

MAX_PAGE = 1000


def _select() -> Any:
    return (select(runs, work_pools.c.name.label("pool_name"),
                   work_queues.c.name.label("queue_name"),
                   work_pools.c.late_after_seconds,
                   (deployments.c.flow_name + "/" + deployments.c.name).label("deployment_name"))
            .join(work_pools, work_pools.c.id == runs.c.pool_id)
            .join(work_queues, work_queues.c.id == runs.c.queue_id)
            .outerjoin(deployments, deployments.c.id == runs.c.deployment_id))


def _to_run(row: Row[Any], now: datetime, history: list[StateRecord] | None = None) -> Run:
    mapping = dict(row._mapping)
    state = RunState(mapping["state"])
    key = mapping.get("idempotency_key")
    if key and key.startswith(f"api:{mapping['deployment_id']}:"):
        mapping["idempotency_key"] = key.split(":", 2)[2]  # show the caller's own key
    mapping["display_state"] = display_state(state, mapping["scheduled_time"], now,
                                             mapping.pop("late_after_seconds"))
    return Run.model_validate({**mapping, "history": history or []})


def resolve_run_job(template: dict[str, Any], deployment_vars: dict[str, Any],
                    run_vars: dict[str, Any]) -> dict[str, Any]:
    """Render the run's job configuration; a bad override is a 422 naming its field."""
    try:
        templates.validate_job_variables(template.get("variables", {}), run_vars,
                                         enforce_required=False, field="job_variables")
        _, rendered = templates.resolve_job(template, deployment_vars, run_vars)
    except templates.TemplateError as exc:
        raise InvalidInput(exc.field, exc.message, exc.fix) from exc
    return rendered


async def create_run(db: Database, deployment_ref: str, data: RunCreate, *,
                     idempotency_key: str | None = None) -> tuple[Run, bool]:
    """A run of a deployment; the same idempotency key returns the same run."""
    async with db.read() as conn:
        dep = await deployment_row(conn, deployment_ref)
        pool = (await conn.execute(select(work_pools).where(
            work_pools.c.id == dep.pool_id))).one()
    if idempotency_key is not None:
        # Keys are scoped to the deployment: the same key elsewhere is another run.
        idempotency_key = f"api:{dep.id}:{idempotency_key}"
        existing = await _run_by_key(db, idempotency_key)
        if existing is not None:
            return existing, False
    parameters = {**dep.parameters, **data.parameters}
    validate_parameters(dep.parameter_schema, parameters, enforce_required=True)
    rendered = resolve_run_job(pool.base_job_template, dep.job_variables, data.job_variables)
    now = utcnow()
    run_id = new_id()
    scheduled = data.scheduled_time or now
    if scheduled.tzinfo is None:
        raise InvalidInput("scheduled_time", "time has no time zone",
                           "give an RFC 3339 time such as 2026-01-01T09:00:00Z")
    try:
        async with db.write() as conn:
            await conn.execute(insert(runs).values(
                id=run_id, name=data.name or f"{dep.name}-{run_id[:8]}",
                deployment_id=dep.id, pool_id=dep.pool_id, queue_id=dep.queue_id,
                state=RunState.SCHEDULED.value, state_message="created",
                scheduled_time=scheduled, parameters=parameters,
                job_variables=data.job_variables, job_configuration=rendered, attempt=0,
                idempotency_key=idempotency_key, auto_scheduled=False, created=now,
                updated=now))
            await conn.execute(insert(run_states).values(
                run_id=run_id, state=RunState.SCHEDULED.value,
                message=f"scheduled for {scheduled.isoformat()}", timestamp=now))
    except IntegrityError:
        if idempotency_key is not None:  # lost a race with the same key
            existing = await _run_by_key(db, idempotency_key)
            if existing is not None:
                return existing, False
        raise
    return await get_run(db, run_id), True


async def _run_by_key(db: Database, key: str) -> Run | None:
    async with db.read() as conn:
        row = (await conn.execute(_select().where(runs.c.idempotency_key == key))).first()
    return None if row is None else await get_run(db, row.id)


async def get_run(db: Database, run_id: str) -> Run:
    async with db.read() as conn:
        row = (await conn.execute(_select().where(runs.c.id == run_id))).first()
        if row is None:
            raise NotFound(f"run {run_id!r} not found; list runs with `pushpool run ls`")
        history = [StateRecord.model_validate(h._mapping) for h in await conn.execute(
            select(run_states.c.state, run_states.c.timestamp, run_states.c.message)
            .where(run_states.c.run_id == run_id).order_by(run_states.c.id))]
    return _to_run(row, utcnow(), history)


async def list_runs(db: Database, *, state: RunState | None = None,
                    pool_name: str | None = None, deployment_ref: str | None = None,
                    limit: int = 50, offset: int = 0) -> list[Run]:
    query = _select().order_by(runs.c.created.desc(), runs.c.id).limit(
        min(limit, MAX_PAGE)).offset(offset)
    if state is not None:
        query = query.where(runs.c.state == state.value)
    if pool_name is not None:
        query = query.where(work_pools.c.name == pool_name)
    async with db.read() as conn:
        if deployment_ref is not None:
            query = query.where(runs.c.deployment_id == (
                await deployment_row(conn, deployment_ref)).id)
        rows = list(await conn.execute(query))
    now = utcnow()
    return [_to_run(r, now) for r in rows]


async def set_run_state(db: Database, run_id: str, state: RunState,
                        message: str | None = None, **fields: Any) -> Run | None:
    """Move a run if the state machine allows it; None if it had already moved on."""
    async with db.write() as conn:
        moved = await transition(conn, run_id, state, message, **fields)
    return await get_run(db, run_id) if moved else None


async def transition(conn: AsyncConnection, run_id: str, state: RunState,
                     message: str | None = None, **fields: Any) -> bool:
    """Compare-and-set one run's state inside the caller's transaction, with history."""
    query = select(runs.c.state).where(runs.c.id == run_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    current = (await conn.execute(query)).scalar_one_or_none()
    if current is None:
        raise NotFound(f"run {run_id!r} not found")
    if not can_transition(RunState(current), state):
        return False
    now = utcnow()
    values: dict[str, Any] = {"state": state.value, "state_message": message, "updated": now,
                              **fields}
    if state is RunState.RUNNING:
        values.setdefault("started_at", now)
    if state in FINAL_STATES:
        values.setdefault("ended_at", now)
        values.update(lease_owner=None, lease_expires=None)
    await conn.execute(update(runs).where(runs.c.id == run_id, runs.c.state == current)
                       .values(**values))
    await conn.execute(insert(run_states).values(run_id=run_id, state=state.value,
                                                 message=message, timestamp=now))
    return True


async def cancel_run(db: Database, run_id: str) -> Run:
    """SCHEDULED runs end at once; submitted ones go CANCELLING until the provider stops them."""
    async with db.write() as conn:
        row = (await conn.execute(select(runs.c.state, runs.c.infra_id, runs.c.lease_owner)
                                  .where(runs.c.id == run_id))).first()
        if row is None:
            raise NotFound(f"run {run_id!r} not found; list runs with `pushpool run ls`")
        state = RunState(row.state)
        if state in FINAL_STATES:
            raise Conflict(f"run {run_id} is already {state.value}; nothing to cancel")
        if state is RunState.SCHEDULED:
            await transition(conn, run_id, RunState.CANCELLED, "cancelled before it started")
        elif state is not RunState.CANCELLING:
            await transition(conn, run_id, RunState.CANCELLING, "cancellation requested")
    return await get_run(db, run_id)


async def append_logs(db: Database, run_id: str, lines: list[LogLine],
                      cursor: str | None = None) -> None:
    async with db.write() as conn:
        await append_logs_in(conn, {run_id: (lines, cursor)})


async def append_logs_in(conn: AsyncConnection,
                         batches: dict[str, tuple[list[LogLine], str | None]]) -> None:
    """Store many runs' new log lines and their provider cursors in one transaction."""
    rows = [{"run_id": run_id, "timestamp": line.timestamp, "stream": line.stream,
             "message": line.message}
            for run_id, (lines, _) in batches.items() for line in lines]
    if rows:
        await conn.execute(insert(run_logs), rows)
    for run_id, (_, cursor) in batches.items():
        if cursor is not None:
            await conn.execute(update(runs).where(runs.c.id == run_id).values(log_cursor=cursor))


async def read_logs(db: Database, run_id: str, *, after_id: int = 0,
                    limit: int = MAX_PAGE) -> list[LogEntry]:
    async with db.read() as conn:
        exists = (await conn.execute(select(runs.c.id).where(runs.c.id == run_id))).first()
        if exists is None:
            raise NotFound(f"run {run_id!r} not found; list runs with `pushpool run ls`")
        rows = await conn.execute(select(run_logs).where(
            run_logs.c.run_id == run_id, run_logs.c.id > after_id)
            .order_by(run_logs.c.id).limit(min(limit, MAX_PAGE)))
        return [LogEntry.model_validate(r._mapping) for r in rows]


async def preview_pool(db: Database, name: str, limit: int = 20) -> list[Run]:
    """The next runs due in a pool, soonest first."""
    async with db.read() as conn:
        pool = (await conn.execute(select(work_pools.c.id).where(
            work_pools.c.name == name))).first()
        if pool is None:
            raise NotFound(f"work pool {name!r} not found; list pools with "
                           "`pushpool work-pool ls`")
        rows = list(await conn.execute(_select().where(
            runs.c.pool_id == pool.id, runs.c.state == RunState.SCHEDULED.value)
            .order_by(runs.c.scheduled_time).limit(min(limit, MAX_PAGE))))
    now = utcnow()
    return [_to_run(r, now) for r in rows]


