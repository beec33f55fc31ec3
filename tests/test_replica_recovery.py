"""Recovery without waiting out the lease, through real servers: a replica killed while it
submits a run has that run resubmitted by another replica once its heartbeat stops (two
servers on PostgreSQL), and the provider makes the job once. Leases are a minute here, so a
recovery that waited for one would miss every deadline below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import truncate_postgres
from tests.fakes.ledger_provider import read_ledger
from tests.fakes.pushpool_server import ServerProcess
from tests.test_crash_safety import (
    DEPLOYMENT,
    FLOW,
    create_ledger_deployment,
    kill,
    ledger_env,
    wait_until,
)

pytestmark = pytest.mark.slow

WITHIN_A_LEASE = 40.0  # seconds; the lease is 60


@pytest.fixture
def servers(tmp_path: Path, postgres_url: str) -> Iterator[list[ServerProcess]]:
    truncate_postgres(postgres_url)
    started: list[ServerProcess] = []

    def settings(answer_delay: str) -> dict[str, str]:
        return ledger_env(tmp_path / "ledger.jsonl", PUSHPOOL_DATABASE_URL=postgres_url,
                          PUSHPOOL_LEASE_SECONDS="60", PUSHPOOL_HEARTBEAT_TIMEOUT_SECONDS="2",
                          PUSHPOOL_LEDGER_ANSWER_DELAY=answer_delay,
                          PUSHPOOL_SUBMIT_TIMEOUT_SECONDS="700",
                          # Replicas on one database seal and open its secrets alike.
                          PUSHPOOL_SECRET_KEY="replica-recovery-shared-key")

    # The first replica's cloud never answers: it dies holding the claim. The second's does.
    started.append(ServerProcess(tmp_path / "victim", env=settings("600")))
    started.append(ServerProcess(tmp_path / "survivor", env=settings("0")))
    try:
        yield started
    finally:
        for server in started:
            if server.proc is not None and server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(10)


@pytest.mark.timeout(120)
def test_a_dead_replicas_claims_are_resubmitted_by_another(servers: list[ServerProcess],
                                                          tmp_path: Path) -> None:
    victim, survivor = servers
    ledger_path = tmp_path / "ledger.jsonl"
    victim.start()
    create_ledger_deployment(victim.url)
    with httpx.Client(base_url=victim.url, timeout=30) as client:
        response = client.post(f"/api/deployments/{FLOW}/{DEPLOYMENT}/runs", json={})
        response.raise_for_status()
        run_id = str(response.json()["id"])
    assert victim.proc is not None
    victim_pid = victim.proc.pid
    wait_until(lambda: any(e.pid == victim_pid for e in read_ledger(ledger_path).creations),
               30, "the victim to make the run's job")
    survivor.start()
    kill(victim)

    def completed() -> bool:
        with httpx.Client(base_url=survivor.url, timeout=30) as client:
            return bool(client.get(f"/api/runs/{run_id}").json()["state"] == "COMPLETED")

    wait_until(completed, WITHIN_A_LEASE, "the survivor to resubmit and finish the run",
               interval=0.1)
    ledger = read_ledger(ledger_path)
    assert ledger.creations_per_run() == {run_id: 1}  # the same attempt: the job it had
    assert survivor.proc is not None
    assert any(e.pid == survivor.proc.pid and e.run_id == run_id for e in ledger.calls)
