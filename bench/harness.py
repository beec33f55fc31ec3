"""Shared benchmark plumbing: start a real pushpool server process, talk to its API,
summarise latencies, print a Rich table and write JSON under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG_ADMIN_URL = os.environ.get("PUSHPOOL_BENCH_POSTGRES_URL",
                              "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"n": len(ordered), "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99),
            "max": ordered[-1]}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor() or "unknown"}


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for one benchmark run."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"pushpool_bench_{os.getpid()}"

    async def admin(sql: str) -> None:
        engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(sql))
        await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rpartition("/")[0] + "/" + name
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    home: Path
    submit_log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def submit_times(self) -> dict[str, float]:
        times: dict[str, float] = {}
        if self.submit_log.exists():
            for line in self.submit_log.read_text().splitlines():
                run_id, _, when = line.partition(" ")
                times.setdefault(run_id, float(when))
        return times

    def submit_count(self) -> int:
        if not self.submit_log.exists():
            return 0
        with self.submit_log.open("rb") as f:
            return sum(1 for _ in f)


@contextmanager
def running_server(database_url: str | None = None, **env: str) -> Iterator[Server]:
    home = Path(tempfile.mkdtemp(prefix="pushpool-bench-"))
    port = free_port()
    submit_log = home / "submits.log"
    environ = {**os.environ, "PUSHPOOL_HOME": str(home), "PUSHPOOL_LOG_LEVEL": "WARNING",
               "PUSHPOOL_EXTRA_PROVIDERS": json.dumps({"noop": "bench.noop_provider"}),
               "PUSHPOOL_NOOP_SUBMIT_LOG": str(submit_log), "PYTHONPATH": str(ROOT), **env}
    if database_url:
        environ["PUSHPOOL_DATABASE_URL"] = database_url
    process = subprocess.Popen(
        [sys.executable, os.environ["PUSHPOOL_BENCH_PROFILE"], str(port)]
        if os.environ.get("PUSHPOOL_BENCH_PROFILE") else
        [sys.executable, "-c",
         f"from dispatcher.server import run_server; run_server('127.0.0.1', {port})"],
        env=environ, stdout=subprocess.DEVNULL, stderr=open(home / "server.log", "wb"))
    server = Server(f"http://127.0.0.1:{port}", process, home, submit_log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{server.url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" +
                                   (home / "server.log").read_text()[-3000:])
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def setup_noop_pool(client: httpx.Client, pool: str = "bench", deployments: int = 1) -> None:
    client.post("/api/work-pools", json={"name": pool, "type": "noop"}).raise_for_status()
    for i in range(deployments):
        client.put("/api/deployments", json={
            "name": f"d{i}", "flow_name": "bench", "pool_name": pool,
            "command": ["true"]}).raise_for_status()


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*[f"{v:.1f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "when": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}, indent=2))
    return path
