"""An azure-container-instance:push pool through the CLI and a real server, against the
fake ARM: ``--provision-infra`` with every option ACI's provisioning takes given as
``--infra-option``, a rerun that changes nothing, deprovisioning; and the options a type
does not take refused before anything is changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.aci.body import POOL_TAG
from tests.fakes.azure import FakeAzure
from tests.fakes.pushpool_server import ServerProcess, run_cli
from tests.providers.aci_harness import AUDIENCE_SCOPE

pytest_plugins = ["tests.fakes.azure.fixtures"]
pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "home")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def infra_options(fake: FakeAzure) -> list[str]:
    pairs = {"subscription_id": fake.subscription, "resource_group_name": "pushpool-cli",
             "token_scope": AUDIENCE_SCOPE, "ca_bundle": fake.ca_file,
             "credentials": "service_principal", "tenant_id": fake.tenant,
             "client_id": fake.client_id, "authority_host": fake.base_url}
    args = ["--region", "westeurope", "--endpoint-url", fake.base_url]
    for key, value in pairs.items():
        args += ["--infra-option", f"{key}={value}"]
    return args


def test_provision_rerun_and_deprovision_through_the_cli(
        server: ServerProcess, aci_fake: FakeAzure) -> None:
    secret = {"AZURE_CLIENT_SECRET": aci_fake.client_secret}
    create = ["work-pool", "create", "aci", "--type", "azure-container-instance:push",
              "--provision-infra", "--yes", *infra_options(aci_fake)]
    out = run_cli(server, *create, env=secret)
    assert "Provision infrastructure for work pool 'aci'" in out
    assert "Created work pool 'aci'" in out
    assert aci_fake.client_secret not in out
    res = aci_fake.resources
    group = res.resource_groups[(aci_fake.subscription, "pushpool-cli")]
    assert group["location"] == "westeurope" and group["tags"][POOL_TAG] == "aci"
    assert len(res.identities) == len(res.registries) == len(res.role_assignments) == 1

    pool: dict[str, Any] = json.loads(run_cli(server, "work-pool", "inspect", "aci",
                                              "--output", "json"))
    defaults = {k: v.get("default") for k, v in
                pool["base_job_template"]["variables"]["properties"].items()}
    assert defaults["subscription_id"] == aci_fake.subscription
    assert defaults["resource_group_name"] == "pushpool-cli"
    assert defaults["resource_manager_endpoint"] == aci_fake.base_url
    assert aci_fake.client_secret not in json.dumps(pool)  # never an option, never stored

    creates = aci_fake.server.count("resourceGroups.create", "identities.create",
                                    "registries.create", "roleAssignments.create")
    again = run_cli(server, *create, env=secret)
    assert "Nothing to create" in again and "already exists" in again
    assert aci_fake.server.count("resourceGroups.create", "identities.create",
                                 "registries.create", "roleAssignments.create") == creates

    out = run_cli(server, "work-pool", "delete", "aci", "--deprovision-infra", "--yes",
                  env=secret)
    assert "Removed 4 resource(s)" in out and "Deleted work pool 'aci'" in out
    assert not res.identities and not res.registries and not res.role_assignments
    assert (aci_fake.subscription, "pushpool-cli") not in res.resource_groups
    assert "aci" not in run_cli(server, "work-pool", "ls")


def test_options_a_type_does_not_take_are_refused_before_anything_changes(
        server: ServerProcess, aci_fake: FakeAzure) -> None:
    base = ["work-pool", "create", "p", "--provision-infra", "--yes"]
    out = run_cli(server, *base, "--type", "azure-container-instance:push",
                  "--infra-option", "cluster=x", code=2)
    assert "cluster" in out and "subscription_id" in out and "infra-options" in out
    out = run_cli(server, *base, "--type", "azure-container-instance:push",
                  "--infra-option", "cloud=mars", code=2)
    assert "cloud" in out and "usgovernment" in out
    out = run_cli(server, *base, "--type", "modal:push", "--profile", "dev", code=2)
    assert "profile" in out and "server_url" in out
    out = run_cli(server, "work-pool", "create", "p", "--type", "modal:push",
                  "--infra-option", "app_name=a", code=2)
    assert "--provision-infra" in out
    assert aci_fake.server.count("resourceGroups.create") == 0
    assert "No work pools yet" in run_cli(server, "work-pool", "ls")


def test_infra_options_lists_each_types_keys(server: ServerProcess) -> None:
    listed = {t: {row["name"] for row in json.loads(run_cli(
        server, "work-pool", "infra-options", "--type", t, "--output", "json"))}
        for t in ("ecs:push", "cloud-run:push", "azure-container-instance:push",
                  "modal:push")}
    assert {"region", "endpoint_url", "profile"} <= listed["ecs:push"]
    assert {"project", "region", "mint_key"} <= listed["cloud-run:push"]
    assert {"subscription_id", "resource_group_name", "location", "credentials",
            "resource_manager_endpoint"} <= listed["azure-container-instance:push"]
    assert listed["modal:push"] == {"server_url", "environment", "app_name"}


def test_a_templates_defaults_count_and_given_options_win() -> None:
    from dispatcher.cli.provision import options_for

    template = {"variables": {"properties": {
        "subscription_id": {"default": "sub-1"}, "location": {"default": "eastus"},
        "image": {"default": "python:3.11"}, "resource_group_name": {"default": None}}}}
    assert options_for("azure-container-instance:push", ["region=northeurope"],
                       template) == {"subscription_id": "sub-1", "location": "northeurope"}
