"""The job-spec interface every provider adapter implements.

The dispatcher turns a run into one provider-neutral ``JobSpec`` and hands it to an
adapter; the adapter answers with an ``InfraRef`` (where the run's infrastructure is and
how to reach it), which the dispatcher stores with the run and hands back to every later
call: the contract is stateless, so a call in a fresh process (a cloud function, a
restarted server, another replica) works with no earlier call in that process.
Nothing here imports ``dispatcher``: adapters depend on this module and their own SDK only.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict


class ProviderError(Exception):
    """Base of the errors an adapter may raise; the message is shown to the user as is."""


class RetryableProviderError(ProviderError):
    """Throttling, 5xx, timeouts: the dispatcher retries with backoff inside the run's lease.

    ``throttled`` tells the rate limiter to shrink; ``retry_after`` is a hint in seconds.
    Submits that waited on one shared call (a lookup made once for many runs) should each
    get that call's exception object itself: a pool's circuit breaker counts it once.
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


# A cpu or memory job variable exactly as the run's job variables give it, in the pool
# type's own units (ECS CPU units and MiB, Cloud Run "1000m" and "512Mi", ACI cores and
# GB, Modal cores and MiB): the core passes it on, and each adapter reads and checks it.
Quantity = int | float | str


@dataclass(frozen=True)
class JobSpec:
    """One run, made provider-neutral. ``config`` is the rendered, provider-specific part."""

    run_id: str
    job_name: str
    image: str | None
    command: list[str]
    env: dict[str, str]
    cpu: Quantity | None = None
    memory: Quantity | None = None
    timeout: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    pool_name: str = ""
    deployment_id: str | None = None
    # An earlier call may have made this attempt's job: a retry after a failed or timed-out
    # submit, or a run taken up again after a crash or a hand-back. Only then must an
    # adapter whose create is not idempotent by itself look for that job first; the
    # dispatcher's first call of a fresh claim can skip the lookup.
    retried: bool = False


@dataclass(frozen=True)
class InfraRef:
    """What ``submit`` returns: the infrastructure's id and how to reach it.

    ``connection`` holds the facts a later call needs (region, endpoint, account, cluster,
    the credentials or a reference to them such as a profile or role, the submit's
    wall-clock time), as JSON-safe values. The dispatcher treats it as a secret: it is
    stored encrypted with the run and never shown by the API or written to a log.
    """

    infra_id: str
    connection: Mapping[str, Any] = field(default_factory=dict, repr=False)  # secret
    console_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"infra_id": self.infra_id, "connection": dict(self.connection),
                "console_url": self.console_url}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InfraRef:
        return cls(str(data["infra_id"]), dict(data.get("connection") or {}),
                   data.get("console_url"))


@dataclass(frozen=True)
class InfraStatus:
    phase: InfraPhase
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class InfraEvent:
    """A state change a cloud pushed: which infrastructure, its status, and the run id
    when the event names it (tags, labels, ``startedBy``), so no lookup is needed."""

    infra_id: str
    status: InfraStatus
    run_id: str | None = None


@dataclass(frozen=True)
class EventDelivery:
    """What an adapter made of one pushed delivery: its events, and the body to answer
    with when the sender expects one (Event Grid's subscription validation handshake)."""

    events: list[InfraEvent] = field(default_factory=list)
    reply: dict[str, Any] | None = None
    note: str | None = None  # why nothing was taken from it, shown to the sender


class EventsNotEnabled(ProviderError):
    """Pushed events are refused until the server is configured for them (HTTP 403)."""


class EventAuthError(ProviderError):
    """A delivery whose signature, token or secret does not check out (HTTP 401)."""


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

    async def submit(self, spec: JobSpec) -> InfraRef:
        """Start the run's job; idempotent per (run, attempt): a retry finds what the
        first try made instead of making a second one."""

    async def status(self, ref: InfraRef) -> InfraStatus: ...

    async def status_many(self, refs: Sequence[InfraRef]) -> dict[str, InfraStatus]:
        """Statuses by infra id. An id left out could not be read this time (ask again
        later); a transient failure never turns into a final phase."""

    async def cancel(self, ref: InfraRef, grace_seconds: float = 30.0) -> None: ...

    async def logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        """Lines after ``cursor`` in order; a cursor never yields a line twice."""

    async def cleanup(self, ref: InfraRef) -> None:
        """Release what a final run leaves behind (the dispatcher calls it once it ends)."""

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


@runtime_checkable
class EventSource(Protocol):
    """An adapter whose cloud pushes state changes implements this too; the API serves
    every such adapter at ``POST /api/events/{provider}``. The adapter checks the
    delivery's authenticity itself (a shared secret, an OIDC token, a signature) and
    raises ``EventsNotEnabled``, ``EventAuthError`` or ``ValueError`` (a malformed body)."""

    def parse_events(self, headers: Mapping[str, str], body: bytes, *,
                     shared_secret: str | None) -> EventDelivery: ...


@runtime_checkable
class TrustedEventSource(Protocol):
    """An adapter whose cloud can hand its events to a function directly (EventBridge
    invoking a Lambda function): the platform authenticated them, so no shared secret is
    checked. Malformed events raise ``ValueError``, as for ``EventSource``."""

    def parse_trusted_event(self, event: Mapping[str, Any]) -> EventDelivery: ...


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
