"""Domain objects and the run state machine: pydantic models, pure, no I/O.

These are what the store returns, the API serialises, and the CLI prints. Input models
(``*Create``, ``*Update``) validate what callers send; their errors name the field.
"""

from __future__ import annotations

import enum
import json
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from dispatcher import redaction

# \Z, not $: in Python "$" also matches before a trailing newline ("pool\n" is no name).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
NAME_RULE = "use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"

# ---------------------------------------------------------------------------- input limits
# What one request may hold (README, "Limits"). The API caps the body as a whole at 1 MiB
# and 64 levels of nesting (dispatcher/api/routing.py) before any of these apply.
MAX_NAME_LENGTH = 100
MAX_TEXT_LENGTH = 64 * 1024  # one string: a description, an env or label value, an argv item
MAX_SHORT_TEXT_LENGTH = 1024  # image, entrypoint, version, cron, time zone, ...
MAX_ENV_VARS = 500  # entries of a job's ``env`` variable
MAX_LABELS = 200  # entries of a job's ``labels`` variable, and a deployment's tags
MAX_COMMAND_ARGS = 1000
MAX_SCHEDULES = 100
MAX_PARAMETERS_BYTES = 64 * 1024  # parameters as JSON: a job gets them in one env variable
MAX_COUNT = 1_000_000  # concurrency limits and priorities
MAX_SECONDS = 10 * 366 * 24 * 3600  # intervals and thresholds: ten years

# The JSON Schema form of the rules above: the OpenAPI document states them, the
# validators below enforce them with messages that say how to fix the value.
Name = Annotated[str, WithJsonSchema({"type": "string", "minLength": 1,
                                      "maxLength": MAX_NAME_LENGTH,
                                      "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"})]


def _integral(value: Any) -> Any:
    # JSON Schema counts 5.0 as an integer, so strict validation takes it too (not true, "5").
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
Count = Annotated[Integer, WithJsonSchema({"type": "integer", "minimum": 1,
                                           "maximum": MAX_COUNT})]
# Constraints before the validator: after it, pydantic writes them into the schema as "ge".
Priority = Annotated[int, Field(ge=1, le=MAX_COUNT), BeforeValidator(_integral)]
Text = Annotated[str, Field(max_length=MAX_TEXT_LENGTH)]
ShortText = Annotated[str, Field(max_length=MAX_SHORT_TEXT_LENGTH)]
RefName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]  # names an object


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


# The message of a RUNNING record the provider gave no reason for, whoever saw it first
# (a status poll, an event, or a final status that skipped RUNNING): one wording for all.
RUNNING_MESSAGE = "running"


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
        shown = repr(value) if len(value) <= 2 * MAX_NAME_LENGTH else \
            f"{value[:40]!r}... ({len(value)} characters)"
        raise ValueError(f"invalid {what} name {shown}: {NAME_RULE}")
    return value


def _check_flow_name(value: str) -> str:
    if value == "id":  # /api/deployments/id/{id} reads deployments by id
        raise ValueError("'id' is reserved as a flow name; pick another name")
    return _check_name(value, "flow")


# What happens to runs a deployment missed (dispatcher down, pool paused) and to runs that
# would overlap one still active; see dispatcher/store/missed_runs.py.
CatchupPolicy = Literal["all", "latest", "none"]
OverlapPolicy = Literal["allow", "skip", "cancel-previous"]
DEFAULT_SUBMIT_DEADLINE_SECONDS = 3600.0


