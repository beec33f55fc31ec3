"""Deployments and their schedules: apply (create or update), read, pause, delete.

Everything a deployment says is validated here, before anything is stored: the pool and
queue exist, schedules parse, job variables fit the pool's schema and the provider accepts
the rendered configuration, parameters fit the parameter schema.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Row, Select, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from dispatcher import schedules as schedule_math
from dispatcher.errors import Conflict, InvalidInput, NotFound
from dispatcher.models import (
    Deployment,
    DeploymentApply,
    DeploymentUpdate,
    RunState,
    Schedule,
    ScheduleSpec,
)
from dispatcher.store.common import new_id, utcnow
from dispatcher.store.db import Database
from dispatcher.store.tables import (
    deployments,
    runs,
    schedules,
    webhooks,
    work_pools,
    work_queues,
)


def _select() -> Any:
    return (select(deployments, work_pools.c.name.label("pool_name"),
                   work_queues.c.name.label("queue_name"))
            .join(work_pools, work_pools.c.id == deployments.c.pool_id)
            .join(work_queues, work_queues.c.id == deployments.c.queue_id))


def by_ref(query: Select[Any]) -> tuple[Select[Any], Select[Any]]:
    """``query`` narrowed to one deployment by 'FLOW/NAME' and by id. Built once with bind
    parameters, so SQLAlchemy builds and caches each statement once, not per call."""
    return (query.where(deployments.c.flow_name == bindparam("ref_flow"),
                        deployments.c.name == bindparam("ref_name")),
            query.where(deployments.c.id == bindparam("ref_id")))


def find_deployment(conn: Connection, ref: str,
                    statements: tuple[Select[Any], Select[Any]]) -> Row[Any]:
    """The one row ``by_ref(...)`` statements find for ``ref``, or a NotFound naming it."""
    by_name, by_id = statements
    if "/" in ref:
        flow_name, _, name = ref.partition("/")
        row = conn.execute(by_name, {"ref_flow": flow_name, "ref_name": name}).first()
    else:
        row = conn.execute(by_id, {"ref_id": ref}).first()
    if row is None:
        raise NotFound(f"deployment {ref!r} not found; names look like 'FLOW/DEPLOYMENT' "
                       "(see `pushpool deployment ls`)")
    return row


_DEPLOYMENT_BY_REF = by_ref(_select())


def _with_schedules(conn: Connection, rows: list[Row[Any]]) -> list[Deployment]:
    ids = [r.id for r in rows]
    by_deployment: dict[str, list[Schedule]] = defaultdict(list)
    for s in conn.execute(select(schedules).where(schedules.c.deployment_id.in_(ids))
                          .order_by(schedules.c.position)):
        by_deployment[s.deployment_id].append(
            Schedule.model_validate({**s.spec, "id": s.id, "active": s.active}))
    return [Deployment.model_validate({**r._mapping, "schedules": by_deployment[r.id]})
            for r in rows]


def deployment_row(conn: Connection, ref: str) -> Row[Any]:
    return find_deployment(conn, ref, _DEPLOYMENT_BY_REF)


def _check_schedules(specs: list[ScheduleSpec]) -> None:
    for i, spec in enumerate(specs):
        try:
            schedule_math.validate_schedule(spec, field=f"schedules[{i}]")
        except schedule_math.ScheduleError as exc:
            raise InvalidInput(exc.field, exc.message, exc.fix) from exc


async def apply_deployment(db: Database, data: DeploymentApply) -> tuple[Deployment, bool]:
    """Create the deployment or update the one with the same flow and name."""
    _check_schedules(data.schedules)
    if data.command is None and data.entrypoint is None and "command" not in data.job_variables:
        raise InvalidInput("command", "a deployment needs a command or an entrypoint",
                           "set `command: [...]` (argv list) or `entrypoint: path.py:function`")
    queue_name = data.queue_name or "default"

    def apply(conn: Connection) -> tuple[Deployment, bool]:
        now = utcnow()
        pool = conn.execute(select(work_pools).where(
            work_pools.c.name == data.pool_name)).first()
        if pool is None:
            raise InvalidInput("pool_name", f"work pool {data.pool_name!r} does not exist",
                               f"create it with `pushpool work-pool create {data.pool_name} "
                               "--type process` or name an existing pool")
        queue = conn.execute(select(work_queues).where(
            work_queues.c.pool_id == pool.id, work_queues.c.name == queue_name)).first()
        if queue is None:
            raise InvalidInput("queue_name", f"pool {data.pool_name!r} has no queue "
                               f"{queue_name!r}", f"create it with `pushpool work-queue create "
                               f"{queue_name} --pool {data.pool_name}`")
        values = data.model_dump(exclude={"pool_name", "queue_name", "schedules"})
        values.update(pool_id=pool.id, queue_id=queue.id, updated=now)
        existing = conn.execute(select(deployments.c.id).where(
            deployments.c.flow_name == data.flow_name,
            deployments.c.name == data.name)).first()
        if existing is None:
            deployment_id = new_id()
            conn.execute(insert(deployments).values(id=deployment_id, created=now, **values))
        else:
            deployment_id = existing.id
            conn.execute(update(deployments).where(deployments.c.id == deployment_id)
                         .values(**values))
            conn.execute(delete(schedules).where(schedules.c.deployment_id == deployment_id))
            drop_future_scheduled_runs(conn, deployment_id)
        if data.schedules:
            conn.execute(insert(schedules), [
                {"id": new_id(), "deployment_id": deployment_id, "position": i,
                 "spec": spec.model_dump(mode="json", exclude={"active"}),
                 "active": spec.active}
                for i, spec in enumerate(data.schedules)])
        deployment = _with_schedules(conn, [deployment_row(conn, deployment_id)])[0]
        return deployment, existing is None

    return await db.run(apply, write=True)


def drop_future_scheduled_runs(conn: Connection, deployment_id: str) -> None:
    """Schedules changed or paused: forget their not-yet-due runs; the scheduler remakes them
    (from now on: materialised_until is reset, see store/scheduled_runs.py)."""
    conn.execute(update(schedules).where(schedules.c.deployment_id == deployment_id)
                 .values(materialised_until=None))
    conn.execute(delete(runs).where(
        runs.c.deployment_id == deployment_id, runs.c.auto_scheduled.is_(True),
        runs.c.state == RunState.SCHEDULED.value, runs.c.scheduled_time > utcnow()))


def _get_deployment(conn: Connection, ref: str) -> Deployment:
    return _with_schedules(conn, [deployment_row(conn, ref)])[0]


async def get_deployment(db: Database, ref: str) -> Deployment:
    return await db.run(lambda conn: _get_deployment(conn, ref))


async def list_deployments(db: Database, pool_name: str | None = None,
                           flow_name: str | None = None, limit: int | None = None,
                           offset: int = 0) -> list[Deployment]:
    """Deployments by flow and name; ``limit``/``offset`` page through them (None: all)."""
    query = _select().order_by(deployments.c.flow_name, deployments.c.name)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    if pool_name is not None:
        query = query.where(work_pools.c.name == pool_name)
    if flow_name is not None:
        query = query.where(deployments.c.flow_name == flow_name)
    return await db.run(lambda conn: _with_schedules(conn, list(conn.execute(query))))


async def update_deployment(db: Database, ref: str, data: DeploymentUpdate) -> Deployment:
    values: dict[str, Any] = {}
    for key in ("paused", "description", "concurrency_limit"):
        if getattr(data, key) is not None:
            values[key] = getattr(data, key)
    if data.clear_concurrency_limit:
        values["concurrency_limit"] = None

    def change(conn: Connection) -> Deployment:
        row = deployment_row(conn, ref)
        if values:
            conn.execute(update(deployments).where(deployments.c.id == row.id)
                         .values(**values, updated=utcnow()))
        if data.paused:
            drop_future_scheduled_runs(conn, row.id)
        return _get_deployment(conn, row.id)

    return await db.run(change, write=True)


def refuse_if_webhooks(conn: Connection, deployment_ids: Any, what: str) -> None:
    """Conflict when webhooks start runs of these deployments (ids, or a select of
    them): deleting a deployment does not delete its webhooks behind the user's back."""
    names = list(conn.execute(select(webhooks.c.name).where(
        webhooks.c.deployment_id.in_(deployment_ids)).order_by(webhooks.c.name)).scalars())
    if names:
        shown = ", ".join(repr(name) for name in names[:5]) + (", ..." if len(names) > 5 else "")
        raise Conflict(f"{what} has webhooks that start its runs ({shown}); delete them "
                       "first with `pushpool webhook delete NAME`")


def remove_deployment(conn: Connection, row: Row[Any]) -> None:
    """Delete a deployment with its schedules and the runs it has scheduled; its other
    runs stay and keep its name (``runs.former_deployment_name``)."""
    conn.execute(delete(runs).where(runs.c.deployment_id == row.id,
                                    runs.c.state == RunState.SCHEDULED.value))
    conn.execute(update(runs).where(runs.c.deployment_id == row.id).values(
        former_deployment_name=f"{row.flow_name}/{row.name}"))
    conn.execute(delete(deployments).where(deployments.c.id == row.id))


async def delete_deployment(db: Database, ref: str) -> None:
    def remove(conn: Connection) -> None:
        row = deployment_row(conn, ref)
        refuse_if_webhooks(conn, [row.id], f"deployment {ref!r}")
        remove_deployment(conn, row)

    await db.run(remove, write=True)
