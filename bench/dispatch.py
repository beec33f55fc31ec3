"""Dispatch benchmark: latency (run created -> provider submit called) at steady rates, and
throughput (N runs due at once -> submits per second), on SQLite and PostgreSQL.

A real server process runs with the no-op provider registered; this process creates runs
through the HTTP API and reads the provider's submit log. Usage:

    python bench/dispatch.py [--backend sqlite|postgresql|both] [--rates 10,100]
                             [--seconds 10] [--burst 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Server,
    percentiles,
    postgres_database,
    print_table,
    running_server,
    setup_noop_pool,
    write_json,
)

RUNS_URL = "/api/deployments/bench/d0/runs"


async def create_runs_at_rate(server: Server, rate: float, seconds: float
                              ) -> dict[str, float]:
    """POST runs at a steady rate; returns run id -> server-side creation time."""
    created: dict[str, float] = {}
    total = int(rate * seconds)
    async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                 limits=httpx.Limits(max_connections=64)) as client:
        async def one() -> None:
            response = await client.post(RUNS_URL, json={})
            response.raise_for_status()
            body = response.json()
            created[body["id"]] = datetime.fromisoformat(body["created"]).timestamp()

        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return created


def wait_for_submits(server: Server, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while server.submit_count() < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {server.submit_count()} of {expected} runs submitted "
                               f"within {timeout:.0f}s")
        time.sleep(0.05)


def latency(server: Server, rate: float, seconds: float) -> dict[str, Any]:
    before = server.submit_count()
    created = asyncio.run(create_runs_at_rate(server, rate, seconds))
    wait_for_submits(server, before + len(created), timeout=120)
    submitted = server.submit_times()
    millis = [(submitted[run_id] - t) * 1000 for run_id, t in created.items()]
    return {"rate": rate, "seconds": seconds, **percentiles(millis)}


async def create_burst(server: Server, count: int) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                 limits=httpx.Limits(max_connections=32)) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(count):
            queue.put_nowait(i)

        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                (await client.post(RUNS_URL, json={})).raise_for_status()

        await asyncio.gather(*[worker() for _ in range(32)])


def throughput(server: Server, count: int) -> dict[str, Any]:
    with server.client() as client:
        client.post("/api/work-pools/bench/pause").raise_for_status()
        before = server.submit_count()
        asyncio.run(create_burst(server, count))
        started = time.time()
        client.post("/api/work-pools/bench/resume").raise_for_status()
    wait_for_submits(server, before + count, timeout=600)
    last = max(server.submit_times().values())
    elapsed = last - started
    return {"runs": count, "seconds": elapsed, "submits_per_second": count / elapsed}


def bench_backend(backend: str, rates: list[float], seconds: float, burst: int
                  ) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database()) if backend == "postgresql" else None
        server = stack.enter_context(running_server(url))
        with server.client() as client:
            setup_noop_pool(client)
        results = [latency(server, rate, seconds) for rate in rates]
        burst_result = throughput(server, burst) if burst else None
    return {"latency": results, "throughput": burst_result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rates", default="10,100", help="runs per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each rate")
    parser.add_argument("--burst", type=int, default=10_000, help="runs due at once")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    rates = [float(r) for r in args.rates.split(",") if r]
    report: dict[str, Any] = {}
    for backend in backends:
        print(f"benchmarking {backend} ...", flush=True)
        report[backend] = bench_backend(backend, rates, args.seconds, args.burst)
    rows = []
    for backend, result in report.items():
        for r in result["latency"]:
            rows.append([backend, f"{r['rate']:g}/s", r["n"], r.get("p50", 0), r.get("p95", 0),
                         r.get("p99", 0), r.get("max", 0)])
    print_table("Dispatch latency, run created -> submit called (ms)",
                ["backend", "rate", "runs", "p50", "p95", "p99", "max"], rows)
    print_table("Throughput, runs due at once",
                ["backend", "runs", "seconds", "submits/s"],
                [[b, r["throughput"]["runs"], r["throughput"]["seconds"],
                  r["throughput"]["submits_per_second"]]
                 for b, r in report.items() if r["throughput"]])
    path = write_json("dispatch", report)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