def _check_limit(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_COUNT:
        raise ValueError(f"must be a positive integer up to {MAX_COUNT} (or omit it for no "
                         "limit)")
    return value


def _check_entries(variables: dict[str, Any], name: str, limit: int, what: str) -> None:
    entries = variables.get(name)
    if not isinstance(entries, dict):
        return  # the pool's variable schema decides what else is allowed
    if len(entries) > limit:
        raise ValueError(f"{name} has {len(entries)} {what}, more than the limit of {limit}; "
                         "send fewer (keep bulk data in a file or a secret store)")
    for key, value in entries.items():
        if len(key) > MAX_NAME_LENGTH * 2:
            raise ValueError(f"{name}: the name {key[:40]!r}... is longer than "
                             f"{MAX_NAME_LENGTH * 2} characters; use a shorter name")
        if isinstance(value, str) and len(value) > MAX_TEXT_LENGTH:
            raise ValueError(f"{name}.{key} is {len(value)} characters long, more than the "
                             f"limit of {MAX_TEXT_LENGTH} (64 KiB); pass large values as a "
                             "file or a reference instead")


def _no_redacted_secrets(value: dict[str, Any] | None) -> dict[str, Any] | None:
    found = redaction.redacted_path(value)
    if found:
        raise ValueError(f"{found} is {redaction.REDACTED!r}, the placeholder the API shows "
                         "instead of a secret; send the real value")
    return value


def _check_job_variables(value: dict[str, Any]) -> dict[str, Any]:
    """At most MAX_ENV_VARS env entries and MAX_LABELS labels, each value at most 64 KiB."""
    _check_entries(value, "env", MAX_ENV_VARS, "variables")
    _check_entries(value, "labels", MAX_LABELS, "labels")
    _no_redacted_secrets(value)
    return value


def _check_parameters(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_PARAMETERS_BYTES:
        raise ValueError(f"parameters are {size} bytes as JSON, more than the limit of "
                         f"{MAX_PARAMETERS_BYTES} (64 KiB); pass large inputs by reference "
                         "(a URL or a path) instead")
    return value


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class InputModel(BaseModel):
    # Strict: a field takes what the OpenAPI document says it takes (no 0.0 for false, no
    # "5" or true for 5); times alone are parsed from their RFC 3339 strings (``When``).
    # NaN and Infinity are not JSON and break time arithmetic: rejected like any bad number.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


When = Annotated[datetime, Field(strict=False)]


def _entries_schema(limit: int) -> dict[str, Any]:
    # No "type": the pool's schema decides it; these keywords bind only objects and strings.
    return {"maxProperties": limit, "additionalProperties": {"maxLength": MAX_TEXT_LENGTH}}


# Job variables are checked against the pool's own schema later; these limits hold for all.
JobVariables = Annotated[dict[str, Any], AfterValidator(_check_job_variables), WithJsonSchema({
    "type": "object", "additionalProperties": True,
    "properties": {"env": _entries_schema(MAX_ENV_VARS), "labels": _entries_schema(MAX_LABELS)},
    "description": f"Overrides of the pool's job variables; env holds at most {MAX_ENV_VARS} "
                   f"variables and labels at most {MAX_LABELS}, each value at most 64 KiB"})]
Parameters = Annotated[dict[str, Any], AfterValidator(_check_parameters), WithJsonSchema({
    "type": "object", "additionalProperties": True,
    "description": "The flow's parameters: at most 64 KiB as JSON"})]
Tag = Annotated[str, Field(max_length=MAX_NAME_LENGTH)]


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
    paused_by: Literal["user", "breaker"] | None = None  # "breaker": resumes by itself
    provisioned: dict[str, Any] | None = None
    created: datetime
    updated: datetime
    # Filled by listings:
    queues: list[str] = Field(default_factory=list)
    active_runs: int = 0

    @property
    def status(self) -> str:
        return "paused" if self.paused else "ready"


class ProvisionConfirm(InputModel):
    """Make the pool's cloud infrastructure first, as the plan the user was shown says
    (POST /api/pool-types/{type}/provision-plan), with the server's own cloud identity."""

    options: dict[str, Any] = Field(default_factory=dict,
                                    description="The options the plan was made with")
    confirm_plan: str = Field(min_length=1, max_length=200,
                              description="The plan's digest; refused (409) if the plan "
                                          "is not the same now")


class WorkPoolCreate(InputModel):
    name: Name
    type: RefName = "process"
    description: Text | None = None
    base_job_template: dict[str, Any] | None = None
    concurrency_limit: Count | None = None
    paused: bool = False
    late_after_seconds: float = Field(default=15.0, ge=0, le=MAX_SECONDS)
    # What `--provision-infra` made (the provider's plan), so deprovisioning removes it.
    provisioned: dict[str, Any] | None = None
    provision: ProvisionConfirm | None = None  # only in a request; never stored

    _name = field_validator("name")(lambda v: _check_name(v, "work pool"))
    _limit = field_validator("concurrency_limit")(_check_limit)
    _template = field_validator("base_job_template")(_no_redacted_secrets)


class WorkPoolUpdate(InputModel):
    description: Text | None = None
    base_job_template: dict[str, Any] | None = None
    concurrency_limit: Count | None = None
    clear_concurrency_limit: bool = False
    paused: bool | None = None
    late_after_seconds: float | None = Field(default=None, ge=0, le=MAX_SECONDS)

    _limit = field_validator("concurrency_limit")(_check_limit)
    _template = field_validator("base_job_template")(_no_redacted_secrets)


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
    name: Name
    description: Text | None = None
    priority: Priority | None = None
    concurrency_limit: Count | None = None
    paused: bool = False

    _name = field_validator("name")(lambda v: _check_name(v, "work queue"))
    _limit = field_validator("concurrency_limit")(_check_limit)


class WorkQueueUpdate(InputModel):
    description: Text | None = None
    priority: Priority | None = None
    concurrency_limit: Count | None = None
    clear_concurrency_limit: bool = False
    paused: bool | None = None

    _limit = field_validator("concurrency_limit")(_check_limit)


# ---------------------------------------------------------------------------- schedules


class ScheduleSpec(InputModel):
    """One of cron (with time zone), interval (seconds, with anchor) or rrule."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
        {"required": ["interval"], "properties": {"interval": {"type": "number"}}},
        {"required": ["rrule"], "properties": {"rrule": {"type": "string"}}}]})

    cron: ShortText | None = None
    interval: float | None = Field(default=None, gt=0, le=MAX_SECONDS, description="seconds")
    anchor_date: When | None = None
    rrule: ShortText | None = None
    timezone: ShortText = "UTC"
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
    # What the store holds: read as it is (the spec was checked strictly on the way in).
    model_config = ConfigDict(from_attributes=True, extra="ignore", strict=False)
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
    submit_deadline_seconds: float = DEFAULT_SUBMIT_DEADLINE_SECONDS
    catchup: CatchupPolicy = "all"
    overlap: OverlapPolicy = "allow"
    created: datetime
    updated: datetime

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


# What a run executes: a command, an entrypoint, or a command among the job variables
# (the store's rule, dispatcher/store/deployments.py, stated for the OpenAPI document).
COMMAND_OR_ENTRYPOINT: dict[str, Any] = {"anyOf": [
    {"required": ["command"], "properties": {"command": {"type": "array"}}},
    {"required": ["entrypoint"], "properties": {"entrypoint": {"type": "string"}}},
    {"required": ["job_variables"],
     "properties": {"job_variables": {"type": "object", "required": ["command"]}}},
]}


class DeploymentApply(InputModel):
    """Create-or-update a deployment, keyed by flow name and deployment name."""

    model_config = ConfigDict(json_schema_extra=COMMAND_OR_ENTRYPOINT)

    name: Name
    flow_name: Name
    pool_name: RefName
    queue_name: RefName | None = None  # the pool's "default" queue when omitted
    command: list[Text] | None = Field(default=None, max_length=MAX_COMMAND_ARGS,
                                       json_schema_extra={"minItems": 1})
    entrypoint: ShortText | None = None
    source: ShortText | None = None
    image: ShortText | None = None
    parameters: Parameters = Field(default_factory=dict)
    parameter_schema: dict[str, Any] | None = None
    job_variables: JobVariables = Field(default_factory=dict)
    schedules: list[ScheduleSpec] = Field(default_factory=list, max_length=MAX_SCHEDULES)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_LABELS)
    description: Text | None = None
    version: ShortText | None = None
    concurrency_limit: Count | None = None
    paused: bool = False
    submit_deadline_seconds: float = Field(
        default=DEFAULT_SUBMIT_DEADLINE_SECONDS, gt=0, le=7 * 24 * 3600,
        description="A run not handed to the provider this long after its first submit "
                    "attempt ends FAILED as a dead letter")
    catchup: CatchupPolicy = Field(
        default="all", description="Late scheduled runs: run all, only the newest per "
                                   "deployment, or none")
    overlap: OverlapPolicy = Field(
        default="allow", description="A run due while another of the deployment is active: "
                                     "run it too, skip it, or cancel the active one")

    _name = field_validator("name")(lambda v: _check_name(v, "deployment"))
    _flow = field_validator("flow_name")(_check_flow_name)
    _limit = field_validator("concurrency_limit")(_check_limit)

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("command must be a non-empty argv list, e.g. [\"python\", \"x.py\"]")
        return value

    @field_validator("source")
    @classmethod
    def _no_credential_in_url(cls, value: str | None) -> str | None:
        # A token in the URL would be stored in plain text and handed to git on its command
        # line; a credential_env names the job's variable that holds it instead.
        if value is not None and redaction.url_credential(value):
            raise ValueError(
                f"the source URL {redaction.redact_url(value)!r} holds a credential; remove "
                "it from the URL, put the token in an env job variable and add "
                "'#credential_env=NAME' (and '&username=USER' if needed) to the source")
        return value


class DeploymentUpdate(InputModel):
    paused: bool | None = None
    description: Text | None = None
    concurrency_limit: Count | None = None
    clear_concurrency_limit: bool = False

    _limit = field_validator("concurrency_limit")(_check_limit)


# ---------------------------------------------------------------------------- runs


class StateRecord(Model):
    state: RunState
    timestamp: datetime
    message: str | None = None


class SubmitError(Model):
    """One failed submit attempt of a run, kept until it is submitted or dead-lettered."""

    at: datetime
    error: str
    probe: bool = False  # a circuit-breaker probe: not counted against the run's attempts


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
    # FAILED without ever reaching the provider (refused, out of attempts or past its
    # deployment's submit deadline); ``submit_errors`` has every attempt's error.
    dead_letter: bool = False
    submit_errors: list[SubmitError] = Field(default_factory=list)
    resubmitted_from: str | None = None  # the dead letter this run resubmits
    created: datetime
    updated: datetime
    history: list[StateRecord] = Field(default_factory=list)
    display_state: str | None = None  # LATE for a SCHEDULED run past the pool's threshold

    @field_validator("submit_errors", mode="before")
    @classmethod
    def _no_errors(cls, value: Any) -> Any:
        return [] if value is None else value


class RunCreate(InputModel):
    """A run of a deployment; ``scheduled_time`` defaults to now."""

    parameters: Parameters = Field(default_factory=dict)
    job_variables: JobVariables = Field(default_factory=dict)
    scheduled_time: When | None = None
    name: Annotated[str, Field(max_length=2 * MAX_NAME_LENGTH)] | None = None


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
