"""Runs: creation (validated, idempotent), reads, state changes with history, cancel, logs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from dispatcher.errors import Conflict, InvalidInput, NotFound
from dispatcher.models import (
    ACTIVE_STATES,
    FINAL_STATES,
    RUNNING_MESSAGE,
    LogEntry,
    Run,
    RunCreate,
    RunState,
    StateRecord,
    can_transition,
    display_state,
)
from dispatcher.store.common import LogLineLike, new_id, pairs, utcnow
from dispatcher.store.db import Database
from dispatcher.store.deployments import (
    by_ref,
    deployment_row,
    find_deployment,
)
from dispatcher.store.tables import (
    deployments,
    run_logs,
    run_states,
    runs,
    work_pools,
    work_queues,
)

MAX_PAGE = 1000
DEFAULT_LATE_AFTER_SECONDS = 15.0  # work_pools.late_after_seconds' default


def _select() -> Any:
    # A final run may have outlived its pool, queue or deployment: then the names it ran
    # under come from its former_* columns (store/pools.py, store/deployments.py).
    return (select(runs, func.coalesce(work_pools.c.name, runs.c.former_pool_name)
                   .label("pool_name"),
                   func.coalesce(work_queues.c.name, runs.c.former_queue_name)
                   .label("queue_name"),
                   func.coalesce(work_pools.c.late_after_seconds, DEFAULT_LATE_AFTER_SECONDS)
                   .label("late_after_seconds"),
                   func.coalesce(deployments.c.flow_name + "/" + deployments.c.name,
                                 runs.c.former_deployment_name).label("deployment_name"))
            .outerjoin(work_pools, work_pools.c.id == runs.c.pool_id)
            .outerjoin(work_queues, work_queues.c.id == runs.c.queue_id)
            .outerjoin(deployments, deployments.c.id == runs.c.deployment_id))


def _to_run(row: Row[Any], now: datetime, history: list[StateRecord] | None = None) -> Run:
    return _to_run_values(dict(row._mapping), now, history)


def _to_run_values(mapping: dict[str, Any], now: datetime,
                   history: list[StateRecord] | None = None) -> Run:
    state = RunState(mapping["state"])
    key = mapping.get("idempotency_key")
    if key and key.startswith(f"api:{mapping['deployment_id']}:"):
        mapping["idempotency_key"] = key.split(":", 2)[2]  # show the caller's own key
    mapping["display_state"] = display_state(state, mapping["scheduled_time"], now,
                                             mapping.pop("late_after_seconds"))
    return Run.model_validate({**mapping, "history": history or []})


# What a new run needs from its deployment, queue and pool, read in one statement. The
# statements below are built once: SQLAlchemy then reuses their compiled form on every call.
_RUN_TARGET = by_ref(
    select(deployments.c.id, deployments.c.name, deployments.c.flow_name,
           deployments.c.pool_id, deployments.c.queue_id, deployments.c.parameters,
           deployments.c.parameter_schema, deployments.c.job_variables,
           work_queues.c.name.label("queue_name"), work_pools.c.name.label("pool_name"),
           work_pools.c.base_job_template, work_pools.c.late_after_seconds)
    .select_from(deployments.join(work_pools, work_pools.c.id == deployments.c.pool_id)
                 .join(work_queues, work_queues.c.id == deployments.c.queue_id)))
_INSERT_RUN = insert(runs)
_INSERT_STATE = insert(run_states)
_RUN_ID_BY_KEY = select(runs.c.id).where(runs.c.idempotency_key == bindparam("key"))


async def create_run(db: Database, deployment_ref: str, data: RunCreate, *,
                     prepare: RunPreparer, idempotency_key: str | None = None,
                     resubmitted_from: str | None = None) -> tuple[Run, bool]:
    """A run of a deployment; the same idempotency key returns the same run.
    ``resubmitted_from``: the dead letter this run resubmits (store/dead_letters.py).

    One write transaction reads the deployment, checks the key, validates and inserts the
    run with its first history row; the answer is built from what was written, not re-read.
    """
    try:
        return await db.run(lambda conn: create_run_in(
            conn, deployment_ref, data, prepare=prepare, idempotency_key=idempotency_key,
            resubmitted_from=resubmitted_from), write=True)
    except IntegrityError:
        if idempotency_key is None:
            raise
        # Lost a race with the same key (PostgreSQL: a concurrent transaction inserted it).
        existing = await db.run(lambda conn: _run_by_key(conn, _scoped_key(
            find_deployment(conn, deployment_ref, _RUN_TARGET).id, idempotency_key)))
        if existing is None:
            raise
        return existing, False


def create_run_in(conn: Connection, deployment_ref: str, data: RunCreate, *,
                  prepare: RunPreparer, idempotency_key: str | None = None,
                  resubmitted_from: str | None = None) -> tuple[Run, bool]:
    """``create_run`` inside the caller's transaction (a webhook delivery records itself
    in the same one). An IntegrityError means a concurrent run took the same key."""
    target = find_deployment(conn, deployment_ref, _RUN_TARGET)
    key = None if idempotency_key is None else _scoped_key(target.id, idempotency_key)
    existing = None if key is None else _run_by_key(conn, key)
    if existing is not None:
        return existing, False
    now = utcnow()
    values = _new_run(target, data, key, resubmitted_from, now, prepare)
    first = StateRecord(state=RunState.SCHEDULED, timestamp=now,
                        message=f"scheduled for {values['scheduled_time'].isoformat()}")
    conn.execute(_INSERT_RUN, values)
    conn.execute(_INSERT_STATE, {"run_id": values["id"], **first.model_dump()})
    run = _to_run_values({**values, "pool_name": target.pool_name,
                          "queue_name": target.queue_name,
                          "deployment_name": f"{target.flow_name}/{target.name}",
                          "late_after_seconds": target.late_after_seconds}, now, [first])
    return run, True


def _scoped_key(deployment_id: str, idempotency_key: str) -> str:
    """Keys are scoped to the deployment: the same key elsewhere is another run."""
    return f"api:{deployment_id}:{idempotency_key}"


@dataclass(frozen=True)
class RunTarget:
    """What the rules see of a deployment when a run of it is made."""

    parameters: dict[str, Any]
    parameter_schema: dict[str, Any] | None
    job_variables: dict[str, Any]
    base_job_template: dict[str, Any]


@dataclass(frozen=True)
class PreparedRun:
    """The rules' answer: the run's parameters, its own job variables and its rendered job
    configuration, as they are to be stored (secrets sealed)."""

    parameters: dict[str, Any]
    job_configuration: dict[str, Any]
    job_variables: dict[str, Any]


# Checks and renders a new run (raising InvalidInput); dispatcher/operations/runs.py
# holds the one the API and the engine use. It runs inside the creating transaction, so
# what it checks is the deployment as written, not a copy read before.
RunPreparer = Callable[[RunTarget, RunCreate], PreparedRun]


def _new_run(target: Row[Any], data: RunCreate, key: str | None,
             resubmitted_from: str | None, now: datetime,
             prepare: RunPreparer) -> dict[str, Any]:
    """The validated column values of a new run (422s name the offending field)."""
    prepared = prepare(RunTarget(target.parameters, target.parameter_schema,
                                 target.job_variables, target.base_job_template), data)
    parameters, rendered = prepared.parameters, prepared.job_configuration
    run_id = new_id()
    scheduled = data.scheduled_time or now
    if scheduled.tzinfo is None:
        raise InvalidInput("scheduled_time", "time has no time zone",
                           "give an RFC 3339 time such as 2026-01-01T09:00:00Z")
    return dict(
        id=run_id, name=data.name or f"{target.name}-{run_id[:8]}", deployment_id=target.id,
        pool_id=target.pool_id, queue_id=target.queue_id, state=RunState.SCHEDULED.value,
        state_message="created", scheduled_time=scheduled, parameters=parameters,
        job_variables=prepared.job_variables, job_configuration=rendered, attempt=0,
        idempotency_key=key, auto_scheduled=False, resubmitted_from=resubmitted_from,
        created=now, updated=now)


def _run_by_key(conn: Connection, key: str) -> Run | None:
    row = conn.execute(_RUN_ID_BY_KEY, {"key": key}).first()
    return None if row is None else read_run(conn, row.id)


def read_run(conn: Connection, run_id: str) -> Run:
    row = conn.execute(_select().where(runs.c.id == run_id)).first()
    if row is None:
        raise NotFound(f"run {run_id!r} not found; list runs with `pushpool run ls`")
    history = [StateRecord.model_validate(h._mapping) for h in conn.execute(
        select(run_states.c.state, run_states.c.timestamp, run_states.c.message)
        .where(run_states.c.run_id == run_id).order_by(run_states.c.id))]
    return _to_run(row, utcnow(), history)


async def get_run(db: Database, run_id: str) -> Run:
    return await db.run(lambda conn: read_run(conn, run_id))


_ACTIVE = [s.value for s in ACTIVE_STATES]


async def run_id_for_infra(db: Database, infra_id: str) -> str | None:
    """The active run whose submit returned ``infra_id`` (pushed events that name no run)."""
    return await db.run(lambda conn: conn.execute(
        select(runs.c.id).where(runs.c.infra_id == infra_id, runs.c.state.in_(_ACTIVE))
        .limit(1)).scalar_one_or_none())


async def list_runs(db: Database, *, state: RunState | None = None,
                    pool_name: str | None = None, deployment_ref: str | None = None,
                    dead_letter: bool = False, created_after: datetime | None = None,
                    limit: int = 50, offset: int = 0) -> list[Run]:
    """Runs, newest first; ``dead_letter``: only runs that never reached their provider;
    ``created_after``: only runs made since then (the walk stops there).

    The page's ids come first from runs alone, newest first by (created, id), the order
    of the ``ix_runs_*created_id`` indexes: a walk down one index that stops after the
    page, however many runs are stored. Only that page is joined for its names."""
    def read(conn: Connection) -> list[Run]:
        page = select(runs.c.id)
        if dead_letter:
            page = page.where(runs.c.dead_letter.is_(True))
        if state is not None:
            page = page.where(runs.c.state == state.value)
        if pool_name is not None:
            page = page.where(runs.c.pool_id == _pool_id(conn, pool_name))
        if deployment_ref is not None:
            page = page.where(runs.c.deployment_id == deployment_row(conn, deployment_ref).id)
        if created_after is not None:
            page = page.where(runs.c.created > created_after)
        newest = (runs.c.created.desc(), runs.c.id.desc())
        ids = page.order_by(*newest).limit(min(limit, MAX_PAGE)).offset(offset).subquery()
        now = utcnow()
        return [_to_run(r, now) for r in conn.execute(
            _select().where(runs.c.id.in_(select(ids.c.id))).order_by(*newest))]

    return await db.run(read)


async def scheduled_before(db: Database, moment: datetime, limit: int) -> list[Run]:
    """SCHEDULED runs due before ``moment``, the longest overdue first: the candidates for
    LATE, read along ``ix_runs_state_scheduled_time`` however many runs are stored."""
    def read(conn: Connection) -> list[Run]:
        overdue = (select(runs.c.id).where(runs.c.state == RunState.SCHEDULED.value,
                                           runs.c.scheduled_time < moment)
                   .order_by(runs.c.scheduled_time).limit(limit).subquery())
        now = utcnow()
        return [_to_run(r, now) for r in conn.execute(
            _select().where(runs.c.id.in_(select(overdue.c.id)))
            .order_by(runs.c.scheduled_time))]

    return await db.run(read)


def _pool_id(conn: Connection, name: str) -> str | None:
    """A pool's id by name; None (no runs) for a name no pool has, as a filter expects."""
    return conn.execute(select(work_pools.c.id).where(work_pools.c.name == name)).scalar()


