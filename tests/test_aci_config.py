"""The ACI pool template, its checks (each bad input refused, naming the field) and the
container group body built from a run."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from providers.aci import AciProvider
from providers.aci.body import build_group, group_name
from providers.aci.config import parse_config, validate_config
from providers.base import JobSpec, PermanentProviderError

SUB = "00000000-0000-4000-8000-000000000001"
MSI = (f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
       "userAssignedIdentities/id1")
SUBNET = (f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/"
          "virtualNetworks/v/subnets/s")


def good(**overrides: Any) -> dict[str, Any]:
    return {"subscription_id": SUB, "resource_group_name": "rg", **overrides}


def test_the_template_is_json_schema_with_secrets_write_only() -> None:
    template = AciProvider().default_base_job_template()
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    props = template["variables"]["properties"]
    assert template["variables"]["required"] == ["subscription_id", "resource_group_name"]
    for secret in (props["credentials"]["properties"]["client_secret"],
                   props["image_registry"]["properties"]["password"]):
        assert secret["format"] == "password" and secret["writeOnly"] is True
    assert set(template["job_configuration"]) >= {"subscription_id", "identities", "gpu_sku",
                                                  "keep_container_group", "start_timeout",
                                                  "container_group"}
    assert props["cpu"]["type"] == ["number", "null"]  # cores, not CPU units


@pytest.mark.parametrize(("overrides", "field"), [
    ({"subscription_id": None}, "subscription_id"),
    ({"subscription_id": "my-sub"}, "subscription_id"),
    ({"resource_group_name": None}, "resource_group_name"),
    ({"resource_group_name": "bad/name"}, "resource_group_name"),
    ({"resource_group_name": "ends."}, "resource_group_name"),
    ({"location": "East US 2!"}, "location"),
    ({"cpu": 8}, "cpu"),
    ({"cpu": -1}, "cpu"),
    ({"memory": 32}, "memory"),
    ({"memory": 1.55}, "memory"),
    ({"gpu_count": 3, "gpu_sku": "V100"}, "gpu_count"),
    ({"gpu_count": 1, "gpu_sku": "A100"}, "gpu_sku"),
    ({"gpu_count": 1, "gpu_sku": "V100", "os_type": "Windows"}, "gpu_count"),
    ({"gpu_count": 1, "gpu_sku": "V100", "subnet_ids": [SUBNET]}, "gpu_count"),
    ({"restart_policy": "Always"}, "restart_policy"),
    ({"os_type": "Mac"}, "os_type"),
    ({"subnet_ids": ["subnet-1"]}, "subnet_ids"),
    ({"subnet_ids": [SUBNET], "os_type": "Windows"}, "subnet_ids"),
    ({"dns_servers": ["dns.example"]}, "dns_servers"),
    ({"identities": ["my-identity"]}, "identities"),
    ({"image_registry": {"server": "r.azurecr.io"}}, "image_registry"),
    ({"image_registry": {"server": "r.azurecr.io", "identity": MSI, "username": "u",
                         "password": "p"}}, "image_registry"),
    ({"image_registry": {"server": "https://r.azurecr.io/x", "username": "u",
                         "password": "p"}}, "image_registry.server"),
    ({"credentials": {"kind": "service_principal", "tenant_id": SUB, "client_id": "c"}},
     "credentials.client_secret"),
    ({"credentials": {"kind": "magic"}}, "credentials.kind"),
    ({"resource_manager_endpoint": "http://127.0.0.1:1"}, "resource_manager_endpoint"),
    ({"token_scope": "https://management.azure.com/"}, "token_scope"),
    ({"cloud": "mars"}, "cloud"),
    ({"container_name": "Main_Container"}, "container_name"),
    ({"env": {"1BAD": "x"}}, "env"),
    ({"start_timeout": 0}, "start_timeout"),
    ({"tags": {"a/b": "x"}}, "tags"),
    ({"container_group": {"properties": {"restartPolicy": "Always"}}},
     "container_group.properties.restartPolicy"),
    ({"container_group": {"properties": {"containers": [{"image": "x"}]}}},
     "container_group.properties.containers"),
    ({"surprise": 1}, "surprise"),
])
def test_each_bad_input_is_refused_naming_the_field(overrides: dict[str, Any],
                                                     field: str) -> None:
    with pytest.raises(ValueError) as caught:
        AciProvider().validate_config(good(**overrides))
    assert str(caught.value).startswith(field), str(caught.value)


def test_errors_never_echo_a_secret() -> None:
    secret = "pa55-word-never-shown"
    with pytest.raises(ValueError) as caught:
        validate_config(good(image_registry={"server": "r.azurecr.io", "identity": MSI,
                                             "username": "u", "password": secret}))
    assert secret not in str(caught.value)
    cfg = parse_config(good(credentials={"kind": "service_principal", "tenant_id": SUB,
                                         "client_id": "c", "client_secret": secret}))
    assert secret not in repr(cfg)


def test_a_good_configuration_passes() -> None:
    validate_config(good(location="East US", cpu=0.5, memory=1.5, gpu_count=1, gpu_sku="V100",
                         identities=[MSI], dns_servers=["10.0.0.10"],
                         image_registry={"server": "r.azurecr.io", "identity": MSI}))


def spec(**config: Any) -> JobSpec:
    return JobSpec(run_id="Run_01/ABC", job_name="j", image=None, command=["echo", "hi"],
                   env={"A": "1", "API_KEY": "k"}, config=good(**config), attempt=2,
                   pool_name="p")


def test_the_body_carries_sizes_identity_registry_network_and_raw_fields() -> None:
    cfg = validate_config(good(cpu=2, memory=4, gpu_count=1, gpu_sku="V100", identities=[MSI],
                               image_registry={"server": "r.azurecr.io", "identity": MSI},
                               dns_servers=["10.0.0.10"], container_group={
                                   "properties": {"priority": "Spot", "containers": [
                                       {"name": "pushpool", "properties": {
                                           "environmentVariables": [{"name": "B",
                                                                     "value": "2"}]}},
                                       {"name": "sidecar", "properties": {"image": "s"}}]}}))
    body = build_group(spec(), cfg, location="eastus", image="img")
    props = body["properties"]
    main = props["containers"][0]["properties"]
    assert main["resources"]["requests"] == {"cpu": 2.0, "memoryInGB": 4.0,
                                             "gpu": {"count": 1, "sku": "V100"}}
    names = [e["name"] for e in main["environmentVariables"]]
    assert names == ["B", "A", "API_KEY"]  # raw env kept, the run's own never dropped
    assert {"name": "API_KEY", "secureValue": "k"} in main["environmentVariables"]
    assert main["command"] == ["echo", "hi"]
    assert props["imageRegistryCredentials"] == [{"server": "r.azurecr.io", "identity": MSI}]
    assert body["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {MSI: {}}}
    assert props["dnsConfig"] == {"nameServers": ["10.0.0.10"]}
    assert props["priority"] == "Spot" and props["containers"][1]["name"] == "sidecar"


@pytest.mark.parametrize("run_id", ["Run_01/ABC", "x" * 200, "--", "ünïcode"])
def test_group_names_are_valid_and_unique_per_attempt(run_id: str) -> None:
    import re

    names = {group_name(run_id, attempt) for attempt in (1, 2)}
    assert len(names) == 2
    for name in names:
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([a-z0-9]|-(?!-))*[a-z0-9]", name)


async def test_submit_refuses_a_bad_configuration_permanently() -> None:
    with pytest.raises(PermanentProviderError, match="restart_policy"):
        await AciProvider().submit(spec(restart_policy="Always"))
