"""Replica heartbeats: which dispatcher replicas are alive, and freeing the claims of the
ones that are not, so their runs are resubmitted at once rather than when the lease ends.

A replica registers under its lease-owner name (one per server process) with the replica id
it keeps across restarts. Registering frees the claims of that replica id's earlier
processes, which cannot be running any more (engine/replica_id.py: one live process per
id). A replica whose heartbeat is older than the timeout is taken for dead: its claims are
freed and its row goes. Freeing a claim ends its lease now and keeps its attempt, so the
next claim (store/claims.py) takes the run up again and resubmits it with the same attempt:
an idempotent provider returns the job an unanswered submit made. Leases stay the last
resort for a claimer that never registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from dispatcher.models import RunState
from dispatcher.store.common import utcnow
from dispatcher.store.db import Database
from dispatcher.store.tables import replicas, runs

_UNRECORDED_STATES = (RunState.PENDING.value, RunState.CANCELLING.value)


@dataclass(frozen=True)
class FreedClaims:
    """Whose claims were freed, and how many runs that gave back."""

    owners: list[str] = field(default_factory=list)
    runs: int = 0


def _free_claims(conn: Connection, owners: list[str], now: datetime) -> int:
    """End now the leases these owners hold on runs with nothing recorded yet."""
    if not owners:
        return 0
    result = conn.execute(
        update(runs).where(runs.c.lease_owner.in_(owners), runs.c.infra_id.is_(None),
                           runs.c.state.in_(_UNRECORDED_STATES), runs.c.lease_expires > now)
        .values(lease_expires=now))
    return int(result.rowcount or 0)


def _forget(conn: Connection, owners: list[str]) -> None:
    if owners:
        conn.execute(delete(replicas).where(replicas.c.owner.in_(owners)))


async def register_replica(db: Database, owner: str, replica_id: str,
                           now: datetime | None = None) -> FreedClaims:
    """Record this process as a live replica; free the claims of its replica id's earlier
    processes (a restart after a crash)."""
    now = now or utcnow()

    def register(conn: Connection) -> FreedClaims:
        earlier = list(conn.execute(
            select(replicas.c.owner).where(replicas.c.replica_id == replica_id,
                                           replicas.c.owner != owner)).scalars())
        freed = _free_claims(conn, earlier, now)
        _forget(conn, [*earlier, owner])
        conn.execute(insert(replicas).values(owner=owner, replica_id=replica_id,
                                             started=now, heartbeat=now))
        return FreedClaims(earlier, freed)

    return await db.run(register, write=True)


async def heartbeat(db: Database, owner: str, replica_id: str,
                    now: datetime | None = None) -> bool:
    """This replica is alive. False when its row had gone: another replica took it for
    dead (its heartbeat lapsed) and may have taken over its claims; the row is back."""
    now = now or utcnow()

    def beat(conn: Connection) -> bool:
        found = conn.execute(update(replicas).where(replicas.c.owner == owner)
                             .values(heartbeat=now)).rowcount
        if found:
            return True
        conn.execute(insert(replicas).values(owner=owner, replica_id=replica_id,
                                             started=now, heartbeat=now))
        return False

    return await db.run(beat, write=True)


async def free_dead_replicas(db: Database, owner: str, timeout_seconds: float,
                             now: datetime | None = None) -> FreedClaims:
    """Free the claims of every other replica whose heartbeat is older than the timeout,
    and forget those replicas."""
    now = now or utcnow()
    silent_since = now - timedelta(seconds=timeout_seconds)

    def free(conn: Connection) -> FreedClaims:
        dead = list(conn.execute(
            select(replicas.c.owner).where(replicas.c.heartbeat < silent_since,
                                           replicas.c.owner != owner)).scalars())
        freed = _free_claims(conn, dead, now)
        _forget(conn, dead)
        return FreedClaims(dead, freed)

    return await db.run(free, write=True)


async def retire_replica(db: Database, owner: str, now: datetime | None = None) -> int:
    """A replica stopping cleanly: free what it still holds, forget it. Returns the runs
    freed (their submits began but were not answered before it stopped)."""
    now = now or utcnow()

    def retire(conn: Connection) -> int:
        freed = _free_claims(conn, [owner], now)
        _forget(conn, [owner])
        return freed

    return await db.run(retire, write=True)