async def set_run_state(db: Database, run_id: str, state: RunState,
                        message: str | None = None, **fields: Any) -> Run | None:
    """Move a run if the state machine allows it; None if it had already moved on."""
    def change(conn: Connection) -> Run | None:
        moved = transition(conn, run_id, state, message, **fields)
        return read_run(conn, run_id) if moved else None

    return await db.run(change, write=True)


@dataclass(frozen=True)
class StateChange:
    run_id: str
    state: RunState
    message: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # e.g. exit_code, infra_id


def steps_to(run_id: str, state: RunState, message: str | None = None,
             fields: dict[str, Any] | None = None) -> list[StateChange]:
    """The changes that bring a run to ``state``; a run that COMPLETED or FAILED ran, so
    RUNNING goes first when it was still PENDING (transition_many skips it otherwise)."""
    final = StateChange(run_id, state, message, fields or {})
    if state in (RunState.COMPLETED, RunState.FAILED):
        return [StateChange(run_id, RunState.RUNNING, RUNNING_MESSAGE), final]
    return [final]


async def apply_state_changes(db: Database, changes: list[StateChange]) -> list[str]:
    """``transition_many`` in its own transaction; the ids of the runs that moved."""
    return await db.run(lambda conn: transition_many(conn, changes), write=True)


