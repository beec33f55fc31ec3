"""Dispatch latency through the cloud adapters: a run due -> its create request (Cloud
Run's run_job, ACI's container group PUT, Modal's sandbox create) arriving at the cloud's
fake, at a steady rate (100 runs/s by default), as bench/dispatch.py measures run created
-> submit called for the no-op provider.

A real server process (embedded SQLite) has one pool of the type, whose deployment's job
variables reach the fake, which runs in this process (``bench/cloud_fakes.py``) and
records when each create request arrived; the run's due time is its ``scheduled_time``
read from the server's store. Runs are made through the API by a lean open-loop client in
a process of its own, so that the fake's threads and the client do not share a GIL. A few
runs first, not counted and followed to RUNNING, make the clients, the job, the app
and the sign-in. The adapters'
own rate limits are raised by configuration (their defaults protect real quotas) and the
output says which. The figure is the dispatcher's own time plus the way to the fake: a
first submit sends the create alone (only a retried one looks for an earlier try's
execution, group or sandbox first), and the fake, in this process, records the request
once it has read it. Usage:

    python bench/cloud_dispatch.py [--only cloud-run:push,...] [--rate 100] [--seconds 10]
                                   [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cloud_fakes import CLOUDS, Arrival, FakeCloud
from bench.dispatch import client_process, maybe_profile
from bench.harness import (
    Server,
    database_url_of,
    percentiles,
    print_summary,
    print_table,
    running_server,
    summary_row,
    write_json,
)
from bench.profiling import require_py_spy

POOL = "bench"
LATENCY_TARGET_MS = 50.0  # p99 at 100 runs/s, as for ECS
WARM_RUNS = 3
DRAIN_TIMEOUT = 120.0


def first_arrivals(arrivals: list[Arrival]) -> tuple[dict[str, float], int]:
    """Run id -> its first create request's arrival, and how many creates were repeats."""
    first: dict[str, float] = {}
    repeats = 0
    for run_id, when in arrivals:
        if run_id in first:
            repeats += 1
        else:
            first[run_id] = when
    return first, repeats


def wait_for_creates(read: Callable[[], list[Arrival]], run_ids: set[str], server: Server,
                     timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        first, _ = first_arrivals(read())
        missing = run_ids - first.keys()
        if not missing:
            return first
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise RuntimeError(f"{len(missing)} of {len(run_ids)} runs made no create "
                               f"request within {timeout:.0f}s:\n{server.log_tail()}")
        time.sleep(0.05)


def wait_until_running(client: httpx.Client, run_ids: set[str], timeout: float) -> None:
    """The warm runs followed to RUNNING: status reads and their clients made too."""
    deadline = time.monotonic() + timeout
    waiting = set(run_ids)
    while waiting:
        for run_id in list(waiting):
            answer = client.get(f"/api/runs/{run_id}")
            answer.raise_for_status()
            if answer.json()["state"] != "PENDING":
                waiting.discard(run_id)
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"{len(waiting)} warm-up runs still PENDING after {timeout:.0f}s")
        time.sleep(0.1)


def due_times(server: Server, run_ids: list[str]) -> dict[str, float]:
    """Each run's scheduled time, read from the server's store."""
    from sqlalchemy import select

    from dispatcher.store import Database
    from dispatcher.store.tables import runs

    async def read() -> dict[str, float]:
        db = await Database.connect(database_url_of(server, None), migrate=False)
        try:
            rows = await db.run(lambda conn: list(conn.execute(
                select(runs.c.id, runs.c.scheduled_time).where(runs.c.id.in_(run_ids)))))
        finally:
            await db.close()
        return {row.id: _utc(row.scheduled_time).timestamp() for row in rows}

    return asyncio.run(read())


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def create_runs_elsewhere(server: Server, rate: float, seconds: float) -> list[str]:
    """Run ids made at ``rate`` for ``seconds`` by a client in its own process."""
    connections = max(8, min(256, int(rate / 10)))
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        start_at = time.time() + 1.5  # the process imports first
        made = pool.submit(client_process, server.url, rate, seconds, start_at,
                           connections).result()
    return [run_id for run_id, _, _ in made]


