"""Cloud Run events end to end: a real server process follows a cloud-run:push run on the
fake Google APIs with status polling set to a minute; a Pub/Sub push delivery of the
execution's audit log entry, signed as a push subscription signs it, ends the run at once,
and the same delivery with a forged token is refused and changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.fakes.cloud_run import FakeGoogle, SigningKey, shared_fake
from tests.fakes.pushpool_server import ServerProcess
from tests.providers.cloud_run_harness import cloud_run_config
from tests.test_cloud_run_events import AUDIENCE, PUSHER, audit_entry, bearer, pubsub

POLL_SECONDS = 60.0  # the adapter's status poll: far longer than the test may take
READS = ("executions.get", "executions.list", "tasks.list")


@pytest.fixture
def fake() -> FakeGoogle:
    made = shared_fake()
    made.reset()
    made.run.auto_start = True  # the execution runs as soon as it is made
    return made


@pytest.fixture
def server(tmp_path: Path, fake: FakeGoogle) -> Iterator[ServerProcess]:
    made = ServerProcess(tmp_path / "home", env={
        "PUSHPOOL_CLOUD_RUN_POLL_INTERVAL": str(POLL_SECONDS),
        "PUSHPOOL_CLOUD_RUN_EVENTS_AUDIENCE": AUDIENCE,
        "PUSHPOOL_CLOUD_RUN_EVENTS_SERVICE_ACCOUNT": PUSHER,
        "PUSHPOOL_CLOUD_RUN_EVENTS_CERTS_URL": fake.oidc.certs_url})
    made.start()
    try:
        yield made
    finally:
        made.stop()


def reads(fake: FakeGoogle) -> int:
    with fake.server.lock:
        return sum(fake.server.calls[name] for name in READS)


async def test_a_pushed_event_ends_the_run_before_the_next_poll(
        server: ServerProcess, fake: FakeGoogle) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        (await api.post("/api/work-pools", json={"name": "gcp", "type": "cloud-run:push"})
         ).raise_for_status()
        (await api.put("/api/deployments", json={
            "name": "d", "flow_name": "f", "pool_name": "gcp",
            "command": ["python", "-c", "print(1)"], "job_variables": cloud_run_config(fake)})
         ).raise_for_status()
        made = await api.post("/api/deployments/f/d/runs", json={})
        made.raise_for_status()
        run_id = made.json()["id"]

        async def run() -> dict[str, Any]:
            answer = await api.get(f"/api/runs/{run_id}")
            answer.raise_for_status()
            return dict(answer.json())

        async def running() -> bool:
            return (await run())["state"] == "RUNNING"

        await wait_for(running, timeout=30, what="the run RUNNING (the first status read)")
        running_at = time.monotonic()
        (execution,) = fake.run.executions_of(run_id)
        fake.run.succeed(execution["name"])
        (finished,) = fake.run.executions_of(run_id)
        body = pubsub(audit_entry(finished))
        reads_before = reads(fake)

        forger = SigningKey()
        forger.kid = fake.oidc.key.kid  # the push key's id, another private key
        forged = await api.post("/api/events/cloud-run", content=body,
                                headers=bearer(forger.token(audience=AUDIENCE, email=PUSHER)))
        assert forged.status_code == 401
        assert (await run())["state"] == "RUNNING"

        token = fake.oidc.key.token(audience=AUDIENCE, email=PUSHER)
        pushed = await api.post("/api/events/cloud-run", content=body, headers=bearer(token))
        assert pushed.status_code == 202, pushed.text
        assert pushed.json() == {"applied": True, "run_id": run_id, "state": "COMPLETED",
                                 "reason": None}
        # Nothing polled the execution between its end and the event: the event ended it.
        assert reads(fake) == reads_before
        final = await run()
        assert (final["state"], final["exit_code"]) == ("COMPLETED", 0)
        assert time.monotonic() - running_at < POLL_SECONDS / 2