def transition(conn: Connection, run_id: str, state: RunState,
                     message: str | None = None, **fields: Any) -> bool:
    """Compare-and-set one run's state inside the caller's transaction, with history."""
    moved = transition_many(conn, [StateChange(run_id, state, message, fields)])
    return bool(moved)


def transition_many(conn: Connection, changes: list[StateChange]) -> list[str]:
    """Apply state changes in order (a run may move twice, e.g. RUNNING then COMPLETED);
    changes the state machine refuses are skipped. Returns the ids that moved."""
    query = select(runs.c.id, runs.c.state).where(
        runs.c.id.in_({c.run_id for c in changes}))
    if conn.dialect.name == "postgresql":
        # Rows are locked in id order, as every writer of runs locks them, so two
        # replicas' writes over the same runs wait for each other instead of deadlocking.
        query = query.order_by(runs.c.id).with_for_update()
    current = pairs(conn.execute(query))
    missing = {c.run_id for c in changes} - set(current)
    if missing:
        raise NotFound(f"run {sorted(missing)[0]!r} not found")
    now = utcnow()
    original = dict(current)
    final_values: dict[str, dict[str, Any]] = {}  # one UPDATE per run, however many steps
    history: list[dict[str, Any]] = []
    moved: list[str] = []
    for change in changes:
        before = RunState(current[change.run_id])
        if not can_transition(before, change.state):
            continue
        values = final_values.setdefault(change.run_id, {})
        values.update({"state": change.state.value, "state_message": change.message,
                       "updated": now, **change.fields})
        if change.state is RunState.RUNNING:
            values.setdefault("started_at", now)
        if change.state in FINAL_STATES:
            values.setdefault("ended_at", now)
            values.update(lease_owner=None, lease_expires=None)
        history.append({"run_id": change.run_id, "state": change.state.value,
                        "message": change.message, "timestamp": now})
        current[change.run_id] = change.state.value
        if change.run_id not in moved:
            moved.append(change.run_id)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for run_id, values in final_values.items():
        groups[tuple(sorted(values))].append(
            {**{f"v_{k}": v for k, v in values.items()}, "_id": run_id,
             "_before": original[run_id]})
    for keys, rows in groups.items():
        # One executemany per column set (bind names must differ from column names).
        columns: dict[str, Any] = {k: bindparam(f"v_{k}") for k in keys}
        conn.execute(update(runs).where(runs.c.id == bindparam("_id"),
                                              runs.c.state == bindparam("_before"))
                           .values(**columns), rows)
    if history:
        conn.execute(insert(run_states), history)
    return moved


