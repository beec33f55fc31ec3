"""The OpenAPI document matches the registered routes and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import OpenAPIV31SpecValidator

from dispatcher.api import create_app
from dispatcher.api.route_table import ROUTES
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
    return {(route.method.lower(), route.resource.canonical)
            for route in app.router.routes() if route.resource is not None}


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


async def test_health_is_public_and_everything_else_needs_the_token(
        document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    public = {(method, path) for path, item in document["paths"].items()
              for method, operation in item.items() if operation.get("security") == []}
    assert public == {("get", "/api/health")}
    events = document["paths"]["/api/events/aws/ecs"]["post"]
    assert events["security"] == [{"eventsSecret": []}]


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
