"""Dispatch benchmark: latency (run created -> provider submit called) at steady rates, and
throughput (N runs due at once -> submits per second), on SQLite and on PostgreSQL with
one and with two replicas (server processes sharing one database).

Real server processes run with the no-op provider (bench/noop_provider.py), which logs the
wall-clock time of every submit call. Latency runs are created through the HTTP API by a
lean open-loop client (bench/harness.py RawHttp; several client processes with
--client-processes) and measured from the run's server-side ``created`` time. Throughput
runs are copied straight into the store while the pool is paused, then the pool is resumed
on every replica and the clock runs until the last submit. With two replicas on PostgreSQL,
a cross-replica case creates runs at 100 runs/s only through replica A, whose dispatching
is off (``PUSHPOOL_DISPATCH_ENABLED=false``), so only replica B submits them: what it
measures is A's NOTIFY waking B. Usage:

    python bench/dispatch.py [--backend sqlite|postgresql|both] [--rates 10,100,1000]
                             [--seconds 10] [--burst 10000] [--replicas 1,2]
                             [--client-processes 1] [--profile] [--server-env NAME=VALUE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    RESULTS,
    RawHttp,
    Server,
    copy_runs,
    database_url_of,
    drive_at_rate,
    percentiles,
    postgres_available,
    postgres_database,
    print_summary,
    print_table,
    server_settings,
    start_server,
    stop_server,
    summary_row,
    write_json,
)
from bench.profiling import print_summary as print_profile
from bench.profiling import py_spy, require_py_spy, summarise

POOL = "bench"
RUNS_URL = f"/api/deployments/{POOL}/d0/runs"
LATENCY_TARGET_MS = 50.0  # p99 at 100 runs/s
CROSS_REPLICA_RATE = 100.0
SHARED_SECRET_KEY = "bench-replicas-shared-key"  # replicas of one store share their key
THROUGHPUT_TARGETS = {("sqlite", 1): 1000.0, ("postgresql", 2): 2000.0}
DRAIN_TIMEOUT = 180.0


# ---------------------------------------------------------------------------- creating runs


async def _create_at_rate(url: str, rate: float, seconds: float, start_at: float | None,
                          connections: int) -> list[tuple[str, float, float]]:
    """(run id, server-side created time, client send time) of each run made."""
    client = RawHttp(url, size=connections)
    made: list[tuple[str, float, float]] = []
    failures: list[str] = []

    async def one(_: int) -> None:
        sent = time.time()
        status, body = await client.request("POST", RUNS_URL, {})
        if status != 201:
            failures.append(f"{status}: {body}")
            return
        made.append((body["id"], datetime.fromisoformat(body["created"]).timestamp(), sent))

    try:
        await drive_at_rate(rate, seconds, one, start_at)
    finally:
        await client.close()
    if failures:
        raise RuntimeError(f"{len(failures)} run creations failed, e.g. {failures[0]}")
    return made


def client_process(url: str, rate: float, seconds: float, start_at: float,
                   connections: int) -> list[tuple[str, float, float]]:
    """One client process's share of the load (run in a ProcessPoolExecutor)."""
    return asyncio.run(_create_at_rate(url, rate, seconds, start_at, connections))


def create_runs(server: Server, rate: float, seconds: float, processes: int
                ) -> tuple[list[tuple[str, float, float]], float]:
    """Runs made at ``rate`` for ``seconds``; returns them and the achieved rate."""
    connections = max(8, min(256, int(rate / 10)))
    started = time.time()
    if processes <= 1:
        made = asyncio.run(_create_at_rate(server.url, rate, seconds, None, connections))
    else:
        start_at = time.time() + 1.5  # every process imports first, then all start together
        started = start_at
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(client_process, server.url, rate / processes, seconds,
                                   start_at, connections // processes + 1)
                       for _ in range(processes)]
            made = [m for f in futures for m in f.result()]
    last_created = max((c for _, c, _ in made), default=started)
    return made, len(made) / max(last_created - started, 1e-9)


