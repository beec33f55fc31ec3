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


def first_timer_event(url: str, home: Path, prelude: str = "", extra: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHPOOL_")}
    env.update({"PUSHPOOL_DATABASE_URL": url, "PUSHPOOL_HOME": str(home),
                "PUSHPOOL_TICK_ALLOW_SQLITE": "1", "PYTHONPATH": str(PROJECT)})
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


@pytest.mark.postgres
def test_a_cold_timer_tick_opens_one_database_connection(postgres_url: str,
                                                         tmp_path: Path) -> None:
    truncate_postgres(postgres_url)
    # SQLAlchemy's pool "connect" event fires once for each DBAPI connection opened.
    prelude = ("from sqlalchemy import event\nfrom sqlalchemy.pool import Pool\nopened = []\n"
               "event.listen(Pool, 'connect', lambda *a: opened.append(1))")
    first_timer_event(postgres_url, tmp_path / "home", prelude, '"opened": len(opened)')
    answer = first_timer_event(postgres_url, tmp_path / "home", prelude,
                               '"opened": len(opened)')
    assert answer["summary"]["complete"] is True
    assert answer["opened"] == 1
