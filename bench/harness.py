"""Shared benchmark plumbing: start real pushpool server processes (one or several replicas),
talk to their API, copy runs straight into the store, summarise latencies, print a Rich
table and write JSON under bench/results/.

Every benchmark writes ``{"machine", "when", ..., "summary": [...]}``; ``summary`` rows
are ``{"metric", "value", "unit", "target", "ok"}`` so that bench/run_all.py can show every
target in one table. Set PUSHPOOL_BENCH_KEEP_HOME=1 to keep each server's home (its SQLite
store, server.log and the no-op provider's submits.log) for a look afterwards, and
PUSHPOOL_BENCH_SWITCH_INTERVAL=0.0005 to run the servers with that GIL switch interval.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG_ADMIN_URL = os.environ.get("PUSHPOOL_BENCH_POSTGRES_URL",
                              "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
START_DEADLINE_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- statistics


def percentiles(values: list[float]) -> dict[str, float]:
    """n, p50, p95, p99 and max (nearest-rank) of a sample; {"n": 0} when empty."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"n": len(ordered), "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99),
            "max": ordered[-1]}


def summary_row(metric: str, value: float | None, unit: str, target: str | None = None,
                ok: bool | None = None) -> dict[str, Any]:
    return {"metric": metric, "value": value, "unit": unit, "target": target, "ok": ok}


# ---------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "memory_gb": _memory_gb(),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in load] if load else None}


def describe_machine() -> str:
    m = machine()
    return (f"{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB RAM, "
            f"Python {m['python']}, {m['platform']}")


# ---------------------------------------------------------------------------- PostgreSQL


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for one benchmark run, dropped afterwards."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"pushpool_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def admin(sql: str) -> None:
        engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rpartition("/")[0] + "/" + name
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------- servers


def _proc_status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in kB (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    home: Path
    submit_log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def submit_lines(self) -> list[tuple[str, float]]:
        """(run id, wall-clock time) of every provider submit call, in order."""
        if not self.submit_log.exists():
            return []
        out = []
        for line in self.submit_log.read_text().splitlines():
            run_id, _, when = line.partition(" ")
            if when:
                out.append((run_id, float(when)))
        return out

    def submit_times(self) -> dict[str, float]:
        """Run id -> the time of its first submit call."""
        times: dict[str, float] = {}
        for run_id, when in self.submit_lines():
            times.setdefault(run_id, when)
        return times

    def submit_count(self) -> int:
        if not self.submit_log.exists():
            return 0
        with self.submit_log.open("rb") as f:
            return sum(1 for _ in f)

    def rss_mb(self) -> float:
        return _proc_status(self.pid, "VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        return _proc_status(self.pid, "VmHWM") / 1024

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def log_tail(self, chars: int = 3000) -> str:
        path = self.home / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def wait_idle(self, quiet_seconds: float = 2.0, timeout: float = 300.0,
                  busy_share: float = 0.1) -> float:
        """Wait until the server's CPU use stays under ``busy_share`` of a core for
        ``quiet_seconds`` (start-up passes done); returns the seconds waited."""
        started = time.monotonic()
        quiet_since = started
        last = self.cpu_seconds()
        while True:
            time.sleep(0.25)
            now_cpu = self.cpu_seconds()
            if now_cpu - last > busy_share * 0.25:
                quiet_since = time.monotonic()
            last = now_cpu
            if time.monotonic() - quiet_since >= quiet_seconds:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"server still busy after {timeout:.0f}s")
            if self.process.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log_tail())


def server_env(home: Path, submit_log: Path, database_url: str | None,
               extra: dict[str, str]) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PUSHPOOL_")
               or k.startswith("PUSHPOOL_BENCH_")}
    environ.update({
        "PUSHPOOL_HOME": str(home), "PUSHPOOL_LOG_LEVEL": "WARNING",
        "PUSHPOOL_EXTRA_PROVIDERS": json.dumps({"noop": "bench.noop_provider"}),
        "PUSHPOOL_NOOP_SUBMIT_LOG": str(submit_log), "PYTHONPATH": str(ROOT),
        # Replicas on one database must seal its secrets alike (each home's own key
        # file would not open the others').
        "PUSHPOOL_SECRET_KEY": "pushpool-bench-shared-key", **extra})
    if database_url:
        environ["PUSHPOOL_DATABASE_URL"] = database_url
    return environ


