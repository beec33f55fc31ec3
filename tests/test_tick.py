"""Ticks: one bounded pass of the engine (dispatcher/engine/tick.py, ``pushpool tick``).
A tick whose time runs out says what it left; ticks interleaved from several processes
on one PostgreSQL store submit each run exactly once (counted by a ledger provider that
outlives the processes); SQLite is refused unless allowed; bad flags exit 2."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher import operations, store
from dispatcher.cli import app
from dispatcher.engine.tick import run_tick
from dispatcher.models import DeploymentApply, RunCreate, RunState, WorkPoolCreate
from dispatcher.settings import Settings
from dispatcher.store import Database
from providers import registry
from tests.fakes.ledger_provider import read_ledger
from tests.fakes.recording_provider import STATE

registry.register_provider("recording", "tests.fakes.recording_provider")
registry.register_provider("ledger", "tests.fakes.ledger_provider")
PROJECT = Path(__file__).resolve().parents[1]


async def due_runs(db: Database, count: int, pool_type: str = "recording") -> list[str]:
    await operations.pools.create_pool(db, WorkPoolCreate(name="p", type=pool_type))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name="p", command=["true"]))
    return [(await operations.runs.create_run(db, "f/d", RunCreate()))[0].id
            for _ in range(count)]


async def test_a_tick_with_nothing_due_is_complete_and_does_nothing(
        db: Database, tmp_path: Path) -> None:
    summary = await run_tick(db, Settings(home=tmp_path), 5.0)
    assert summary.complete and summary.claimed == summary.scheduled == 0
    assert summary.watch_passes == 1 and "total" in summary.ms


async def test_a_tick_whose_submits_hang_stops_at_its_deadline_and_says_so(
        db: Database, tmp_path: Path) -> None:
    STATE.reset()
    STATE.hang = True
    run_ids = await due_runs(db, 3)
    started = time.monotonic()
    summary = await run_tick(db, Settings(home=tmp_path), 0.6)
    took = time.monotonic() - started
    STATE.hang = False
    assert not summary.complete and summary.unfinished == 3, summary
    assert any("still submitting" in item for item in summary.left)
    assert took < 0.6 + 1.0, took  # the deadline, plus the stop's own bookkeeping
    # Their submits began, so they keep their attempt for the next claim (idempotent).
    states = {(await store.get_run(db, r)).state for r in run_ids}
    assert states == {RunState.PENDING}


def tick_process(url: str, ledger: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PUSHPOOL_DATABASE_URL": url, "PYTHONPATH": str(PROJECT),
           "PUSHPOOL_EXTRA_PROVIDERS": json.dumps({"ledger": "tests.fakes.ledger_provider"}),
           "PUSHPOOL_LEDGER_PATH": str(ledger), "PUSHPOOL_LEDGER_RUN_SECONDS": "0.05",
           "PUSHPOOL_CLAIM_BATCH_SIZE": "20"}
    return subprocess.Popen([sys.executable, "-m", "dispatcher.cli", "tick", "--max-seconds",
                             "5", "--output", "json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.postgres
async def test_ticks_interleaved_from_several_processes_submit_each_run_once(
        postgres_url: str, tmp_path: Path) -> None:
    db = await Database.connect(postgres_url, migrate=False)
    try:
        from tests.conftest import _truncate

        await _truncate(db)
        run_ids = set(await due_runs(db, 150, pool_type="ledger"))
        ledger = tmp_path / "ledger.jsonl"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ticks = [tick_process(postgres_url, ledger) for _ in range(3)]
            for tick in ticks:
                _, err = tick.communicate(timeout=60)
                assert tick.returncode == 0, err
            if read_ledger(ledger).creations_per_run().keys() >= run_ids:
                break
        made = read_ledger(ledger).creations_per_run()
        assert set(made) == run_ids, f"{len(run_ids - set(made))} never submitted"
        assert max(made.values()) == 1
    finally:
        await db.close()


def test_the_command_refuses_sqlite_unless_allowed_and_bad_budgets(
        sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatcher.settings import get_settings

    monkeypatch.setenv("PUSHPOOL_DATABASE_URL", sqlite_db_url)
    get_settings.cache_clear()
    runner = CliRunner()
    refused = runner.invoke(app, ["tick"])
    assert refused.exit_code == 2 and "--allow-sqlite" in refused.output
    for bad in ("0", "-1", "1000"):
        answer = runner.invoke(app, ["tick", "--max-seconds", bad])
        assert answer.exit_code == 2 and "--max-seconds" in answer.output, answer.output
    allowed = runner.invoke(app, ["tick", "--allow-sqlite", "--output", "json"])
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.output)["complete"] is True


@pytest.mark.postgres
async def test_the_command_answers_an_idle_store_with_the_probe_and_works_otherwise(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatcher.settings import get_settings
    from tests.conftest import truncate_postgres

    truncate_postgres(postgres_url)
    monkeypatch.setenv("PUSHPOOL_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    STATE.reset()
    db = await Database.connect(postgres_url, migrate=False)

    async def tick() -> dict:  # the command runs its own event loop: off this one
        answer = await asyncio.to_thread(CliRunner().invoke, app, ["tick", "--output", "json"])
        assert answer.exit_code == 0, answer.output
        summary: dict = json.loads(answer.output)
        return summary

    try:
        assert (await tick())["idle"] is True
        await due_runs(db, 2)
        busy = await tick()
    finally:
        await db.close()
    assert busy["idle"] is False and busy["claimed"] == 2
    assert all(STATE.submits[r] == 1 for r in STATE.submits) and len(STATE.submits) == 2
