"""Crash safety of the process provider through a real server, on SQLite and PostgreSQL:
each run's command runs exactly once, counted by the command itself (it appends its run id
to a ledger file), whatever moment the server is killed at.

Two scenarios: the server kills itself (the provider's fault-injection point,
``PUSHPOOL_PROCESS_CRASH_AFTER``) right after each step of a launch in turn, then is started
again; and ``kill -9`` at seeded random moments while it dispatches three rounds of runs.
Leases are left at their default minute: a restarted server takes its own earlier claims
back at once (its replica id is kept in its home), so every wait here ends well before a
lease would.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from providers.process.adapter import CRASH_AFTER_ENV, LAUNCH_STEPS
from tests.fakes.pushpool_server import ServerProcess
from tests.test_crash_safety import (
    DEPLOYMENT,
    FINAL_STATES,
    FLOW,
    Poster,
    kill,
    list_runs,
    post_all,
    wait_until,
)

pytestmark = pytest.mark.slow

SEED = 20_261_203
ROUNDS = 3
RUNS_PER_ROUND = 20
WITHIN_A_LEASE = 40.0  # seconds; the default lease is 60
# The job: one line with its run id, in one write (O_APPEND), so lines never interleave.
COUNTING_COMMAND = [sys.executable, "-c",
                    "import os; fd = os.open(os.environ['LEDGER'], "
                    "os.O_WRONLY | os.O_APPEND | os.O_CREAT); "
                    "os.write(fd, (os.environ['PUSHPOOL_RUN_ID'] + '\\n').encode())"]


def executions(ledger: Path) -> Counter[str]:
    """How many times each run's command ran."""
    if not ledger.exists():
        return Counter()
    return Counter(line for line in ledger.read_text().splitlines() if line)


def ran_at_least(ledger: Path, count: int) -> Callable[[], bool]:
    return lambda: sum(executions(ledger).values()) >= count


def create_counting_deployment(url: str, ledger: Path) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        client.post("/api/work-pools", json={"name": "local", "type": "process"}
                    ).raise_for_status()
        client.put("/api/deployments", json={
            "name": DEPLOYMENT, "flow_name": FLOW, "pool_name": "local",
            "command": COUNTING_COMMAND, "job_variables": {"env": {"LEDGER": str(ledger)}}}
                   ).raise_for_status()


def post_run(url: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.post(f"/api/deployments/{FLOW}/{DEPLOYMENT}/runs", json={})
        response.raise_for_status()
        return str(response.json()["id"])


def all_completed(url: str, run_ids: set[str]) -> bool:
    runs = list_runs(url)
    return len(runs) == len(run_ids) and all(r["state"] in FINAL_STATES for r in runs)


def assert_each_ran_once(url: str, run_ids: set[str], ledger: Path) -> None:
    runs = list_runs(url)
    assert {r["id"] for r in runs} == run_ids
    not_completed = {r["id"]: (r["state"], r["state_message"]) for r in runs
                     if r["state"] != "COMPLETED"}
    assert not not_completed, not_completed
    ran = executions(ledger)
    assert {run_id: n for run_id, n in ran.items() if n != 1} == {}, "ran more than once"
    assert set(ran) == run_ids, f"never ran: {sorted(run_ids - set(ran))[:5]}"


@pytest.fixture
def process_server(tmp_path: Path, database_env: dict[str, str]) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "home", env=dict(database_env))
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("step", LAUNCH_STEPS)
def test_server_killed_after_each_launch_step_runs_the_job_once(
        process_server: ServerProcess, tmp_path: Path, step: str) -> None:
    server, ledger = process_server, tmp_path / "ledger"
    server.env[CRASH_AFTER_ENV] = step
    server.start()
    create_counting_deployment(server.url, ledger)
    run_id = post_run(server.url)
    assert server.proc is not None
    wait_until(lambda: server.proc is not None and server.proc.poll() is not None, 30,
               f"the server to kill itself after the launch step {step!r}")
    assert server.proc.returncode == -9, server.log_path.read_text()[-3000:]

    del server.env[CRASH_AFTER_ENV]
    server.start()
    wait_until(lambda: all_completed(server.url, {run_id}), WITHIN_A_LEASE,
               "the run to end after the restart", interval=0.1)
    assert_each_ran_once(server.url, {run_id}, ledger)


@pytest.mark.timeout(240)
def test_kill_9_at_random_moments_runs_each_process_job_once(
        process_server: ServerProcess, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    server, ledger = process_server, tmp_path / "ledger"
    server.start()
    create_counting_deployment(server.url, ledger)
    run_ids: set[str] = set()
    for round_no in range(ROUNDS):
        keys = [f"round{round_no}-run{i}" for i in range(RUNS_PER_ROUND)]
        poster = Poster(server.url, keys).start()
        target = RUNS_PER_ROUND * round_no + rng.randint(1, RUNS_PER_ROUND - 1)
        wait_until(ran_at_least(ledger, target), 60, f"job #{target} to run")
        kill(server)
        poster.join()
        assert not poster.errors, poster.errors
        server.start()
        post_all(server.url, poster)
        run_ids.update(poster.acked.values())
    assert len(run_ids) == ROUNDS * RUNS_PER_ROUND
    wait_until(lambda: all_completed(server.url, run_ids), WITHIN_A_LEASE,
               "every run to end", interval=0.2)
    assert_each_ran_once(server.url, run_ids, ledger)
