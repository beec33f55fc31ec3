"""An ecs:push pool end to end through the CLI and a real server, against moto: provision
with a plan and a progress bar, rerun changes nothing, a run goes to COMPLETED on ECS, and
deprovisioning removes what provisioning made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.ecs_testing import REGION, Aws
from tests.fakes.pushpool_server import ServerProcess, run_cli

pytest_plugins = ["tests.ecs_fixtures"]
pytestmark = pytest.mark.slow


@pytest.fixture
def server(ecs_aws: Aws, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "home", env={"PUSHPOOL_ECS_POLL_INTERVAL": "0.2"})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def cli(server: ServerProcess, *args: str, code: int = 0) -> str:
    return run_cli(server, *args, code=code)


def test_provision_run_and_deprovision(server: ServerProcess, ecs_aws: Aws) -> None:
    create = ["work-pool", "create", "fargate", "--type", "ecs:push", "--provision-infra",
              "--region", REGION, "--endpoint-url", ecs_aws.server.url]
    refused = cli(server, *create, code=2)  # no terminal to ask in, and no --yes
    assert "--yes" in refused
    assert "fargate" not in cli(server, "work-pool", "ls")

    out = cli(server, *create, "--yes")
    assert "Provision infrastructure for work pool 'fargate'" in out
    assert "create" in out and "Created work pool 'fargate'" in out
    pool: dict[str, Any] = json.loads(cli(server, "work-pool", "inspect", "fargate",
                                          "--output", "json"))
    defaults = {k: v.get("default") for k, v in
                pool["base_job_template"]["variables"]["properties"].items()}
    cluster = defaults["cluster"]
    assert cluster and defaults["execution_role_arn"].startswith("arn:aws:iam::")
    assert defaults["subnets"] and defaults["endpoint_url"] == ecs_aws.server.url
    assert pool["provisioned"]["steps"]
    ecs = ecs_aws.client("ecs")
    assert ecs.describe_clusters(clusters=[cluster])["clusters"][0]["status"] == "ACTIVE"

    again = cli(server, *create, "--yes")
    assert "Nothing to create" in again and "already exists" in again

    # A run on the provisioned pool: RunTask through the proxy, followed to COMPLETED.
    deploy_file = Path(server.home) / "pushpool.yaml"
    deploy_file.write_text(
        "deployments:\n"
        "  - name: hello\n    flow_name: cloud\n"
        "    image: public.ecr.aws/docker/library/python:3.11-slim\n"
        "    command: [python, -c, \"print('hi from fargate')\"]\n"
        "    work_pool: {name: fargate}\n")
    cli(server, "deploy", "--file", str(deploy_file), "--all")
    # moto runs no containers: each DescribeTasks moves a task one step on, to STOPPED/0.
    ecs_aws.server.set_transition("ecs::task", {"progression": "manual", "times": 1})
    out = cli(server, "deployment", "run", "cloud/hello", "--watch")
    assert "COMPLETED" in out
    (run,) = json.loads(cli(server, "run", "ls", "--output", "json"))
    assert run["infra_id"].startswith(f"{REGION}::") and "console.aws.amazon.com" in (
        run["console_url"] or "")

    out = cli(server, "work-pool", "delete", "fargate", "--cascade", "--deprovision-infra",
              "--yes")
    assert "Removed" in out and "Deleted work pool 'fargate'" in out
    remaining = ecs.describe_clusters(clusters=[cluster])["clusters"]
    assert not remaining or remaining[0]["status"] == "INACTIVE"
    assert "fargate" not in cli(server, "work-pool", "ls")