def measure(cloud: FakeCloud, rate: float, seconds: float,
            profile: bool = False) -> dict[str, Any]:
    """The shared measurement: one adapter, one server, one steady rate."""
    fake = cloud.start()

    def read() -> list[Arrival]:
        return cloud.create_arrivals(fake)

    env, job_variables = cloud.server_setup(fake)
    with running_server(**env) as server:
        with server.client() as client:
            client.post("/api/work-pools", json={"name": POOL, "type": cloud.pool_type}
                        ).raise_for_status()
            client.put("/api/deployments", json={
                "name": "d0", "flow_name": POOL, "pool_name": POOL,
                "command": ["python", "-c", "print('hi')"],
                "job_variables": job_variables}).raise_for_status()
            warm: set[str] = set()
            for _ in range(WARM_RUNS):
                answer = client.post(f"/api/deployments/{POOL}/d0/runs", json={})
                answer.raise_for_status()
                warm.add(answer.json()["id"])
            wait_for_creates(read, warm, server, DRAIN_TIMEOUT)
            wait_until_running(client, warm, DRAIN_TIMEOUT)
        cpu_before = server.cpu_seconds()
        started = time.time()
        name = f"cloud-dispatch-{cloud.pool_type.partition(':')[0]}"
        with maybe_profile(profile, server, name):
            run_ids = create_runs_elsewhere(server, rate, seconds)
            offered = time.time() - started
            arrived = wait_for_creates(read, set(run_ids), server, DRAIN_TIMEOUT)
        cpu_ms_per_run = (server.cpu_seconds() - cpu_before) * 1000 / max(len(run_ids), 1)
        due = due_times(server, run_ids)
        _, repeats = first_arrivals(read())
    latency_ms = [(arrived[r] - due[r]) * 1000 for r in run_ids]
    return {"pool_type": cloud.pool_type, "rate": rate, "seconds": seconds,
            "runs": len(run_ids), "offered_seconds": offered, "limits": cloud.limits,
            "repeated_creates": repeats, "server_cpu_ms_per_run": cpu_ms_per_run,
            "emulator": cloud.emulator, **percentiles(latency_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(CLOUDS),
                        help=f"pool types, comma-separated (of {', '.join(CLOUDS)})")
    parser.add_argument("--rate", type=float, default=100.0, help="runs per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long runs are made")
    parser.add_argument("--profile", action="store_true",
                        help="record each server with py-spy (bench/results/profile-*.txt)")
    args = parser.parse_args()
    require_py_spy(parser, args.profile)
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = [t for t in only if t not in CLOUDS]
    if unknown:
        parser.error(f"--only: unknown pool type(s) {unknown}; choose from {list(CLOUDS)}")
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds: give positive numbers, e.g. --rate 100")
    results = []
    for pool_type in only:
        cloud = CLOUDS[pool_type]
        print(f"  {pool_type}: {args.rate:g} runs/s for {args.seconds:g}s ...", flush=True)
        print(f"    {cloud.describe_limits()}", flush=True)
        results.append(measure(cloud, args.rate, args.seconds, args.profile))
    print_table("Dispatch latency, run due -> create request at the fake (ms)",
                ["pool type", "rate", "runs", "p50", "p95", "p99", "max",
                 "server CPU ms/run", "repeated creates"],
                [[r["pool_type"], f"{r['rate']:g}/s", r["runs"], r.get("p50", 0),
                  r.get("p95", 0), r.get("p99", 0), r.get("max", 0),
                  r["server_cpu_ms_per_run"], r["repeated_creates"]] for r in results])
    summary = []
    for r in results:
        target = r["rate"] == 100
        summary.append(summary_row(
            f"{r['pool_type']} dispatch latency p99 at {r['rate']:g}/s", r.get("p99"), "ms",
            f"< {LATENCY_TARGET_MS:g} ms" if target else None,
            (r.get("p99", 1e9) < LATENCY_TARGET_MS) if target else None))
    print_summary("Cloud adapter dispatch targets", summary)
    path = write_json("cloud_dispatch", {"results": results, "summary": summary,
                                         "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
