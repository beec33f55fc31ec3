"""The circuit breaker's side of a work pool: open, close, and pick half-open probes.

The breaker (dispatcher/engine/breaker.py) pauses a pool whose provider keeps failing:
``paused_by = "breaker"``, with a reason and ``breaker_retry_at``, the time from which any
replica may probe. Every change is a compare-and-set on ``paused_by``, so the breaker never
pauses a pool a user paused, never resumes one a user paused, and a user's pause or resume
(store/pools.py) simply takes the pool over.

Probes are taken inside the claim transaction (serialised across replicas): for each
breaker-paused pool whose retry time has come, one run (a parked one first, else the next
due one) is claimed as the probe and the retry time moves a lease ahead, so no other
replica probes the same pool meanwhile. Parked runs past their submit deadline end there
as dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection

from dispatcher.models import RunState
from dispatcher.store.common import utcnow
from dispatcher.store.db import Database
from dispatcher.store.dead_letters import expire_parked_runs
from dispatcher.store.tables import runs, work_pools, work_queues

BREAKER = "breaker"
BY_BREAKER = and_(work_pools.c.paused.is_(True), work_pools.c.paused_by == BREAKER)
_ORDER = (work_queues.c.priority, runs.c.scheduled_time, runs.c.id)


async def open_pool_breaker(db: Database, pool_name: str, reason: str,
                            retry_at: datetime) -> bool:
    """Pause an unpaused pool as the breaker; False if it was paused already (by anyone)."""
    def open_(conn: Connection) -> bool:
        return bool(conn.execute(
            update(work_pools).where(work_pools.c.name == pool_name,
                                     work_pools.c.paused.is_(False))
            .values(paused=True, paused_by=BREAKER, paused_reason=reason,
                    breaker_retry_at=retry_at, updated=utcnow())).rowcount)

    return await db.run(open_, write=True)


async def close_pool_breaker(db: Database, pool_name: str) -> bool:
    """Resume a pool the breaker paused; False if it is not (or no longer) breaker-paused."""
    def close(conn: Connection) -> bool:
        return bool(conn.execute(
            update(work_pools).where(work_pools.c.name == pool_name, BY_BREAKER)
            .values(paused=False, paused_by=None, paused_reason=None, breaker_retry_at=None,
                    updated=utcnow())).rowcount)

    return await db.run(close, write=True)


async def delay_breaker_probe(db: Database, pool_name: str, retry_at: datetime,
                              reason: str | None = None) -> None:
    """A probe failed: the next one may start at ``retry_at``."""
    values: dict[str, object] = {"breaker_retry_at": retry_at}
    if reason is not None:
        values["paused_reason"] = reason
    await db.run(lambda conn: conn.execute(
        update(work_pools).where(work_pools.c.name == pool_name, BY_BREAKER).values(**values)),
        write=True)


@dataclass
class Probes:
    run_ids: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)


def take_probes(conn: Connection, now: datetime, hold_seconds: float) -> Probes:
    """Inside the claim transaction: one probe run per breaker-paused pool that is due one.
    The caller claims the returned runs (they bypass the pool's pause, not its limits)."""
    probes = Probes()
    pool_ids = list(conn.execute(select(work_pools.c.id).where(
        BY_BREAKER, or_(work_pools.c.breaker_retry_at.is_(None),
                         work_pools.c.breaker_retry_at <= now))).scalars())
    for pool_id in pool_ids:
        probes.dead_lettered += expire_parked_runs(conn, pool_id, now)
        run_id = _probe_run(conn, pool_id, now)
        if run_id is not None:
            probes.run_ids.append(run_id)
        # With a probe: its answer comes within a lease. Without: look again a lease later.
        conn.execute(update(work_pools).where(work_pools.c.id == pool_id).values(
            breaker_retry_at=now + timedelta(seconds=hold_seconds)))
    return probes


def _probe_run(conn: Connection, pool_id: str, now: datetime) -> str | None:
    base = (select(runs.c.id).join(work_queues, work_queues.c.id == runs.c.queue_id)
            .where(runs.c.pool_id == pool_id, work_queues.c.paused.is_(False))
            .order_by(*_ORDER).limit(1))
    parked = conn.execute(base.where(
        runs.c.state == RunState.PENDING.value, runs.c.infra_id.is_(None),
        runs.c.lease_expires < now)).scalar_one_or_none()
    if parked is not None:
        return str(parked)
    due = conn.execute(base.where(runs.c.state == RunState.SCHEDULED.value,
                                  runs.c.scheduled_time <= now)).scalar_one_or_none()
    return None if due is None else str(due)
