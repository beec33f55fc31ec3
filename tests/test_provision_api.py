"""Provisioning a cloud pool through the API, against moto: the plan is shown and changes
nothing, applying the confirmed plan makes it and creates the pool with the filled
defaults, a plan that changed since it was shown is refused, and a bad option gets the
CLI's words. The server's adapter uses its own identity: the test's environment (moto)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dispatcher.api import create_app
from dispatcher.settings import Settings
from dispatcher.store.db import Database
from providers.ecs.provision import PROVISION_OPTIONS
from providers.provision_options import parse_pairs
from tests.fakes.ecs_testing import REGION, Aws

pytest_plugins = ["tests.ecs_fixtures"]

PLAN = "/api/pool-types/ecs:push/provision-plan"


@pytest.fixture
def pool() -> str:
    # IAM, EC2 and ECR outlive moto's per-test reset: each test names its own resources.
    return f"fargate-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def client(db: Database, ecs_aws: Aws, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(db, None, Settings(home=tmp_path, api_token=None))
    async with TestClient(TestServer(app)) as c:
        yield c


async def call(client: TestClient[Any, Any], method: str, path: str, expect: int,
               **kwargs: Any) -> Any:
    response = await client.request(method, path, **kwargs)
    text = await response.text()
    assert response.status == expect, f"{method} {path}: {response.status} {text}"
    return await response.json()


def options(aws: Aws, **extra: Any) -> dict[str, Any]:
    return {"region": REGION, "endpoint_url": aws.server.url, **extra}


def cluster_active(aws: Aws, pool: str) -> bool:
    found = aws.client("ecs").describe_clusters(clusters=[f"pushpool-{pool}"])["clusters"]
    return bool(found) and found[0]["status"] == "ACTIVE"


async def test_the_plan_changes_nothing_and_apply_makes_the_pool(
        client: TestClient[Any, Any], ecs_aws: Aws, pool: str) -> None:
    declared = await call(client, "GET", "/api/pool-types/ecs:push/provision-options", 200)
    assert {"name": "log_retention_days", "kind": "int"}.items() <= next(
        o for o in declared if o["name"] == "log_retention_days").items()
    assert await call(client, "GET", "/api/pool-types/process/provision-options", 200) == []

    plan = await call(client, "POST", PLAN, 200, json={"name": pool, "options": options(ecs_aws)})
    assert plan["changes"] > 0 and plan["digest"]
    assert {"resource": "ecs cluster", "name": f"pushpool-{pool}", "action": "create"}.items() <= \
        plan["steps"][0].items(), plan["steps"]
    assert not cluster_active(ecs_aws, pool)  # planning made nothing
    await call(client, "GET", f"/api/work-pools/{pool}", 404)

    made = await call(client, "POST", "/api/work-pools", 201, json={
        "name": pool, "type": "ecs:push",
        "provision": {"options": options(ecs_aws), "confirm_plan": plan["digest"]}})
    assert cluster_active(ecs_aws, pool)
    defaults = {k: v.get("default") for k, v in
                made["base_job_template"]["variables"]["properties"].items()}
    assert defaults["cluster"].endswith(f"pushpool-{pool}")
    assert defaults["execution_role_arn"].startswith("arn:aws:iam::")
    assert defaults["subnets"] and defaults["endpoint_url"] == ecs_aws.server.url
    assert len(made["provisioned"]["steps"]) == len(plan["steps"])
    assert made["provisioned"]["options"]["region"] == REGION
    stored = await call(client, "GET", f"/api/work-pools/{pool}", 200)
    assert stored["provisioned"] == made["provisioned"]

    # The name is taken now: refused before the cloud is asked anything.
    again = await call(client, "POST", PLAN, 409, json={"name": pool,
                                                        "options": options(ecs_aws)})
    assert "already exists" in again["message"]


async def test_a_plan_that_changed_since_it_was_shown_is_refused(
        client: TestClient[Any, Any], ecs_aws: Aws, pool: str) -> None:
    plan = await call(client, "POST", PLAN, 200, json={"name": pool, "options": options(ecs_aws)})
    # Someone makes the cluster meanwhile: the plan the user saw is not what would happen.
    ecs_aws.client("ecs").create_cluster(clusterName=f"pushpool-{pool}")
    body = {"name": pool, "type": "ecs:push",
            "provision": {"options": options(ecs_aws), "confirm_plan": plan["digest"]}}
    refused = await call(client, "POST", "/api/work-pools", 409, json=body)
    assert "plan changed since it was shown" in refused["message"]
    await call(client, "GET", f"/api/work-pools/{pool}", 404)
    roles = ecs_aws.client("iam").list_roles()["Roles"]
    assert not [r for r in roles if r["RoleName"].startswith(f"pushpool-{pool}")]  # nothing applied

    # Other options than the plan's: refused too.
    fresh = await call(client, "POST", PLAN, 200, json={"name": pool,
                                                        "options": options(ecs_aws)})
    body["provision"] = {"options": options(ecs_aws, log_retention_days=7),
                         "confirm_plan": fresh["digest"]}
    await call(client, "POST", "/api/work-pools", 409, json=body)
    body["provision"] = {"options": options(ecs_aws), "confirm_plan": fresh["digest"]}
    await call(client, "POST", "/api/work-pools", 201, json=body)


@pytest.mark.parametrize(("given", "key"), [
    ({"log_retention_days": "thirty"}, "log_retention_days"),
    ({"log_retention_days": True}, "log_retention_days"),
    ({"colour": "blue"}, "colour"),
])
async def test_a_bad_option_is_named_in_the_clis_words(
        client: TestClient[Any, Any], ecs_aws: Aws, pool: str, given: dict[str, Any],
        key: str) -> None:
    body = await call(client, "POST", PLAN, 422, json={"name": pool, "options": given})
    assert body["details"][0]["field"] == f"options.{key}"
    if isinstance(next(iter(given.values())), str):  # what `--infra-option K=V` says
        with pytest.raises(ValueError) as cli:
            parse_pairs(PROVISION_OPTIONS, [f"{k}={v}" for k, v in given.items()], "ecs:push")
        assert str(cli.value) in body["message"]
    created = await call(client, "POST", "/api/work-pools", 422, json={
        "name": pool, "type": "ecs:push",
        "provision": {"options": given, "confirm_plan": "x"}})
    assert created["details"][0]["field"] == f"provision.options.{key}"
    assert not cluster_active(ecs_aws, pool)
    await call(client, "GET", f"/api/work-pools/{pool}", 404)


async def test_a_type_without_provisioning_is_refused(client: TestClient[Any, Any]) -> None:
    body = await call(client, "POST", "/api/pool-types/process/provision-plan", 422,
                      json={"name": "laptop"})
    assert body["details"][0]["field"] == "type"
    body = await call(client, "POST", "/api/work-pools", 422, json={
        "name": "laptop", "type": "process", "provision": {"confirm_plan": "x"}})
    assert body["details"][0]["field"] == "provision"
