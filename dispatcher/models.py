"""Domain objects and the run state machine: pydantic models, pure, no I/O.

These are what the store returns, the API serialises, and the CLI prints. Input models
(``*Create``, ``*Update``) validate what callers send; their errors name the field.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
NAME_RULE = "use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"


class RunState(enum.StrEnum):
    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CRASHED,
                          RunState.CANCELLED})
# States that hold a concurrency slot in pool, queue and deployment limits.
ACTIVE_STATES = frozenset({RunState.PENDING, RunState.RUNNING, RunState.CANCELLING})

ALLOWED_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.SCHEDULED: frozenset({RunState.PENDING, RunState.CANCELLING, RunState.CANCELLED,
                                   RunState.FAILED}),
    RunState.PENDING: frozenset({RunState.SCHEDULED, RunState.RUNNING, RunState.COMPLETED,
                                 RunState.FAILED, RunState.CRASHED, RunState.CANCELLING,
                                 RunState.CANCELLED}),
    RunState.RUNNING: frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CRASHED,
                                 RunState.CANCELLING, RunState.CANCELLED}),
    RunState.CANCELLING: frozenset({RunState.CANCELLED, RunState.COMPLETED, RunState.FAILED,
                                    RunState.CRASHED}),
    RunState.COMPLETED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CRASHED: frozenset(),
    RunState.CANCELLED: frozenset(),
}


def can_transition(current: RunState, new: RunState) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


def display_state(state: RunState, scheduled_time: datetime, now: datetime,
                  late_after_seconds: float) -> str:
    """LATE is a SCHEDULED run past its time by more than the threshold: shown, not stored."""
    if state is RunState.SCHEDULED and now - scheduled_time > timedelta(
            seconds=late_after_seconds):
        return "LATE"
    return state.value


def _check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"invalid {what} name {value!r}: {NAME_RULE}")
    return value


def _check_limit(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ValueError("must be a positive integer (or omit it for no limit)")
    return value


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- pools


class WorkPool(Model):
    id: str
    name: str
    type: str
    description: str | None = None
    base_job_template: dict[str, Any]
    concurrency_limit: int | None = None
    paused: bool = False
    late_after_seconds: float = 15.0
    paused_reason: str | None = None
    provisioned: dict[str, Any] | None = None
    created: datetime
    updated: datetime
    # Filled by listings:
    queues: list[str] = Field(default_factory=list)
    active_runs: int = 0

    @property
    def status(self) -> str:
        return "paused" if self.paused else "ready"


class WorkPoolCreate(InputModel):
    name: str
    type: str = "process"
    description: str | None = None
    base_job_template: dict[str, Any] | None = None
    concurrency_limit: int | None = None
    paused: bool = False
    late_after_seconds: float = Field(default=15.0, ge=0)

    _name = field_validator("name")(lambda v: _check_name(v, "work pool"))
    _limit = field_validator("concurrency_limit")(_check_limit)


class WorkPoolUpdate(InputModel):
    description: str | None = None
    base_job_template: dict[str, Any] | None = None
    concurrency_limit: int | None = None
    clear_concurrency_limit: bool = False
    paused: bool | None = None
    late_after_seconds: float | None = Field(default=None, ge=0)

    _limit = field_validator("concurrency_limit")(_check_limit)


# ---------------------------------------------------------------------------- queues


class WorkQueue(Model):
    id: str
    pool_id: str
    pool_name: str = ""
    name: str
    description: str | None = None
    priority: int = 1
    concurrency_limit: int | None = None
    paused: bool = False
    created: datetime
    updated: datetime
    active_runs: int = 0


class WorkQueueCreate(InputModel):
    name: str
    description: str | None = None
    priority: int | None = Field(default=None, ge=1)
    concurrency_limit: int | None = None
    paused: bool = False

    _name = field_validator("name")(lambda v: _check_name(v, "work queue"))
    _limit = field_validator("concurrency_limit")(_check_limit)


class WorkQueueUpdate(InputModel):
    description: str | None = None
    priority: int | None = Field(default=None, ge=1)
    concurrency_limit: int | None = None
    clear_concurrency_limit: bool = False
    paused: bool | None = None

    _limit = field_validator("concurrency_limit")(_check_limit)


# ---------------------------------------------------------------------------- schedules


class ScheduleSpec(InputModel):
    """One of cron (with time zone), interval (seconds, with anchor) or rrule."""

    cron: str | None = None
    interval: float | None = Field(default=None, gt=0, description="seconds")
    anchor_date: datetime | None = None
    rrule: str | None = None
    timezone: str = "UTC"
    active: bool = True

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> ScheduleSpec:
        kinds = [k for k in ("cron", "interval", "rrule") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a schedule needs exactly one of cron, interval or rrule")
        return self

    @property
    def kind(self) -> Literal["cron", "interval", "rrule"]:
        if self.cron is not None:
            return "cron"
        if self.interval is not None:
            return "interval"
        return "rrule"


class Schedule(ScheduleSpec):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
    id: str


# ---------------------------------------------------------------------------- deployments


class Deployment(Model):
    id: str
    name: str
    flow_name: str
    pool_name: str
    queue_name: str
    command: list[str] | None = None
    entrypoint: str | None = None
    source: str | None = None
    image: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_schema: dict[str, Any] | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)
    schedules: list[Schedule] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    version: str | None = None
    concurrency_limit: int | None = None
    paused: bool = False
    created: datetime
    updated: datetime

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


class DeploymentApply(InputModel):
    """Create-or-update a deployment, keyed by flow name and deployment name."""

    name: str
    flow_name: str
    pool_name: str
    queue_name: str | None = None  # the pool's "default" queue when omitted
    command: list[str] | None = None
    entrypoint: str | None = None
    source: str | None = None
    image: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_schema: dict[str, Any] | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    version: str | None = None
    concurrency_limit: int | None = None
    paused: bool = False

    _name = field_validator("name")(lambda v: _check_name(v, "deployment"))
    _flow = field_validator("flow_name")(lambda v: _check_name(v, "flow"))
    _limit = field_validator("concurrency_limit")(_check_limit)

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("command must be a non-empty argv list, e.g. [\"python\", \"x.py\"]")
        return value


class DeploymentUpdate(InputModel):
    paused: bool | None = None
    description: str | None = None
    concurrency_limit: int | None = None
    clear_concurrency_limit: bool = False

    _limit = field_validator("concurrency_limit")(_check_limit)


# ---------------------------------------------------------------------------- runs


class StateRecord(Model):
    state: RunState
    timestamp: datetime
    message: str | None = None


class Run(Model):
    id: str
    name: str
    deployment_id: str | None = None
    deployment_name: str | None = None  # "flow/deployment"
    pool_name: str
    queue_name: str
    state: RunState
    state_message: str | None = None
    scheduled_time: datetime
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)  # the run's own overrides
    job_configuration: dict[str, Any] | None = None  # rendered, after merging
    attempt: int = 0
    infra_id: str | None = None
    console_url: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    timeout_seconds: int | None = None
    result: Any = None  # the flow's return value (JSON), reported by `pushpool execute`
    idempotency_key: str | None = None
    auto_scheduled: bool = False
    created: datetime
    updated: datetime
    history: list[StateRecord] = Field(default_factory=list)
    display_state: str | None = None  # LATE for a SCHEDULED run past the pool's threshold


class RunCreate(InputModel):
    """A run of a deployment; ``scheduled_time`` defaults to now."""

    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    scheduled_time: datetime | None = None
    name: str | None = None


class LogEntry(Model):
    id: int
    run_id: str
    timestamp: datetime
    stream: str = "stdout"
    message: str


class Page(Model):
    """A listing page; ``next_offset`` is None at the end."""

    items: list[Any]
    next_offset: int | None = None
