"""The ecs:push job configuration: base job template, its pydantic model, Fargate sizes.

``default_base_job_template()`` is what a new ECS pool starts with; ``parse_config``
validates a rendered job configuration and ``validate_config`` adds the checks AWS would
only make at run time (Fargate cpu/memory pairs, logs needing an execution role), so a
deployment with a bad value is refused when it is created, not when it runs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from providers.base import COMMON_VARIABLES, ProviderConfig

DEFAULT_CPU = 1024
DEFAULT_MEMORY = 2048
DEFAULT_CONTAINER_NAME = "pushpool"
DEFAULT_LOG_GROUP = "/pushpool/ecs"
DEFAULT_STREAM_PREFIX = "pushpool"


def _gib(n: int) -> int:
    return n * 1024


# Fargate (Linux) task sizes: cpu units -> valid memory MiB (AWS "Task CPU and memory").
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(_gib(1), _gib(4) + 1, 1024)),
    1024: tuple(range(_gib(2), _gib(8) + 1, 1024)),
    2048: tuple(range(_gib(4), _gib(16) + 1, 1024)),
    4096: tuple(range(_gib(8), _gib(30) + 1, 1024)),
    8192: tuple(range(_gib(16), _gib(60) + 1, 4096)),
    16384: tuple(range(_gib(32), _gib(120) + 1, 8192)),
}


class CloudWatchLogs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    group: str = DEFAULT_LOG_GROUP
    stream_prefix: str = DEFAULT_STREAM_PREFIX
    create_group: bool = True
    options: dict[str, str] = Field(default_factory=dict)


class Credentials(BaseModel):
    """Which AWS identity to use; references only, never secrets."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str | None = None


class CapacityProviderItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    capacityProvider: str
    weight: int = Field(default=1, ge=0, le=1000)
    base: int = Field(default=0, ge=0, le=100000)


class EcsConfig(ProviderConfig):
    """A rendered ecs:push job configuration (unset optional values are simply absent)."""

    # Common variables (the dispatcher also passes them in the JobSpec; those win).
    image: str | None = None
    command: list[str] | None = None
    env: dict[str, str | None] = Field(default_factory=dict)
    cpu: int | None = Field(default=None, ge=1)
    memory: int | None = Field(default=None, ge=1)
    timeout: int | None = Field(default=None, ge=1)
    labels: dict[str, str] = Field(default_factory=dict)

    region: str | None = None
    credentials: Credentials | None = None
    endpoint_url: str | None = None
    cluster: str | None = None
    launch_type: Literal["FARGATE", "FARGATE_SPOT"] = "FARGATE"
    capacity_provider_strategy: list[CapacityProviderItem] | None = None
    vpc_id: str | None = None
    subnets: list[str] | None = None
    security_groups: list[str] | None = None
    assign_public_ip: bool = True
    task_role_arn: str | None = None
    execution_role_arn: str | None = None
    family: str | None = None
    container_name: str | None = None
    task_definition_arn: str | None = None
    cloudwatch_logs: CloudWatchLogs = Field(default_factory=CloudWatchLogs)
    platform_version: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    auto_deregister_task_definition: bool = False
    task_definition: dict[str, Any] = Field(default_factory=dict)
    task_run_request: dict[str, Any] = Field(default_factory=dict)


