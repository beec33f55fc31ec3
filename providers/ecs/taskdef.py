"""Task definitions registered once per content, not once per run.

The body pushpool would register is normalised the way AWS normalises it (cpu/memory as
unit strings, essential containers, sorted environment, empty fields dropped) and
hashed. The hash is the family suffix and a tag, so finding an earlier registration
is one DescribeTaskDefinition of the family, from any process: 1,000 runs of one
deployment register one definition; a changed image gives a new hash and a new one.
Concurrent submits of the same content share one registration (single flight), and
RegisterTaskDefinition's per-family throttling is retried with backoff.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from providers.base import PermanentProviderError, RetryableProviderError
from providers.ecs.aws import AwsClients, Connection, SingleFlight, code_of, retrying
from providers.ecs.config import DEFAULT_CONTAINER_NAME, EcsConfig, aws_units

CONTENT_HASH_TAG = "pushpool:content-hash"
AUTO_DEREGISTER_TAG = "pushpool:auto-deregister"
POOL_TAG = "pushpool:pool"

_FAMILY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_TAG_UNSAFE = re.compile(r"[^\w .:/=+\-@]+")
MAX_TAGS = 50
MEMORY_KEYS = ("memory", "memoryReservation")
MIN_MEMORY_RESERVATION = 6  # MiB, the least ECS accepts


def default_family(pool_name: str) -> str:
    return f"pushpool-{pool_name or 'pool'}"


def safe_family(name: str) -> str:
    return _FAMILY_UNSAFE.sub("_", name).strip("_") or "pushpool"


def clean_tags(*sources: Mapping[str, str]) -> dict[str, str]:
    """Merge tag dicts (later wins) into what ECS accepts: its charset, lengths, ≤ 50."""
    tags: dict[str, str] = {}
    for source in sources:
        for key, value in source.items():
            key = _TAG_UNSAFE.sub("_", str(key))[:128]
            if not key or key.lower().startswith("aws:"):
                continue
            tags[key] = _TAG_UNSAFE.sub("_", str(value))[:256]
    if len(tags) > MAX_TAGS:
        raise PermanentProviderError(
            f"tags: {len(tags)} tags (labels and tags together); ECS allows {MAX_TAGS}; "
            "remove some labels or tags")
    return tags


def build_task_definition(cfg: EcsConfig, *, image: str, cpu: int, memory: int, region: str,
                          pool_name: str) -> dict[str, Any]:
    """The RegisterTaskDefinition body for one configuration, normalised and hashed.

    ``family`` gets the content hash as suffix and ``tags`` carry it.
    """
    container: dict[str, Any] = {"name": cfg.container_name or DEFAULT_CONTAINER_NAME,
                                 "image": image, "essential": True}
    logs = cfg.cloudwatch_logs
    if logs.enabled:
        options = {"awslogs-group": logs.group, "awslogs-region": region,
                   "awslogs-stream-prefix": logs.stream_prefix}
        if logs.create_group:
            options["awslogs-create-group"] = "true"
        options.update(logs.options)
        container["logConfiguration"] = {"logDriver": "awslogs", "options": options}
    body: dict[str, Any] = {
        "family": safe_family(cfg.family or default_family(pool_name))[:238],
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "containerDefinitions": [container],
        "executionRoleArn": cfg.execution_role_arn,
    }
    raw = dict(cfg.task_definition)
    raw_tags = {t["key"]: t["value"] for t in raw.pop("tags", None) or []
                if isinstance(t, Mapping) and "key" in t and "value" in t}
    body = merge_raw(body, raw)
    body["cpu"], body["memory"] = str(cpu), str(memory)
    container_body = _container(body, cfg.container_name or DEFAULT_CONTAINER_NAME)
    container_body["image"] = image
    _reserve_task_memory(body, container_body, memory)
    tags = {POOL_TAG: pool_name, **cfg.tags, **raw_tags}
    if cfg.auto_deregister_task_definition:
        tags[AUTO_DEREGISTER_TAG] = "true"
    body["tags"] = [{"key": k, "value": v} for k, v in clean_tags(tags).items()]
    body = normalise(body)
    digest = content_hash(body)
    body["family"] = f"{body['family']}-{digest[:16]}"
    body["tags"] = sorted([*body["tags"], {"key": CONTENT_HASH_TAG, "value": digest}],
                          key=lambda t: t["key"])
    return body


def merge_raw(built: dict[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` over ``built``: dicts merge, lists replace, containers merge by name."""
    out = dict(built)
    for key, value in raw.items():
        if key == "containerDefinitions" and isinstance(value, list):
            out[key] = _merge_containers(out.get(key) or [], value)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_raw(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _merge_containers(built: list[dict[str, Any]], raw: list[Any]) -> list[dict[str, Any]]:
    merged = [dict(c) for c in built]
    by_name = {c.get("name"): c for c in merged}
    for container in raw:
        if not isinstance(container, Mapping):
            raise PermanentProviderError(
                "task_definition.containerDefinitions: each entry must be an object")
        target = by_name.get(container.get("name"))
        if target is not None:
            target.update(merge_raw(target, container))
        else:
            merged.append(dict(container))
    return merged


def _container(body: dict[str, Any], name: str) -> dict[str, Any]:
    for container in body["containerDefinitions"]:
        if container.get("name") == name:
            return container
    raise PermanentProviderError(f"container_name: no container named {name!r}")


def _reserve_task_memory(body: dict[str, Any], container: dict[str, Any], memory: int) -> None:
    """Give the flow's container a soft memory limit of what the task has left over.

    Fargate needs memory only at task level, but moto's RunTask fails (HTTP 500) on a
    container with neither ``memory`` nor ``memoryReservation``; a reservation of the
    task's memory is valid on AWS and changes nothing there. A container that sets
    either itself keeps it.
    """
    if any(key in container for key in MEMORY_KEYS):
        return
    others = sum(_container_memory(c) for c in body["containerDefinitions"]
                 if c is not container)
    if memory - others >= MIN_MEMORY_RESERVATION:
        container["memoryReservation"] = memory - others


def _container_memory(container: Mapping[str, Any]) -> int:
    for key in ("memoryReservation", "memory"):  # the soft limit is what the task holds
        value = container.get(key)
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return int(value)
    return 0


def _drop_empty(value: Any) -> Any:
    if isinstance(value, Mapping):
        cleaned = {k: _drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def normalise(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as AWS would store it, so equivalent spellings hash the same."""
    out: dict[str, Any] = _drop_empty(dict(body))
    for key, what in (("cpu", "cpu"), ("memory", "memory")):
        if key in out:
            out[key] = str(aws_units(out[key], what))
    if "requiresCompatibilities" in out:
        out["requiresCompatibilities"] = sorted(set(out["requiresCompatibilities"]))
    containers = []
    for container in out.get("containerDefinitions") or []:
        container = dict(container)
        container.setdefault("essential", True)
        for key in ("cpu", "memory", "memoryReservation"):
            if isinstance(container.get(key), str) and container[key].isdigit():
                container[key] = int(container[key])
        for key in ("environment", "secrets"):
            if key in container:
                container[key] = sorted(container[key], key=lambda e: str(e.get("name")))
        if "portMappings" in container:
            container["portMappings"] = [
                {"protocol": "tcp", "hostPort": pm.get("containerPort"), **pm}
                for pm in container["portMappings"]]
        containers.append(container)
    if containers:
        out["containerDefinitions"] = containers
    if "tags" in out:
        out["tags"] = sorted(out["tags"], key=lambda t: str(t.get("key")))
    return out


def content_hash(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def tag_value(tags: list[Mapping[str, str]] | None, key: str) -> str | None:
    for tag in tags or []:
        if tag.get("key") == key:
            return tag.get("value")
    return None


class TaskDefinitions:
    """Finds or registers the definition for a body; remembers the answer per process."""

    def __init__(self, aws: AwsClients, *, register_attempts: int = 6,
                 backoff_base: float = 0.5, backoff_cap: float = 8.0):
        self._aws = aws
        self._cache: dict[tuple[Connection, str], str] = {}
        self._flights = SingleFlight()
        self.register_attempts = register_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.registered = 0  # registrations this process made (for tests and benchmarks)

    async def ensure(self, conn: Connection, body: dict[str, Any]) -> str:
        """The ARN of an ACTIVE definition with this content, registering it if needed."""
        digest = tag_value(body.get("tags"), CONTENT_HASH_TAG) or content_hash(body)
        key = (conn, digest)
        arn = self._cache.get(key)
        if arn:
            return arn
        arn = await self._flights.run(key, lambda: self._find_or_register(conn, body, digest))
        self._cache[key] = arn
        return arn

    def forget(self, arn: str) -> None:
        """Drop a definition from the cache (it was deregistered or found inactive)."""
        for key in [k for k, v in self._cache.items() if v == arn]:
            del self._cache[key]

    async def _find_or_register(self, conn: Connection, body: dict[str, Any],
                                digest: str) -> str:
        existing = await self.find(conn, body["family"], digest)
        if existing:
            return existing

        async def register() -> str:
            answer = await self._aws.call(conn, "ecs", "register_task_definition", **body)
            return str(answer["taskDefinition"]["taskDefinitionArn"])

        try:
            arn = await retrying(register, attempts=self.register_attempts,
                                 base=self.backoff_base, cap=self.backoff_cap)
        except RetryableProviderError as exc:
            # Say what happened: throttling, or a 5xx or a dropped connection, each time.
            what = ("is being throttled" if exc.throttled
                    else f"failed {self.register_attempts} times in a row")
            raise RetryableProviderError(
                f"registering task definition family {body['family']} {what}; will retry "
                f"({exc})", throttled=exc.throttled, retry_after=2.0) from exc
        self.registered += 1
        return arn

    async def find(self, conn: Connection, family: str, digest: str) -> str | None:
        """The latest ACTIVE revision of ``family`` if it carries this content hash."""
        try:
            answer = await self._aws.call(conn, "ecs", "describe_task_definition",
                                          taskDefinition=family, include=["TAGS"])
        except PermanentProviderError as exc:
            if code_of(exc) == "ClientException":  # no such family (or no ACTIVE revision)
                return None
            raise
        definition = answer.get("taskDefinition") or {}
        if definition.get("status") != "ACTIVE":
            return None
        if tag_value(answer.get("tags"), CONTENT_HASH_TAG) != digest:
            return None
        return str(definition["taskDefinitionArn"])