def start_server(database_url: str | None = None, home: Path | None = None,
                 env: dict[str, str] | None = None) -> Server:
    """Start ``dispatcher.server.run_server`` in a child process; return once it answers."""
    home = home or Path(tempfile.mkdtemp(prefix="pushpool-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    submit_log = home / "submits.log"
    # What-if knob for profiling: the server's GIL switch interval (seconds; Python's
    # default is 0.005), e.g. to see how much DB-thread <-> event-loop GIL hand-offs cost.
    switch = os.environ.get("PUSHPOOL_BENCH_SWITCH_INTERVAL")
    prelude = f"import sys; sys.setswitchinterval({float(switch)!r}); " if switch else ""
    process = subprocess.Popen(
        [sys.executable, "-c", prelude +
         f"from dispatcher.server import run_server; run_server('127.0.0.1', {port})"],
        env=server_env(home, submit_log, database_url, env or {}), cwd=str(ROOT),
        stdout=subprocess.DEVNULL, stderr=open(home / "server.log", "wb"))
    server = Server(f"http://127.0.0.1:{port}", process, home, submit_log)
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while True:
        try:
            if httpx.get(f"{server.url}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError("server did not start:\n" + server.log_tail())
        time.sleep(0.05)


def stop_server(server: Server, remove_home: bool = True) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
    if os.environ.get("PUSHPOOL_BENCH_KEEP_HOME"):
        print(f"kept the server's home (store, server.log, submits.log): {server.home}",
              file=sys.stderr)
    elif remove_home:
        shutil.rmtree(server.home, ignore_errors=True)


@contextmanager
def running_servers(count: int, database_url: str | None = None,
                    **env: str) -> Iterator[list[Server]]:
    """``count`` replicas on one store (PostgreSQL for more than one), stopped and their
    temporary homes removed afterwards."""
    if count > 1 and not (database_url or "").startswith("postgresql"):
        raise ValueError("several replicas need a PostgreSQL database_url")
    servers: list[Server] = []
    try:
        for _ in range(count):
            servers.append(start_server(database_url, env=env))
        yield servers
    finally:
        for server in servers:
            stop_server(server)


@contextmanager
def running_server(database_url: str | None = None, **env: str) -> Iterator[Server]:
    with running_servers(1, database_url, **env) as (server,):
        yield server


def server_settings(pairs: list[str]) -> dict[str, str]:
    """``["PUSHPOOL_X=1", ...]`` (a ``--server-env`` option) as a dict; a bad item is a
    clear error naming it."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("PUSHPOOL_"):
            raise SystemExit(f"--server-env {pair!r}: give PUSHPOOL_NAME=value, e.g. "
                             "PUSHPOOL_SCHEDULER_HORIZON_SECONDS=300")
        out[name] = value
    return out


def database_url_of(server: Server, database_url: str | None) -> str:
    """The URL the server's store lives at (its embedded SQLite file by default)."""
    return database_url or f"sqlite+aiosqlite:///{server.home / 'pushpool.db'}"


def setup_noop_pool(client: httpx.Client, pool: str = "bench", deployments: int = 1,
                    schedules: list[dict[str, Any]] | None = None) -> None:
    client.post("/api/work-pools", json={"name": pool, "type": "noop"}).raise_for_status()
    for i in range(deployments):
        client.put("/api/deployments", json={
            "name": f"d{i}", "flow_name": pool, "pool_name": pool,
            "command": ["true"], "schedules": schedules or []}).raise_for_status()


# ---------------------------------------------------------------------------- a lean client


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, JSON in and out.

    httpx spends about a millisecond of CPU per request; this spends a few tens of
    microseconds, so one client process can offer 1,000+ requests/s on a 2-core machine
    without starving the server it measures. Connections are opened on demand, up to
    ``size``, and reused; the server must answer with a Content-Length (aiohttp does)."""

    def __init__(self, url: str, size: int = 64):
        host_port = url.removeprefix("http://").rstrip("/")
        self.host, _, port = host_port.partition(":")
        self.port = int(port or 80)
        self.size = size
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._opened = 0
        self._free = asyncio.Semaphore(size)

    async def request(self, method: str, path: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n")
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        raw = head.encode() + b"\r\n" + payload
        async with self._free:
            if self._idle:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                self._opened += 1
            try:
                writer.write(raw)
                status_and_headers = await reader.readuntil(b"\r\n\r\n")
                lines = status_and_headers.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                data = await reader.readexactly(length) if length else b""
            except BaseException:
                writer.close()
                raise
            self._idle.append((reader, writer))
        return status, (json.loads(data) if data else None)

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def drive_at_rate(rate: float, seconds: float, one: Callable[[int], Any],
                        start_at: float | None = None) -> tuple[float, float]:
    """Call ``await one(i)`` for i in 0..rate*seconds-1, each started at start + i/rate
    (open loop: a slow answer never delays the next start). Returns (first start, last
    finish) as wall-clock times."""
    total = int(rate * seconds)
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    start = time.perf_counter()
    wall_start = time.time()
    tasks: list[asyncio.Task[Any]] = []
    i = 0
    while i < total:
        elapsed = time.perf_counter() - start
        due = min(total, int(elapsed * rate) + 1)
        while i < due:
            tasks.append(asyncio.create_task(one(i)))
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, min(0.002, i / rate - (time.perf_counter() - start))))
    await asyncio.gather(*tasks)
    return wall_start, time.time()


# ---------------------------------------------------------------------------- the store


def copy_runs(database_url: str, template_run_id: str, count: int,
              scheduled_time: datetime) -> list[str]:
    """Insert ``count`` SCHEDULED copies of an API-made run straight into the store (one
    transaction, new ids), so a benchmark can make 10,000 runs due at once in a second
    instead of spending a minute on API calls. Returns the new run ids."""
    from sqlalchemy import insert, select

    from dispatcher.store import Database
    from dispatcher.store.common import utcnow
    from dispatcher.store.tables import run_states, runs

    async def copy() -> list[str]:
        db = await Database.connect(database_url, migrate=False)
        try:
            def write(conn: Any) -> list[str]:
                row = conn.execute(select(runs).where(runs.c.id == template_run_id)).one()
                now = utcnow()
                base = dict(row._mapping)
                rows, states = [], []
                for i in range(count):
                    run_id = str(uuid.uuid4())
                    rows.append({**base, "id": run_id, "name": f"bulk-{i}",
                                 "idempotency_key": None, "scheduled_time": scheduled_time,
                                 "created": now, "updated": now, "state": "SCHEDULED",
                                 "attempt": 0, "lease_owner": None, "lease_expires": None,
                                 "infra_id": None})
                    states.append({"run_id": run_id, "state": "SCHEDULED", "timestamp": now,
                                   "message": "copied by the benchmark"})
                for start in range(0, count, 2000):
                    conn.execute(insert(runs), rows[start:start + 2000])
                    conn.execute(insert(run_states), states[start:start + 2000])
                return [r["id"] for r in rows]

            return await db.run(write, write=True)
        finally:
            await db.close()

    return asyncio.run(copy())


# ---------------------------------------------------------------------------- output


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*[f"{v:.1f}" if isinstance(v, float) else str(v) for v in row])
    # Wide enough for every column when the output is a file or a pipe, not a terminal.
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def print_summary(title: str, summary: list[dict[str, Any]]) -> None:
    rows = []
    for s in summary:
        value = s["value"]
        shown = "-" if value is None else (f"{value:,.1f}" if isinstance(value, float)
                                           else f"{value:,}")
        verdict = {True: "ok", False: "MISSED", None: ""}[s["ok"]]
        rows.append([s["metric"], f"{shown} {s['unit']}", s["target"] or "", verdict])
    print_table(title, ["metric", "measured", "target", ""], rows)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "when": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}, indent=2, default=str))
    return path