_ECS_VARIABLES: dict[str, Any] = {
    "region": {"type": ["string", "null"], "title": "Region", "default": None,
               "description": "AWS region; default: AWS_REGION / AWS_DEFAULT_REGION / profile."},
    "credentials": {
        "type": ["object", "null"], "title": "AWS credentials", "default": None,
        "description": "Which identity to use: a profile, a role ARN to assume (with an "
                       "optional external id), or null for boto3's default chain.",
        "properties": {"profile": {"type": ["string", "null"]},
                       "role_arn": {"type": ["string", "null"]},
                       "external_id": {"type": ["string", "null"]},
                       "session_name": {"type": ["string", "null"]}},
        "additionalProperties": False},
    "endpoint_url": {"type": ["string", "null"], "title": "Endpoint URL", "default": None,
                     "description": "For VPC endpoints and emulators; AWS_ENDPOINT_URL works "
                                    "too."},
    "cluster": {"type": ["string", "null"], "title": "ECS cluster", "default": None,
                "description": "Name or ARN; default: the account's 'default' cluster."},
    "launch_type": {"type": "string", "enum": ["FARGATE", "FARGATE_SPOT"],
                    "title": "Launch type", "default": "FARGATE",
                    "description": "FARGATE_SPOT runs through a capacity provider strategy."},
    "capacity_provider_strategy": {
        "type": ["array", "null"], "title": "Capacity provider strategy", "default": None,
        "description": "Overrides launch_type when set.",
        "items": {"type": "object", "required": ["capacityProvider"],
                  "properties": {"capacityProvider": {"type": "string"},
                                 "weight": {"type": "integer", "minimum": 0},
                                 "base": {"type": "integer", "minimum": 0}},
                  "additionalProperties": False}},
    "vpc_id": {"type": ["string", "null"], "title": "VPC", "default": None,
               "description": "Default: the region's default VPC."},
    "subnets": {"type": ["array", "null"], "items": {"type": "string"}, "title": "Subnets",
                "default": None, "description": "Default: the subnets of vpc_id."},
    "security_groups": {"type": ["array", "null"], "items": {"type": "string"},
                        "title": "Security groups", "default": None,
                        "description": "Default: the VPC's 'default' security group."},
    "assign_public_ip": {"type": "boolean", "title": "Assign public IP", "default": True,
                         "description": "Needed to pull images from public subnets without "
                                        "a NAT gateway."},
    "task_role_arn": {"type": ["string", "null"], "title": "Task role ARN", "default": None,
                      "description": "The identity the flow's code runs as."},
    "execution_role_arn": {"type": ["string", "null"], "title": "Execution role ARN",
                           "default": None,
                           "description": "Lets ECS pull the image and write logs."},
    "family": {"type": ["string", "null"], "title": "Task definition family", "default": None,
               "description": "Default: pushpool-<pool>; a content hash is appended."},
    "container_name": {"type": ["string", "null"], "title": "Container name", "default": None,
                       "description": "Default: 'pushpool' (or the first container of "
                                      "task_definition_arn)."},
    "task_definition_arn": {"type": ["string", "null"], "title": "Task definition ARN",
                            "default": None,
                            "description": "Run this existing definition; never register one."},
    "cloudwatch_logs": {
        "type": "object", "title": "CloudWatch logs",
        "default": {"enabled": True, "group": DEFAULT_LOG_GROUP,
                    "stream_prefix": DEFAULT_STREAM_PREFIX, "create_group": True},
        "properties": {"enabled": {"type": "boolean"}, "group": {"type": "string"},
                       "stream_prefix": {"type": "string"}, "create_group": {"type": "boolean"},
                       "options": {"type": "object",
                                   "additionalProperties": {"type": "string"}}},
        "additionalProperties": False},
    "platform_version": {"type": ["string", "null"], "title": "Fargate platform version",
                         "default": None},
    "tags": {"type": "object", "additionalProperties": {"type": "string"}, "title": "Tags",
             "default": {}, "description": "Added to tasks and task definitions."},
    "auto_deregister_task_definition": {
        "type": "boolean", "title": "Deregister task definitions", "default": False,
        "description": "Deregister a definition pushpool registered once no run uses it."},
}

_JOB_CONFIGURATION_KEYS = (*COMMON_VARIABLES, *_ECS_VARIABLES)


def default_base_job_template() -> dict[str, Any]:
    """``{"job_configuration", "variables"}`` for a new ecs:push pool.

    Every variable is a whole-value placeholder (it keeps its type; unset optional
    values drop their key). ``task_definition`` and ``task_run_request`` are raw
    RegisterTaskDefinition / RunTask fields merged over what pushpool builds, for
    anything AWS supports that no variable names.
    """
    job_configuration: dict[str, Any] = {key: f"{{{{ {key} }}}}"
                                         for key in _JOB_CONFIGURATION_KEYS}
    job_configuration["task_definition"] = {}
    job_configuration["task_run_request"] = {}
    properties = copy.deepcopy({**COMMON_VARIABLES, **_ECS_VARIABLES})
    properties["cpu"]["description"] = (
        f"Fargate CPU units (256, 512, 1024, 2048, 4096, 8192, 16384); default {DEFAULT_CPU}.")
    properties["memory"]["description"] = (
        f"MiB; must be a valid Fargate pair with cpu; default {DEFAULT_MEMORY} (or the "
        "smallest valid for cpu).")
    return {"job_configuration": job_configuration,
            "variables": {"type": "object", "properties": properties}}


def parse_config(config: Mapping[str, Any]) -> EcsConfig:
    """The typed configuration, or ValueError naming the field and the fix."""
    try:
        return EcsConfig.model_validate(dict(config))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(job configuration)"
            if err["type"] == "extra_forbidden":
                problems.append(f"{field}: unknown setting for an ecs:push pool; remove it or "
                                "put raw AWS fields under task_definition / task_run_request")
            else:
                problems.append(f"{field}: {err['msg']}")
        raise ValueError("; ".join(problems)) from None


_UNITS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(vcpu|gb)?\s*$", re.IGNORECASE)


