"""Input limits: oversized, deeply nested, huge or too many values are clear 4xx answers.

Each test sends one kind of abuse to a real server (aiohttp on 127.0.0.1, real SQLite store)
and checks the status, that the message names the field and the limit, that nothing was
stored, and that the server still answers GET /api/health within a deadline afterwards.
The limits themselves are in dispatcher/models.py and dispatcher/api/json_body.py; the
README's "Limits" section lists them.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dispatcher import run_tokens, store
from dispatcher.api import create_app
from dispatcher.api.context import DB_KEY
from dispatcher.api.json_body import MAX_JSON_DEPTH
from dispatcher.models import (
    MAX_ENV_VARS,
    MAX_LABELS,
    MAX_NAME_LENGTH,
    MAX_PARAMETERS_BYTES,
    MAX_TEXT_LENGTH,
)
from dispatcher.settings import Settings
from dispatcher.store.db import Database

Client = TestClient[web.Request, web.Application]
RESPONSIVE_WITHIN_SECONDS = 2.0
MIB = 1024 * 1024
RUNS = "/api/deployments/f1/d1/runs"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    app = create_app(db, None, Settings(home=tmp_path, api_token=None))
    try:
        async with TestClient(TestServer(app)) as test_client:
            await call(test_client, "POST", "/api/work-pools", 201,
                       json={"name": "p1", "type": "process"})
            await call(test_client, "PUT", "/api/deployments", 201, json=deployment())
            yield test_client
    finally:
        await db.close()


def deployment(**extra: Any) -> dict[str, Any]:
    return {"name": "d1", "flow_name": "f1", "pool_name": "p1",
            "command": ["python", "-c", "print(1)"], **extra}


async def call(client: Client, method: str, path: str, expect: int, **kwargs: Any) -> Any:
    response = await client.request(method, path, **kwargs)
    text = await response.text()
    assert response.status == expect, f"{method} {path}: {response.status} {text[:500]}"
    return json.loads(text) if text else None


async def stored(client: Client) -> Any:
    return [await call(client, "GET", path, 200) for path in
            ("/api/work-pools", "/api/deployments", "/api/runs?limit=1000")]


async def refused(client: Client, method: str, path: str, expect: int, *,
                  field: str | None = None, says: str = "", **kwargs: Any) -> dict[str, Any]:
    """Send it; check status, error shape, field, message; nothing stored; still responsive."""
    before = await stored(client)
    body: dict[str, Any] = await call(client, method, path, expect, **kwargs)
    assert set(body) == {"error", "message", "details"}, body
    if field is not None:
        assert body["details"][0]["field"] == field, body
    assert says in body["message"], body
    assert len(body["message"]) < 1000  # the message never echoes what was sent
    assert await stored(client) == before
    await responsive(client)
    return body


async def responsive(client: Client) -> None:
    async def health() -> int:
        response = await client.get("/api/health")
        return response.status

    status = await asyncio.wait_for(health(), RESPONSIVE_WITHIN_SECONDS)
    assert status == 200


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def raw_json(text: str) -> dict[str, Any]:
    return {"data": text.encode(), "headers": {"Content-Type": "application/json"}}


# ---------------------------------------------------------------------------- size


async def test_a_body_over_one_mib_is_413(client: Client) -> None:
    body = json.dumps({"parameters": {"x": "y" * (2 * MIB)}}).encode()
    answer = await refused(client, "POST", RUNS, 413, says="1 MiB",
                           data=io.BytesIO(body), headers={"Content-Type": "application/json"})
    assert answer["error"] == "payload_too_large"


async def test_a_five_mb_parameter_is_413(client: Client) -> None:
    await refused(client, "POST", RUNS, 413, says="1 MiB",
                  json={"parameters": {"blob": "x" * (5 * 1000 * 1000)}})


async def test_a_chunked_body_without_length_is_cut_at_one_mib(client: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"parameters": {"blob": "'
        for _ in range(3):
            yield b"x" * MIB
        yield b'"}}'

    await refused(client, "POST", RUNS, 413, says="1 MiB", data=chunks(),
                  headers={"Content-Type": "application/json"})


async def test_parameters_over_64_kib_are_refused_naming_the_limit(client: Client) -> None:
    body = await refused(client, "POST", RUNS, 422, field="parameters", says="64 KiB",
                         json={"parameters": {"blob": "x" * (MAX_PARAMETERS_BYTES + 1)}})
    assert "by reference" in body["message"]
    await refused(client, "POST", "/api/webhooks/deployments/f1/d1", 422, field="parameters",
                  says="64 KiB", json={"parameters": {"blob": "x" * MAX_PARAMETERS_BYTES}})
    run = await call(client, "POST", RUNS, 201,
                     json={"parameters": {"blob": "x" * (MAX_PARAMETERS_BYTES - 100)}})
    assert len(run["parameters"]["blob"]) == MAX_PARAMETERS_BYTES - 100


async def test_huge_headers_and_urls_are_400_and_logged_without_their_bytes(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    secret = "token-that-must-not-be-logged"
    caplog.set_level(logging.DEBUG)
    response = await client.get("/api/health",
                                headers={"Authorization": f"Bearer {secret}" + "x" * 100_000})
    assert response.status == 400
    response = await client.get(f"/api/work-pools/{secret}" + "p" * 100_000)
    assert response.status == 400
    await responsive(client)
    assert secret not in caplog.text and "Traceback" not in caplog.text
    assert caplog.text.count("refused a malformed request from 127.0.0.1 (LineTooLong)") == 2


# ---------------------------------------------------------------------------- depth


@pytest.mark.parametrize("where", ["top", "parameters", "job_variables"])
async def test_ten_thousand_levels_of_nesting_is_422_not_a_crash(client: Client,
                                                                 where: str) -> None:
    deep = nested(10_000)
    text = deep if where == "top" else f'{{"{where}": {{"x": {deep}}}}}'
    body = await refused(client, "POST", RUNS, 422, field="body", says="10002 levels"
                         if where != "top" else "10000 levels", **raw_json(text))
    assert f"limit of {MAX_JSON_DEPTH}" in body["message"]


async def test_nesting_up_to_the_limit_is_accepted(client: Client) -> None:
    # The body object is one level, parameters another, their value the rest.
    ok = f'{{"parameters": {{"x": {nested(MAX_JSON_DEPTH - 2)}}}}}'
    await call(client, "POST", RUNS, 201, **raw_json(ok))
    too_deep = f'{{"parameters": {{"x": {nested(MAX_JSON_DEPTH - 1)}}}}}'
    await refused(client, "POST", RUNS, 422, field="body", **raw_json(too_deep))


async def test_brackets_inside_strings_do_not_count_as_nesting(client: Client) -> None:
    text = json.dumps({"parameters": {"x": "[" * 10_000, "y": '\\"[{' * 100}})
    run = await call(client, "POST", RUNS, 201, **raw_json(text))
    assert run["parameters"]["x"] == "[" * 10_000


async def test_deep_nesting_in_runtime_reports_is_refused_too(client: Client) -> None:
    run = await call(client, "POST", RUNS, 201, json={})
    report = raw_json(f'{{"state": "RUNNING", "result": {nested(5000)}}}')
    # Without a token the runtime routes answer 401 before reading the body at all.
    await refused(client, "POST", f"/api/runs/{run['id']}/state", 401, **report)
    key = await store.run_token_key(client.app[DB_KEY])
    token = run_tokens.mint(key, run["id"], int(time.time()) + 600)
    report["headers"]["Authorization"] = f"Bearer {token}"
    await refused(client, "POST", f"/api/runs/{run['id']}/state", 422, field="body", **report)
    logs = raw_json(json.dumps([{"timestamp": "2026-01-01T00:00:00Z", "message": "m"}] * 1001))
    logs["headers"]["Authorization"] = f"Bearer {token}"
    await refused(client, "POST", f"/api/runs/{run['id']}/logs", 422, field="body",
                  says="at most 1000 items", **logs)


# ---------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000])
async def test_numbers_json_cannot_carry_are_400(client: Client, number: str) -> None:
    text = f'{{"parameters": {{"x": {number}}}}}'
    body = await refused(client, "POST", RUNS, 400, says="not valid JSON", **raw_json(text))
    assert body["error"] == "invalid_json"


async def test_integers_past_what_the_store_holds_are_422(client: Client) -> None:
    await refused(client, "PATCH", "/api/work-pools/p1", 422, field="concurrency_limit",
                  says="up to 1000000", json={"concurrency_limit": 10**30})
    await refused(client, "POST", "/api/work-pools/p1/queues", 422, field="priority",
                  json={"name": "q", "priority": 2**63})
    await refused(client, "PATCH", "/api/work-pools/p1", 422, field="late_after_seconds",
                  json={"late_after_seconds": 1e308})
    await refused(client, "PUT", "/api/deployments", 422, field="schedules[0].interval",
                  json=deployment(schedules=[{"interval": 1e300}]))
    await refused(client, "GET", f"/api/runs?offset={10**30}", 422, field="offset")
    await refused(client, "GET", f"/api/runs/x/logs?after={10**30}", 422, field="after")


# ---------------------------------------------------------------------------- counts


async def test_thousands_of_labels_or_env_entries_are_422_naming_the_limit(
        client: Client) -> None:
    labels = {f"l{i}": "v" for i in range(5000)}
    body = await refused(client, "POST", RUNS, 422, field="job_variables",
                         says=f"more than the limit of {MAX_LABELS}",
                         json={"job_variables": {"labels": labels}})
    assert "labels has 5000 labels" in body["message"]
    env = {f"VAR_{i}": "v" for i in range(5000)}
    await refused(client, "POST", RUNS, 422, field="job_variables",
                  says=f"env has 5000 variables, more than the limit of {MAX_ENV_VARS}",
                  json={"job_variables": {"env": env}})
    await refused(client, "PUT", "/api/deployments", 422, field="job_variables",
                  says=f"limit of {MAX_ENV_VARS}", json=deployment(job_variables={"env": env}))
    await refused(client, "PUT", "/api/deployments", 422, field="tags",
                  says=f"at most {MAX_LABELS} items",
                  json=deployment(tags=[f"t{i}" for i in range(MAX_LABELS + 1)]))
    # Exactly at the limits is fine.
    at_limit = {f"VAR_{i}": "v" for i in range(MAX_ENV_VARS)}
    await call(client, "POST", RUNS, 201, json={"job_variables": {"env": at_limit}})


async def test_a_value_over_64_kib_is_422_naming_it(client: Client) -> None:
    big = "x" * (MAX_TEXT_LENGTH + 1)
    await refused(client, "POST", RUNS, 422, field="job_variables", says="env.BIG is",
                  json={"job_variables": {"env": {"BIG": big}}})
    await refused(client, "PATCH", "/api/work-pools/p1", 422, field="description",
                  says=f"at most {MAX_TEXT_LENGTH} characters", json={"description": big})
    await refused(client, "PUT", "/api/deployments", 422, field="command[1]",
                  json=deployment(command=["echo", big]))


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["p" * (MAX_NAME_LENGTH + 1), "n" * 100_000, "pool\n",
                                  "-starts-with-a-dash", "has space", ""])
async def test_bad_or_very_long_names_are_422(client: Client, name: str) -> None:
    await refused(client, "POST", "/api/work-pools", 422, field="name", says="1-100",
                  json={"name": name})
    await refused(client, "PUT", "/api/deployments", 422, field="name",
                  json=deployment(name=name))


async def test_a_name_of_exactly_100_characters_is_accepted(client: Client) -> None:
    name = "p" * MAX_NAME_LENGTH
    pool = await call(client, "POST", "/api/work-pools", 201, json={"name": name})
    assert pool["name"] == name


async def test_a_very_long_run_name_or_image_is_422(client: Client) -> None:
    await refused(client, "POST", RUNS, 422, field="name", json={"name": "r" * 10_000})
    await refused(client, "PUT", "/api/deployments", 422, field="image",
                  json=deployment(image="i" * 10_000))


# ---------------------------------------------------------------------------- documented


async def test_the_openapi_document_states_the_limits(client: Client) -> None:
    document = await call(client, "GET", "/api/openapi.json", 200)
    schemas = document["components"]["schemas"]
    name = schemas["WorkPoolCreate"]["properties"]["name"]
    assert (name["minLength"], name["maxLength"]) == (1, MAX_NAME_LENGTH)
    assert name["pattern"].startswith("^[A-Za-z0-9]")
    env = schemas["RunCreate"]["properties"]["job_variables"]["properties"]["env"]
    assert env["maxProperties"] == MAX_ENV_VARS
    assert env["additionalProperties"]["maxLength"] == MAX_TEXT_LENGTH
    assert schemas["DeploymentApply"]["properties"]["tags"]["maxItems"] == MAX_LABELS
    limit = schemas["WorkQueueCreate"]["properties"]["concurrency_limit"]["anyOf"][0]
    assert (limit["minimum"], limit["maximum"]) == (1, 1_000_000)
    # Only JSON Schema keywords: pydantic's own names would be silently ignored by clients.
    text = json.dumps(document)
    assert not any(f'"{word}":' in text for word in ("ge", "le", "gt", "lt", "max_length"))
