"""One run -> the ARM container group body ACI is sent, and the group's name.

The name comes from the run id and attempt only, so a retried submit PUTs the same
group (``begin_create_or_update`` is idempotent by construction) and a new attempt
makes a new one. Environment values whose names look secret go in as ``secureValue``
(ARM never returns those). The pool's raw ``container_group`` body is merged last.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any

from providers.aci.config import (
    DEFAULT_CONTAINER_NAME,
    DEFAULT_CPU,
    DEFAULT_MEMORY_GB,
    AciConfig,
    check_env_name,
)
from providers.base import JobSpec, Quantity

RUN_TAG = "pushpool:run-id"
ATTEMPT_TAG = "pushpool:attempt"
POOL_TAG = "pushpool:pool"
DEPLOYMENT_TAG = "pushpool:deployment-id"
MANAGED_TAG = "pushpool:managed-by"

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWD|PASSWORD|PASSPHRASE|CREDENTIAL|AUTH|PRIVATE",
                          re.IGNORECASE)
_UNSAFE = re.compile(r"[^a-z0-9]+")


def group_name(run_id: str, attempt: int) -> str:
    """``pp-<run id, sanitised>-a<attempt>-<hash>``: a valid ACI name (≤ 63 characters of
    lowercase letters, digits, single hyphens), unique per (run, attempt)."""
    digest = hashlib.sha256(f"{run_id}:{attempt}".encode()).hexdigest()[:8]
    tail = f"-a{attempt}-{digest}"
    base = _UNSAFE.sub("-", run_id.lower()).strip("-")
    base = base[: 63 - len("pp-") - len(tail)].strip("-")
    return f"pp-{base}{tail}" if base else f"pp{tail}"


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def environment(env: Mapping[str, str | None]) -> list[dict[str, str]]:
    out = []
    for name, value in env.items():
        if value is None:
            continue
        check_env_name(name)
        key = "secureValue" if is_secret_name(name) else "value"
        out.append({"name": name, key: str(value)})
    return out


def tags_for(spec: JobSpec, cfg: AciConfig) -> dict[str, str]:
    tags = {**cfg.tags, RUN_TAG: spec.run_id[:256], ATTEMPT_TAG: str(spec.attempt),
            MANAGED_TAG: "pushpool"}
    if spec.pool_name:
        tags[POOL_TAG] = spec.pool_name[:256]
    if spec.deployment_id:
        tags[DEPLOYMENT_TAG] = spec.deployment_id[:256]
    return tags


def _amount(what: str, configured: float | None, given: Quantity | None, default: float,
            unit: str) -> float:
    """The configured value, else the run's job variable (in ACI's cores and GB), else
    ACI's default."""
    value = configured if configured is not None else given
    if value is None:
        return default
    try:
        number = float(value) if not isinstance(value, bool) else 0.0
    except ValueError:
        number = 0.0
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{what}: {value!r} is not a positive number of {unit}, e.g. 1.5")
    return number


def build_group(spec: JobSpec, cfg: AciConfig, *, location: str, image: str) -> dict[str, Any]:
    """The PUT body for the run's container group (ARM wire format)."""
    container_name = cfg.container_name or DEFAULT_CONTAINER_NAME
    requests: dict[str, Any] = {
        "cpu": _amount("cpu", cfg.cpu, spec.cpu, DEFAULT_CPU, "cores"),
        "memoryInGB": _amount("memory", cfg.memory, spec.memory, DEFAULT_MEMORY_GB, "GB")}
    if cfg.gpu_count:
        requests["gpu"] = {"count": cfg.gpu_count, "sku": cfg.gpu_sku}
    container: dict[str, Any] = {"image": image, "resources": {"requests": requests},
                                 "environmentVariables": environment({**cfg.env, **spec.env})}
    command = spec.command or cfg.command
    if command:
        container["command"] = [str(part) for part in command]
    props: dict[str, Any] = {
        "containers": [{"name": container_name, "properties": container}],
        "osType": cfg.os_type, "restartPolicy": cfg.restart_policy, "sku": "Standard"}
    identities = list(dict.fromkeys(cfg.identities or []))
    registry = cfg.image_registry
    if registry is not None:
        if registry.identity:
            identities = list(dict.fromkeys([*identities, registry.identity]))
            props["imageRegistryCredentials"] = [{"server": registry.server,
                                                  "identity": registry.identity}]
        else:
            password = registry.password.get_secret_value() if registry.password else ""
            props["imageRegistryCredentials"] = [{"server": registry.server,
                                                  "username": registry.username,
                                                  "password": password}]
    if cfg.subnet_ids:
        props["subnetIds"] = [{"id": subnet} for subnet in cfg.subnet_ids]
    if cfg.dns_servers:
        props["dnsConfig"] = {"nameServers": list(cfg.dns_servers)}
    body: dict[str, Any] = {"location": location, "tags": tags_for(spec, cfg),
                            "properties": props}
    if identities:
        body["identity"] = {"type": "UserAssigned",
                            "userAssignedIdentities": {i: {} for i in identities}}
    return merge_raw(body, cfg.container_group)


def merge_raw(body: dict[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` over ``body``: dicts merge, other values replace; ``properties.containers``
    merge by container name (a raw container of another name is added, a sidecar)."""
    out = copy.deepcopy(body)
    for key, value in raw.items():
        if key == "properties" and isinstance(value, Mapping):
            props = out.setdefault("properties", {})
            for pkey, pvalue in value.items():
                if pkey == "containers" and isinstance(pvalue, list):
                    props["containers"] = _merge_containers(props.get("containers") or [],
                                                            pvalue)
                elif isinstance(pvalue, Mapping) and isinstance(props.get(pkey), dict):
                    props[pkey] = _deep(props[pkey], pvalue)
                else:
                    props[pkey] = copy.deepcopy(pvalue)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _deep(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_containers(ours: list[dict[str, Any]], raw: list[Any]) -> list[dict[str, Any]]:
    merged = [copy.deepcopy(c) for c in ours]
    for item in raw:
        match = next((c for c in merged if c.get("name") == item.get("name")), None)
        if match is None:
            merged.append(copy.deepcopy(dict(item)))
        else:
            combined = _deep(match, item)
            # The run's own variables (run id, token) must survive a raw env list.
            ours_env = (match.get("properties") or {}).get("environmentVariables") or []
            raw_env = ((item.get("properties") or {}).get("environmentVariables")) or []
            if ours_env and raw_env:
                names = {e.get("name") for e in ours_env}
                combined["properties"]["environmentVariables"] = [
                    *[e for e in raw_env if e.get("name") not in names], *ours_env]
            merged[merged.index(match)] = combined
    return merged
