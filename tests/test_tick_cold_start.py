"""A cloud function's cold start: the Lambda handler's first timer event, in a fresh
interpreter, loads only what a tick needs and opens one database connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import truncate_postgres

PROJECT = Path(__file__).resolve().parents[1]

# What a timer tick with nothing due must not import: the HTTP side (aiohttp, the API, the
# console and its templates), the CLI and its terminal, checks a tick never makes
# (jsonschema), /metrics (prometheus), clients and formats it never uses, Alembic (the
# store is at head), the cloud SDKs, and, on SQLite, SQLAlchemy's asyncio engine and ORM.
MUST_NOT_LOAD = ("aiohttp", "dispatcher.api", "dispatcher.console", "dispatcher.cli",
                 "dispatcher.server", "jinja2", "jsonschema", "prometheus_client", "httpx",
                 "yaml", "rich", "typer", "alembic", "boto3", "botocore", "google.api_core",
                 "google.auth", "google.cloud.run_v2", "azure", "modal", "sqlalchemy.orm",
                 "sqlalchemy.ext.asyncio")

FIRST_TIMER_EVENT = """
import json, sys
{prelude}
from dispatcher.triggers.aws_lambda import handler
class Context:
    def get_remaining_time_in_millis(self): return 30_000
summary = handler({{"pushpool": "tick"}}, Context())
print(json.dumps({{"summary": summary, "modules": sorted(sys.modules), {extra}}}))
"""


def first_timer_event(url: str, home: Path, prelude: str = "", extra: str = "",
                      settings: dict[str, str] | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHPOOL_")}
    env.update({"PUSHPOOL_DATABASE_URL": url, "PUSHPOOL_HOME": str(home),
                "PUSHPOOL_TICK_ALLOW_SQLITE": "1", "PYTHONPATH": str(PROJECT),
                **(settings or {})})
    code = FIRST_TIMER_EVENT.format(prelude=prelude, extra=extra)
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(PROJECT),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer: dict = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_a_cold_timer_tick_imports_only_what_it_needs(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    first_timer_event(url, tmp_path / "home")  # creates the store: Alembic may load here
    answer = first_timer_event(url, tmp_path / "home")
    assert answer["summary"]["complete"] is True
    assert answer["summary"]["claimed"] == 0
    loaded = [m for m in answer["modules"]
              if any(m == bad or m.startswith(bad + ".") for bad in MUST_NOT_LOAD)]
    assert loaded == []
    assert "dispatcher.store" in answer["modules"]  # the tick did reach the store


# Counts every connection asyncpg opens, the idle probe's and SQLAlchemy's pool's alike.
COUNT_CONNECTIONS = ("import asyncpg\nopened = []\n_connect = asyncpg.connect\n"
                     "async def counted(*a, **k):\n    opened.append(1)\n"
                     "    return await _connect(*a, **k)\nasyncpg.connect = counted")


@pytest.mark.postgres
def test_a_cold_idle_tick_is_one_read_without_the_store(postgres_url: str,
                                                        tmp_path: Path) -> None:
    truncate_postgres(postgres_url)
    answer = first_timer_event(postgres_url, tmp_path / "home", COUNT_CONNECTIONS,
                               '"opened": len(opened)')
    assert answer["summary"]["idle"] is True
    assert answer["summary"]["complete"] is True
    assert answer["opened"] == 1
    assert [m for m in answer["modules"] if m == "sqlalchemy" or m.startswith(
        ("sqlalchemy.", "dispatcher.store", "dispatcher.engine.engine"))] == []


@pytest.mark.postgres
def test_a_cold_tick_with_work_takes_over_the_probes_connection(postgres_url: str,
                                                                tmp_path: Path) -> None:
    # The idle probe finds a schedule to extend and hands its connection to the store, so
    # probing first costs a tick with work no connection more than not probing.
    truncate_postgres(postgres_url)
    made = ("import asyncio\nfrom sqlalchemy import text\nfrom dispatcher import operations\n"
            "from dispatcher.models import DeploymentApply, ScheduleSpec, WorkPoolCreate\n"
            "from dispatcher.store import Database\n"
            "async def setup():\n"
            f"    db = await Database.connect({postgres_url!r})\n"
            "    if not await db.run(lambda c: c.execute(text('SELECT count(*) FROM "
            "work_pools')).scalar()):\n"
            "        await operations.pools.create_pool(db, WorkPoolCreate(name='p', "
            "type='process'))\n"
            "        await operations.deployments.apply_deployment(db, DeploymentApply("
            "name='d', flow_name='f', pool_name='p', command=['true'], "
            "schedules=[ScheduleSpec(cron='0 0 1 1 *')]))\n"
            "    await db.run(lambda c: (c.execute(text('DELETE FROM run_states')), "
            "c.execute(text('DELETE FROM runs')), c.execute(text("
            "'UPDATE schedules SET materialised_until = NULL'))), write=True)\n"
            "    await db.close()\n"
            "asyncio.run(setup())")

    def tick_with_a_schedule_to_extend(probing: bool) -> dict:
        done = subprocess.run([sys.executable, "-c", made], cwd=str(PROJECT), timeout=120,
                              env={**os.environ, "PYTHONPATH": str(PROJECT),
                                   "PUSHPOOL_HOME": str(tmp_path / "home")},
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return first_timer_event(postgres_url, tmp_path / "home", COUNT_CONNECTIONS,
                                 '"opened": len(opened)',
                                 {"PUSHPOOL_TICK_IDLE_PROBE": "1" if probing else "0"})

    probed = tick_with_a_schedule_to_extend(True)
    assert probed["summary"]["idle"] is False
    assert probed["summary"]["scheduled"] >= 1
    unprobed = tick_with_a_schedule_to_extend(False)
    assert unprobed["summary"]["scheduled"] == probed["summary"]["scheduled"]
    assert probed["opened"] == unprobed["opened"]
