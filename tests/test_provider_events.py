"""POST /api/events/aws/ecs: EventBridge task state changes move runs at once, behind a
shared secret, and events that are stale, foreign or about another attempt change nothing."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from dispatcher import operations, store
from dispatcher.api.app import create_app
from dispatcher.models import DeploymentApply, RunCreate, RunState, WorkPoolCreate
from dispatcher.settings import Settings
from dispatcher.store import Database
from tests.test_ecs_events import INFRA_ID, stopped_event

SECRET = "events-secret-for-tests"
HEADERS = {"X-Pushpool-Events-Secret": SECRET}


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    settings = Settings(home=tmp_path, api_token=SecretStr("api-token"),
                        events_secret=SecretStr(SECRET))
    async with TestClient(TestServer(create_app(db, None, settings))) as c:
        yield c


async def submitted_run(db: Database, infra_id: str = INFRA_ID) -> str:
    await operations.pools.create_pool(db, WorkPoolCreate(name="aws", type="ecs:push"))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name="aws", image="ghcr.io/example/flows:1",
        command=["python", "-m", "flows.hello"],
        job_variables={"execution_role_arn": "arn:aws:iam::111122223333:role/exec"}))
    run, _ = await operations.runs.create_run(db, "f/d", RunCreate())
    await store.claim_due_runs(db, "me", limit=1, lease_seconds=60)
    await store.record_submissions(db, "me", [store.SubmissionRecord(
        run.id, infra_id, None, {}, None, "submitted")])
    return run.id


def event_for(run_id: str, **detail: Any) -> dict[str, Any]:
    event = stopped_event(**{"startedBy": f"pushpool/{run_id}", **detail})
    return copy.deepcopy(event)


async def test_running_then_stopped_events_complete_the_run(
        client: TestClient[Any, Any], db: Database) -> None:
    run_id = await submitted_run(db)
    running = event_for(run_id, lastStatus="RUNNING", desiredStatus="RUNNING", stopCode=None,
                        stoppedReason=None)
    answer = await client.post("/api/events/aws/ecs", json=running, headers=HEADERS)
    assert answer.status == 202
    assert (await answer.json())["state"] == "RUNNING"
    answer = await client.post("/api/events/aws/ecs", json=event_for(run_id), headers=HEADERS)
    assert (await answer.json()) == {"applied": True, "run_id": run_id, "state": "COMPLETED",
                                     "reason": None}
    run = await store.get_run(db, run_id)
    assert run.state is RunState.COMPLETED and run.exit_code == 0
    # A late RUNNING event (EventBridge does not keep order) changes nothing.
    late = await client.post("/api/events/aws/ecs", json=running, headers=HEADERS)
    assert (await late.json())["applied"] is False
    assert (await store.get_run(db, run_id)).state is RunState.COMPLETED


async def test_a_failed_container_fails_the_run_with_its_exit_code(
        client: TestClient[Any, Any], db: Database) -> None:
    run_id = await submitted_run(db)
    event = event_for(run_id)
    event["detail"]["containers"][0]["exitCode"] = 3
    await client.post("/api/events/aws/ecs", json=event, headers=HEADERS)
    run = await store.get_run(db, run_id)
    assert run.state is RunState.FAILED and run.exit_code == 3
    assert "exited with code 3" in (run.state_message or "")
    assert [h.state for h in run.history][-2:] == [RunState.RUNNING, RunState.FAILED]


async def test_events_need_the_shared_secret_not_the_api_token(
        client: TestClient[Any, Any], db: Database) -> None:
    run_id = await submitted_run(db)
    for headers in ({}, {"X-Pushpool-Events-Secret": "wrong"},
                    {"Authorization": "Bearer api-token"}):
        answer = await client.post("/api/events/aws/ecs", json=event_for(run_id),
                                   headers=headers)
        assert answer.status == 401
        assert SECRET not in await answer.text()
    assert (await store.get_run(db, run_id)).state is RunState.PENDING


async def test_events_are_refused_when_no_secret_is_configured(db: Database,
                                                               tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, api_token=None)
    async with TestClient(TestServer(create_app(db, None, settings))) as c:
        answer = await c.post("/api/events/aws/ecs", json=event_for("x"), headers=HEADERS)
        assert answer.status == 403
        assert "PUSHPOOL_EVENTS_SECRET" in (await answer.json())["message"]


async def test_foreign_and_mismatched_events_change_nothing(
        client: TestClient[Any, Any], db: Database) -> None:
    run_id = await submitted_run(db, infra_id="us-west-2::flows::arn:aws:ecs:us-west-2:1:task/x")
    foreign = event_for(run_id, startedBy="someone-else")
    other_task = event_for(run_id)  # a task of another attempt than the one recorded
    unknown_run = event_for("no-such-run")
    for event in (foreign, other_task, unknown_run):
        answer = await client.post("/api/events/aws/ecs", json=event, headers=HEADERS)
        assert answer.status == 202
        assert (await answer.json())["applied"] is False
    assert (await store.get_run(db, run_id)).state is RunState.PENDING
    bad = await client.post("/api/events/aws/ecs", json={"detail": {}}, headers=HEADERS)
    assert bad.status == 422


async def test_a_delivery_with_events_wakes_the_engine_and_one_without_does_not(
        db: Database, tmp_path: Path) -> None:
    from tests.test_api import RecordingEngine

    engine = RecordingEngine()
    settings = Settings(home=tmp_path, api_token=None, events_secret=SecretStr(SECRET))
    run_id = await submitted_run(db)
    async with TestClient(TestServer(create_app(db, engine, settings))) as c:
        foreign = await c.post("/api/events/aws/ecs", headers=HEADERS,
                               json=event_for(run_id, startedBy="someone-else"))
        assert foreign.status == 202 and engine.infra_changes == 0
        stale = event_for(run_id, lastStatus="PROVISIONING", desiredStatus="RUNNING",
                          stopCode=None, stoppedReason=None)
        answer = await c.post("/api/events/ecs", json=stale, headers=HEADERS)  # short name
        assert (await answer.json())["applied"] is False and engine.infra_changes == 1