async def cancel_run(db: Database, run_id: str) -> Run:
    """SCHEDULED runs end at once; submitted ones go CANCELLING until the provider stops them."""
    def cancel(conn: Connection) -> Run:
        row = conn.execute(select(runs.c.state).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"run {run_id!r} not found; list runs with `pushpool run ls`")
        state = RunState(row.state)
        if state in FINAL_STATES:
            raise Conflict(f"run {run_id} is already {state.value}; nothing to cancel")
        if state is RunState.SCHEDULED:
            transition(conn, run_id, RunState.CANCELLED, "cancelled before it started")
        elif state is not RunState.CANCELLING:
            transition(conn, run_id, RunState.CANCELLING, "cancellation requested")
        return read_run(conn, run_id)

    return await db.run(cancel, write=True)


async def append_logs(db: Database, run_id: str, lines: Sequence[LogLineLike],
                      cursor: str | None = None) -> None:
    await db.run(lambda conn: append_logs_in(conn, {run_id: (lines, cursor)}), write=True)


def append_logs_in(conn: Connection,
                   batches: dict[str, tuple[Sequence[LogLineLike], str | None]]) -> None:
    """Store many runs' new log lines and their provider cursors in one transaction."""
    rows = [{"run_id": run_id, "timestamp": line.timestamp, "stream": line.stream,
             "message": line.message}
            for run_id, (lines, _) in batches.items() for line in lines]
    if rows:
        conn.execute(insert(run_logs), rows)
    cursors = [{"_id": run_id, "v_cursor": cursor}
               for run_id, (_, cursor) in batches.items() if cursor is not None]
    if cursors:
        conn.execute(update(runs).where(runs.c.id == bindparam("_id"))
                     .values(log_cursor=bindparam("v_cursor")), cursors)


async def read_logs(db: Database, run_id: str, *, after_id: int = 0,
                    limit: int = MAX_PAGE, tail: bool = False) -> list[LogEntry]:
    """A run's log lines in order: the first ``limit`` after ``after_id``, or with
    ``tail`` the last ``limit`` of them."""
    def read(conn: Connection) -> list[LogEntry]:
        if conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
            raise NotFound(f"run {run_id!r} not found; list runs with `pushpool run ls`")
        order = run_logs.c.id.desc() if tail else run_logs.c.id
        rows = conn.execute(select(run_logs).where(
            run_logs.c.run_id == run_id, run_logs.c.id > after_id)
            .order_by(order).limit(min(limit, MAX_PAGE)))
        entries = [LogEntry.model_validate(r._mapping) for r in rows]
        return entries[::-1] if tail else entries

    return await db.run(read)


async def preview_pool(db: Database, name: str, limit: int = 20) -> list[Run]:
    """The next runs due in a pool, soonest first."""
    def read(conn: Connection) -> list[Run]:
        pool = conn.execute(select(work_pools.c.id).where(work_pools.c.name == name)).first()
        if pool is None:
            raise NotFound(f"work pool {name!r} not found; list pools with "
                           "`pushpool work-pool ls`")
        now = utcnow()
        return [_to_run(r, now) for r in conn.execute(_select().where(
            runs.c.pool_id == pool.id, runs.c.state == RunState.SCHEDULED.value)
            .order_by(runs.c.scheduled_time).limit(min(limit, MAX_PAGE)))]

    return await db.run(read)
