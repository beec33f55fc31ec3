"""The idle probe of a cloud function's tick: its text is the store's query compiled, and
on a real PostgreSQL it sees each reason the full tick has to work, and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text, update

from dispatcher import operations
from dispatcher.engine.idle_probe import PROBE_SQL, ProbeAnswer, connect_kwargs, probe
from dispatcher.engine.tick import run_tick
from dispatcher.models import DeploymentApply, RunCreate, ScheduleSpec, WorkPoolCreate
from dispatcher.schema_head import script_head
from dispatcher.settings import Settings
from dispatcher.store import Database
from dispatcher.store.common import utcnow
from dispatcher.store.idle import as_python_source, compiled_for_postgresql
from dispatcher.store.tables import work_pools
from providers import registry
from tests.conftest import _truncate
from tests.fakes.recording_provider import STATE

registry.register_provider("recording", "tests.fakes.recording_provider")

SETTINGS = Settings(claim_ahead_seconds=2.0, submit_timeout_seconds=5)


def test_the_probes_text_is_the_stores_query_compiled_for_postgresql() -> None:
    current = compiled_for_postgresql()
    assert PROBE_SQL == current, (
        "dispatcher/engine/idle_probe.py holds an old PROBE_SQL; replace it with the output "
        "of `python -m dispatcher.store.idle`:\n" + as_python_source(current))


def test_only_a_postgresql_url_with_nothing_but_ssl_is_probed() -> None:
    assert connect_kwargs("sqlite+aiosqlite:///store.db") is None
    assert connect_kwargs("postgresql+asyncpg://u@h/db?prepared_statement_cache_size=0") is None
    assert connect_kwargs("postgresql+asyncpg://u:p%40ss@h:6543/db?ssl=require") == {
        "host": "h", "port": 6543, "user": "u", "password": "p@ss", "database": "db",
        "ssl": "require"}


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[Database]:
    db = await Database.connect(postgres_url, migrate=False)
    await _truncate(db)
    STATE.reset()
    try:
        yield db
    finally:
        await db.close()


async def read_probe(postgres_url: str) -> ProbeAnswer:
    answer, connection = await probe(postgres_url, SETTINGS, script_head())
    if connection is not None:
        await connection.close()
    assert answer is not None
    return answer


def reasons(answer: ProbeAnswer) -> set[str]:
    return {name for name in ("due", "leases", "probes", "watch", "schedules")
            if getattr(answer, name)}


async def tick(db: Database) -> Any:
    return await run_tick(db, SETTINGS, 20)


@pytest.mark.postgres
async def test_the_probe_sees_each_reason_to_tick_and_nothing_else(
        pg: Database, postgres_url: str) -> None:
    assert reasons(await read_probe(postgres_url)) == set()  # an empty store
    await operations.pools.create_pool(pg, WorkPoolCreate(name="rec", type="recording"))
    await operations.deployments.apply_deployment(pg, DeploymentApply(
        name="d", flow_name="f", pool_name="rec", command=["job"]))
    # A run due later than the claim looks ahead: nothing to do yet.
    later, _ = await operations.runs.create_run(pg, "f/d", RunCreate(
        scheduled_time=utcnow() + timedelta(minutes=10)))
    assert reasons(await read_probe(postgres_url)) == set()
    summary = await tick(pg)
    assert (summary.scheduled, summary.claimed) == (0, 0)

    # A run due now: the claim's reason; the full tick submits it.
    run, _ = await operations.runs.create_run(pg, "f/d", RunCreate())
    assert reasons(await read_probe(postgres_url)) == {"due"}
    assert (await tick(pg)).claimed == 1
    # Submitted and not final: the watcher's reason, until it ends.
    assert reasons(await read_probe(postgres_url)) == {"watch"}
    await pg.run(lambda conn: conn.execute(text(
        "UPDATE runs SET state = 'COMPLETED' WHERE id = :id"), {"id": run.id}), write=True)
    assert reasons(await read_probe(postgres_url)) == set()

    # A claim whose lease ran out before its submit was recorded: taken back.
    await pg.run(lambda conn: conn.execute(text(
        "UPDATE runs SET state = 'PENDING', lease_owner = 'gone', "
        "lease_expires = :past WHERE id = :id"),
        {"id": later.id, "past": (utcnow() - timedelta(seconds=5)).replace(tzinfo=None)}),
        write=True)
    assert reasons(await read_probe(postgres_url)) == {"leases"}
    await pg.run(lambda conn: conn.execute(text(
        "UPDATE runs SET state = 'CANCELLED', lease_owner = NULL, lease_expires = NULL "
        "WHERE id = :id"), {"id": later.id}), write=True)
    assert reasons(await read_probe(postgres_url)) == set()

    # A pool its breaker paused, due a probe.
    await pg.run(lambda conn: conn.execute(update(work_pools).values(
        paused=True, paused_by="breaker", breaker_retry_at=None)), write=True)
    assert reasons(await read_probe(postgres_url)) == {"probes"}
    await pg.run(lambda conn: conn.execute(update(work_pools).values(
        paused=False, paused_by=None)), write=True)

    # A schedule whose runs are not made yet; once the tick made them (a yearly one: a
    # few years ahead), nothing is left to do.
    await operations.deployments.apply_deployment(pg, DeploymentApply(
        name="yearly", flow_name="f", pool_name="rec", command=["job"],
        schedules=[ScheduleSpec(cron="0 0 1 1 *")]))
    assert reasons(await read_probe(postgres_url)) == {"schedules"}
    assert (await tick(pg)).scheduled >= 1
    assert reasons(await read_probe(postgres_url)) == set()
    assert (await tick(pg)).scheduled == 0


@pytest.mark.postgres
async def test_a_store_not_at_the_scripts_head_is_left_to_the_full_tick(
        pg: Database, postgres_url: str) -> None:
    answer, connection = await probe(postgres_url, SETTINGS, "not-the-head")
    assert answer is None and connection is not None  # handed on: the full tick migrates
    await connection.close()
    assert await probe("sqlite+aiosqlite:///x.db", SETTINGS, script_head()) == (None, None)
    assert await probe(postgres_url, SETTINGS, None) == (None, None)


@pytest.mark.postgres
async def test_a_busy_probe_hands_its_connection_to_the_store(
        pg: Database, postgres_url: str) -> None:
    await operations.pools.create_pool(pg, WorkPoolCreate(name="rec", type="recording"))
    await operations.deployments.apply_deployment(pg, DeploymentApply(
        name="d", flow_name="f", pool_name="rec", command=["job"]))
    await operations.runs.create_run(pg, "f/d", RunCreate())
    answer, connection = await probe(postgres_url, SETTINGS, script_head())
    assert answer is not None and reasons(answer) == {"due"}
    backend = await connection.fetchval("SELECT pg_backend_pid()")
    db = await Database.connect(postgres_url, first_connection=connection)
    try:
        pids = await db.run(lambda conn: conn.execute(text("SELECT pg_backend_pid()"))
                            .scalar_one())
        assert pids == backend  # the pool's first connection is the probe's
    finally:
        await db.close()
