"""Serverless tick benchmark: what a cloud function's timer costs on PostgreSQL.

Two cases, each tick in a fresh interpreter (a cold function) on a fresh database:

- nothing due: ``tick_once`` timed after its imports (connect, the migration check, which
  is one read of ``alembic_version`` when the store is at head, the scheduler, watcher and
  claim passes, closing), target < 100 ms; and the Lambda handler's first event, once with
  the engine imported beforehand (what the event itself costs) and once fully cold as
  bench/startup.py measures it (the handler imports the engine on its first event, so
  that figure is mostly imports);
- 500 runs due: copied into the store, then one tick submits them to the no-op provider
  (bench/noop_provider.py, which logs every submit); target within 5 s, every run
  submitted once.

Usage:

    python bench/tick.py [--repeat 5] [--due 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    ROOT,
    copy_runs,
    percentiles,
    postgres_available,
    postgres_database,
    print_summary,
    print_table,
    summary_row,
    write_json,
)
from bench.startup import trigger_first_event

IDLE_TARGET_MS = 100.0
DUE_TARGET_S = 5.0
SHARED_SECRET_KEY = "bench-tick-shared-key"

LAMBDA_PROBE = """
import json, time
from dispatcher.triggers.aws_lambda import handler
import dispatcher.engine.tick  # what the first event would import
class Context:
    def get_remaining_time_in_millis(self): return 30_000
t0 = time.perf_counter()
handler({"pushpool": "tick"}, Context())
print(json.dumps({"ms": (time.perf_counter() - t0) * 1000}))
"""
TICK_PROBE = """
import asyncio, json, time
from dispatcher.engine.tick import tick_once
from dispatcher.settings import get_settings
t0 = time.perf_counter()
summary = asyncio.run(tick_once(get_settings(), 30))
print(json.dumps({"ms": (time.perf_counter() - t0) * 1000, "claimed": summary.claimed,
                  "complete": summary.complete, "phases": summary.ms}))
"""


def _env(database_url: str, home: Path, submit_log: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PUSHPOOL_")}
    environ.update({"PUSHPOOL_DATABASE_URL": database_url, "PUSHPOOL_HOME": str(home),
                    "PUSHPOOL_SECRET_KEY": SHARED_SECRET_KEY, "PUSHPOOL_LOG_LEVEL": "WARNING",
                    "PUSHPOOL_EXTRA_PROVIDERS": json.dumps({"noop": "bench.noop_provider"}),
                    "PUSHPOOL_NOOP_SUBMIT_LOG": str(submit_log), "PYTHONPATH": str(ROOT)})
    return environ


def _tick(env: dict[str, str], probe: str = TICK_PROBE) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, cwd=str(ROOT), check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"the tick failed:\n{done.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def _prepare(database_url: str) -> str:
    """Migrate, make a no-op pool and deployment, and one run to copy; its id."""
    from dispatcher import operations
    from dispatcher.models import DeploymentApply, RunCreate, WorkPoolCreate
    from dispatcher.secret_keys import live_box
    from dispatcher.settings import Settings
    from dispatcher.store import Database
    from providers import registry

    registry.register_provider("noop", "bench.noop_provider")

    async def prepare() -> str:
        box = live_box(Settings(secret_key=SHARED_SECRET_KEY))  # type: ignore[arg-type]
        db = await Database.connect(database_url, secrets=box)
        try:
            await operations.pools.create_pool(db, WorkPoolCreate(name="bench", type="noop"))
            await operations.deployments.apply_deployment(db, DeploymentApply(
                name="d0", flow_name="bench", pool_name="bench", command=["true"]))
            run, _ = await operations.runs.create_run(db, "bench/d0", RunCreate())
            return run.id
        finally:
            await db.close()

    return asyncio.run(prepare())


def bench(repeat: int, due: int) -> dict[str, Any]:
    with postgres_database() as url, tempfile.TemporaryDirectory() as tmp:
        home, submit_log = Path(tmp) / "home", Path(tmp) / "submits.log"
        env = _env(url, home, submit_log)
        template = _prepare(url)
        _tick(env)  # submits the template run: from here on nothing is due
        idle = [_tick(env) for _ in range(repeat)]
        lambda_first = [_tick(env, LAMBDA_PROBE)["ms"] for _ in range(repeat)]
        lambda_cold = trigger_first_event(repeat, url, env)
        loaded = []
        for _ in range(max(2, repeat // 2)):
            before = submit_log.read_text().count("\n") if submit_log.exists() else 0
            copy_runs(url, template, due, datetime.now(UTC))
            result = _tick(env)
            result["submitted"] = submit_log.read_text().count("\n") - before
            loaded.append(result)
    return {"idle_ms": percentiles([t["ms"] for t in idle]),
            "idle_phases_ms": idle[-1]["phases"],
            "lambda_first_event_ms": percentiles(lambda_first),
            "lambda_cold_first_event": lambda_cold,
            "due": due, "due_seconds": percentiles([t["ms"] / 1000 for t in loaded]),
            "due_submitted": [t["submitted"] for t in loaded],
            "due_complete": all(t["complete"] for t in loaded)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="ticks timed per case")
    parser.add_argument("--due", type=int, default=500, help="runs due for the loaded tick")
    args = parser.parse_args()
    if not postgres_available():
        raise SystemExit("bench/tick.py needs PostgreSQL on 127.0.0.1:5432 (ticks refuse "
                         "SQLite)")
    print("benchmarking ticks ...", flush=True)
    result = bench(args.repeat, args.due)
    idle, first, due = result["idle_ms"], result["lambda_first_event_ms"], result["due_seconds"]
    cold = result["lambda_cold_first_event"]["first_event_ms"]
    print_table("A tick in a fresh interpreter, after its imports", [
        "case", "ticks", "p50", "p95", "max", "unit"], [
        ["nothing due: tick_once", idle["n"], idle["p50"], idle["p95"], idle["max"], "ms"],
        ["nothing due: Lambda first event, engine imported", first["n"], first["p50"],
         first["p95"], first["max"], "ms"],
        ["nothing due: Lambda first event, cold (imports)", cold["n"], cold["p50"],
         cold["p95"], cold["max"], "ms"],
        [f"{result['due']} due: tick_once", due["n"], due["p50"], due["p95"], due["max"],
         "s"]])
    print(f"phases of the last idle tick (ms): {result['idle_phases_ms']}")
    all_submitted = all(n == result["due"] for n in result["due_submitted"])
    summary = [
        summary_row("tick, nothing due, after import, median", idle["p50"], "ms",
                    f"< {IDLE_TARGET_MS:g} ms", idle["p50"] < IDLE_TARGET_MS),
        summary_row("Lambda first event, nothing due, engine imported, median",
                    first["p50"], "ms", f"< {IDLE_TARGET_MS:g} ms",
                    first["p50"] < IDLE_TARGET_MS),
        summary_row("Lambda first event, nothing due, cold, median", cold["p50"], "ms"),
        summary_row(f"tick submitting {result['due']} due runs, slowest", due["max"], "s",
                    f"<= {DUE_TARGET_S:g} s, all submitted once",
                    due["max"] <= DUE_TARGET_S and all_submitted and result["due_complete"])]
    print_summary("Tick targets", summary)
    path = write_json("tick", {**result, "summary": summary, "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
