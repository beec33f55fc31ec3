"""The HTTP API against a real store on SQLite: each route's happy path and its bad inputs.

After every rejected request the stored state is compared with a snapshot taken before it,
so a 4xx can never have written half of something.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from dispatcher import __version__, store
from dispatcher.api import create_app
from dispatcher.api.display import with_display_state
from dispatcher.api.errors import INTERNAL_MESSAGE
from dispatcher.models import Run, RunState
from dispatcher.settings import Settings
from dispatcher.store import tables
from dispatcher.store.db import Database
from providers.base import LogLine

TOKEN = "s3cret-test-token-value"
UNKNOWN_RUN_ID = "0badc0de-0000-4000-8000-000000000000"  # well formed, never made
Client = TestClient[web.Request, web.Application]


@dataclass
class RecordingEngine:
    """Stands in for the engine: the API's side of the contract is only these two calls."""

    wakes: int = 0
    schedule_changes: int = 0
    infra_changes: int = 0
    cancelled: list[str] = field(default_factory=list)

    def wake(self) -> None:
        self.wakes += 1

    def schedules_changed(self) -> None:
        self.schedule_changes += 1

    def notify_cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)

    def infra_changed(self) -> None:
        self.infra_changes += 1


# ``db`` comes from conftest.py: every test here runs on SQLite and on PostgreSQL.


@pytest.fixture
def engine() -> RecordingEngine:
    return RecordingEngine()


async def serve(app: web.Application) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def client(db: Database, engine: RecordingEngine, tmp_path: Path
                 ) -> AsyncIterator[Client]:
    async for c in serve(create_app(db, engine, Settings(home=tmp_path, api_token=None))):
        yield c


@pytest.fixture
async def locked(db: Database, tmp_path: Path) -> AsyncIterator[Client]:
    """A client of a server that requires the API token (the client does not send it)."""
    settings = Settings(home=tmp_path, api_token=SecretStr(TOKEN))
    async for c in serve(create_app(db, None, settings)):
        yield c


# ---------------------------------------------------------------------------- helpers


async def call(client: Client, method: str, path: str, expect: int, **kwargs: Any) -> Any:
    response = await client.request(method, path, **kwargs)
    text = await response.text()
    assert response.status == expect, f"{method} {path}: {response.status} {text}"
    if response.status == 204:
        assert text == ""
        return None
    assert response.content_type == "application/json"
    return await response.json()


async def snapshot(client: Client) -> dict[str, Any]:
    """Everything the API can list: compared before and after a rejected request."""
    return {
        "pools": await call(client, "GET", "/api/work-pools", 200),
        "queues": await call(client, "GET", "/api/work-queues", 200),
        "deployments": await call(client, "GET", "/api/deployments", 200),
        "runs": await call(client, "GET", "/api/runs?limit=1000", 200),
    }


