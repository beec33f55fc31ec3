"""The job-spec interface every provider adapter implements.

The dispatcher turns a run into one provider-neutral ``JobSpec`` and hands it to an
adapter; the adapter answers with a ``Submission`` and later with ``InfraStatus``.
Nothing here imports ``dispatcher``: adapters depend on this module and their own SDK only.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict


class ProviderError(Exception):
    """Base of the errors an adapter may raise; the message is shown to the user as is."""


class RetryableProviderError(ProviderError):
    """Throttling, 5xx, timeouts: the dispatcher retries with backoff inside the run's lease.

    ``throttled`` tells the rate limiter to shrink; ``retry_after`` is a hint in seconds.
    """

    def __init__(self, message: str, *, throttled: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.throttled = throttled
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Bad image, bad config, missing permissions: the run fails at once with this message."""


class InfraPhase(enum.StrEnum):
    """Every provider's native states, mapped onto one shared enum (Libcloud style)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    MISSING = "missing"

    @property
    def is_final(self) -> bool:
        return self not in (InfraPhase.PENDING, InfraPhase.RUNNING)


@dataclass(frozen=True)
class JobSpec:
    """One run, made provider-neutral. ``config`` is the rendered, provider-specific part."""

    run_id: str
    job_name: str
    image: str | None
    command: list[str]
    env: dict[str, str]
    cpu: int | None = None
    memory: int | None = None
    timeout: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    pool_name: str = ""
    deployment_id: str | None = None


@dataclass(frozen=True)
class Submission:
    infra_id: str
    console_url: str | None = None


@dataclass(frozen=True)
class InfraStatus:
    phase: InfraPhase
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    message: str
    stream: str = "stdout"


@dataclass(frozen=True)
class LogBatch:
    """Lines read since a cursor, and the cursor to pass next time (opaque to the caller)."""

    lines: list[LogLine]
    cursor: str | None


@dataclass(frozen=True)
class ProvisionStep:
    """One thing provisioning creates or finds; ``done`` is set once applied."""

    resource: str
    name: str
    action: str  # "create" | "exists"
    detail: str = ""


@dataclass
class ProvisionPlan:
    """What ``--provision-infra`` will do (``apply=False``) or did (``apply=True``)."""

    target: str  # e.g. "account 123456789012, region us-east-1"
    steps: list[ProvisionStep]
    template_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        return sum(1 for s in self.steps if s.action == "create")


class ProviderConfig(BaseModel):
    """Base of each adapter's pydantic ``Config``: the rendered job configuration."""

    model_config = ConfigDict(extra="forbid")


@runtime_checkable
class Provider(Protocol):
    """What every adapter module exposes as ``PROVIDER`` (an instance of its class)."""

    pool_type: ClassVar[str]
    config_model: ClassVar[type[ProviderConfig]]
    poll_interval: ClassVar[float]  # seconds between status polls of this provider's runs

    def default_base_job_template(self) -> dict[str, Any]: ...

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check a rendered job configuration before any run exists (raise ValueError)."""

    async def submit(self, spec: JobSpec) -> Submission: ...

    async def status(self, infra_id: str) -> InfraStatus: ...

    async def status_many(self, infra_ids: list[str]) -> dict[str, InfraStatus]: ...

    async def cancel(self, infra_id: str, grace_seconds: float = 30.0) -> None: ...

    async def logs(self, infra_id: str, cursor: str | None) -> LogBatch: ...

    async def cleanup(self, infra_id: str) -> None:
        """Release what a final run leaves behind (the dispatcher calls it once it ends)."""

    def remember_connection(self, config: Mapping[str, Any]) -> None:
        """Note how to reach a run's infrastructure (endpoint, identity) from its rendered
        configuration; the watcher calls it for each run it follows, so status, cancel and
        logs work after a restart, when no submit has happened in this process."""

    async def provision(
        self, pool_name: str, options: Mapping[str, Any], apply: bool
    ) -> ProvisionPlan:
        """Plan (apply=False) or idempotently create (apply=True) the pool's cloud resources.

        ``plan.template_defaults`` go into the pool's template; the dispatcher stores the
        plan's steps so ``deprovision`` knows what was made."""

    async def deprovision(
        self, pool_name: str, provisioned: Mapping[str, Any], apply: bool
    ) -> ProvisionPlan:
        """Remove what ``provision`` made (and only that)."""

    async def close(self) -> None: ...


COMMON_VARIABLES: dict[str, Any] = {
    "image": {"type": ["string", "null"], "title": "Image", "default": None,
              "description": "Container image to run."},
    "command": {"type": ["array", "null"], "items": {"type": "string"}, "title": "Command",
                "default": None, "description": "argv list; never run through a shell."},
    "env": {"type": "object", "additionalProperties": {"type": ["string", "null"]},
            "title": "Environment", "default": {}},
    "cpu": {"type": ["integer", "null"], "minimum": 1, "title": "CPU", "default": None},
    "memory": {"type": ["integer", "null"], "minimum": 1, "title": "Memory (MiB)",
               "default": None},
    "timeout": {"type": ["integer", "null"], "minimum": 1, "title": "Timeout (s)",
                "default": None, "description": "Cancel and fail the run after this many seconds."},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}, "title": "Labels",
               "default": {}},
}


_DNS_UNSAFE = re.compile(r"[^a-z0-9-]+")


def job_name_for(run_id: str, attempt: int, prefix: str = "pushpool") -> str:
    """Deterministic DNS-safe name (≤ 63 chars) from the run id and attempt."""
    digest = hashlib.sha256(f"{run_id}:{attempt}".encode()).hexdigest()[:10]
    base = _DNS_UNSAFE.sub("-", f"{prefix}-{run_id}".lower()).strip("-")
    return f"{base[: 63 - 12]}-{digest}".strip("-")