def aws_units(value: Any, what: str) -> int | None:
    """AWS's accepted spellings ("1024", "1 vCPU", "2 GB", 1024) -> CPU units / MiB."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what}: {value!r} is not a number")
    if isinstance(value, int):
        return value
    match = _UNITS.match(str(value))
    if not match:
        raise ValueError(f"{what}: {value!r} is not a number of "
                         f"{'CPU units' if what == 'cpu' else 'MiB'}")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    if unit in ("vcpu", "gb"):
        return int(number * 1024)
    if not number.is_integer():  # 0.5 would become 0, a value nobody asked for
        example = "512 or '0.5 vCPU'" if what == "cpu" else "1024 or '1 GB'"
        raise ValueError(f"{what}: {value!r} is not a whole number of "
                         f"{'CPU units' if what == 'cpu' else 'MiB'}; write e.g. {example}")
    return int(number)


def _choices(values: tuple[int, ...]) -> str:
    items = [str(v) for v in values]
    if len(items) > 6:
        step = values[1] - values[0]
        return f"{items[0]} to {items[-1]} in steps of {step}"
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else items[0]


def fargate_size(cpu: int | None, memory: int | None) -> tuple[int, int]:
    """A valid Fargate (cpu, memory) pair, filling whichever is unset with the smallest fit.

    Raises ValueError naming both values and the valid choices.
    """
    cpus = ", ".join(str(c) for c in FARGATE_SIZES)
    if cpu is None and memory is None:
        return DEFAULT_CPU, DEFAULT_MEMORY
    if cpu is not None and cpu not in FARGATE_SIZES:
        raise ValueError(f"cpu: {cpu} is not a Fargate CPU size; choose one of {cpus}")
    if cpu is None:
        assert memory is not None
        for candidate, memories in FARGATE_SIZES.items():
            if memory in memories:
                return candidate, memory
        raise ValueError(
            f"memory: {memory} MiB fits no Fargate CPU size; valid memory is "
            + "; ".join(f"cpu {c}: {_choices(m)}" for c, m in FARGATE_SIZES.items()))
    memories = FARGATE_SIZES[cpu]
    if memory is None:
        return cpu, memories[0]
    if memory not in memories:
        raise ValueError(
            f"cpu/memory: cpu={cpu} with memory={memory} is not a valid Fargate size; for "
            f"cpu {cpu} choose memory {_choices(memories)} (valid cpu values: {cpus})")
    return cpu, memory


def validate_config(config: Mapping[str, Any]) -> EcsConfig:
    """Everything about a rendered configuration that can be known before a run exists.

    ``config`` is the pool's job configuration rendered with the deployment's job
    variables (the core calls this when a deployment is created). Raises ValueError whose
    message starts with the field and says the fix.
    """
    cfg = parse_config(config)
    raw = cfg.task_definition
    cpu = cfg.cpu if cfg.cpu is not None else aws_units(raw.get("cpu"), "cpu")
    memory = cfg.memory if cfg.memory is not None else aws_units(raw.get("memory"), "memory")
    if cfg.task_definition_arn:
        if cfg.image:
            raise ValueError(
                "image: cannot be combined with task_definition_arn (ECS cannot override the "
                "image of an existing task definition); remove one of them")
        if cpu is not None or memory is not None:
            fargate_size(cpu, memory)
        return cfg
    fargate_size(cpu, memory)
    # No image here is fine: the deployment's own image field reaches the JobSpec, not
    # the rendered configuration; submit() refuses a run that ends up with none.
    if cfg.cloudwatch_logs.enabled and not (cfg.execution_role_arn
                                            or raw.get("executionRoleArn")):
        raise ValueError(
            "execution_role_arn: CloudWatch logs (cloudwatch_logs.enabled, on by default) "
            "need a task execution role; set execution_role_arn (`--provision-infra` makes "
            "one) or set cloudwatch_logs.enabled to false")
    for name, values, prefix in (("subnets", cfg.subnets, "subnet-"),
                                 ("security_groups", cfg.security_groups, "sg-")):
        for value in values or []:
            if not value.startswith(prefix):
                raise ValueError(f"{name}: {value!r} is not an id like '{prefix}0123abcd'")
    if cfg.security_groups is not None and len(cfg.security_groups) > 5:
        raise ValueError("security_groups: ECS allows at most 5 security groups per task")
    if cfg.subnets is not None and len(cfg.subnets) > 16:
        raise ValueError("subnets: ECS allows at most 16 subnets per task")
    return cfg


def raw_image(raw: Mapping[str, Any], container_name: str | None) -> str | None:
    wanted = container_name or DEFAULT_CONTAINER_NAME
    for container in raw.get("containerDefinitions") or []:
        if isinstance(container, Mapping) and container.get("name") == wanted:
            image = container.get("image")
            return str(image) if image else None
    return None