def wait_for_submits(servers: list[Server], expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (done := sum(s.submit_count() for s in servers)) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {expected} runs submitted within "
                               f"{timeout:.0f}s:\n" + servers[0].log_tail())
        time.sleep(0.05)


def all_submits(servers: list[Server]) -> tuple[dict[str, float], int]:
    """Run id -> first submit time across replicas, and how many submits were repeats."""
    first: dict[str, float] = {}
    repeats = 0
    for server in servers:
        for run_id, when in server.submit_lines():
            if run_id in first:
                repeats += 1
                first[run_id] = min(first[run_id], when)
            else:
                first[run_id] = when
    return first, repeats


@contextlib.contextmanager
def maybe_profile(enabled: bool, server: Server, name: str) -> Any:
    if not enabled:
        yield None
        return
    path = RESULTS / f"profile-{name}.txt"
    with py_spy(server.pid, path):
        yield path
    print_profile(name, summarise(path))


# ---------------------------------------------------------------------------- scenarios


def latency(server: Server, rate: float, seconds: float, processes: int,
            profile: str | None) -> dict[str, Any]:
    before = server.submit_count()
    cpu_before = server.cpu_seconds()
    with maybe_profile(profile is not None, server, f"{profile}-latency-{rate:g}"):
        made, achieved = create_runs(server, rate, seconds, processes)
        wait_for_submits([server], before + len(made), DRAIN_TIMEOUT)
    cpu_ms_per_run = (server.cpu_seconds() - cpu_before) * 1000 / max(len(made), 1)
    submitted, repeats = all_submits([server])
    created_ms = [(submitted[run_id] - created) * 1000 for run_id, created, _ in made]
    sent_ms = [(submitted[run_id] - sent) * 1000 for run_id, _, sent in made]
    server.wait_idle(quiet_seconds=1.0, timeout=120)
    return {"rate": rate, "achieved_rate": achieved, "seconds": seconds,
            "client_processes": processes, "repeats": repeats,
            "server_cpu_ms_per_run": cpu_ms_per_run, **percentiles(created_ms),
            "request_sent_to_submit_ms": percentiles(sent_ms)}


def throughput(servers: list[Server], database_url: str, count: int,
               profile: str | None) -> dict[str, Any]:
    """``count`` runs due at once (copied into the store under a paused pool), then the
    pool resumed on every replica: submits per second until the last one."""
    with servers[0].client() as client:
        client.post(f"/api/work-pools/{POOL}/pause").raise_for_status()
        template = client.post(RUNS_URL, json={})
        template.raise_for_status()
        copy_runs(database_url, template.json()["id"], count - 1, datetime.now(UTC))
    counts_before = [s.submit_count() for s in servers]
    before = sum(counts_before)
    before_ids = set(all_submits(servers)[0])
    cpu_before = [s.cpu_seconds() for s in servers]

    async def resume_everywhere() -> None:
        clients = [RawHttp(s.url, size=1) for s in servers]
        results = await asyncio.gather(*(c.request("POST", f"/api/work-pools/{POOL}/resume")
                                         for c in clients))
        for client in clients:
            await client.close()
        for status, body in results:
            if status != 200:
                raise RuntimeError(f"resume failed: {status} {body}")

    with maybe_profile(profile is not None, servers[0],
                       f"{profile}-throughput-{len(servers)}x"):
        started = time.time()
        asyncio.run(resume_everywhere())
        wait_for_submits(servers, before + count, DRAIN_TIMEOUT * 3)
        cpu = sum(s.cpu_seconds() - c for s, c in zip(servers, cpu_before, strict=True))
    submitted, repeats = all_submits(servers)
    times = [t for run_id, t in submitted.items() if run_id not in before_ids]
    elapsed = max(times) - started
    per_replica = [s.submit_count() - c for s, c in zip(servers, counts_before, strict=True)]
    for server in servers:
        server.wait_idle(quiet_seconds=1.0, timeout=300)
    return {"runs": count, "replicas": len(servers), "seconds": elapsed,
            "first_submit_s": min(times) - started, "submits_per_second": count / elapsed,
            "repeats": repeats, "submits_per_replica": per_replica,
            "server_cpu_ms_per_run": cpu * 1000 / count}


