"""Dead letters: a run that cannot be submitted within its deployment's submit deadline (or
its attempts, or that the provider refuses) ends FAILED with every attempt's error, is
listed by GET /api/runs?dead_letter=true and `pushpool run ls --dead-letter`, and is
resubmitted (POST /api/runs/{id}/resubmit, `pushpool run resubmit`) as a new linked run.
The engine, the API and the CLI are the real ones; the provider is the faulty fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner, Result

from dispatcher import operations, store
from dispatcher.api import create_app
from dispatcher.cli import app as cli_app
from dispatcher.engine.engine import Engine
from dispatcher.models import DeploymentApply, RunCreate, RunState, WorkPoolCreate
from dispatcher.settings import Settings
from dispatcher.store import Database
from dispatcher.store.common import utcnow
from dispatcher.store.dead_letters import submit_error
from providers import registry
from tests.conftest import wait_for
from tests.fakes.faulty_provider import FAULTS
from tests.fakes.recording_provider import STATE

registry.register_provider("faulty", "tests.fakes.faulty_provider")

Client = TestClient[web.Request, web.Application]
DOWN = "503 Service Unavailable: the provider is down"


def engine_settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        home=home, api_token=None, lease_seconds=5, watch_interval_seconds=0.05,
        scheduler_interval_seconds=3600, submit_timeout_seconds=0.5,
        submit_backoff_base_seconds=0.05, submit_backoff_cap_seconds=0.1,
        submit_max_attempts=1000, breaker_failure_threshold=10_000)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


pytestmark = pytest.mark.usefixtures("fresh_faulty_provider")


@pytest.fixture
async def pool(db: Database) -> Database:
    await operations.pools.create_pool(db, WorkPoolCreate(name="flaky", type="faulty"))
    return db


async def serve(db: Database, config: Settings) -> AsyncIterator[tuple[Client, Engine]]:
    engine = Engine(db, config)
    await engine.start()
    try:
        async with TestClient(TestServer(create_app(db, engine, config))) as client:
            yield client, engine
    finally:
        await engine.stop()


@pytest.fixture
async def api(pool: Database, tmp_path: Path) -> AsyncIterator[tuple[Client, Engine]]:
    async for served in serve(pool, engine_settings(tmp_path)):
        yield served


async def cli(client: Client, *args: str) -> Result:
    """The real CLI against the test server, in a thread so the server keeps answering."""
    url = str(client.make_url("")).rstrip("/")
    return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args),
                                   env={"PUSHPOOL_API_URL": url})


async def json_of(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def deploy(client: Client, name: str, **fields: Any) -> dict[str, Any]:
    return await json_of(await client.put("/api/deployments", json={
        "name": name, "flow_name": "f", "pool_name": "flaky", "command": ["job"], **fields}),
        201)


async def run_of(client: Client, run_id: str) -> dict[str, Any]:
    return await json_of(await client.get(f"/api/runs/{run_id}"), 200)


async def state_is(client: Client, run_id: str, state: str) -> bool:
    return (await run_of(client, run_id))["state"] == state


async def test_past_its_deadline_a_run_is_a_dead_letter_then_resubmitted(
        api: tuple[Client, Engine]) -> None:
    client, _ = api
    deployment = await deploy(client, "tight", submit_deadline_seconds=0.5,
                              parameters={"who": "ada"})
    assert deployment["deployment"]["submit_deadline_seconds"] == 0.5
    await deploy(client, "fine")
    FAULTS.down = True
    doomed = await json_of(await client.post("/api/deployments/f/tight/runs", json={
        "parameters": {"n": 3}, "job_variables": {"env": {"MODE": "x"}}}), 201)
    await wait_for(lambda: state_is(client, doomed["id"], "FAILED"), timeout=10,
                   what="dead letter")
    dead = await run_of(client, doomed["id"])
    calls = FAULTS.calls_of(doomed["id"])
    assert dead["dead_letter"] is True and len(calls) >= 2
    assert [e["error"] for e in dead["submit_errors"]] == [DOWN] * len(calls)
    message = dead["state_message"]
    assert message.startswith(f"not submitted within its submit deadline of 0.5s "
                              f"({len(calls)} attempt(s)): #1: {DOWN}; #2: {DOWN}")
    assert message.endswith(f"#{len(calls)}: {DOWN}")
    started = datetime.fromisoformat(dead["submit_errors"][0]["at"])
    ended = datetime.fromisoformat(dead["ended_at"])
    assert timedelta(0) < ended - started <= timedelta(seconds=0.5 + 0.5)
    assert STATE.submits[doomed["id"]] == 0

    FAULTS.down = False
    ok = await json_of(await client.post("/api/deployments/f/fine/runs", json={}), 201)
    await wait_for(lambda: state_is(client, ok["id"], "COMPLETED"), what="healthy run")
    listed = await json_of(await client.get("/api/runs", params={"dead_letter": "true"}), 200)
    assert [r["id"] for r in listed] == [doomed["id"]]
    everything = await json_of(await client.get("/api/runs", params={"dead_letter": "false"}),
                               200)
    assert {r["id"] for r in everything} == {doomed["id"], ok["id"]}

    shown = await cli(client, "run", "ls", "--dead-letter", "--output", "json")
    assert shown.exit_code == 0, shown.output
    assert [r["id"] for r in json.loads(shown.output)] == [doomed["id"]]

    resubmitted = await cli(client, "run", "resubmit", doomed["id"])
    assert resubmitted.exit_code == 0, resubmitted.output
    assert f"Resubmitted run {doomed['id']} as run" in resubmitted.output
    again = await json_of(await client.post(f"/api/runs/{doomed['id']}/resubmit"), 200)
    assert again["resubmitted_from"] == doomed["id"]
    assert again["parameters"] == {"who": "ada", "n": 3}
    assert again["job_variables"] == {"env": {"MODE": "x"}}
    await wait_for(lambda: state_is(client, again["id"], "COMPLETED"), what="resubmitted run")
    assert STATE.submits[again["id"]] == 1
    listed = await json_of(await client.get("/api/runs", params={"dead_letter": "true"}), 200)
    assert [r["id"] for r in listed] == [doomed["id"]]  # the original stays, as a record


async def ended(db: Database, run_id: str) -> bool:
    return (await store.get_run(db, run_id)).state.is_final


async def test_out_of_attempts_or_refused_is_a_dead_letter(pool: Database,
                                                           tmp_path: Path) -> None:
    await operations.deployments.apply_deployment(pool, DeploymentApply(
        name="d", flow_name="f", pool_name="flaky", command=["job"]))
    flaky, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    refused, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    FAULTS.hang_first[flaky.id] = 10
    FAULTS.permanent[refused.id] = "AccessDenied: not allowed to run tasks"
    engine = Engine(pool, engine_settings(tmp_path, submit_max_attempts=3,
                                          submit_timeout_seconds=0.1))
    await engine.start()
    try:
        await wait_for(lambda: ended(pool, flaky.id), what="out of attempts")
        await wait_for(lambda: ended(pool, refused.id), what="refused")
    finally:
        await engine.stop()
    out = await store.get_run(pool, flaky.id)
    assert out.dead_letter and len(out.submit_errors) == 3
    assert out.state_message == ("could not submit after 3 attempt(s): #1: no answer within "
                                 "0.1s; #2: no answer within 0.1s; #3: no answer within 0.1s")
    no = await store.get_run(pool, refused.id)
    assert no.dead_letter and no.state_message == (
        "submit refused by faulty: AccessDenied: not allowed to run tasks")
    assert [e.error for e in no.submit_errors] == ["AccessDenied: not allowed to run tasks"]
    listed = await store.list_runs(pool, dead_letter=True)
    assert {r.id for r in listed} == {flaky.id, refused.id}


async def test_only_a_finished_run_with_a_deployment_is_resubmitted(
        api: tuple[Client, Engine]) -> None:
    client, _ = api
    await deploy(client, "later")
    waiting = await json_of(await client.post("/api/deployments/f/later/runs", json={
        "scheduled_time": (utcnow() + timedelta(hours=1)).isoformat()}), 201)
    answer = await json_of(await client.post(f"/api/runs/{waiting['id']}/resubmit"), 409)
    assert "only a finished run can be resubmitted" in answer["message"]
    await json_of(await client.post("/api/runs/nope/resubmit"), 422)
    await json_of(await client.post(
        "/api/runs/0badc0de-0000-4000-8000-000000000000/resubmit"), 404)
    cancelled = await json_of(await client.post(f"/api/runs/{waiting['id']}/cancel"), 200)
    assert cancelled["state"] == "CANCELLED"
    assert (await client.delete("/api/deployments/f/later")).status == 204
    answer = await json_of(await client.post(f"/api/runs/{waiting['id']}/resubmit"), 409)
    assert "no deployment any more" in answer["message"]
    bad = await json_of(await client.get("/api/runs", params={"dead_letter": "maybe"}), 422)
    assert bad["details"][0]["field"] == "dead_letter"


async def test_deadline_and_policies_are_validated_with_the_field_named(
        api: tuple[Client, Engine]) -> None:
    client, _ = api
    for field, value in (("submit_deadline_seconds", 0), ("catchup", "sometimes"),
                         ("overlap", "queue")):
        answer = await json_of(await client.put("/api/deployments", json={
            "name": "x", "flow_name": "f", "pool_name": "flaky", "command": ["job"],
            field: value}), 422)
        assert [d["field"] for d in answer["details"]] == [field], answer
    assert await store.list_deployments(client.app["db"]) == []


async def test_parked_runs_past_their_deadline_fail_while_the_breaker_holds_the_pool(
        pool: Database) -> None:
    await operations.deployments.apply_deployment(pool, DeploymentApply(
        name="d", flow_name="f", pool_name="flaky", command=["job"],
        submit_deadline_seconds=60))
    old, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    young, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    await store.claim_runs(pool, "a", limit=10, lease_seconds=30)
    now = utcnow()
    await store.park_runs(pool, "a", [
        (old.id, [submit_error("boom", now - timedelta(seconds=120)),
                  submit_error("boom again", now - timedelta(seconds=61))]),
        (young.id, [submit_error("boom", now - timedelta(seconds=5))])], "waiting")
    await store.open_pool_breaker(pool, "flaky", "circuit breaker: test", now)
    claim = await store.claim_runs(pool, "b", limit=10, lease_seconds=30,
                                   now=now + timedelta(seconds=1))
    assert claim.dead_lettered == [old.id]
    assert [(r.run_id, r.probe, r.attempt) for r in claim.runs] == [(young.id, True, 1)]
    assert [e["error"] for e in claim.runs[0].submit_errors] == ["boom"]
    expired = await store.get_run(pool, old.id)
    assert expired.state is RunState.FAILED and expired.dead_letter
    assert expired.state_message == ("not submitted within its submit deadline of 60s "
                                     "(2 attempt(s)): #1: boom; #2: boom again")


async def test_parked_runs_keep_their_attempt_and_are_taken_up_at_once(pool: Database) -> None:
    await operations.deployments.apply_deployment(pool, DeploymentApply(
        name="d", flow_name="f", pool_name="flaky", command=["job"]))
    run, _ = await operations.runs.create_run(pool, "f/d", RunCreate())
    (first,) = await store.claim_due_runs(pool, "a", limit=5, lease_seconds=30)
    assert await store.park_runs(pool, "a", [(run.id, [submit_error("x", utcnow())])],
                                 "handed back") == [run.id]
    assert await store.park_runs(pool, "a", [(run.id, [])], "again") == []  # not a's now
    (again,) = await store.claim_due_runs(pool, "b", limit=5, lease_seconds=30)
    assert (again.attempt, again.reclaimed, again.lease_expired) == (first.attempt, True, False)
    history = (await store.get_run(pool, run.id)).history
    assert [h.message for h in history][-2:] == ["handed back", "taken up again by b"]
