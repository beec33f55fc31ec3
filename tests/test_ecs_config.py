"""The ecs:push base job template, its configuration model and validate_config."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest

from providers.base import COMMON_VARIABLES
from providers.ecs import PROVIDER, EcsSettings, client_token, started_by_for
from providers.ecs.config import FARGATE_SIZES, fargate_size, parse_config, validate_config

PLACEHOLDER = re.compile(r"^\{\{\s*([\w.]+)\s*\}\}$")
ROLE = "arn:aws:iam::123456789012:role/exec"


def render(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """What the core's renderer does with whole-value placeholders (enough for this file)."""
    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: fill(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not None}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str) and (match := PLACEHOLDER.match(node)):
            return values.get(match.group(1))
        return node
    return fill(template["job_configuration"])


def defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {k: v.get("default") for k, v in template["variables"]["properties"].items()}


def test_template_declares_every_placeholder_and_the_common_variables() -> None:
    template = PROVIDER.default_base_job_template()
    props = template["variables"]["properties"]
    assert set(COMMON_VARIABLES) <= set(props)
    wanted = {"region", "credentials", "endpoint_url", "cluster", "launch_type",
              "capacity_provider_strategy", "vpc_id", "subnets", "security_groups",
              "assign_public_ip", "task_role_arn", "execution_role_arn", "family",
              "container_name", "task_definition_arn", "cloudwatch_logs", "platform_version",
              "tags", "auto_deregister_task_definition"}
    assert wanted <= set(props)
    used = {PLACEHOLDER.match(v).group(1)  # type: ignore[union-attr]
            for v in template["job_configuration"].values()
            if isinstance(v, str) and PLACEHOLDER.match(v)}
    assert used <= set(props) and wanted <= used
    assert template["job_configuration"]["task_definition"] == {}
    assert template["job_configuration"]["task_run_request"] == {}
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    jsonschema.validate(defaults(template), template["variables"])


def test_rendered_defaults_parse_and_unset_values_drop_out() -> None:
    template = PROVIDER.default_base_job_template()
    values = {**defaults(template), "image": "busybox", "execution_role_arn": ROLE}
    rendered = render(template, values)
    assert "region" not in rendered and "subnets" not in rendered
    cfg = validate_config(rendered)
    assert cfg.launch_type == "FARGATE" and cfg.cloudwatch_logs.enabled
    assert cfg.assign_public_ip is True and cfg.tags == {}


@pytest.mark.parametrize(("cpu", "memory", "expected"), [
    (None, None, (1024, 2048)),
    (256, None, (256, 512)),
    (None, 3072, (512, 3072)),
    (4096, 30720, (4096, 30720)),
    (8192, 20480, (8192, 20480)),
    (16384, 122880, (16384, 122880)),
])
def test_fargate_sizes_fill_the_smallest_fit(cpu: int | None, memory: int | None,
                                             expected: tuple[int, int]) -> None:
    assert fargate_size(cpu, memory) == expected


def test_every_listed_fargate_pair_is_accepted() -> None:
    for cpu, memories in FARGATE_SIZES.items():
        for memory in memories:
            assert fargate_size(cpu, memory) == (cpu, memory)


def test_invalid_pair_names_both_values_and_the_choices() -> None:
    with pytest.raises(ValueError) as caught:
        validate_config({"image": "x", "execution_role_arn": ROLE, "cpu": 256,
                         "memory": 4096})
    message = str(caught.value)
    assert "cpu=256" in message and "memory=4096" in message
    assert "512, 1024 or 2048" in message and "16384" in message


def test_invalid_cpu_lists_valid_cpus() -> None:
    with pytest.raises(ValueError, match=r"cpu: 300 .* 256, 512, 1024, 2048, 4096"):
        validate_config({"image": "x", "execution_role_arn": ROLE, "cpu": 300})


def test_raw_task_definition_sizes_are_checked_too() -> None:
    with pytest.raises(ValueError, match="cpu=512 with memory=512"):
        validate_config({"image": "x", "execution_role_arn": ROLE,
                         "task_definition": {"cpu": "0.5 vCPU", "memory": "0.5 GB"}})


