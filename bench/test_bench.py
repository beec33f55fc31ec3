"""Checks of the benchmark plumbing itself (fast; run with ``pytest bench/test_bench.py``):
statistics, the lean HTTP client, the py-spy summary, and that the scale data looks
like what the store and the scheduler would have written.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import func, select

from bench.harness import RawHttp, drive_at_rate, percentiles, server_settings
from bench.profiling import summarise
from bench.scale_data import Shape, counts, load
from dispatcher import store
from dispatcher.engine.scheduler import target_slots
from dispatcher.settings import Settings
from dispatcher.store.tables import runs
from providers import registry
from tests.fakes.scheduled_runs import active_schedules


def test_percentiles_pick_nearest_rank() -> None:
    stats = percentiles([float(v) for v in range(1, 101)])
    assert (stats["n"], stats["p50"], stats["p99"], stats["max"]) == (100, 51.0, 100.0, 100.0)
    assert percentiles([]) == {"n": 0}


def test_server_settings_need_pushpool_names() -> None:
    assert server_settings(["PUSHPOOL_A=1=2"]) == {"PUSHPOOL_A": "1=2"}
    with pytest.raises(SystemExit, match="PUSHPOOL_NAME=value"):
        server_settings(["HOME=/tmp"])


async def test_raw_http_reuses_connections_and_paces_requests() -> None:
    seen: list[dict[str, int]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"got": seen[-1]["i"]}, status=201)

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = RawHttp(f"http://127.0.0.1:{port}", size=4)
    answers: list[int] = []

    async def one(i: int) -> None:
        status, body = await client.request("POST", "/echo", {"i": i})
        assert status == 201
        answers.append(body["got"])

    try:
        first, last = await drive_at_rate(200, 0.25, one)
    finally:
        await client.close()
        await runner.cleanup()
    assert sorted(answers) == list(range(50))
    assert client._opened <= 4
    assert last - first >= 0.2  # 50 requests at 200/s take a quarter second


def test_summarise_attributes_samples(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "thread (1): MainThread;run_server (dispatcher/server.py:10);"
        "Dispatcher._submit (dispatcher/engine/dispatch.py:5);dumps (json/__init__.py:1) 3\n"
        "thread (2): pushpool-db-write_0;_worker (concurrent/futures/thread.py:83);"
        "Database._run_sqlite (dispatcher/store/db.py:114);"
        "claim (dispatcher/store/claims.py:190);do_execute (sqlalchemy/engine/default.py:9) 1\n")
    summary = summarise(raw)
    assert summary["samples"] == 4
    assert summary["threads"] == {"MainThread": 75.0, "pushpool-db-write": 25.0}
    assert summary["transactions"] == [("claim (dispatcher/store/claims.py)", 25.0)]
    assert ("Dispatcher._submit (dispatcher/engine/dispatch.py)", 75.0) in summary["pushpool"]
    assert summary["self"][0] == ("dumps (json/__init__.py)", 75.0)


async def test_scale_data_matches_what_the_store_and_scheduler_write(tmp_path: Path) -> None:
    registry.register_provider("noop", "bench.noop_provider")
    db = await store.Database.connect(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    now = datetime.now(UTC)
    try:
        shape = Shape(deployments=120, runs=1000, pools=3, due=30)
        await load(db, shape, now=now)
        assert await counts(db) == {"deployments": 120, "schedules": 120, "runs": 1000,
                                    "run_states": 1000}
        # The store reads it back: every due run is claimable, nothing else is.
        claimed = await store.claim_due_runs(db, "t", limit=500, lease_seconds=60, now=now)
        assert len(claimed) == 30
        assert {r.pool_name for r in claimed} == {"pool-0", "pool-1", "pool-2"}
        # The stored future runs are the scheduler's own slots (same keys), so its next
        # pass does not make them again.
        targets = await active_schedules(db)
        assert len(targets) == 120
        tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                     microsecond=0)
        expected = {store.schedule_slot_key(t.deployment_id, slot)
                    for t in targets for slot in target_slots(t.spec, now, Settings())
                    if slot >= tomorrow}
        stored = set(await db.run(lambda conn: list(conn.execute(
            select(runs.c.idempotency_key).where(runs.c.scheduled_time >= tomorrow))
            .scalars())))
        assert expected and expected <= stored
        oldest = await db.run(lambda conn: conn.execute(
            select(func.min(runs.c.created))).scalar_one())
        assert (now - oldest.replace(tzinfo=UTC)).days == shape.days  # spread over 30 days
    finally:
        await db.close()
