"""`pushpool work-pool delete` against a real server: a pool with deployments is refused with
the count and the way out, `--cascade` lists what it removes before deleting it, and the
finished runs stay readable afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.pushpool_server import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "home", env={"PUSHPOOL_SCHEDULER_MIN_RUNS": "3"})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def cli(server: ServerProcess, *args: str, code: int = 0) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PUSHPOOL_")},
           **server.client_env(), "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          check=False)
    output = done.stdout + done.stderr
    assert done.returncode == code, f"pushpool {' '.join(args)} -> {done.returncode}:\n{output}"
    return output


def scheduled_runs(api: httpx.Client) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = api.get("/api/runs", params={"state": "SCHEDULED"}).json()
    return runs


def test_delete_refuses_a_pool_with_deployments_and_cascade_keeps_history(
        server: ServerProcess) -> None:
    api = httpx.Client(base_url=server.url, timeout=30)
    api.post("/api/work-pools", json={"name": "doomed", "type": "process"}).raise_for_status()
    api.put("/api/deployments", json={
        "name": "d1", "flow_name": "doom", "pool_name": "doomed",
        "command": ["python", "-c", "print(1)"],
        "schedules": [{"cron": "0 3 * * *"}]}).raise_for_status()
    deadline = time.monotonic() + 30
    while len(scheduled_runs(api)) < 3:  # the scheduler materialises the cron's next runs
        assert time.monotonic() < deadline, scheduled_runs(api)
        time.sleep(0.1)  # polling interval of the check, with a deadline
    run = api.post("/api/deployments/doom/d1/runs", json={
        "scheduled_time": "2030-01-01T00:00:00Z"}).raise_for_status().json()
    cancelled = api.post(f"/api/runs/{run['id']}/cancel").raise_for_status().json()

    assert "--cascade" in cli(server, "work-pool", "delete", "--help")
    refused = cli(server, "work-pool", "delete", "doomed", "--yes", code=2)
    assert refused.startswith("Error: work pool 'doomed' has 1 deployment(s) (doom/d1)")
    assert "--cascade" in refused
    assert api.get("/api/deployments/doom/d1").status_code == 200
    assert len(scheduled_runs(api)) == 3

    out = cli(server, "work-pool", "delete", "doomed", "--cascade", "--yes")
    assert "--cascade also deletes 1 deployment(s), their 1 schedule(s) and 3 scheduled" in \
        " ".join(out.split())
    assert "doom/d1" in out and "Finished runs are kept." in out
    assert "Deleted work pool 'doomed' and 1 deployment(s)" in out
    assert api.get("/api/work-pools/doomed").status_code == 404
    assert api.get("/api/deployments/doom/d1").status_code == 404
    assert scheduled_runs(api) == []
    kept = api.get(f"/api/runs/{run['id']}").json()
    assert kept["state"] == "CANCELLED" and kept["history"] == cancelled["history"]
    assert (kept["pool_name"], kept["deployment_name"]) == ("doomed", "doom/d1")
    assert run["id"] in cli(server, "run", "ls", "--output", "json")
    api.close()
