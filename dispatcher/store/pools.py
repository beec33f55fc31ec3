"""Work pools and their work queues: create, read, update, delete, with validation."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from dispatcher.errors import Conflict, InvalidInput, NotFound
from dispatcher.models import (
    ACTIVE_STATES,
    RunState,
    WorkPool,
    WorkPoolCreate,
    WorkPoolUpdate,
    WorkQueue,
    WorkQueueCreate,
    WorkQueueUpdate,
)
from dispatcher.store import deployments as deployments_store
from dispatcher.store.common import new_id, pairs, utcnow
from dispatcher.store.db import Database
from dispatcher.store.deployments import refuse_if_webhooks
from dispatcher.store.tables import deployments, runs, work_pools, work_queues

ACTIVE = [s.value for s in ACTIVE_STATES]


def _pool_row(conn: Connection, name: str) -> Row[Any]:
    row = conn.execute(select(work_pools).where(work_pools.c.name == name)).first()
    if row is None:
        raise NotFound(f"work pool {name!r} not found; list pools with `pushpool work-pool ls`")
    return row


def pool_id_by_name(conn: Connection, name: str) -> str:
    return str(_pool_row(conn, name).id)


def _pools_with_counts(conn: Connection, rows: list[Row[Any]]) -> list[WorkPool]:
    ids = [r.id for r in rows]
    queue_names: dict[str, list[str]] = defaultdict(list)
    for q in conn.execute(select(work_queues.c.pool_id, work_queues.c.name)
                          .where(work_queues.c.pool_id.in_(ids))
                          .order_by(work_queues.c.priority, work_queues.c.name)):
        queue_names[q.pool_id].append(q.name)
    active = pairs(conn.execute(
        select(runs.c.pool_id, func.count()).where(runs.c.state.in_(ACTIVE),
                                                   runs.c.pool_id.in_(ids))
        .group_by(runs.c.pool_id)))
    return [WorkPool.model_validate({**r._mapping, "queues": queue_names[r.id],
                                     "active_runs": active.get(r.id, 0)}) for r in rows]


def _get_pool(conn: Connection, name: str) -> WorkPool:
    return _pools_with_counts(conn, [_pool_row(conn, name)])[0]


async def create_pool(db: Database, data: WorkPoolCreate) -> WorkPool:
    """Store a pool and its default queue. The pool type and the template were checked
    above the store (``dispatcher.operations.pools.create_pool``)."""
    template = data.base_job_template
    if template is None:
        raise InvalidInput("base_job_template", "a pool needs a base job template",
                           "create pools through dispatcher.operations.pools.create_pool")

    def create(conn: Connection) -> WorkPool:
        now = utcnow()
        pool_id = new_id()
        conn.execute(insert(work_pools).values(
            id=pool_id, name=data.name, type=data.type, description=data.description,
            base_job_template=template, concurrency_limit=data.concurrency_limit,
            paused=data.paused, late_after_seconds=data.late_after_seconds,
            provisioned=data.provisioned, created=now, updated=now))
        conn.execute(insert(work_queues).values(
            id=new_id(), pool_id=pool_id, name="default", priority=1,
            description="The pool's default queue", paused=False, created=now, updated=now))
        return _get_pool(conn, data.name)

    try:
        return await db.run(create, write=True)
    except IntegrityError as exc:
        raise Conflict(f"a work pool named {data.name!r} already exists; pick another name "
                       "or update it with `pushpool work-pool update`",
                       [{"field": "name", "message": "already exists"}]) from exc


async def get_pool(db: Database, name: str) -> WorkPool:
    return await db.run(lambda conn: _get_pool(conn, name))


async def list_pools(db: Database) -> list[WorkPool]:
    return await db.run(lambda conn: _pools_with_counts(
        conn, list(conn.execute(select(work_pools).order_by(work_pools.c.name)))))


async def update_pool(db: Database, name: str, data: WorkPoolUpdate) -> WorkPool:
    values: dict[str, Any] = {}
    if data.base_job_template is not None:
        values["base_job_template"] = data.base_job_template  # checked above the store
    if data.description is not None:
        values["description"] = data.description
    if data.concurrency_limit is not None:
        values["concurrency_limit"] = data.concurrency_limit
    if data.clear_concurrency_limit:
        values["concurrency_limit"] = None
    if data.paused is not None:
        # A user's pause or resume overrides the circuit breaker's: never auto-resumed.
        values["paused"] = data.paused
        values["paused_reason"] = "paused by a user" if data.paused else None
        values["paused_by"] = "user" if data.paused else None
        values["breaker_retry_at"] = None
    if data.late_after_seconds is not None:
        values["late_after_seconds"] = data.late_after_seconds

    def change(conn: Connection) -> WorkPool:
        row = _pool_row(conn, name)
        if values:
            conn.execute(update(work_pools).where(work_pools.c.id == row.id)
                         .values(**values, updated=utcnow()))
        return _get_pool(conn, name)

    return await db.run(change, write=True)


async def set_pool_paused(db: Database, name: str, paused: bool, reason: str | None) -> None:
    """Pause or resume with a reason, as a user does (the circuit breaker has its own
    compare-and-set functions in store/pool_breaker.py, which never touch a user's pause)."""
    await db.run(lambda conn: conn.execute(
        update(work_pools).where(work_pools.c.name == name).values(
            paused=paused, paused_reason=reason if paused else None,
            paused_by="user" if paused else None, breaker_retry_at=None, updated=utcnow())),
        write=True)


async def delete_pool(db: Database, name: str, *, cascade: bool = False,
                      deployments_confirmed: int | None = None) -> None:
    """Delete a pool with its queues. One with active runs is refused; so is one with
    deployments unless ``cascade``, which deletes them too, with their schedules and
    scheduled runs, and refuses if the pool no longer has the ``deployments_confirmed``
    the caller was shown. Finished runs stay, naming the pool and queue they ran in."""
    def remove(conn: Connection) -> None:
        row = _pool_row(conn, name)
        active = conn.execute(select(func.count()).select_from(runs).where(
            runs.c.pool_id == row.id, runs.c.state.in_(ACTIVE))).scalar_one()
        if active:
            raise Conflict(f"work pool {name!r} has {active} active run(s); cancel them first "
                           f"(`pushpool run ls --pool {name}`)")
        held: list[Row[Any]] = list(conn.execute(
            select(deployments.c.id, deployments.c.flow_name, deployments.c.name)
            .where(deployments.c.pool_id == row.id)
            .order_by(deployments.c.flow_name, deployments.c.name)))
        if held and not cascade:
            raise Conflict(_holds_deployments(name, held))
        refuse_if_webhooks(conn, [d.id for d in held], f"a deployment of work pool {name!r}")
        if deployments_confirmed is not None and len(held) != deployments_confirmed:
            raise Conflict(f"work pool {name!r} has {len(held)} deployment(s) now, not the "
                           f"{deployments_confirmed} confirmed; nothing was deleted: run "
                           "the command again to see what it would remove")
        for deployment in held:
            deployments_store.remove_deployment(conn, deployment)
        conn.execute(delete(runs).where(runs.c.pool_id == row.id,
                                        runs.c.state == RunState.SCHEDULED.value))
        queue_name = select(work_queues.c.name).where(
            work_queues.c.id == runs.c.queue_id).scalar_subquery()
        conn.execute(update(runs).where(runs.c.pool_id == row.id).values(
            former_pool_name=name,
            former_queue_name=func.coalesce(queue_name, runs.c.former_queue_name)))
        conn.execute(delete(work_pools).where(work_pools.c.id == row.id))

    await db.run(remove, write=True)


def _holds_deployments(name: str, held: list[Row[Any]]) -> str:
    shown = ", ".join(f"{d.flow_name}/{d.name}" for d in held[:3])
    more = f" and {len(held) - 3} more" if len(held) > 3 else ""
    return (f"work pool {name!r} has {len(held)} deployment(s) ({shown}{more}); delete them "
            f"or deploy them to another pool first (`pushpool deployment ls --pool {name}`), "
            f"or delete them with the pool: `pushpool work-pool delete {name} --cascade`")


# ----------------------------------------------------------------------------- queues


def _queue_row(conn: Connection, pool_id: str, pool_name: str, name: str) -> Row[Any]:
    row = conn.execute(select(work_queues).where(
        work_queues.c.pool_id == pool_id, work_queues.c.name == name)).first()
    if row is None:
        raise NotFound(f"work queue {name!r} not found in pool {pool_name!r}; list them with "
                       f"`pushpool work-queue ls --pool {pool_name}`")
    return row


def _queues(conn: Connection, where: Any) -> list[WorkQueue]:
    rows = list(conn.execute(
        select(work_queues, work_pools.c.name.label("pool_name"))
        .join(work_pools, work_pools.c.id == work_queues.c.pool_id)
        .where(where).order_by(work_pools.c.name, work_queues.c.priority, work_queues.c.name)))
    ids = [r.id for r in rows]
    active = pairs(conn.execute(
        select(runs.c.queue_id, func.count()).where(runs.c.state.in_(ACTIVE),
                                                    runs.c.queue_id.in_(ids))
        .group_by(runs.c.queue_id)))
    return [WorkQueue.model_validate({**r._mapping, "active_runs": active.get(r.id, 0)})
            for r in rows]


def _get_queue(conn: Connection, pool_name: str, name: str) -> WorkQueue:
    row = _queue_row(conn, pool_id_by_name(conn, pool_name), pool_name, name)
    return _queues(conn, work_queues.c.id == row.id)[0]


async def create_queue(db: Database, pool_name: str, data: WorkQueueCreate) -> WorkQueue:
    def create(conn: Connection) -> WorkQueue:
        pool_id = pool_id_by_name(conn, pool_name)
        priority = data.priority
        if priority is None:
            highest = conn.execute(select(func.max(work_queues.c.priority)).where(
                work_queues.c.pool_id == pool_id)).scalar_one()
            priority = (highest or 0) + 1
        now = utcnow()
        conn.execute(insert(work_queues).values(
            id=new_id(), pool_id=pool_id, name=data.name, description=data.description,
            priority=priority, concurrency_limit=data.concurrency_limit, paused=data.paused,
            created=now, updated=now))
        return _get_queue(conn, pool_name, data.name)

    try:
        return await db.run(create, write=True)
    except IntegrityError as exc:
        raise Conflict(f"pool {pool_name!r} already has a queue named {data.name!r}; "
                       "pick another name", [{"field": "name", "message": "already exists"}]
                       ) from exc


async def get_queue(db: Database, pool_name: str, name: str) -> WorkQueue:
    return await db.run(lambda conn: _get_queue(conn, pool_name, name))


async def list_queues(db: Database, pool_name: str | None = None) -> list[WorkQueue]:
    def read(conn: Connection) -> list[WorkQueue]:
        if pool_name is None:
            return _queues(conn, work_queues.c.id.is_not(None))
        return _queues(conn, work_queues.c.pool_id == pool_id_by_name(conn, pool_name))

    return await db.run(read)


async def update_queue(db: Database, pool_name: str, name: str,
                       data: WorkQueueUpdate) -> WorkQueue:
    values: dict[str, Any] = {}
    for key in ("description", "priority", "concurrency_limit", "paused"):
        if getattr(data, key) is not None:
            values[key] = getattr(data, key)
    if data.clear_concurrency_limit:
        values["concurrency_limit"] = None

    def change(conn: Connection) -> WorkQueue:
        row = _queue_row(conn, pool_id_by_name(conn, pool_name), pool_name, name)
        if values:
            conn.execute(update(work_queues).where(work_queues.c.id == row.id)
                         .values(**values, updated=utcnow()))
        return _get_queue(conn, pool_name, name)

    return await db.run(change, write=True)


async def delete_queue(db: Database, pool_name: str, name: str) -> None:
    if name == "default":
        raise Conflict("the default queue cannot be deleted; delete the pool instead")

    def remove(conn: Connection) -> None:
        row = _queue_row(conn, pool_id_by_name(conn, pool_name), pool_name, name)
        used = conn.execute(select(func.count()).select_from(deployments).where(
            deployments.c.queue_id == row.id)).scalar_one()
        if used:
            raise Conflict(f"queue {name!r} is used by {used} deployment(s); move them to "
                           "another queue first")
        active = conn.execute(select(func.count()).select_from(runs).where(
            runs.c.queue_id == row.id, runs.c.state.in_(ACTIVE))).scalar_one()
        if active:
            raise Conflict(f"queue {name!r} has {active} active run(s); cancel them first")
        # Its finished runs stay, naming the queue they ran in.
        conn.execute(update(runs).where(runs.c.queue_id == row.id).values(
            former_queue_name=name))
        conn.execute(delete(work_queues).where(work_queues.c.id == row.id))

    await db.run(remove, write=True)
