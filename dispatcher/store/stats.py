"""Store-wide figures for /metrics, read at scrape time: runs by pool and state, and which
pools the circuit breaker holds paused (the same answer from every replica)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from dispatcher.store.db import Database
from dispatcher.store.pool_breaker import BREAKER
from dispatcher.store.tables import runs, work_pools


@dataclass(frozen=True)
class StoreStats:
    runs: list[tuple[str, str, int]]  # (pool name, state, how many)
    pools: list[tuple[str, bool]]  # (pool name, paused by the circuit breaker)


async def store_stats(db: Database) -> StoreStats:
    def read(conn: Connection) -> StoreStats:
        names = {r.id: r.name for r in conn.execute(select(work_pools.c.id, work_pools.c.name))}
        counts = [(names[r.pool_id], r.state, int(r.n)) for r in conn.execute(
            select(runs.c.pool_id, runs.c.state, func.count().label("n"))
            .group_by(runs.c.pool_id, runs.c.state)) if r.pool_id in names]
        pools = [(r.name, bool(r.paused) and r.paused_by == BREAKER) for r in conn.execute(
            select(work_pools.c.name, work_pools.c.paused, work_pools.c.paused_by))]
        return StoreStats(runs=counts, pools=pools)

    return await db.run(read)