def cross_replica_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Runs created through replica A only, submitted by replica B only (see the module
    docstring), each replica with its own connection to a fresh PostgreSQL database."""
    env = {**server_settings(args.server_env), "PUSHPOOL_SECRET_KEY": SHARED_SECRET_KEY}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database())
        servers: list[Server] = []
        stack.callback(stop_all, servers)
        servers.append(start_server(url, env={**env, "PUSHPOOL_DISPATCH_ENABLED": "false"}))
        servers.append(start_server(url, env=env))
        api, worker = servers
        with api.client() as client:
            client.post("/api/work-pools", json={"name": POOL, "type": "noop"}
                        ).raise_for_status()
            client.put("/api/deployments", json={"name": "d0", "flow_name": POOL,
                                                 "pool_name": POOL, "command": ["true"]}
                       ).raise_for_status()
        made, achieved = create_runs(api, CROSS_REPLICA_RATE, args.seconds, 1)
        wait_for_submits([worker], len(made), DRAIN_TIMEOUT)
        submitted, repeats = all_submits(servers)
        created_ms = [(submitted[run_id] - created) * 1000 for run_id, created, _ in made]
        return {"rate": CROSS_REPLICA_RATE, "achieved_rate": achieved, "seconds": args.seconds,
                "repeats": repeats, "submits_by_a": api.submit_count(),
                **percentiles(created_ms)}


def stop_all(servers: list[Server]) -> None:
    for server in servers:
        stop_server(server)


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",") if r]
    replica_counts = sorted({int(r) for r in args.replicas.split(",") if r})
    if backend == "sqlite":
        replica_counts = [1]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database()) if backend == "postgresql" else None
        servers: list[Server] = []
        stack.callback(stop_all, servers)
        servers.append(start_server(url, env=server_settings(args.server_env)))
        store_url = database_url_of(servers[0], url)
        with servers[0].client() as client:
            client.post("/api/work-pools", json={"name": POOL, "type": "noop"}
                        ).raise_for_status()
            client.put("/api/deployments", json={"name": "d0", "flow_name": POOL,
                                                 "pool_name": POOL, "command": ["true"]}
                       ).raise_for_status()
        profile = backend if args.profile else None
        results = []
        for rate in rates:
            processes = args.client_processes or (2 if rate >= 500 else 1)
            print(f"  {backend}: {rate:g} runs/s for {args.seconds:g}s ...", flush=True)
            results.append(latency(servers[0], rate, args.seconds, processes, profile))
        bursts = []
        if args.burst:
            for replicas in replica_counts:
                while len(servers) < replicas:
                    servers.append(start_server(url, env=server_settings(args.server_env)))
                print(f"  {backend}: {args.burst} runs due at once, {replicas} "
                      f"replica(s) ...", flush=True)
                bursts.append(throughput(servers[:replicas], store_url, args.burst, profile))
    cross = []
    if backend == "postgresql" and 2 in replica_counts:
        print(f"  {backend}: {CROSS_REPLICA_RATE:g} runs/s created through replica A, "
              "submitted by replica B ...", flush=True)
        cross.append(cross_replica_latency(args))
    return {"latency": results, "throughput": bursts, "cross_replica": cross}


def summarise_report(report: dict[str, Any]) -> list[dict[str, Any]]:
    summary = []
    for backend, result in report.items():
        for r in result["latency"]:
            target = r["rate"] == 100
            summary.append(summary_row(
                f"{backend} dispatch latency p99 at {r['rate']:g}/s", r.get("p99"), "ms",
                f"< {LATENCY_TARGET_MS:g} ms" if target else None,
                (r.get("p99", 1e9) < LATENCY_TARGET_MS) if target else None))
        for c in result.get("cross_replica", []):
            summary.append(summary_row(
                f"{backend} p99 at {c['rate']:g}/s, created via A, submitted by B",
                c.get("p99"), "ms", f"< {LATENCY_TARGET_MS:g} ms",
                c.get("p99", 1e9) < LATENCY_TARGET_MS and c["submits_by_a"] == 0))
        for t in result["throughput"]:
            goal = THROUGHPUT_TARGETS.get((backend, t["replicas"]))
            summary.append(summary_row(
                f"{backend} throughput, {t['runs']:,} due, {t['replicas']} replica(s)",
                t["submits_per_second"], "submits/s",
                f">= {goal:,.0f}/s" if goal else None,
                (t["submits_per_second"] >= goal) if goal else None))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rates", default="10,100,1000", help="runs per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each rate")
    parser.add_argument("--burst", type=int, default=10_000, help="runs due at once (0: skip)")
    parser.add_argument("--replicas", default="1,2",
                        help="replica counts for the burst on PostgreSQL")
    parser.add_argument("--client-processes", type=int, default=0,
                        help="processes creating runs (default: 2 from 500 runs/s up, else 1)")
    parser.add_argument("--profile", action="store_true",
                        help="record each phase with py-spy (bench/results/profile-*.txt)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a PUSHPOOL_* setting for the servers (repeatable)")
    args = parser.parse_args()
    require_py_spy(parser, args.profile)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if "postgresql" in backends and not postgres_available():
        print("PostgreSQL is not answering on 127.0.0.1:5432: skipping it", flush=True)
        backends.remove("postgresql")
    report: dict[str, Any] = {}
    for backend in backends:
        print(f"benchmarking {backend} ...", flush=True)
        report[backend] = bench_backend(backend, args)
    rows = []
    for backend, result in report.items():
        for r in result["latency"]:
            sent = r["request_sent_to_submit_ms"]
            rows.append([backend, f"{r['rate']:g}/s", f"{r['achieved_rate']:.0f}/s", r["n"],
                         r.get("p50", 0), r.get("p95", 0), r.get("p99", 0), r.get("max", 0),
                         sent.get("p99", 0), r["server_cpu_ms_per_run"]])
    print_table("Dispatch latency, run created -> provider submit called (ms)",
                ["backend", "rate", "achieved", "runs", "p50", "p95", "p99", "max",
                 "p99 from request sent", "server CPU ms/run"], rows)
    print_table("Throughput, runs due at once",
                ["backend", "replicas", "runs", "first submit s", "seconds", "submits/s",
                 "per replica", "server CPU ms/run", "repeated submits"],
                [[b, t["replicas"], t["runs"], t["first_submit_s"], t["seconds"],
                  t["submits_per_second"], "/".join(map(str, t["submits_per_replica"])),
                  t["server_cpu_ms_per_run"], t["repeats"]]
                 for b, r in report.items() for t in r["throughput"]])
    print_table("Across replicas: created through A (not dispatching) -> submitted by B (ms)",
                ["backend", "rate", "achieved", "runs", "p50", "p95", "p99", "max",
                 "submits by A", "repeated submits"],
                [[b, f"{c['rate']:g}/s", f"{c['achieved_rate']:.0f}/s", c["n"], c.get("p50", 0),
                  c.get("p95", 0), c.get("p99", 0), c.get("max", 0), c["submits_by_a"],
                  c["repeats"]] for b, r in report.items() for c in r["cross_replica"]])
    summary = summarise_report(report)
    print_summary("Dispatch targets", summary)
    path = write_json("dispatch", {**report, "summary": summary,
                                   "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
