"""Many replicas on one PostgreSQL, end to end: three server processes and `pushpool tick`
runs share one store while 2,000 runs are created through all three APIs and submitted to
the ledger provider (tests/fakes/ledger_provider, which counts every creation). Midway one
replica is killed with SIGKILL; later PostgreSQL is restarted once. In the end every run is
COMPLETED and was created at the provider exactly once: the killed replica's claims came
back through heartbeats and leases and were resubmitted idempotently, the others and the
ticks reconnected, and each server logged its lost LISTEN connection once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fakes.ledger_provider import INFRA_PREFIX, count_lines, read_ledger
from tests.fakes.pushpool_server import ServerProcess
from tests.test_crash_safety import (
    REPO_ROOT,
    Poster,
    assert_histories_end_once,
    create_ledger_deployment,
    kill,
    ledger_env,
    post_all,
    wait_until,
)
from tests.test_db_outage import PostgresInstance, health, postgres  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

RUNS = 2_000
SERVERS = 3
KILL_AT = RUNS // 4  # jobs made at the provider when replica B is killed
RESTART_AT = RUNS // 2  # ... when PostgreSQL is restarted
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
LISTEN_LOST = "lost the connection that hears other replicas' changes"


def _env(ledger: Path, url: str) -> dict[str, str]:
    return ledger_env(ledger, PUSHPOOL_DATABASE_URL=url,
                      PUSHPOOL_SECRET_KEY="replicas-e2e-shared-key",
                      PUSHPOOL_HEARTBEAT_TIMEOUT_SECONDS="2",
                      PUSHPOOL_LEDGER_ANSWER_DELAY="0.02")


def _tick(home: Path, env: dict[str, str]) -> dict[str, Any]:
    """`pushpool tick` in its own process, as a VM's cron runs it."""
    child = {**{k: v for k, v in os.environ.items() if not k.startswith("PUSHPOOL_")},
             **env, "PUSHPOOL_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "dispatcher.cli", "tick", "--max-seconds",
                           "5", "--output", "json"], env=child, capture_output=True,
                          text=True, timeout=60, cwd=str(REPO_ROOT), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def _store_runs(url: str) -> dict[str, tuple[str, str | None]]:
    """Run id -> (state, infra id), straight from the store."""
    async def read() -> dict[str, tuple[str, str | None]]:
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            rows = await conn.fetch("SELECT id, state, infra_id FROM runs")
        finally:
            await conn.close()
        return {r["id"]: (r["state"], r["infra_id"]) for r in rows}

    try:
        return asyncio.run(read())
    except (OSError, asyncpg.PostgresError):
        return {}  # the store is restarting: asked again by the caller's wait


@pytest.mark.timeout(240)
def test_three_replicas_and_ticks_submit_each_run_once_through_a_kill_and_a_restart(
        postgres: PostgresInstance, tmp_path: Path) -> None:  # noqa: F811
    ledger_path = tmp_path / "ledger.jsonl"
    env = _env(ledger_path, postgres.url)
    servers = [ServerProcess(tmp_path / f"replica-{n}", env=env) for n in range(SERVERS)]
    try:
        for server in servers:
            server.start()
        create_ledger_deployment(servers[0].url)
        keys = [f"run-{i}" for i in range(RUNS)]
        posters = [Poster(server.url, keys[n::SERVERS]).start()
                   for n, server in enumerate(servers)]
        ticks = [_tick(tmp_path / "tick-1", env)]

        wait_until(lambda: count_lines(ledger_path)[1] >= KILL_AT, 60,
                   f"{KILL_AT} jobs made before the kill")
        killed = servers[1]
        kill(killed)  # SIGKILL: its claims come back by heartbeat timeout and lease
        alive = [servers[0], servers[2]]

        wait_until(lambda: count_lines(ledger_path)[1] >= RESTART_AT, 90,
                   f"{RESTART_AT} jobs made before the restart")
        postgres.stop("fast")
        for poster in posters:
            poster.join(90)  # a post refused during the outage ends its poster
        postgres.start()
        for server in alive:
            wait_until(lambda s=server: (health(s.url) or {}).get("status") == "ok", 60,
                       "the database back for every live replica")
        ticks.append(_tick(tmp_path / "tick-2", env))
        acked: dict[str, str] = {}
        for n, poster in enumerate(posters):
            post_all(alive[n % 2].url, poster)  # the rest, the killed replica's too
            acked.update(poster.acked)
        assert len(acked) == RUNS and len(set(acked.values())) == RUNS

        def all_final() -> bool:
            runs = _store_runs(postgres.url)
            return len(runs) == RUNS and all(state in FINAL for state, _ in runs.values())

        wait_until(all_final, 120, "every run in a final state", interval=0.5)
        runs = _store_runs(postgres.url)
        ledger = read_ledger(ledger_path)
        creations = ledger.creations_per_run()
        assert set(runs) == set(acked.values()), "runs nobody created, or posts doubled"
        assert {state for state, _ in runs.values()} == {"COMPLETED"}
        assert not {r: n for r, n in creations.items() if n > 1}, "a run created twice"
        assert set(creations) == set(runs), "a run never created at the provider"
        made = {e.run_id: e.infra_id for e in ledger.creations}
        assert all(infra == made[run_id] and infra.startswith(INFRA_PREFIX)
                   for run_id, (_, infra) in runs.items() if infra is not None)
        calls = ledger.calls_per_run()
        resubmitted = {r for r in runs if calls[r] > 1}
        by_pid = {e.pid for e in ledger.creations}
        assert killed.proc is not None and killed.proc.pid in by_pid, "B submitted nothing"
        assert len(by_pid) >= SERVERS, "the work was not shared"
        assert_histories_end_once(servers[0].url, set(sorted(resubmitted)[:50]) |
                                  set(sorted(runs)[::100]))
        for server in alive:
            log = server.log_path.read_text()
            assert log.count(LISTEN_LOST) == 1, log[-3000:]
            assert "Traceback" not in log, log[-3000:]
        print(f"\n{RUNS} runs; {len(ledger.calls)} submit calls, {len(resubmitted)} "
              f"resubmitted; ticks: {[(t['claimed'], t['scheduled']) for t in ticks]}")
    finally:
        for server in servers:
            server.stop()
