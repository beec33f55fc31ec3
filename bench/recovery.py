"""Recovery benchmark: how soon the runs a killed server had claimed are submitted again.

- restart (SQLite): a server whose submits hang on a slow no-op provider is killed with
  SIGKILL holding every run's claim, and started again on the same home. Measured: seconds
  from the new process's start to its first resubmission and to the last run's.
- replica death (PostgreSQL): two replicas, each with its own home; the one holding the
  claims is killed. Measured: seconds from the kill to the other's first resubmission and
  to the last, for each heartbeat timeout given (the default is 4 s).

Leases stay at their default minute: without heartbeats both would wait for it. Usage:

    python bench/recovery.py [--runs N] [--repeat R] [--timeouts 4,10]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Server,
    describe_machine,
    postgres_available,
    postgres_database,
    print_summary,
    print_table,
    setup_noop_pool,
    start_server,
    summary_row,
    write_json,
)

TARGET_SECONDS = 5.0
SLOW_SUBMIT = {"PUSHPOOL_NOOP_SUBMIT_SECONDS": "120"}  # claimed, called, never answered


def wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {seconds:.0f}s waiting for {what}")
        time.sleep(0.02)


def post_runs(server: Server, count: int) -> None:
    with server.client() as client:
        setup_noop_pool(client)
        for _ in range(count):
            client.post("/api/deployments/bench/d0/runs", json={}).raise_for_status()
    wait(lambda: server.submit_count() >= count, 60, f"{count} submits to be called")


def kill(server: Server) -> None:
    server.process.kill()
    server.process.wait(10)


def resubmitted_after(server: Server, since: float) -> dict[str, float]:
    """Run id -> seconds after ``since`` of its first submit call after then."""
    times: dict[str, float] = {}
    for run_id, when in server.submit_lines():
        if when > since:
            times.setdefault(run_id, when - since)
    return times


def restart_once(runs: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="pushpool-bench-recovery-"))
    try:
        first = start_server(home=home, env=SLOW_SUBMIT)
        post_runs(first, runs)
        kill(first)
        restarted_at = time.time()
        second = start_server(home=home, env=SLOW_SUBMIT)
        answering = time.time() - restarted_at
        wait(lambda: len(resubmitted_after(second, restarted_at)) >= runs, 120,
             "every run to be resubmitted after the restart")
        kill(second)
        times = resubmitted_after(second, restarted_at).values()
        return {"answering": answering, "first": min(times), "last": max(times)}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def replica_death_once(runs: int, timeout: float) -> dict[str, float]:
    env = {**SLOW_SUBMIT, "PUSHPOOL_HEARTBEAT_TIMEOUT_SECONDS": f"{timeout:g}"}
    with postgres_database() as url:
        victim = start_server(url, env=env)
        survivor: Server | None = None
        try:
            post_runs(victim, runs)
            survivor = start_server(url, env=env)
            # A replica judges others only once it has been heard from for a timeout.
            time.sleep(timeout * 1.25 + 0.5)
            killed_at = time.time()
            kill(victim)
            taker = survivor
            wait(lambda: len(resubmitted_after(taker, killed_at)) >= runs, timeout + 120,
                 "the other replica to resubmit every run")
            times = resubmitted_after(taker, killed_at).values()
            return {"first": min(times), "last": max(times)}
        finally:
            for server in (victim, survivor):
                if server is not None and server.process.poll() is None:
                    kill(server)
                if server is not None:
                    shutil.rmtree(server.home, ignore_errors=True)


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs claimed when killed")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each case")
    parser.add_argument("--timeouts", default="4,10",
                        help="heartbeat timeouts (seconds, comma-separated) to measure")
    args = parser.parse_args()
    timeouts = [float(t) for t in args.timeouts.split(",") if t.strip()]
    print(f"machine: {describe_machine()}", flush=True)

    rows: list[list[Any]] = []
    summary: list[dict[str, Any]] = []
    results: dict[str, Any] = {"restart": [], "replica_death": {}}
    restarts = [restart_once(args.runs) for _ in range(args.repeat)]
    results["restart"] = restarts
    rows.append(["restart (SQLite): start → answering", spread([r["answering"]
                                                               for r in restarts])])
    for key in ("first", "last"):
        values = [r[key] for r in restarts]
        rows.append([f"restart (SQLite): start → {key} resubmission", spread(values)])
    worst = max(r["first"] for r in restarts)
    summary.append(summary_row("recovery: restart → first resubmission (worst)", worst, "s",
                               f"< {TARGET_SECONDS:g} s", worst < TARGET_SECONDS))
    if postgres_available():
        for timeout in timeouts:
            deaths = [replica_death_once(args.runs, timeout) for _ in range(args.repeat)]
            results["replica_death"][f"{timeout:g}"] = deaths
            for key in ("first", "last"):
                rows.append([f"replica death (PostgreSQL, heartbeat timeout {timeout:g} s): "
                             f"kill → {key} resubmission", spread([d[key] for d in deaths])])
            worst = max(d["first"] for d in deaths)
            summary.append(summary_row(
                f"recovery: replica death → first resubmission, timeout {timeout:g} s "
                "(worst)", worst, "s", f"< {TARGET_SECONDS:g} s", worst < TARGET_SECONDS))
    else:
        print("PostgreSQL is not answering on 127.0.0.1:5432: no replica case", flush=True)

    print_table(f"Recovery, {args.runs} claimed runs, {args.repeat} repetitions (seconds, "
                "range)", ["case", "seconds"], rows)
    print_summary("Recovery targets", summary)
    path = write_json("recovery", {"args": vars(args), "results": results,
                                   "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
