"""``--provision-infra`` for ACI against the fake ARM: plan, apply, a rerun that changes
nothing, and deprovisioning that removes only what pushpool made."""

from __future__ import annotations

import dataclasses
from typing import Any

from providers.aci import AciProvider
from providers.aci.body import POOL_TAG
from tests.fakes.azure import FakeAzure
from tests.providers.aci_harness import (
    AUDIENCE_SCOPE,
    aci_config,
)

# The fixtures aci_fake (the shared fake, reset) and aci_provider.
pytest_plugins = ["tests.fakes.azure.fixtures"]


def options(fake: FakeAzure, **extra: Any) -> dict[str, Any]:
    cfg = aci_config(fake)
    return {"subscription_id": fake.subscription, "region": "westeurope",
            "endpoint_url": fake.base_url, "token_scope": AUDIENCE_SCOPE,
            "ca_bundle": fake.ca_file, "credentials": cfg["credentials"], **extra}


def record(plan: Any, opts: dict[str, Any]) -> dict[str, Any]:
    return {**dataclasses.asdict(plan), "options": opts}


async def test_provision_plans_makes_and_reruns_without_changes(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    opts = options(aci_fake)
    plan = await aci_provider.provision("etl", opts, False)
    assert [(s.resource, s.action) for s in plan.steps] == [
        ("resource group", "create"), ("managed identity", "create"),
        ("container registry", "create"), ("role assignment", "create")]
    assert aci_fake.server.count("resourceGroups.create", "identities.create",
                                 "registries.create", "roleAssignments.create") == 0
    seen: list[str] = []
    done = await aci_provider.provision("etl", opts, True,
                                        on_step=lambda s: seen.append(s.resource))
    assert done.changes == 4 and len(seen) == 4
    res = aci_fake.resources
    rg = res.resource_groups[(aci_fake.subscription, "pushpool-etl")]
    assert rg["tags"][POOL_TAG] == "etl" and rg["location"] == "westeurope"
    (identity,) = res.identities.values()
    (registry,) = res.registries.values()
    (assignment,) = res.role_assignments.values()
    assert assignment["properties"]["principalId"] == identity["properties"]["principalId"]
    assert assignment["properties"]["roleDefinitionId"].endswith(
        "7f951dda-4ed3-4680-a7ca-43fe172d538d")  # AcrPull
    assert assignment["properties"]["scope"] == registry["id"]
    defaults = done.template_defaults
    assert defaults["resource_group_name"] == rg["name"]
    assert defaults["identities"] == [defaults["image_registry"]["identity"]]
    assert defaults["image_registry"]["server"] == registry["properties"]["loginServer"]
    assert defaults["resource_manager_endpoint"] == aci_fake.base_url
    # The defaults make a valid pool configuration.
    aci_provider.validate_config({**defaults, "token_scope": AUDIENCE_SCOPE})

    creates_before = aci_fake.server.count("resourceGroups.create", "identities.create",
                                           "registries.create", "roleAssignments.create")
    again = await aci_provider.provision("etl", opts, True)
    assert again.changes == 0 and {s.action for s in again.steps} == {"exists"}
    assert aci_fake.server.count("resourceGroups.create", "identities.create",
                                 "registries.create",
                                 "roleAssignments.create") == creates_before
    assert again.template_defaults == defaults


async def test_deprovision_removes_what_was_made_and_nothing_else(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    opts = options(aci_fake)
    made = await aci_provider.provision("etl", opts, True)
    provisioned = record(made, opts)
    plan = await aci_provider.deprovision("etl", provisioned, False)
    assert [s.action for s in plan.steps] == ["delete"] * 4
    assert len(aci_fake.resources.resource_groups) == 2  # planning removed nothing
    await aci_provider.deprovision("etl", provisioned, True)
    res = aci_fake.resources
    assert not res.identities and not res.registries and not res.role_assignments
    assert [k[1] for k in res.resource_groups] == ["pushpool-tests"]  # the user's stays
    again = await aci_provider.deprovision("etl", provisioned, True)
    assert {s.action for s in again.steps} == {"absent"}


async def test_deprovision_keeps_a_group_holding_resources_pushpool_did_not_make(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    opts = options(aci_fake, resource_group_name="pushpool-tests")  # the user's own group
    made = await aci_provider.provision("etl", opts, True)
    assert made.steps[0].action == "exists"
    aci_fake.resources.extra_resources[(aci_fake.subscription, "pushpool-tests")] = [
        {"id": "/subscriptions/x/resourceGroups/pushpool-tests/providers/Microsoft.Storage/"
               "storageAccounts/mine", "name": "mine", "type": "Microsoft.Storage/"
                                                           "storageAccounts"}]
    plan = await aci_provider.deprovision("etl", record(made, opts), True)
    actions = {s.resource: s.action for s in plan.steps}
    assert actions == {"role assignment": "delete", "container registry": "delete",
                       "managed identity": "delete", "resource group": "keep"}
    assert (aci_fake.subscription, "pushpool-tests") in aci_fake.resources.resource_groups


async def test_a_failed_step_says_what_was_made_and_a_rerun_finishes(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    opts = options(aci_fake)
    aci_fake.server.fail_next("registries.create", 403, "AuthorizationFailed",
                              "not allowed to create registries")
    try:
        await aci_provider.provision("etl", opts, True)
        raise AssertionError("provisioning should have stopped")
    except Exception as exc:
        text = str(exc)
        assert "container registry" in text and "not allowed to create registries" in text
        assert "Made: resource group" in text and "rerun" in text
    done = await aci_provider.provision("etl", opts, True)
    assert [s.action for s in done.steps] == ["exists", "exists", "create", "create"]
