"""One Cloud Run job per deployment and template content; one execution per run.

Cloud Run allows 1,000 jobs per project and region, so a job per run (what Prefect does)
runs into the cap. Here the job holds what a deployment's runs share (image, entrypoint,
resources, service account, network, secrets, retries, labels) and its name carries a hash
of exactly that content: the same template reuses the job, a changed one makes a new job
(and the old one is retired, see ``adapter``). Each run is an execution started with
``run_job`` overrides: its arguments, its environment (which names the run and attempt,
the only per-run marks an execution can carry, since executions take their labels from
the job), its task count and its timeout.

Pure functions over Cloud Run Admin API v2 JSON (camelCase); the SDK is not needed here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from providers.base import JobSpec
from providers.cloud_run.config import CloudRunConfig, cpu_quantity, memory_mib

CONTAINER_NAME = "pushpool"
RUN_ENV, ATTEMPT_ENV = "PUSHPOOL_RUN_ID", "PUSHPOOL_RUN_ATTEMPT"
POOL_LABEL = "pushpool-pool"
DEPLOYMENT_LABEL = "pushpool-deployment"
TEMPLATE_LABEL = "pushpool-template"
MANAGED_LABEL = "managed-by"
RETIRED_LABEL = "pushpool-retired"
# Labels that differ per run must stay off the job, or every run would make a new job.
PER_RUN_LABELS = frozenset({"pushpool-run-id", "pushpool-attempt"})
_UNSAFE_VALUE = re.compile(r"[^a-z0-9_-]+")
_UNSAFE_NAME = re.compile(r"[^a-z0-9-]+")


def label_value(value: str) -> str:
    """A Google label value (≤ 63 of lowercase letters, digits, '_', '-'); long or
    unsafe values keep a digest so two of them never collide."""
    safe = _UNSAFE_VALUE.sub("-", value.lower()).strip("-")
    if safe == value and len(safe) <= 63:
        return safe
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{safe[:54]}-{digest}".strip("-")


def _cpu_text(cfg: CloudRunConfig, spec: JobSpec) -> str | None:
    cpus = cpu_quantity(cfg.cpu if cfg.cpu is not None else spec.cpu)
    if cpus is None:
        return None
    return f"{int(cpus * 1000)}m" if cpus < 1 else str(cpus.normalize())


def _memory_text(cfg: CloudRunConfig, spec: JobSpec) -> str | None:
    mib = memory_mib(cfg.memory if cfg.memory is not None else spec.memory)
    return None if mib is None else (f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi")


def job_labels(spec: JobSpec, cfg: CloudRunConfig) -> dict[str, str]:
    labels = {k: label_value(v) for k, v in {**cfg.labels, **spec.labels}.items()
              if k not in PER_RUN_LABELS}
    labels[POOL_LABEL] = label_value(spec.pool_name or "none")
    labels[DEPLOYMENT_LABEL] = label_value(spec.deployment_id or "none")
    labels[MANAGED_LABEL] = "pushpool"
    return labels


def merge_raw(base: dict[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` over ``base``: objects merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in raw.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_raw(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_job(spec: JobSpec, cfg: CloudRunConfig, image: str) -> dict[str, Any]:
    """The job body (without its template label) for a run's deployment and template.

    The entrypoint (``command[0]``) belongs to the job, the rest of the argv to the run:
    Cloud Run can override a container's args per execution but not its command.
    """
    command = list(spec.command or cfg.command or [])
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": image}
    if command:
        container["command"] = command[:1]
    limits = {k: v for k, v in (("cpu", _cpu_text(cfg, spec)),
                                ("memory", _memory_text(cfg, spec))) if v}
    if limits:
        container["resources"] = {"limits": limits}
    secrets = [{"name": name, "valueSource": {"secretKeyRef": {
        "secret": ref.secret, "version": ref.version}}}
        for name, ref in sorted(cfg.env_from_secrets.items())]
    if secrets:
        container["env"] = secrets
    task: dict[str, Any] = {"containers": [container], "maxRetries": cfg.max_retries}
    if cfg.timeout:
        task["timeout"] = f"{cfg.timeout}s"
    if cfg.service_account_name:
        task["serviceAccount"] = cfg.service_account_name
    vpc: dict[str, Any] = {}
    if cfg.vpc_connector:
        vpc["connector"] = cfg.vpc_connector
    if cfg.network_interfaces:
        vpc["networkInterfaces"] = [n.model_dump(exclude_none=True, exclude_defaults=True)
                                    for n in cfg.network_interfaces]
    if cfg.vpc_egress:
        vpc["egress"] = cfg.vpc_egress
    if vpc:
        task["vpcAccess"] = vpc
    labels = job_labels(spec, cfg)
    job: dict[str, Any] = {
        "labels": labels, "client": "pushpool",
        "template": {"labels": dict(labels), "taskCount": cfg.task_count,
                     "parallelism": cfg.parallelism, "template": task}}
    if cfg.launch_stage:
        job["launchStage"] = cfg.launch_stage
    return merge_raw(job, cfg.job_body)


def content_hash(job: Mapping[str, Any]) -> str:
    canonical = json.dumps(job, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def job_id_for(spec: JobSpec, digest: str) -> str:
    """``pushpool-<pool>-<content hash>``: ≤ 63 chars, a letter first, no trailing '-'.
    The hash covers the deployment label, so two deployments never share a job."""
    pool = _UNSAFE_NAME.sub("-", (spec.pool_name or "pool").lower()).strip("-")[:28]
    return f"pushpool-{pool}-{digest}".replace("--", "-")


def finish_job(job: dict[str, Any], digest: str) -> dict[str, Any]:
    """The body to create: the content hash as a label on the job and its executions."""
    out = copy.deepcopy(job)
    out.setdefault("labels", {})[TEMPLATE_LABEL] = digest
    out.setdefault("template", {}).setdefault("labels", {})[TEMPLATE_LABEL] = digest
    return out


def run_overrides(spec: JobSpec, cfg: CloudRunConfig) -> dict[str, Any]:
    """``RunJobRequest.overrides`` for one run attempt (camelCase JSON)."""
    command = list(spec.command or cfg.command or [])
    env = {k: v for k, v in {**cfg.env, **spec.env}.items() if v is not None}
    # The run's marks, set here whatever the dispatcher put in env: a retried submit
    # finds its execution by them.
    env[RUN_ENV] = spec.run_id
    env[ATTEMPT_ENV] = str(spec.attempt)
    container: dict[str, Any] = {"name": CONTAINER_NAME,
                                 "env": [{"name": k, "value": str(v)} for k, v in env.items()]}
    args = command[1:]
    if args:
        container["args"] = args
    else:
        container["clearArgs"] = True
    overrides: dict[str, Any] = {"containerOverrides": [container],
                                 "taskCount": cfg.task_count}
    timeout = spec.timeout or cfg.timeout
    if timeout:
        overrides["timeout"] = f"{int(timeout)}s"
    return overrides


def execution_env(execution: Mapping[str, Any]) -> dict[str, str]:
    """The environment an execution's first container ran with (its overrides applied)."""
    containers = ((execution.get("template") or {}).get("containers") or [])
    for container in containers:
        if container.get("name") in (CONTAINER_NAME, None, "") or len(containers) == 1:
            return {str(e.get("name")): str(e.get("value", "")) for e in container.get("env")
                    or [] if isinstance(e, Mapping) and "value" in e}
    return {}


def is_attempt(execution: Mapping[str, Any], run_id: str, attempt: int) -> bool:
    env = execution_env(execution)
    return env.get(RUN_ENV) == run_id and env.get(ATTEMPT_ENV) == str(attempt)


def run_id_of(execution: Mapping[str, Any]) -> str | None:
    return execution_env(execution).get(RUN_ENV) or None


def job_of(execution_name: str) -> str:
    """projects/P/locations/L/jobs/J/executions/E -> projects/P/locations/L/jobs/J."""
    head, sep, _ = execution_name.partition("/executions/")
    if not sep:
        raise ValueError(f"{execution_name!r} is not an execution name")
    return head


def console_url(execution_name: str) -> str | None:
    parts = execution_name.split("/")
    if len(parts) != 8 or parts[0] != "projects" or parts[6] != "executions":
        return None
    project, region, execution = parts[1], parts[3], parts[7]
    return (f"https://console.cloud.google.com/run/jobs/executions/details/{region}/"
            f"{execution}/tasks?project={project}")