async def rejected(client: Client, method: str, path: str, expect: int, *,
                   field: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Send a bad request; check the error shape, the named field, and that nothing changed."""
    before = await snapshot(client)
    body = await call(client, method, path, expect, **kwargs)
    assert set(body) == {"error", "message", "details"}, body
    assert body["message"]
    if field is not None:
        assert body["details"][0]["field"] == field, body
        assert field in body["message"], body
    assert await snapshot(client) == before
    return body


async def make_pool(client: Client, name: str = "p1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "type": "process", **extra}
    result: dict[str, Any] = await call(client, "POST", "/api/work-pools", 201, json=body)
    return result


def deployment_body(**extra: Any) -> dict[str, Any]:
    return {"name": "d1", "flow_name": "f1", "pool_name": "p1",
            "command": ["python", "-c", "print(1)"], **extra}


async def make_deployment(client: Client, **extra: Any) -> dict[str, Any]:
    if not any(p["name"] == "p1" for p in await call(client, "GET", "/api/work-pools", 200)):
        await make_pool(client)
    result: dict[str, Any] = await call(client, "PUT", "/api/deployments", 201,
                                        json=deployment_body(**extra))
    deployment: dict[str, Any] = result["deployment"]
    return deployment


async def make_run(client: Client, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = await call(client, "POST", "/api/deployments/f1/d1/runs", 201,
                                        json=body)
    return result


# ---------------------------------------------------------------------------- server


async def test_health_answers_ok_with_version(client: Client) -> None:
    assert await call(client, "GET", "/api/health", 200) == {
        "status": "ok", "database": "ok", "version": __version__}


async def test_health_is_degraded_when_the_database_is_unreachable(tmp_path: Path) -> None:
    # Nothing listens on port 1 of 127.0.0.1: the connection is refused at once.
    unreachable = await Database.connect("postgresql+asyncpg://u:p@127.0.0.1:1/none",
                                         migrate=False)
    try:
        app = create_app(unreachable, None, Settings(home=tmp_path, api_token=None))
        async for client in serve(app):
            assert await call(client, "GET", "/api/health", 200) == {
                "status": "degraded", "database": "down", "version": __version__}
    finally:
        await unreachable.close()


async def test_pool_types_and_base_job_template(client: Client) -> None:
    types = await call(client, "GET", "/api/pool-types", 200)
    process = next(t for t in types if t["type"] == "process")
    assert process["extra"] is None and process["description"]
    assert {"ecs:push"} <= {t["type"] for t in types}
    template = await call(client, "GET", "/api/pool-types/process/base-job-template", 200)
    assert set(template) == {"job_configuration", "variables"}
    assert "command" in template["variables"]["properties"]


async def test_base_job_template_of_unknown_type_is_422_naming_type(client: Client) -> None:
    body = await call(client, "GET", "/api/pool-types/nope/base-job-template", 422)
    assert body["error"] == "invalid_input"
    assert body["details"][0]["field"] == "type"
    assert "process" in body["message"]  # lists the choices


async def test_unknown_route_is_404_json(client: Client) -> None:
    body = await call(client, "GET", "/api/nope", 404)
    assert body["error"] == "not_found" and "/api/nope" in body["message"]
    body = await call(client, "GET", "/elsewhere", 404)
    assert body["error"] == "not_found"


async def test_wrong_method_is_405_json_with_allow(client: Client) -> None:
    response = await client.delete("/api/health")
    assert response.status == 405
    assert response.headers["Allow"] == "GET"
    assert (await response.json())["error"] == "method_not_allowed"


async def test_body_over_one_mib_is_413_json(client: Client) -> None:
    huge = json.dumps({"name": "p1", "description": "x" * (1024 * 1024 + 1)}).encode()
    body = await rejected(client, "POST", "/api/work-pools", 413, data=io.BytesIO(huge),
                          headers={"Content-Type": "application/json"})
    assert body["error"] == "payload_too_large"


async def test_unexpected_failure_is_500_without_internals(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A database whose tables were never created: every query fails inside SQLAlchemy.
    bare = await Database.connect("sqlite+aiosqlite:///" + str(tmp_path / "bare.db"),
                                  migrate=False)
    try:
        app = create_app(bare, None, Settings(home=tmp_path, api_token=None))
        async for client in serve(app):
            with caplog.at_level(logging.ERROR, logger="pushpool.api"):
                body = await call(client, "GET", "/api/work-pools", 500)
    finally:
        await bare.close()
    assert body == {"error": "internal", "message": INTERNAL_MESSAGE, "details": []}
    assert "work_pools" in caplog.text  # the traceback went to the server log instead


# ---------------------------------------------------------------------------- auth


async def test_token_required_everywhere_but_health(locked: Client) -> None:
    assert (await call(locked, "GET", "/api/health", 200))["status"] == "ok"
    for path in ("/api/work-pools", "/api/openapi.json", "/api/runs", "/api/nope"):
        response = await locked.get(path)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
        body = await response.json()
        assert body["error"] == "unauthorized" and "Authorization: Bearer" in body["message"]
    response = await locked.post("/api/work-pools", json={"name": "p1"})
    assert response.status == 401


async def test_wrong_token_is_401_and_right_token_passes(
        locked: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for header in (f"Bearer {TOKEN}x", "Bearer", TOKEN, f"Basic {TOKEN}"):
        response = await locked.get("/api/work-pools", headers={"Authorization": header})
        assert response.status == 401, header
        assert TOKEN not in await response.text()
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert await call(locked, "GET", "/api/work-pools", 200, headers=ok) == []
    await call(locked, "POST", "/api/work-pools", 201, headers=ok,
               json={"name": "p1", "type": "process"})
    assert TOKEN not in caplog.text


# ---------------------------------------------------------------------------- cross-site


EVIL_ORIGIN = "http://attacker.example"


async def test_a_cross_site_form_post_creates_nothing(client: Client) -> None:
    """What a web page can make a browser send without a CORS preflight: a form post
    (urlencoded, multipart or text/plain, the last carrying a JSON-looking body)."""
    await make_deployment(client)
    runs = "/api/deployments/f1/d1/runs"
    for content_type, data in (("application/x-www-form-urlencoded", b"parameters=x"),
                               ("multipart/form-data; boundary=b", b"--b--"),
                               ("text/plain", b'{"parameters": {}}'),
                               ("text/plain", b"")):
        body = await rejected(client, "POST", runs, 415, data=data,
                              headers={"Content-Type": content_type})
        assert body["error"] == "unsupported_media_type"
        assert "Content-Type: application/json" in body["message"]
        # The same post with the Origin and Sec-Fetch-Site a browser adds: refused first.
        body = await rejected(client, "POST", runs, 403, data=data, headers={
            "Content-Type": content_type, "Origin": EVIL_ORIGIN, "Sec-Fetch-Site": "cross-site"})
        assert body["error"] == "cross_origin"
    assert await call(client, "GET", "/api/runs", 200) == []


async def test_a_body_needs_the_json_content_type(client: Client) -> None:
    await make_deployment(client)
    for path in ("/api/deployments/f1/d1/runs", "/api/webhooks/deployments/f1/d1"):
        await rejected(client, "POST", path, 415, data=b"{}")  # application/octet-stream
        await rejected(client, "POST", path, 415, data=b"{}", skip_auto_headers=["Content-Type"])
    await rejected(client, "PUT", "/api/deployments", 415, data=json.dumps(deployment_body()),
                   headers={"Content-Type": "text/plain"})
    await rejected(client, "PATCH", "/api/work-pools/p1", 415, data=b'{"description": "x"}',
                   headers={"Content-Type": "text/plain"})
    # JSON with a charset is JSON; a route without a body takes a request without a type.
    await call(client, "POST", "/api/deployments/f1/d1/runs", 201, data=b"{}",
               headers={"Content-Type": "application/json; charset=utf-8"})
    await call(client, "POST", "/api/work-pools/p1/pause", 200)


async def test_browser_requests_from_other_origins_are_refused(client: Client) -> None:
    pool = await make_pool(client)
    for headers in ({"Origin": EVIL_ORIGIN}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        for method, path, kwargs in (
                ("DELETE", "/api/work-pools/p1", {}),
                ("POST", "/api/work-pools/p1/pause", {}),
                ("PATCH", "/api/work-pools/p1", {"json": {"description": "x"}})):
            body = await rejected(client, method, path, 403, headers=headers, **kwargs)
            assert body["error"] == "cross_origin", (headers, method, path)
    assert await call(client, "GET", "/api/work-pools/p1", 200) == pool
    # Reading stays possible (a browser keeps the answer from the page anyway), and a
    # page of this server's own origin, or a request the user typed, may change things.
    assert await call(client, "GET", "/api/work-pools", 200, headers={"Origin": EVIL_ORIGIN})
    own = f"http://{client.server.host}:{client.server.port}"
    await call(client, "POST", "/api/work-pools/p1/pause", 200,
               headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    await call(client, "POST", "/api/work-pools/p1/resume", 200,
               headers={"Sec-Fetch-Site": "none"})


async def test_provider_events_keep_their_own_authentication(client: Client) -> None:
    """Provider events are exempt from the guard: their adapter authenticates them (here:
    no events secret is set, so the ECS adapter refuses them itself)."""
    for path in ("/api/events/ecs", "/api/events/aws/ecs"):
        response = await client.post(path, data=b"{}", headers={
            "Content-Type": "text/plain", "Origin": EVIL_ORIGIN, "Sec-Fetch-Site": "cross-site"})
        body = await response.json()
        assert body["error"] not in ("cross_origin", "unsupported_media_type"), body


# ---------------------------------------------------------------------------- pools


async def test_pool_lifecycle(client: Client, engine: RecordingEngine) -> None:
    pool = await make_pool(client, description="first")
    assert (pool["name"], pool["type"], pool["paused"]) == ("p1", "process", False)
    assert pool["queues"] == ["default"]
    assert await call(client, "GET", "/api/work-pools/p1", 200) == pool
    assert [p["name"] for p in await call(client, "GET", "/api/work-pools", 200)] == ["p1"]

    changed = await call(client, "PATCH", "/api/work-pools/p1", 200,
                         json={"description": "second"})
    assert changed["description"] == "second"
    assert engine.wakes == 0  # a description cannot make a run due

    paused = await call(client, "POST", "/api/work-pools/p1/pause", 200)
    assert paused["paused"] is True
    resumed = await call(client, "POST", "/api/work-pools/p1/resume", 200)
    assert resumed["paused"] is False
    assert engine.wakes == 1

    await call(client, "PATCH", "/api/work-pools/p1", 200, json={"concurrency_limit": 3})
    assert engine.wakes == 2

    await call(client, "DELETE", "/api/work-pools/p1", 204)
    body = await call(client, "GET", "/api/work-pools/p1", 404)
    assert body["error"] == "not_found"


async def test_create_pool_rejects_bad_input(client: Client) -> None:
    await make_pool(client, name="existing")
    body = await rejected(client, "POST", "/api/work-pools", 422, field="type",
                          json={"name": "p2", "type": "kubernetes"})
    assert "process" in body["message"]
    await rejected(client, "POST", "/api/work-pools", 409,
                   json={"name": "existing", "type": "process"})
    for limit in (0, -1):
        await rejected(client, "POST", "/api/work-pools", 422, field="concurrency_limit",
                       json={"name": "p2", "concurrency_limit": limit})
    await rejected(client, "POST", "/api/work-pools", 422, field="name",
                   json={"name": "bad name!"})
    await rejected(client, "POST", "/api/work-pools", 422, field="name", json={})
    await rejected(client, "POST", "/api/work-pools", 422, field="colour",
                   json={"name": "p2", "colour": "red"})
    await rejected(client, "POST", "/api/work-pools", 422, field="body", json=["p2"])


async def test_malformed_template_placeholder_is_422(client: Client) -> None:
    template = {"job_configuration": {"command": "{{ command"},
                "variables": {"type": "object", "properties": {"command": {"type": "array"}}}}
    body = await rejected(client, "POST", "/api/work-pools", 422,
                          field="base_job_template.job_configuration.command",
                          json={"name": "p2", "base_job_template": template})
    assert "placeholder" in body["message"]
    await make_pool(client)
    await rejected(client, "PATCH", "/api/work-pools/p1", 422,
                   field="base_job_template.job_configuration.command",
                   json={"base_job_template": template})


async def test_non_json_body_is_400_naming_the_problem(client: Client) -> None:
    body = await rejected(client, "POST", "/api/work-pools", 400, data=b"{name: p1",
                          headers={"Content-Type": "application/json"})
    assert body["error"] == "invalid_json" and "not valid JSON" in body["message"]
    await rejected(client, "POST", "/api/work-pools", 400, data=b"\xff\xfe",
                   headers={"Content-Type": "application/json"})


async def test_pool_update_and_delete_errors(client: Client) -> None:
    await make_pool(client)
    await rejected(client, "PATCH", "/api/work-pools/p1", 422, field="concurrency_limit",
                   json={"concurrency_limit": 0})
    await rejected(client, "PATCH", "/api/work-pools/p1", 422, field="late_after_seconds",
                   json={"late_after_seconds": -5})
    await rejected(client, "PATCH", "/api/work-pools/nope", 404, json={})
    await rejected(client, "DELETE", "/api/work-pools/nope", 404)
    await rejected(client, "POST", "/api/work-pools/nope/resume", 404)


async def test_preview_lists_upcoming_runs(client: Client) -> None:
    await make_deployment(client)
    later = datetime.now(UTC) + timedelta(hours=1)
    run = await make_run(client, scheduled_time=later.isoformat())
    await make_run(client, scheduled_time=(later + timedelta(hours=1)).isoformat())
    preview = await call(client, "GET", "/api/work-pools/p1/preview?limit=1", 200)
    assert [r["id"] for r in preview] == [run["id"]]
    assert preview[0]["display_state"] == "SCHEDULED"
    await rejected(client, "GET", "/api/work-pools/p1/preview?limit=0", 422, field="limit")
    await rejected(client, "GET", "/api/work-pools/nope/preview", 404)


# ---------------------------------------------------------------------------- queues


async def test_a_pool_with_deployments_is_deleted_only_with_cascade(client: Client) -> None:
    await make_deployment(client, schedules=[{"cron": "0 9 * * *"}])
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = [await make_run(client, scheduled_time=later) for _ in range(2)]
    final = await make_run(client)
    await call(client, "POST", f"/api/runs/{final['id']}/cancel", 200)
    final = await call(client, "GET", f"/api/runs/{final['id']}", 200)

    body = await rejected(client, "DELETE", "/api/work-pools/p1", 409)
    assert "1 deployment(s) (f1/d1)" in body["message"]
    assert "--cascade" in body["message"] and "deployment ls --pool p1" in body["message"]
    # A cascade confirmed for another number of deployments than the pool has: refused.
    body = await rejected(client, "DELETE", "/api/work-pools/p1?cascade=true&deployments=0",
                          409)
    assert "has 1 deployment(s) now, not the 0 confirmed" in body["message"]

    await call(client, "DELETE", "/api/work-pools/p1?cascade=true&deployments=1", 204)
    await call(client, "GET", "/api/deployments/f1/d1", 404)
    await call(client, "GET", "/api/work-pools/p1", 404)
    kept = await call(client, "GET", "/api/runs", 200)
    assert [run["id"] for run in kept] == [final["id"]]  # the scheduled runs went with d1
    # Its deployment is gone (no id to follow), the rest is as it was.
    assert await call(client, "GET", f"/api/runs/{final['id']}", 200) == {
        **final, "deployment_id": None}
    assert all(run["id"] != final["id"] for run in scheduled)
    # The name is free again; the old run keeps naming the pool it ran in.
    await make_deployment(client)
    assert (await call(client, "GET", f"/api/runs/{final['id']}", 200))["pool_name"] == "p1"
    assert await call(client, "GET", "/api/runs?pool=p1", 200) == []


async def test_finished_runs_outlive_their_deployment_and_queue(client: Client) -> None:
    await make_pool(client)
    await call(client, "POST", "/api/work-pools/p1/queues", 201, json={"name": "side"})
    await make_deployment(client, queue_name="side")
    run = await make_run(client)
    run = await call(client, "POST", f"/api/runs/{run['id']}/cancel", 200)
    await call(client, "DELETE", "/api/deployments/f1/d1", 204)
    await call(client, "DELETE", "/api/work-pools/p1/queues/side", 204)
    await call(client, "DELETE", "/api/work-pools/p1", 204)  # no deployments left
    shown = await call(client, "GET", f"/api/runs/{run['id']}", 200)
    assert (shown["deployment_name"], shown["pool_name"], shown["queue_name"]) == (
        "f1/d1", "p1", "side")
    assert shown["history"] == run["history"]


async def test_queue_lifecycle(client: Client, engine: RecordingEngine) -> None:
    await make_pool(client)
    queue = await call(client, "POST", "/api/work-pools/p1/queues", 201,
                       json={"name": "fast", "priority": 5, "paused": True})
    assert (queue["name"], queue["pool_name"], queue["priority"]) == ("fast", "p1", 5)
    assert await call(client, "GET", "/api/work-pools/p1/queues/fast", 200) == queue
    listed = await call(client, "GET", "/api/work-pools/p1/queues", 200)
    assert [q["name"] for q in listed] == ["default", "fast"]
    await make_pool(client, name="p2")
    everywhere = await call(client, "GET", "/api/work-queues", 200)
    assert {(q["pool_name"], q["name"]) for q in everywhere} == {
        ("p1", "default"), ("p1", "fast"), ("p2", "default")}
    only_p2 = await call(client, "GET", "/api/work-queues?pool=p2", 200)
    assert [(q["pool_name"], q["name"]) for q in only_p2] == [("p2", "default")]

    await call(client, "PATCH", "/api/work-pools/p1/queues/fast", 200,
               json={"description": "d"})
    assert engine.wakes == 0
    unpaused = await call(client, "PATCH", "/api/work-pools/p1/queues/fast", 200,
                          json={"paused": False})
    assert unpaused["paused"] is False and engine.wakes == 1

    await call(client, "DELETE", "/api/work-pools/p1/queues/fast", 204)
    await call(client, "GET", "/api/work-pools/p1/queues/fast", 404)


async def test_queue_bad_inputs(client: Client) -> None:
    await make_pool(client)
    for limit in (0, -3):
        await rejected(client, "POST", "/api/work-pools/p1/queues", 422,
                       field="concurrency_limit", json={"name": "q", "concurrency_limit": limit})
    await rejected(client, "POST", "/api/work-pools/p1/queues", 422, field="priority",
                   json={"name": "q", "priority": 0})
    await rejected(client, "POST", "/api/work-pools/p1/queues", 409, json={"name": "default"})
    await rejected(client, "POST", "/api/work-pools/nope/queues", 404, json={"name": "q"})
    await rejected(client, "PATCH", "/api/work-pools/p1/queues/default", 422,
                   field="concurrency_limit", json={"concurrency_limit": 0})
    await rejected(client, "DELETE", "/api/work-pools/p1/queues/default", 409)
    await rejected(client, "GET", "/api/work-pools/nope/queues", 404)
    await rejected(client, "GET", "/api/work-queues?pool=", 422, field="pool")


# ---------------------------------------------------------------------------- deployments


async def test_deployment_lifecycle(client: Client, engine: RecordingEngine) -> None:
    await make_pool(client)
    created = await call(client, "PUT", "/api/deployments", 201, json=deployment_body(
        schedules=[{"cron": "0 9 * * *", "timezone": "Europe/Berlin"}]))
    assert created["created"] is True
    deployment = created["deployment"]
    assert (deployment["flow_name"], deployment["name"], deployment["queue_name"]) == (
        "f1", "d1", "default")
    assert deployment["schedules"][0]["cron"] == "0 9 * * *"
    assert engine.wakes == 1

    updated = await call(client, "PUT", "/api/deployments", 200,
                         json=deployment_body(description="again"))
    assert updated["created"] is False
    assert updated["deployment"]["id"] == deployment["id"]
    assert updated["deployment"]["description"] == "again"

    by_name = await call(client, "GET", "/api/deployments/f1/d1", 200)
    assert await call(client, "GET", f"/api/deployments/id/{deployment['id']}", 200) == by_name
    assert [d["id"] for d in await call(client, "GET", "/api/deployments?pool=p1&flow=f1",
                                        200)] == [deployment["id"]]
    assert await call(client, "GET", "/api/deployments?flow=other", 200) == []

    patched = await call(client, "PATCH", "/api/deployments/f1/d1", 200,
                         json={"paused": True})
    assert patched["paused"] is True
    wakes = engine.wakes
    await call(client, "PATCH", "/api/deployments/f1/d1", 200, json={"paused": False})
    assert engine.wakes == wakes + 1

    await call(client, "DELETE", "/api/deployments/f1/d1", 204)
    await call(client, "GET", "/api/deployments/f1/d1", 404)


async def test_deployment_bad_inputs(client: Client) -> None:
    await make_pool(client)
    put = "/api/deployments"
    await rejected(client, "PUT", put, 422, field="pool_name",
                   json=deployment_body(pool_name="missing"))
    await rejected(client, "PUT", put, 422, field="queue_name",
                   json=deployment_body(queue_name="missing"))
    body = await rejected(client, "PUT", put, 422, json=deployment_body(
        schedules=[{"cron": "61 * * * *"}]))
    assert body["details"][0]["field"].startswith("schedules[0]")
    assert "cron" in body["details"][0]["field"]
    body = await rejected(client, "PUT", put, 422, json=deployment_body(
        schedules=[{"cron": "0 9 * * *", "timezone": "Mars/Olympus"}]))
    assert body["details"][0]["field"].endswith("timezone")
    await rejected(client, "PUT", put, 422, field="schedules[0]",
                   json=deployment_body(schedules=[{"cron": "* * * * *", "interval": 60}]))
    await rejected(client, "PUT", put, 422, field="schedules[0].interval",
                   json=deployment_body(schedules=[{"interval": 0}]))
    body = await rejected(client, "PUT", put, 422, json=deployment_body(
        job_variables={"cpu": "lots"}))
    assert body["details"][0]["field"] == "job_variables.cpu"
    await rejected(client, "PUT", put, 422, field="job_variables.cpu",
                   json=deployment_body(job_variables={"cpu": 0}))
    for limit in (0, -1):
        await rejected(client, "PUT", put, 422, field="concurrency_limit",
                       json=deployment_body(concurrency_limit=limit))
    await rejected(client, "PUT", put, 422, field="command", json=deployment_body(command=[]))
    await rejected(client, "PUT", put, 400, data=b"not json",
                   headers={"Content-Type": "application/json"})
    await make_deployment(client)
    await rejected(client, "PATCH", "/api/deployments/f1/d1", 422, field="concurrency_limit",
                   json={"concurrency_limit": 0})
    await rejected(client, "PATCH", "/api/deployments/f1/nope", 404, json={})
    await rejected(client, "DELETE", "/api/deployments/f1/nope", 404)
    await rejected(client, "GET", "/api/deployments/id/nope", 404)


# ---------------------------------------------------------------------------- runs


async def test_create_run_and_read_it(client: Client, engine: RecordingEngine) -> None:
    await make_deployment(client)
    wakes = engine.wakes
    run = await make_run(client, parameters={"x": 1}, job_variables={"timeout": 30})
    assert run["state"] == "SCHEDULED" and run["deployment_name"] == "f1/d1"
    assert run["parameters"] == {"x": 1} and run["job_variables"] == {"timeout": 30}
    assert engine.wakes == wakes + 1
    read = await call(client, "GET", f"/api/runs/{run['id']}", 200)
    assert [h["state"] for h in read["history"]] == ["SCHEDULED"]
    assert read["display_state"] == "SCHEDULED"
    # An empty body is an empty RunCreate: a run with the deployment's defaults.
    await call(client, "POST", "/api/deployments/f1/d1/runs", 201)


async def test_idempotency_key_returns_the_same_run(client: Client,
                                                    engine: RecordingEngine) -> None:
    await make_deployment(client)
    key = {"Idempotency-Key": "req-42"}
    first = await call(client, "POST", "/api/deployments/f1/d1/runs", 201, json={},
                       headers=key)
    wakes = engine.wakes
    again = await call(client, "POST", "/api/deployments/f1/d1/runs", 200, json={},
                       headers=key)
    assert again["id"] == first["id"] and again["idempotency_key"] == "req-42"
    assert engine.wakes == wakes  # nothing new became due
    assert len(await call(client, "GET", "/api/runs", 200)) == 1
    await rejected(client, "POST", "/api/deployments/f1/d1/runs", 422, field="Idempotency-Key",
                   json={}, headers={"Idempotency-Key": "k" * 201})


async def test_create_run_bad_inputs(client: Client) -> None:
    await make_deployment(client, parameter_schema={
        "type": "object", "properties": {"n": {"type": "integer"}}})
    runs = "/api/deployments/f1/d1/runs"
    await rejected(client, "POST", runs, 422, field="job_variables.cpu",
                   json={"job_variables": {"cpu": "lots"}})
    body = await rejected(client, "POST", runs, 422, json={"parameters": {"n": "x"}})
    assert body["details"][0]["field"] == "parameters.n"
    await rejected(client, "POST", runs, 422, field="scheduled_time",
                   json={"scheduled_time": "tomorrow"})
    await rejected(client, "POST", runs, 422, field="parameters", json={"parameters": [1]})
    await rejected(client, "POST", runs, 400, data=b"{",
                   headers={"Content-Type": "application/json"})
    await rejected(client, "POST", "/api/deployments/f1/nope/runs", 404, json={})


async def test_webhook_starts_a_run_now(client: Client, engine: RecordingEngine) -> None:
    await make_deployment(client)
    wakes = engine.wakes
    run = await call(client, "POST", "/api/webhooks/deployments/f1/d1", 202,
                     json={"parameters": {"ref": "main"}, "sender": {"login": "someone"}})
    assert run["state"] == "SCHEDULED" and run["parameters"] == {"ref": "main"}
    scheduled = datetime.fromisoformat(run["scheduled_time"])
    assert abs(datetime.now(UTC) - scheduled) < timedelta(minutes=1)
    assert engine.wakes == wakes + 1
    other = await call(client, "POST", "/api/webhooks/deployments/f1/d1", 202,
                       json={"anything": True})
    assert other["parameters"] == {} and other["id"] != run["id"]
    await rejected(client, "POST", "/api/webhooks/deployments/f1/d1", 422, field="parameters",
                   json={"parameters": "not an object"})
    await rejected(client, "POST", "/api/webhooks/deployments/f1/d1", 400, data=b"<xml/>",
                   headers={"Content-Type": "application/json"})
    await rejected(client, "POST", "/api/webhooks/deployments/f1/nope", 404, json={})


async def test_list_runs_filters_and_shows_late(client: Client) -> None:
    await make_deployment(client)
    past = datetime.now(UTC) - timedelta(hours=1)
    late = await make_run(client, scheduled_time=past.isoformat())
    future = await make_run(client,
                            scheduled_time=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    cancelled = await make_run(client)
    await call(client, "POST", f"/api/runs/{cancelled['id']}/cancel", 200)

    listed = {r["id"]: r for r in await call(client, "GET", "/api/runs", 200)}
    assert listed[late["id"]]["display_state"] == "LATE"
    assert listed[late["id"]]["state"] == "SCHEDULED"
    assert listed[future["id"]]["display_state"] == "SCHEDULED"
    assert listed[cancelled["id"]]["display_state"] == "CANCELLED"

    scheduled = await call(client, "GET", "/api/runs?state=SCHEDULED&pool=p1&deployment=f1/d1",
                           200)
    assert {r["id"] for r in scheduled} == {late["id"], future["id"]}
    assert await call(client, "GET", "/api/runs?pool=other", 200) == []
    first = await call(client, "GET", "/api/runs?limit=2", 200)
    rest = await call(client, "GET", "/api/runs?limit=2&offset=2", 200)
    assert len(first) == 2 and len(rest) == 1
    assert {r["id"] for r in first + rest} == set(listed)


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"),
    ("offset=-1", "offset"), ("state=LATE", "state"), ("state=bogus", "state"),
    ("colour=red", "colour"), ("limit=1&limit=2", "limit"),
])
async def test_list_runs_rejects_bad_query(client: Client, query: str, field: str) -> None:
    body = await call(client, "GET", f"/api/runs?{query}", 422)
    assert body["error"] == "invalid_input"
    assert body["details"][0]["field"] == field and body["message"].startswith(field)


async def test_cancel_run(client: Client, engine: RecordingEngine) -> None:
    await make_deployment(client)
    run = await make_run(client)
    cancelled = await call(client, "POST", f"/api/runs/{run['id']}/cancel", 200)
    assert cancelled["state"] == "CANCELLED"
    assert [h["state"] for h in cancelled["history"]] == ["SCHEDULED", "CANCELLED"]
    assert engine.cancelled == [run["id"]]
    await rejected(client, "POST", f"/api/runs/{run['id']}/cancel", 409)
    await rejected(client, "POST", "/api/runs/nope/cancel", 422, field="id")
    await rejected(client, "POST", f"/api/runs/{UNKNOWN_RUN_ID}/cancel", 404)
    assert engine.cancelled == [run["id"]]


async def test_run_logs(client: Client, db: Database) -> None:
    await make_deployment(client)
    run = await make_run(client)
    now = datetime.now(UTC)
    await store.append_logs(db, run["id"], [LogLine(now, "one"), LogLine(now, "two", "stderr"),
                                             LogLine(now, "three")])
    logs = await call(client, "GET", f"/api/runs/{run['id']}/logs", 200)
    assert [(entry["message"], entry["stream"]) for entry in logs] == [
        ("one", "stdout"), ("two", "stderr"), ("three", "stdout")]
    after = await call(client, "GET", f"/api/runs/{run['id']}/logs?after={logs[0]['id']}"
                       "&limit=1", 200)
    assert [entry["message"] for entry in after] == ["two"]
    last = await call(client, "GET", f"/api/runs/{run['id']}/logs?tail=true&limit=2", 200)
    assert [entry["message"] for entry in last] == ["two", "three"]  # the last two, in order
    await rejected(client, "GET", f"/api/runs/{run['id']}/logs?after=-1", 422, field="after")
    await rejected(client, "GET", "/api/runs/nope/logs", 422, field="id")
    await rejected(client, "GET", f"/api/runs/{UNKNOWN_RUN_ID}/logs", 404)
    body = await rejected(client, "GET", "/api/runs/nope", 422, field="id")
    assert "'nope' is not a valid run id" in body["message"]
    await rejected(client, "GET", f"/api/runs/{UNKNOWN_RUN_ID}", 404)


async def clone_run(db: Database, run_id: str, new_id: str) -> None:
    """A second run row with a chosen id (uuid4 never makes two share a prefix on cue)."""
    def clone(conn: Connection) -> None:
        row = conn.execute(select(tables.runs).where(tables.runs.c.id == run_id)).one()
        conn.execute(insert(tables.runs).values({**row._mapping, "id": new_id}))

    await db.run(clone, write=True)


async def test_a_run_is_named_by_the_start_of_its_id(client: Client, db: Database) -> None:
    await make_deployment(client)
    run = await make_run(client)
    run_id = run["id"]
    for ref in (run_id[:8], run_id[:8].upper(), run_id[:4], run_id[:13],
                run_id.replace("-", "")[:10], run_id):
        assert (await call(client, "GET", f"/api/runs/{ref}", 200))["id"] == run_id, ref
    assert await call(client, "GET", f"/api/runs/{run_id[:8]}/logs", 200) == []

    # Ids sharing its first 8 characters, and one just past them: only the first is
    # ambiguous with it (on PostgreSQL the range must hold under the database's collation).
    twin = run_id[:8] + ("-0000-4000-8000-000000000000" if run_id[9] != "0"
                         else "-ffff-4fff-bfff-ffffffffffff")
    after = run_id[:7] + format(int(run_id[7], 16) + 1, "x") if run_id[7] != "f" else \
        run_id[:6] + format((int(run_id[6], 16) + 1) % 16, "x") + "0"
    await clone_run(db, run_id, twin)
    await clone_run(db, run_id, after + run_id[8:])
    body = await rejected(client, "GET", f"/api/runs/{run_id[:8]}", 422, field="id")
    assert "more than one run id" in body["message"]
    assert run_id in body["message"] and twin in body["message"]
    assert after + run_id[8:] not in body["message"]
    assert (await call(client, "GET", f"/api/runs/{run_id[:14]}", 200))["id"] == run_id
    await rejected(client, "POST", f"/api/runs/{run_id[:8]}/cancel", 422, field="id")
    assert (await call(client, "GET", f"/api/runs/{run_id}", 200))["state"] == "SCHEDULED"

    for bad in ("abc", "zzzzzzzz", "3f2a1b9c-0000-4000-8000-0000000000001", "r-1", "x" * 300):
        body = await rejected(client, "GET", f"/api/runs/{bad}", 422, field="id")
        assert "is not a valid run id" in body["message"], bad
    body = await rejected(client, "GET", "/api/runs/ffffffff" if not run_id.startswith("ff")
                          else "/api/runs/00000000", 404)
    assert "no run id starts with" in body["message"]


async def test_a_run_is_refused_beyond_ten_years_ahead(client: Client) -> None:
    await make_deployment(client)
    runs = "/api/deployments/f1/d1/runs"
    body = await rejected(client, "POST", runs, 422, field="scheduled_time",
                          json={"scheduled_time": "9999-12-31T00:00:00Z"})
    assert "more than ten years ahead" in body["message"]
    eleven = datetime.now(UTC) + timedelta(days=11 * 366)
    await rejected(client, "POST", runs, 422, field="scheduled_time",
                   json={"scheduled_time": eleven.isoformat()})
    nine = datetime.now(UTC) + timedelta(days=9 * 365)
    await make_run(client, scheduled_time=nine.isoformat())


async def test_a_number_for_a_string_parameter_names_the_parameter(client: Client) -> None:
    # The CLI's hint to quote `--param repo_name=123` reads these details.
    await make_deployment(client, parameter_schema={
        "type": "object", "properties": {"repo_name": {"type": "string"}}})
    body = await rejected(client, "POST", "/api/deployments/f1/d1/runs", 422,
                          json={"parameters": {"repo_name": 123}})
    assert body["details"][0]["field"] == "parameters.repo_name"
    assert body["details"][0]["message"] == "123 is not of type 'string'"


async def test_display_state_is_filled_when_the_store_left_it_empty(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    await call(client, "PATCH", "/api/work-pools/p1", 200, json={"late_after_seconds": 600})
    run = Run.model_validate(await make_run(client))
    now = datetime.now(UTC)
    blank = run.model_copy(update={"display_state": None})
    five_min_late = blank.model_copy(update={"scheduled_time": now - timedelta(minutes=5)})
    hour_late = blank.model_copy(update={"scheduled_time": now - timedelta(hours=1)})
    running = hour_late.model_copy(update={"state": RunState.RUNNING})
    shown = await with_display_state(db, [five_min_late, hour_late, running], now=now)
    assert [r.display_state for r in shown] == ["SCHEDULED", "LATE", "RUNNING"]
    kept = await with_display_state(db, [run.model_copy(update={"display_state": "X"})])
    assert kept[0].display_state == "X"


async def test_engine_failure_does_not_fail_the_write(db: Database, tmp_path: Path) -> None:
    @dataclass
    class BrokenEngine:
        def wake(self) -> None:
            raise RuntimeError("engine down")

        def notify_cancel(self, run_id: str) -> None:
            raise RuntimeError("engine down")

    app = create_app(db, BrokenEngine(), Settings(home=tmp_path, api_token=None))
    async for client in serve(app):
        await make_deployment(client)
        run = await make_run(client)
        assert (await call(client, "POST", f"/api/runs/{run['id']}/cancel", 200))["state"] \
            == "CANCELLED"
