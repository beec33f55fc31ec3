"""Database outage: PostgreSQL stopped and restarted under load, twice, while the server
dispatches runs to the ledger provider (tests/fakes/ledger_provider). While it is down the
server stays up and GET /api/health says "degraded"; once it is back dispatching resumes;
in the end every run is COMPLETED and was created exactly once, counted at the provider.

The test runs its own PostgreSQL (initdb into a temporary directory, a free port, trust
auth), so it can stop it: as the ``postgres`` user when the tests run as root, because
PostgreSQL refuses to run as root. The first outage is a clean ``pg_ctl stop -m fast``; the
second an ``-m immediate`` stop (a crash: the restart replays the WAL) that lasts longer
than the dispatcher's five tries at recording a submission, so submissions made during it
are dropped and must be found again through leases and idempotent resubmission.

A server started while PostgreSQL is down waits for it (dispatcher/server.py) and serves
once it answers; told to stop while waiting, it stops cleanly.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.exc import OperationalError

from dispatcher.server import connect_store
from dispatcher.store.reachability import store_unreachable
from tests.conftest import wait_for
from tests.fakes.ledger_provider import count_lines, read_ledger
from tests.fakes.pushpool_server import ServerProcess, free_port
from tests.test_crash_safety import (
    DEPLOYMENT,
    FINAL_STATES,
    FLOW,
    Poster,
    assert_each_run_made_once,
    assert_no_doubled_history,
    create_ledger_deployment,
    ledger_env,
    list_runs,
    post_all,
    wait_until,
)

RUNS_PER_OUTAGE = 150
OUTAGES = (("fast", 5.0), ("immediate", 17.0))  # (pg_ctl stop mode, seconds down)


@dataclass
class PostgresInstance:
    """A PostgreSQL server of this test's own: data, socket and log under ``base``."""

    base: Path
    port: int
    bin_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        # PostgreSQL refuses to run as root: hand the work to the postgres user then.
        user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*user, str(self.bin_dir / tool), *args], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, f"{tool} {' '.join(args)} failed:\n{done.stdout}" \
                                     f"{done.stderr}\n{self.log_tail()}"

    def log_tail(self) -> str:
        log = self.base / "postgres.log"
        return log.read_text()[-3000:] if log.exists() else ""

    def init(self) -> None:
        self._run("initdb", "-D", str(self.base / "data"), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        # fsync off: the test stops the database process, never the machine, so what a
        # commit wrote to the OS survives either way, and the loaded test box is spared.
        options = f"-p {self.port} -h 127.0.0.1 -k {self.base} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.base / "data"), "-l", str(self.base / "postgres.log"),
                  "-w", "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.base / "data"), "-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        return (self.base / "data" / "postmaster.pid").exists()


def postgres_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture
def postgres() -> Iterator[PostgresInstance]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the database outage test needs PostgreSQL's initdb and pg_ctl")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    # Not under tmp_path: pytest's directories are private to root, and the postgres user
    # must be able to reach its data directory.
    base = Path(tempfile.mkdtemp(prefix="pushpool-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    instance = PostgresInstance(base, free_port(), bin_dir)
    try:
        instance.init()
        instance.start()
        yield instance
    finally:
        if instance.is_running():
            instance.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def health(url: str) -> dict[str, str] | None:
    try:
        response = httpx.get(f"{url}/api/health", timeout=10)
    except httpx.TransportError:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def ride_out_outage(server: ServerProcess, seconds: float, key: str) -> dict[str, object]:
    """Keep the database down for ``seconds`` while checking, all along, that the server
    lives and says "degraded"; also try to create a run (Idempotency-Key ``key``).
    Returns what was seen."""
    assert server.proc is not None
    wait_until(lambda: (health(server.url) or {}).get("status") == "degraded", 20,
               "GET /api/health to report the outage")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        refused = client.post(f"/api/deployments/{FLOW}/{DEPLOYMENT}/runs", json={},
                              headers={"Idempotency-Key": key})
    checks = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert server.proc.poll() is None, \
            f"the server died during the outage:\n{server.log_path.read_text()[-3000:]}"
        seen = health(server.url)
        assert seen is not None and (seen["status"], seen["database"]) == ("degraded", "down"), \
            seen
        checks += 1
        time.sleep(0.25)  # the pace of the liveness checks, not a synchronisation
    return {"checks": checks, "post_status": refused.status_code,
            "post_body": refused.text[:300]}


def wait_for_jobs(ledger_path: Path, jobs: int) -> None:
    wait_until(lambda: count_lines(ledger_path)[1] >= jobs, 60,
               f"{jobs} jobs made at the provider")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_postgres_outage_under_load(postgres: PostgresInstance, tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.jsonl"
    server = ServerProcess(tmp_path / "home",
                           env=ledger_env(ledger_path, PUSHPOOL_DATABASE_URL=postgres.url))
    server.start()
    try:
        create_ledger_deployment(server.url)
        acked: dict[str, str] = {}
        seen: list[dict[str, object]] = []
        for outage_no, (mode, seconds) in enumerate(OUTAGES):
            keys = [f"outage{outage_no}-run{i}" for i in range(RUNS_PER_OUTAGE)]
            poster = Poster(server.url, keys, acked).start()
            wait_for_jobs(ledger_path, count_lines(ledger_path)[1] + RUNS_PER_OUTAGE // 3)
            postgres.stop(mode)
            seen.append(ride_out_outage(server, seconds, f"during-outage-{outage_no}"))
            poster.join()
            assert all(status >= 500 for _, status, _ in poster.errors), poster.errors
            postgres.start()
            wait_until(lambda: (health(server.url) or {}).get("status") == "ok", 30,
                       "GET /api/health to report the database back")
            post_all(server.url, poster)  # the rest, and any post refused in the outage
            post_all(server.url, Poster(server.url, [f"during-outage-{outage_no}"], acked))

        run_ids = set(acked.values())
        assert len(run_ids) == len(OUTAGES) * (RUNS_PER_OUTAGE + 1)

        def all_final() -> bool:
            runs = list_runs(server.url)
            return len(runs) == len(run_ids) and all(r["state"] in FINAL_STATES for r in runs)

        wait_until(all_final, 90, "every run in a final state", interval=0.2)
        summary = assert_each_run_made_once(run_ids, server.url, read_ledger(ledger_path))
        assert all(int(str(s["post_status"])) == 503 for s in seen), seen
        server.stop()
        assert server.proc is not None and server.proc.returncode == 0, \
            server.log_path.read_text()[-3000:]
        print(f"\noutages: {seen}; provider: {summary}")
        assert_no_doubled_history(summary)
    finally:
        server.stop()


def start_in_background(server: ServerProcess) -> tuple[threading.Thread, list[BaseException]]:
    """``server.start()`` (which returns once the API answers) in a thread; the list gets
    what it raised, if anything."""
    failures: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    wait_until(lambda: server.proc is not None, 10, "the server process to be spawned")
    return thread, failures


def waiting_for_database(server: ServerProcess) -> bool:
    assert server.proc is not None
    assert server.proc.poll() is None, \
        f"the server gave up on the database:\n{server.log_path.read_text()[-3000:]}"
    return server.log_path.exists() and "does not answer" in server.log_path.read_text()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_server_started_while_postgres_is_down_waits_for_it(postgres: PostgresInstance,
                                                            tmp_path: Path) -> None:
    postgres.stop("fast")
    ledger_path = tmp_path / "ledger.jsonl"
    env = ledger_env(ledger_path, PUSHPOOL_DATABASE_URL=postgres.url)

    # Told to stop while it waits, it stops at once and cleanly.
    quitter = ServerProcess(tmp_path / "quitter", env=env)
    thread, _ = start_in_background(quitter)
    wait_until(lambda: waiting_for_database(quitter), 30, "the server to wait for PostgreSQL")
    assert quitter.proc is not None
    quitter.proc.send_signal(signal.SIGTERM)
    assert quitter.proc.wait(15) == 0, quitter.log_path.read_text()[-3000:]
    thread.join(10)
    assert "Traceback" not in quitter.log_path.read_text()

    server = ServerProcess(tmp_path / "home", env=env)
    thread, failures = start_in_background(server)
    try:
        wait_until(lambda: waiting_for_database(server), 30, "the server to wait for PostgreSQL")
        postgres.start()
        thread.join(60)
        assert not thread.is_alive() and not failures, failures
        assert (health(server.url) or {}).get("status") == "ok"
        create_ledger_deployment(server.url)
        poster = Poster(server.url, [f"late-start-{i}" for i in range(10)])
        post_all(server.url, poster)
        run_ids = set(poster.acked.values())

        def all_final() -> bool:
            runs = list_runs(server.url)
            return len(runs) == len(run_ids) and all(r["state"] in FINAL_STATES for r in runs)

        wait_until(all_final, 60, "every run in a final state", interval=0.2)
        summary = assert_each_run_made_once(run_ids, server.url, read_ledger(ledger_path))
        log = server.log_path.read_text()
        assert "Traceback" not in log, log[-3000:]
        assert_no_doubled_history(summary)
    finally:
        server.stop()


def test_what_counts_as_a_database_that_does_not_answer() -> None:
    starting = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    wrapped = OperationalError("SELECT 1", {}, starting)
    assert store_unreachable(ConnectionRefusedError(111, "Connect call failed"))
    assert store_unreachable(starting)
    assert store_unreachable(wrapped)
    assert store_unreachable(asyncpg.exceptions.ConnectionDoesNotExistError("closed"))
    assert not store_unreachable(asyncpg.exceptions.InvalidPasswordError("bad password"))
    assert not store_unreachable(OperationalError("SELECT 1", {}, ValueError("no")))
    assert not store_unreachable(RuntimeError("a migration failed"))


async def test_waiting_for_the_database_stops_on_request_and_hides_the_password(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pushpool.server")
    url = f"postgresql+asyncpg://pushpool:s3cret-pw@127.0.0.1:{free_port()}/pushpool"
    stop = asyncio.Event()
    waiting = asyncio.create_task(connect_store(url, stop))
    await wait_for(lambda: "does not answer" in caplog.text, timeout=10,
                   what="a warning that the database does not answer")
    stop.set()
    assert await asyncio.wait_for(waiting, timeout=10) is None
    assert "s3cret-pw" not in caplog.text and "pushpool:***@127.0.0.1" in caplog.text


async def test_a_broken_embedded_store_is_not_waited_for(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    url = f"sqlite+aiosqlite:///{tmp_path / 'file' / 'store.db'}"
    with pytest.raises(OSError):
        await asyncio.wait_for(connect_store(url, asyncio.Event()), timeout=10)


async def test_a_request_the_database_cannot_answer_gets_503_with_retry_after(
        caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from dispatcher.api.errors import error_middleware

    async def store_gone(request: web.Request) -> web.Response:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused"))

    async def our_bug(request: web.Request) -> web.Response:
        raise OperationalError("SELECT 1", {}, ValueError("no such column"))

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/gone", store_gone)
    app.router.add_get("/bug", our_bug)
    caplog.set_level(logging.WARNING, logger="pushpool.api")
    async with TestClient(TestServer(app)) as client:
        gone = await client.get("/gone")
        assert gone.status == 503
        assert gone.headers["Retry-After"].isdigit()
        assert (await gone.json())["error"] == "store_unavailable"
        assert "Traceback" not in caplog.text  # one line per refused request, no traceback
        assert (await client.get("/bug")).status == 500


def test_engine_loops_log_one_line_per_pass_while_the_database_is_away(
        caplog: pytest.LogCaptureFixture) -> None:
    from dispatcher.store.reachability import log_failure

    log = logging.getLogger("pushpool.test")
    caplog.set_level(logging.WARNING, logger="pushpool.test")
    for error in (ConnectionRefusedError(111, "refused"), RuntimeError("a bug")):
        try:
            raise error
        except Exception:
            log_failure(log, "watching runs failed; retrying")
    away, bug = caplog.records
    assert away.levelno == logging.WARNING and away.exc_info is None
    assert "does not answer: ConnectionRefusedError" in away.getMessage()
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