@pytest.mark.parametrize(("config", "field"), [
    ({"image": "x"}, "execution_role_arn"),
    ({"image": "x", "execution_role_arn": ROLE, "launch_type": "EC2"}, "launch_type"),
    ({"image": "x", "execution_role_arn": ROLE, "subnets": ["10.0.0.0/24"]}, "subnets"),
    ({"image": "x", "execution_role_arn": ROLE, "security_groups": ["web"]},
     "security_groups"),
    ({"image": "x", "execution_role_arn": ROLE, "clusterr": "typo"}, "clusterr"),
    ({"image": "x", "task_definition_arn": "arn:aws:ecs:us-east-1:1:task-definition/f:1"},
     "image"),
    ({"image": "x", "execution_role_arn": ROLE, "cpu": 0}, "cpu"),
])
def test_bad_input_names_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}"):
        validate_config(config)


def test_logs_off_needs_no_execution_role_and_existing_definition_needs_no_image() -> None:
    validate_config({"image": "x", "cloudwatch_logs": {"enabled": False}})
    validate_config({"task_definition_arn": "arn:aws:ecs:us-east-1:1:task-definition/f:1"})


def test_image_may_come_from_the_deployment_instead_of_the_configuration() -> None:
    validate_config({"execution_role_arn": ROLE})


def test_provider_validate_config_raises_value_error() -> None:
    with pytest.raises(ValueError, match="cpu=1024 with memory=1024"):
        PROVIDER.validate_config({"image": "x", "execution_role_arn": ROLE, "cpu": 1024,
                                  "memory": 1024})


def test_parse_config_accepts_aws_named_capacity_strategy() -> None:
    cfg = parse_config({"capacity_provider_strategy": [
        {"capacityProvider": "FARGATE_SPOT", "weight": 3}, {"capacityProvider": "FARGATE"}]})
    assert [i.capacityProvider for i in cfg.capacity_provider_strategy or []] == [
        "FARGATE_SPOT", "FARGATE"]


def test_client_token_and_started_by_are_bounded_and_deterministic() -> None:
    run = "0b4f5a8e-0f43-4b8e-9f59-2f0a3c1f1d9e"
    assert client_token(run, 1) == client_token(run, 1) != client_token(run, 2)
    assert len(client_token(run, 1)) <= 64
    long_token = client_token("x" * 100, 3)
    assert len(long_token) <= 64 and long_token != client_token("x" * 99, 3)
    assert all(33 <= ord(c) <= 126 for c in client_token("run with spaces ü", 1))
    assert started_by_for(run) == f"pushpool/{run}"
    odd = started_by_for("run:with.odd chars" + "y" * 200)
    assert len(odd) <= 128 and re.fullmatch(r"[A-Za-z0-9_/-]+", odd)


def test_settings_from_environment() -> None:
    settings = EcsSettings.from_env({"PUSHPOOL_ECS_RUN_TASK_RATE": "5",
                                     "PUSHPOOL_ECS_RUN_TASK_BURST": "7",
                                     "PUSHPOOL_ECS_FIND_EXISTING": "always"})
    assert (settings.run_task_rate, settings.run_task_burst) == (5.0, 7.0)
    assert settings.find_existing == "always"
    with pytest.raises(ValueError, match="PUSHPOOL_ECS_MAX_WORKERS"):
        EcsSettings.from_env({"PUSHPOOL_ECS_MAX_WORKERS": "many"})


def test_template_goes_through_the_core_renderer() -> None:
    """The core's own template code accepts the template and renders what we validate."""
    from dispatcher import templates

    template = PROVIDER.default_base_job_template()
    templates.validate_base_job_template(template)
    _, config = templates.resolve_job(template, {"image": "flows:1", "cpu": 512,
                                                 "execution_role_arn": ROLE}, {"memory": 4096})
    cfg = validate_config(config)
    assert (cfg.cpu, cfg.memory, cfg.image) == (512, 4096, "flows:1")
    _, bad = templates.resolve_job(template, {"execution_role_arn": ROLE, "cpu": 512},
                                   {"memory": 8192})
    with pytest.raises(ValueError, match="cpu=512 with memory=8192"):
        PROVIDER.validate_config(bad)


def test_the_registry_loads_an_ecs_provider_that_fits_the_protocol() -> None:
    from providers import registry
    from providers.base import Provider

    provider = registry.get_provider("ecs:push")
    assert provider is PROVIDER and isinstance(provider, Provider)
    assert provider.pool_type == "ecs:push" and provider.poll_interval > 0
