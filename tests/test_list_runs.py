"""`run ls` in the store: newest first (created, then id), each filter alone or together."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from dispatcher import operations, store
from dispatcher.models import DeploymentApply, RunCreate, RunState, WorkPoolCreate
from dispatcher.store import Database
from dispatcher.store.common import utcnow
from dispatcher.store.tables import runs


async def _deploy(db: Database, pool: str, name: str) -> None:
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name=name, flow_name="f", pool_name=pool, command=["true"]))


async def _run(db: Database, name: str) -> str:
    run, _ = await operations.runs.create_run(db, f"f/{name}", RunCreate())
    return run.id


async def test_newest_first_and_filters(db: Database) -> None:
    for pool in ("p1", "p2"):
        await operations.pools.create_pool(db, WorkPoolCreate(name=pool, type="process"))
    await _deploy(db, "p1", "a")
    await _deploy(db, "p2", "b")
    ids = [await _run(db, name) for name in ("a", "b", "a", "b")]
    # The same `created` for all: the id breaks the tie, the larger first.
    same = utcnow() - timedelta(minutes=1)
    await db.run(lambda conn: conn.execute(update(runs).values(created=same)), write=True)
    newest = sorted(ids, reverse=True)
    assert [r.id for r in await store.list_runs(db)] == newest
    assert [r.id for r in await store.list_runs(db, limit=2, offset=1)] == newest[1:3]
    in_p2 = [r for r in await store.list_runs(db, pool_name="p2")]
    assert [r.id for r in in_p2] == [i for i in newest if i in (ids[1], ids[3])]
    assert {r.pool_name for r in in_p2} == {"p2"} and in_p2[0].deployment_name == "f/b"
    assert [r.id for r in await store.list_runs(db, deployment_ref="f/a")] == \
        [i for i in newest if i in (ids[0], ids[2])]
    await store.cancel_run(db, ids[2])
    cancelled = await store.list_runs(db, state=RunState.CANCELLED, pool_name="p1")
    assert [r.id for r in cancelled] == [ids[2]]
    assert await store.list_runs(db, pool_name="no-such-pool") == []
