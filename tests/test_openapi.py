"""The OpenAPI document matches the registered routes and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import hdrs, web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from pydantic import SecretStr

from dispatcher.api import create_app
from dispatcher.api.openapi import build_document
from dispatcher.api.route_table import ROUTES
from dispatcher.console.routes import CONSOLE_PATHS
from dispatcher.settings import Settings
from dispatcher.store.db import Database

HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[web.Application]:
    db = await Database.connect("sqlite+aiosqlite:///" + str(tmp_path / "t.db"))
    yield create_app(db, None, Settings(home=tmp_path, api_token=None))
    await db.close()


@pytest.fixture
async def document(app: web.Application) -> AsyncIterator[dict[str, Any]]:
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/openapi.json")
        assert response.status == 200
        yield await response.json()


def registered(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, path) of the API served, less each path's catch-all 405 and the web
    console's pages (HTML, not API operations)."""
    return {(route.method.lower(), route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method != hdrs.METH_ANY
            and route.resource.canonical not in CONSOLE_PATHS}


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items()
            for method in item if method in HTTP_METHODS}


async def test_registered_routes_and_document_are_the_same_set(
        app: web.Application, document: dict[str, Any]) -> None:
    assert len(registered(app)) == len(ROUTES)
    assert registered(app) == documented(document)


async def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    errors = list(OpenAPIV31SpecValidator(document).iter_errors())
    assert errors == []


def requirements(document: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """Each operation's security requirement, the document's own where it sets none."""
    default = document.get("security", [])
    return {(method, path): operation.get("security", default)
            for path, item in document["paths"].items()
            for method, operation in item.items()}


def test_the_token_is_required_where_the_server_requires_it() -> None:
    runtime = {("post", "/api/runs/{id}/state"), ("post", "/api/runs/{id}/logs")}
    events = {("post", "/api/events/aws/ecs"), ("post", "/api/events/{provider}")}
    hooks = {("post", "/hooks/{slug}")}  # signed by the webhook's own secret
    locked = build_document(ROUTES, api_token=True)
    assert locked["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert locked["security"] == [{"bearer": []}]
    needs = requirements(locked)
    assert {key for key, need in needs.items() if need == []} == {("get", "/api/health")}
    assert all(needs[key] == [{"bearer": []}, {"runToken": []}] for key in runtime)
    assert all(needs[key] == [{"eventsSecret": []}] for key in events)
    assert all(needs[key] == [{"webhookSignature": []}] for key in hooks)

    # No PUSHPOOL_API_TOKEN: nothing asks for it, and no answer is a 401 for lack of it.
    open_doc = build_document(ROUTES, api_token=False)
    assert "security" not in open_doc
    needs = requirements(open_doc)
    assert {key for key, need in needs.items() if need} == runtime | events | hooks
    assert all(needs[key] == [{"runToken": []}] for key in runtime)
    with_401 = {(method, path) for path, item in open_doc["paths"].items()
                for method, operation in item.items() if "401" in operation["responses"]}
    assert with_401 == runtime | events | hooks


async def test_each_server_serves_the_document_of_its_settings(tmp_path: Path) -> None:
    db = await Database.connect("sqlite+aiosqlite:///" + str(tmp_path / "s.db"))
    try:
        for token in (None, "t0ken"):
            settings = Settings(home=tmp_path, api_token=SecretStr(token) if token else None)
            async with TestClient(TestServer(create_app(db, None, settings))) as client:
                answer = await client.get("/api/openapi.json",
                                          headers={"Authorization": f"Bearer {token}"})
                assert await answer.json() == json.loads(json.dumps(
                    build_document(ROUTES, api_token=token is not None)))
    finally:
        await db.close()


async def test_a_path_answers_405_with_its_own_methods(app: web.Application) -> None:
    async with TestClient(TestServer(app)) as client:
        # /api/deployments/{flow}/{name} matches this URL too (flow "id"), and has PATCH.
        for method in ("PATCH", "DELETE", "OPTIONS", "PUT"):
            answer = await client.request(method, "/api/deployments/id/some-id",
                                          json={"paused": True})
            assert (answer.status, answer.headers["Allow"]) == (405, "GET"), method
        answer = await client.request("PUT", "/api/deployments/flow/name")
        assert (answer.status, answer.headers["Allow"]) == (405, "DELETE, GET, PATCH")


@pytest.mark.parametrize(("extra", "accepted"), [
    ({}, False), ({"command": None, "entrypoint": None}, False),
    ({"command": ["python", "-c", "1"]}, True), ({"entrypoint": "flows.py:main"}, True),
    ({"job_variables": {"command": ["run"]}}, True), ({"job_variables": {}}, False)])
async def test_the_command_or_entrypoint_rule_is_in_the_document(
        app: web.Application, document: dict[str, Any], extra: dict[str, Any],
        accepted: bool) -> None:
    body = {"name": "d", "flow_name": "f", "pool_name": "p", **extra}
    schema = {**document["components"]["schemas"]["DeploymentApply"],
              "$defs": document["components"]["schemas"]}
    refs = json.loads(json.dumps(schema).replace("#/components/schemas/", "#/$defs/"))
    assert Draft202012Validator(refs).is_valid(body) is accepted
    async with TestClient(TestServer(app)) as client:
        await client.post("/api/work-pools", json={"name": "p"})
        answer = await client.put("/api/deployments", json=body)
        assert (answer.status < 300) is accepted, await answer.text()


async def test_every_operation_is_described_and_errors_use_the_error_schema(
        document: dict[str, Any]) -> None:
    operation_ids = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            operation_ids.append(operation["operationId"])
            assert operation["summary"], (method, path)
            for status, answer in operation["responses"].items():
                if int(status) >= 400:
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
    assert len(operation_ids) == len(set(operation_ids))


async def test_component_schemas_come_from_the_models(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {"WorkPool", "WorkPoolCreate", "Deployment", "DeploymentApply", "Run", "RunCreate",
            "LogEntry", "Error"} <= set(schemas)
    assert "name" in schemas["WorkPoolCreate"]["required"]
    create_run = document["paths"]["/api/deployments/{flow}/{name}/runs"]["post"]
    assert create_run["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunCreate"}
    assert {"201", "200"} <= set(create_run["responses"])
    header_names = [p["name"] for p in create_run["parameters"] if p["in"] == "header"]
    assert header_names == ["Idempotency-Key"]
    runs = document["paths"]["/api/runs"]["get"]
    limit = next(p for p in runs["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)


async def test_every_ref_resolves(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [ref for value in node.values() for ref in refs(value)]
        if isinstance(node, list):
            return [ref for value in node for ref in refs(value)]
        return []

    for ref in refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in schemas
