"""The AWS Lambda handler fed the events AWS documents (tests/fixtures/serverless/): API
Gateway REST and HTTP API payloads and Function URLs reach the real API (routes, checks,
token, webhooks), a run created over HTTP is submitted by the tick that follows, timer
events tick within the remaining time, and ECS task state changes are applied without
the shared secret an HTTP delivery needs. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from dispatcher import operations, store
from dispatcher.models import DeploymentApply, RunCreate, RunState, WorkPoolCreate
from dispatcher.store import Database
from dispatcher.triggers.aws_lambda import handler
from dispatcher.webhooks import signatures
from tests.fakes.recording_provider import STATE
from tests.serverless_samples import API_TOKEN, sample

pytest_plugins = ["tests.serverless_fixtures"]


@dataclass
class LambdaContext:
    """The context object Lambda passes: the time left is what the handler reads."""

    remaining_ms: float = 30_000
    function_name: str = "pushpool"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_ms)


async def invoke(event: dict[str, Any], remaining_ms: float = 30_000) -> dict[str, Any]:
    answer: dict[str, Any] = await asyncio.to_thread(handler, event, LambdaContext(remaining_ms))
    return answer


def body_of(answer: dict[str, Any]) -> Any:
    raw = answer["body"]
    return json.loads(base64.b64decode(raw) if answer["isBase64Encoded"] else raw)


def v1(method: str, path: str, body: Any = None, token: str = API_TOKEN,
       headers: dict[str, str] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = sample("apigw_v1_request.json", API_TOKEN=token)
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["body"] = None if body is None else json.dumps(body)
    for key, value in (headers or {}).items():
        event["headers"][key] = value
        event["multiValueHeaders"][key] = [value]
    return event


async def make_deployment(db: Database) -> None:
    await operations.pools.create_pool(db, WorkPoolCreate(name="rec", type="recording"))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d1", flow_name="f1", pool_name="rec", command=["true"]))


async def test_api_gateway_rest_payload_reaches_the_api_with_its_token_check(
        trigger_env: Database) -> None:
    created = await invoke(sample("apigw_v1_request.json", API_TOKEN=API_TOKEN))
    assert created["statusCode"] == 201, created
    assert body_of(created)["name"] == "lambda-pool"
    assert created["multiValueHeaders"]["Content-Type"] == ["application/json; charset=utf-8"]
    refused = await invoke(sample("apigw_v1_request.json", API_TOKEN="wrong"))
    assert refused["statusCode"] == 401
    bad = await invoke(v1("POST", "/api/work-pools", {"name": "x", "type": "no-such-type"}))
    assert bad["statusCode"] == 422 and "type" in json.dumps(body_of(bad))
    assert [p.name for p in await store.list_pools(trigger_env)] == ["lambda-pool"]


async def test_http_api_payload_2_passes_the_query_and_answers_in_its_format(
        trigger_env: Database) -> None:
    await make_deployment(trigger_env)
    for _ in range(3):
        await operations.runs.create_run(trigger_env, "f1/d1", RunCreate())
    listed = await invoke(sample("apigw_v2_request.json", API_TOKEN=API_TOKEN))
    assert listed["statusCode"] == 200, listed
    assert len(body_of(listed)) == 2  # limit=2 from the query string
    assert listed["headers"]["Content-Type"].startswith("application/json")
    event = sample("apigw_v2_request.json", API_TOKEN=API_TOKEN)
    event["rawQueryString"] = "limit=0"
    assert (await invoke(event))["statusCode"] == 422  # the route's own query checks


async def test_a_run_created_through_a_function_url_is_submitted_before_the_answer(
        trigger_env: Database) -> None:
    await make_deployment(trigger_env)
    answer = await invoke(sample("function_url_request.json", API_TOKEN=API_TOKEN))
    assert answer["statusCode"] == 201, answer
    run_id = body_of(answer)["id"]
    assert STATE.submits[run_id] == 1  # the tick after the request submitted it
    assert (await store.get_run(trigger_env, run_id)).state is RunState.PENDING


async def test_a_signed_webhook_delivery_through_lambda_starts_a_run_and_a_replay_is_refused(
        trigger_env: Database) -> None:
    await make_deployment(trigger_env)
    made = body_of(await invoke(v1("POST", "/api/webhooks",
                                   {"name": "h1", "deployment": "f1/d1"})))
    body = b'{"parameters": {}}'
    delivery, ts = uuid.uuid4().hex, int(time.time())
    event = sample("apigw_v2_request.json", API_TOKEN="")
    event["rawPath"] = event["requestContext"]["http"]["path"] = made["webhook"]["path"]
    event["requestContext"]["http"]["method"] = "POST"
    event["rawQueryString"] = ""
    event["headers"] = {"content-type": "application/json", "x-pushpool-delivery": delivery,
                        "x-pushpool-timestamp": str(ts), "x-pushpool-signature":
                        signatures.sign(made["secret"], ts, delivery, body)}
    event["body"] = body.decode()
    taken = await invoke(event)
    assert taken["statusCode"] == 202, taken
    assert STATE.submits[body_of(taken)["run_id"]] == 1
    assert (await invoke(event))["statusCode"] == 409


@pytest.mark.parametrize("name", ["eventbridge_scheduled_event.json",
                                  "eventbridge_scheduler_input.json"])
async def test_timer_events_tick_and_submit_due_runs(trigger_env: Database, name: str) -> None:
    await make_deployment(trigger_env)
    run, _ = await operations.runs.create_run(trigger_env, "f1/d1", RunCreate())
    summary = await invoke(sample(name))
    assert summary["complete"] and summary["claimed"] == 1, summary
    assert STATE.submits[run.id] == 1
    again = await invoke(sample(name))
    assert again["claimed"] == 0 and STATE.submits[run.id] == 1


async def test_a_short_remaining_time_leaves_the_work_for_the_next_tick(
        trigger_env: Database) -> None:
    await make_deployment(trigger_env)
    run, _ = await operations.runs.create_run(trigger_env, "f1/d1", RunCreate())
    summary = await invoke(sample("eventbridge_scheduled_event.json"), remaining_ms=900)
    assert not summary["complete"] and summary["left"], summary
    assert STATE.submits[run.id] == 0
    assert (await store.get_run(trigger_env, run.id)).state is RunState.SCHEDULED
    later = await invoke(sample("eventbridge_scheduled_event.json"))
    assert later["complete"] and STATE.submits[run.id] == 1


async def test_an_ecs_event_from_eventbridge_is_applied_without_the_http_secret(
        trigger_env: Database) -> None:
    from tests.test_provider_events import submitted_run

    run_id = await submitted_run(trigger_env)
    event = sample("ecs_task_state_change.json", RUN_ID=run_id)
    answer = await invoke(event)
    assert answer["applied"] and answer["results"][0]["state"] == "COMPLETED", answer
    assert (await store.get_run(trigger_env, run_id)).state is RunState.COMPLETED
    # Over HTTP the same event still needs the shared secret.
    http = await invoke(v1("POST", "/api/events/aws/ecs", event))
    assert http["statusCode"] == 403, http


async def test_an_event_it_does_not_know_is_refused_by_name(trigger_env: Database) -> None:
    with pytest.raises(ValueError, match="Scheduled Event"):
        await invoke({"source": "aws.s3", "detail-type": "Object Created"})


async def test_a_tick_on_sqlite_is_refused_unless_allowed(
        sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatcher.engine.tick import TickRefused
    from dispatcher.settings import get_settings
    from dispatcher.triggers.host import reset_host

    monkeypatch.setenv("PUSHPOOL_DATABASE_URL", sqlite_db_url)
    monkeypatch.setenv("PUSHPOOL_API_TOKEN", API_TOKEN)
    get_settings.cache_clear()
    try:
        with pytest.raises(TickRefused, match="PUSHPOOL_TICK_ALLOW_SQLITE=1"):
            await invoke(sample("eventbridge_scheduled_event.json"))
        http = await invoke(sample("apigw_v2_request.json", API_TOKEN=API_TOKEN))
        assert http["statusCode"] == 503 and "PostgreSQL" in body_of(http)["message"]
    finally:
        reset_host()
