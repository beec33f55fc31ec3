"""LISTEN/NOTIFY between replicas on one PostgreSQL (dispatcher/engine/notifications.py):
a run created through replica A is submitted at once by replica B when only B dispatches;
a replica hears the others' changes, never its own; the listening connection, when the
server drops it, comes back, says so once, and wakes every loop for what was missed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from dispatcher import operations
from dispatcher.engine.engine import Engine
from dispatcher.engine.notifications import (
    LISTENER_NAME,
    Change,
    Notices,
    parse_payload,
    payload,
)
from dispatcher.engine.tick import run_tick
from dispatcher.models import DeploymentApply, RunCreate, ScheduleSpec, WorkPoolCreate
from dispatcher.store import Database
from providers import registry
from tests.conftest import truncate_postgres, wait_for
from tests.fakes.recording_provider import STATE
from tests.test_engine import fast_settings

registry.register_provider("recording", "tests.fakes.recording_provider")


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two replicas' connections to one emptied PostgreSQL store."""
    truncate_postgres(postgres_url)
    STATE.reset()
    a = await Database.connect(postgres_url, migrate=False)
    b = await Database.connect(postgres_url, migrate=False)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _deploy(db: Database, **fields: object) -> None:
    await operations.pools.create_pool(db, WorkPoolCreate(name="rec", type="recording"))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name="rec", command=["job"], **fields))  # type: ignore[arg-type]


def test_payloads_are_small_and_unknown_kinds_are_dropped() -> None:
    text_ = payload({Change.RUNS, Change.CANCEL}, "host:12:abc123")
    assert text_ == "cancel,runs host:12:abc123"
    assert parse_payload(text_) == ({Change.RUNS, Change.CANCEL}, "host:12:abc123")
    assert parse_payload("runs,newer-kind host:1:x") == ({Change.RUNS}, "host:1:x")


async def test_a_run_created_through_one_replica_is_submitted_by_another_at_once(
        stores: tuple[Database, Database]) -> None:
    a_db, b_db = stores
    await _deploy(a_db)
    # A takes requests only; B dispatches, and its idle loop sleeps up to a minute: only a
    # notice from A can get the run submitted within the deadline below.
    a = Engine(a_db, fast_settings(replica_id="a", dispatch_enabled=False),
               api_url="http://replica-a")
    b = Engine(b_db, fast_settings(replica_id="b"), api_url="http://replica-b")
    await a.start()
    await b.start()
    try:
        await wait_for(b.notices.listening.is_set, what="B listening")
        await wait_for(lambda: not b.dispatcher._wake.is_set(), what="B's idle loop")
        run, _ = await operations.runs.create_run(a_db, "f/d", RunCreate())
        a.wake()  # what A's API does after the commit
        await wait_for(lambda: STATE.submits[run.id] == 1, timeout=5, what="B's submit")
    finally:
        await a.stop()
        await b.stop()
    assert STATE.submits[run.id] == 1
    assert STATE.specs[run.id].env["PUSHPOOL_API_URL"] == "http://replica-b"


async def test_a_replica_hears_the_others_changes_and_not_its_own(
        stores: tuple[Database, Database]) -> None:
    a_db, b_db = stores
    heard_a: list[Change] = []
    heard_b: list[Change] = []
    a = Notices(a_db, "replica-a", heard_a.append)
    b = Notices(b_db, "replica-b", heard_b.append)
    await a.start()
    await b.start()
    try:
        await wait_for(lambda: a.listening.is_set() and b.listening.is_set(),
                       what="both listening")
        a.publish(Change.SCHEDULES)
        a.publish(Change.CANCEL)
        await wait_for(lambda: {Change.SCHEDULES, Change.CANCEL} <= set(heard_b),
                       what="B hearing A's changes")
        b.publish(Change.RUNS)
        await wait_for(lambda: Change.RUNS in heard_a, what="A hearing B's change")
        await a.flush()
        await b.flush()
    finally:
        await a.stop()
        await b.stop()
    assert Change.RUNS not in heard_b and Change.SCHEDULES not in heard_a


async def test_a_dropped_listening_connection_comes_back_and_says_so_once(
        stores: tuple[Database, Database], caplog: pytest.LogCaptureFixture) -> None:
    a_db, b_db = stores
    caplog.set_level(logging.WARNING, logger="dispatcher.engine.notifications")
    heard: list[Change] = []
    b = Notices(b_db, "replica-b", heard.append)
    a = Notices(a_db, "replica-a", lambda _: None)
    await b.start()
    try:
        await wait_for(b.listening.is_set, what="B listening")
        await a_db.run(lambda conn: conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = :name"), {"name": LISTENER_NAME}))
        await wait_for(lambda: set(heard) == set(Change), timeout=15,
                       what="every loop woken on reconnecting")
        assert b.listening.is_set()
        heard.clear()
        a.publish(Change.INFRA)
        await wait_for(lambda: heard == [Change.INFRA], what="a notice after the reconnect")
    finally:
        await a.stop()
        await b.stop()
    lost = [r for r in caplog.records if "lost the connection" in r.getMessage()]
    back = [r for r in caplog.records if "listening for other replicas' changes again"
            in r.getMessage()]
    assert (len(lost), len(back)) == (1, 1), caplog.text


async def test_runs_a_tick_schedules_wake_the_servers(
        stores: tuple[Database, Database]) -> None:
    a_db, b_db = stores
    await _deploy(a_db, schedules=[ScheduleSpec(interval=3600)])
    heard: list[Change] = []
    server = Notices(b_db, "server", heard.append)
    await server.start()
    try:
        await wait_for(server.listening.is_set, what="the server listening")
        summary = await run_tick(a_db, fast_settings(replica_id="tick"), 10)
        assert summary.scheduled > 0
        await wait_for(lambda: Change.RUNS in heard, what="the tick's notice")
    finally:
        await server.stop()
