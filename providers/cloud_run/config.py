"""The cloud-run:push job configuration: base job template, pydantic model, Cloud Run checks.

``default_base_job_template()`` is what a new Cloud Run pool starts with;
``parse_config`` turns a rendered job configuration into ``CloudRunConfig``;
``validate_config`` adds what Cloud Run itself would only refuse when a job is created or
run (memory format, CPU the memory does not allow, a timeout over 168 h, label keys
Google refuses, an ``http://`` endpoint that is not loopback), so a deployment with a bad
value is a 422 when it is made, not a failed run later. Messages start with the field,
give the valid range, and never echo a secret.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from providers.base import COMMON_VARIABLES, ProviderConfig

DEFAULT_REGION = "us-central1"
MAX_TIMEOUT = 168 * 3600  # Cloud Run jobs: a task may run for up to 168 hours
MAX_RETRIES = 10
MAX_TASKS = 10000
MIN_MEMORY_MIB, MAX_MEMORY_MIB = 512, 32 * 1024
CPU_CHOICES = (Decimal(1), Decimal(2), Decimal(4), Decimal(6), Decimal(8))
MIN_FRACTIONAL_CPU = Decimal("0.08")
LAUNCH_STAGES = ("UNIMPLEMENTED", "PRELAUNCH", "EARLY_ACCESS", "ALPHA", "BETA", "GA",
                 "DEPRECATED")
_SECRET = {"format": "password", "writeOnly": True}

_PROJECT = re.compile(r"^(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_MEMORY = re.compile(r"^([0-9]+)(Mi|Gi|M|G)$")
_CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_RESERVED_LABEL_PREFIXES = ("run.googleapis.com", "cloud.googleapis.com", "serving.knative.dev",
                            "autoscaling.knative.dev", "goog")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_REF = re.compile(r"^(?:projects/[^/]+/secrets/)?[A-Za-z0-9_-]{1,255}$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9-]+@[a-z0-9.-]+\.iam\.gserviceaccount\.com$"
                              r"|^[0-9]+-compute@developer\.gserviceaccount\.com$")
_CONNECTOR = re.compile(r"^(?:projects/[^/]+/locations/[^/]+/connectors/)?[a-z][a-z0-9-]{0,24}$")


class Credentials(BaseModel):
    """Who the dispatcher is to Google. ``default``: Application Default Credentials
    (GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, or the metadata server, which is
    workload identity on GKE and the service's own identity on Cloud Run / GCE)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["default", "service_account_key"] = "default"
    service_account_key: SecretStr | None = None  # the key file's JSON

    @field_validator("service_account_key", mode="before")
    @classmethod
    def _key_as_text(cls, value: Any) -> Any:
        # A key pasted as a JSON object is accepted as well as the file's text.
        return json.dumps(value) if isinstance(value, Mapping) else value


class SecretRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str
    version: str = "latest"


class NetworkInterface(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: str | None = None
    subnetwork: str | None = None
    tags: list[str] = Field(default_factory=list)


class CloudRunConfig(ProviderConfig):
    """A rendered cloud-run:push job configuration (unset optional values are absent)."""

    # Common variables (the JobSpec's own image/command/env/timeout win).
    image: str | None = None
    command: list[str] | None = None
    env: dict[str, str | None] = Field(default_factory=dict)
    cpu: str | float | None = None
    memory: str | int | None = None
    timeout: int | None = Field(default=None, ge=1)
    labels: dict[str, str] = Field(default_factory=dict)

    project: str | None = None
    region: str = DEFAULT_REGION
    credentials: Credentials | None = None
    api_endpoint: str | None = None
    service_account_name: str | None = None
    max_retries: int = Field(default=0, ge=0)
    task_count: int = Field(default=1, ge=1)
    parallelism: int = Field(default=0, ge=0)
    vpc_connector: str | None = None
    vpc_egress: Literal["ALL_TRAFFIC", "PRIVATE_RANGES_ONLY"] | None = None
    network_interfaces: list[NetworkInterface] | None = None
    env_from_secrets: dict[str, SecretRef] = Field(default_factory=dict)
    launch_stage: str | None = None
    keep_job: bool = False
    job_body: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a CPU quantity such as '1000m', '2' or 2")
        return value

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_text(cls, value: Any) -> Any:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError("must be a memory quantity such as '512Mi', '2Gi' or 1024 (MiB)")
        return value


def _nullable(kind: str) -> list[str]:
    return [kind, "null"]


_CLOUD_RUN_VARIABLES: dict[str, Any] = {
    "project": {"type": _nullable("string"), "title": "Project", "default": None,
                "description": "Google Cloud project id; default: the credentials' project "
                               "(GOOGLE_CLOUD_PROJECT or the key's project_id)."},
    "region": {"type": "string", "title": "Region", "default": DEFAULT_REGION,
               "description": "Cloud Run region, e.g. us-central1."},
    "credentials": {
        "type": _nullable("object"), "title": "Google credentials", "default": None,
        "description": "null or kind 'default': Application Default Credentials (workload "
                       "identity when the dispatcher runs on Google Cloud). kind "
                       "'service_account_key': a key file's JSON, stored encrypted.",
        "properties": {"kind": {"type": "string", "enum": ["default", "service_account_key"]},
                       "service_account_key": {"type": _nullable("string"), **_SECRET}},
        "additionalProperties": False},
    "api_endpoint": {"type": _nullable("string"), "title": "API endpoint", "default": None,
                     "description": "Regional endpoint (https://us-central1-run.googleapis.com),"
                                    " Private Service Connect, or an emulator. An http:// "
                                    "endpoint means anonymous credentials and must be loopback."},
    "service_account_name": {"type": _nullable("string"), "title": "Service account",
                             "default": None,
                             "description": "The identity the job's containers run as; "
                                            "default: the project's compute service account."},
    "max_retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES,
                    "title": "Task retries", "default": 0,
                    "description": "Cloud Run retries a failed task this many times."},
    "task_count": {"type": "integer", "minimum": 1, "maximum": MAX_TASKS, "title": "Tasks",
                   "default": 1},
    "parallelism": {"type": "integer", "minimum": 0, "title": "Parallelism", "default": 0,
                    "description": "Tasks run at once; 0: as many as Cloud Run allows."},
    "vpc_connector": {"type": _nullable("string"), "title": "VPC connector", "default": None,
                      "description": "Serverless VPC Access connector (name or full path)."},
    "vpc_egress": {"type": _nullable("string"), "enum": ["ALL_TRAFFIC", "PRIVATE_RANGES_ONLY",
                                                         None],
                   "title": "VPC egress", "default": None},
    "network_interfaces": {
        "type": _nullable("array"), "title": "Direct VPC egress", "default": None,
        "items": {"type": "object", "additionalProperties": False,
                  "properties": {"network": {"type": "string"}, "subnetwork": {"type": "string"},
                                 "tags": {"type": "array", "items": {"type": "string"}}}}},
    "env_from_secrets": {
        "type": "object", "title": "Environment from Secret Manager", "default": {},
        "description": "ENV_NAME -> {secret, version}; the value never passes pushpool.",
        "additionalProperties": {"type": "object", "required": ["secret"],
                                 "additionalProperties": False,
                                 "properties": {"secret": {"type": "string"},
                                                "version": {"type": "string"}}}},
    "launch_stage": {"type": _nullable("string"), "enum": [*LAUNCH_STAGES, None],
                     "title": "Launch stage", "default": None,
                     "description": "Needed for preview features (BETA, ALPHA)."},
    "keep_job": {"type": "boolean", "title": "Keep retired jobs", "default": False,
                 "description": "pushpool keeps one Cloud Run job per deployment and template; "
                                "when the template changes the old job is retired and, unless "
                                "this is set, deleted once none of its executions is active."},
}

_JOB_CONFIGURATION_KEYS = (*COMMON_VARIABLES, *_CLOUD_RUN_VARIABLES)


def default_base_job_template() -> dict[str, Any]:
    """``{"job_configuration", "variables"}`` for a new cloud-run:push pool.

    Every variable is a whole-value placeholder; ``job_body`` is raw Cloud Run Admin API
    v2 Job JSON (camelCase) merged over what pushpool builds, for anything no variable
    names.
    """
    job_configuration: dict[str, Any] = {key: f"{{{{ {key} }}}}"
                                         for key in _JOB_CONFIGURATION_KEYS}
    job_configuration["job_body"] = {}
    properties = copy.deepcopy({**COMMON_VARIABLES, **_CLOUD_RUN_VARIABLES})
    properties["cpu"] = {"type": ["string", "number", "null"], "title": "CPU", "default": None,
                         "description": "Cloud Run CPU: '1000m', '2', or a number of vCPUs "
                                        "(1, 2, 4, 6, 8, or 0.08-1); default 1."}
    properties["memory"] = {"type": ["string", "integer", "null"], "title": "Memory",
                            "default": None,
                            "description": "'512Mi', '2Gi', or MiB as a number; 512Mi-32Gi; "
                                           "default 512Mi."}
    properties["timeout"]["maximum"] = MAX_TIMEOUT
    properties["timeout"]["description"] = (
        "Seconds a task may run (Cloud Run ends it after that), up to 604800 (168 h).")
    properties["image"]["description"] = (
        "Container image, e.g. us-central1-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG.")
    return {"job_configuration": job_configuration,
            "variables": {"type": "object", "properties": properties}}


def parse_config(config: Mapping[str, Any]) -> CloudRunConfig:
    """The typed configuration, or ValueError naming the field and the fix."""
    try:
        return CloudRunConfig.model_validate(dict(config))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(job configuration)"
            if err["type"] == "extra_forbidden":
                problems.append(f"{field}: unknown setting for a cloud-run:push pool; remove "
                                "it or put raw Cloud Run Job fields under job_body")
            else:
                # pydantic's message, never the input (it may be a key).
                problems.append(f"{field}: {err['msg']}")
        raise ValueError("; ".join(problems)) from None


# ---------------------------------------------------------------------------- quantities


def cpu_quantity(value: str | float | int | None) -> Decimal | None:
    """'1000m', '2', 2, 0.5 -> vCPUs; ValueError naming the valid values."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    match = _CPU.match(text)
    if not match:
        raise ValueError(f"cpu: {text!r} is not a CPU quantity; use e.g. '1000m', '2' or 2")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        raise ValueError(f"cpu: {text!r} is not a number") from None
    cpus = number / 1000 if match.group(2) else number
    if cpus in CPU_CHOICES or MIN_FRACTIONAL_CPU <= cpus < 1:
        return cpus
    raise ValueError(f"cpu: {text} is not a Cloud Run CPU limit; use 1, 2, 4, 6 or 8 vCPUs "
                     "(or between 0.08 and 1)")


def memory_mib(value: str | int | float | None) -> int | None:
    """'512Mi', '2Gi', '1G', 1024 -> MiB; ValueError naming the format and the range."""
    if value is None or value == "":
        return None
    if isinstance(value, bool | float):
        raise ValueError(f"memory: {value!r} is not a memory quantity; use a whole number "
                         "of MiB or a quantity such as '512Mi' or '2Gi'")
    if isinstance(value, int):
        mib = value
    else:
        match = _MEMORY.match(value.strip())
        if not match:
            raise ValueError(f"memory: {value!r} is not a memory quantity; use a whole number "
                             "with Mi, Gi, M or G, e.g. '512Mi' or '2Gi'")
        number, unit = int(match.group(1)), match.group(2)
        mib = {"Mi": number, "Gi": number * 1024, "M": number * 1000 ** 2 // 1024 ** 2,
               "G": number * 1000 ** 3 // 1024 ** 2}[unit]
    if not MIN_MEMORY_MIB <= mib <= MAX_MEMORY_MIB:
        raise ValueError(f"memory: {value} is outside Cloud Run's range for jobs, 512Mi to 32Gi")
    return mib


def check_cpu_memory(cpus: Decimal | None, mib: int | None) -> None:
    """Cloud Run's CPU/memory pairing rules (docs: "Configure CPU limits", "memory limits")."""
    cpu = cpus if cpus is not None else Decimal(1)
    memory = mib if mib is not None else MIN_MEMORY_MIB
    label = f"cpu {cpu.normalize()} with memory {memory}Mi"
    if cpu < 1 and memory > 512:
        raise ValueError(f"memory: {label}: less than 1 vCPU allows at most 512Mi; raise cpu "
                         "to 1 or lower memory")
    minimum = {Decimal(4): 2048, Decimal(6): 4096, Decimal(8): 4096}.get(cpu, 0)
    if memory < minimum:
        raise ValueError(f"memory: {label}: {cpu.normalize()} vCPUs need at least "
                         f"{minimum}Mi; raise memory or lower cpu")
    for above, needs in ((16384, Decimal(6)), (8192, Decimal(4)), (4096, Decimal(2))):
        if memory > above and cpu < needs:
            raise ValueError(f"memory: {label}: more than {above}Mi needs at least "
                             f"{needs} vCPUs; raise cpu or lower memory")


# ---------------------------------------------------------------------------- checks


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("api_endpoint: use a URL with its scheme, e.g. "
                         "https://us-central1-run.googleapis.com")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("api_endpoint: an http:// endpoint sends requests unauthenticated "
                         "and in the clear, so it is allowed on loopback only (an emulator); "
                         "use https://")
    if parts.path not in ("", "/"):
        raise ValueError("api_endpoint: give the host only, without a path")


def check_labels(labels: Mapping[str, str], field: str = "labels") -> None:
    if len(labels) > 64:
        raise ValueError(f"{field}: Google allows at most 64 labels ({len(labels)} given)")
    for key, value in labels.items():
        if key.startswith(_RESERVED_LABEL_PREFIXES):
            raise ValueError(f"{field}: key {key!r} uses a namespace Google reserves "
                             f"({', '.join(_RESERVED_LABEL_PREFIXES)}); rename it")
        if not _LABEL_KEY.match(key):
            raise ValueError(f"{field}: key {key!r} is not a Google label key; keys are 1-63 "
                             "lowercase letters, digits, '_' or '-', starting with a letter")
        if not _LABEL_VALUE.match(str(value)):
            raise ValueError(f"{field}: the value of {key!r} is not a Google label value; use "
                             "at most 63 lowercase letters, digits, '_' or '-'")


def validate_config(config: Mapping[str, Any]) -> CloudRunConfig:
    """Everything Cloud Run would refuse later, refused now (ValueError naming the field)."""
    cfg = parse_config(config)
    if cfg.project is not None and not _PROJECT.match(cfg.project):
        raise ValueError(f"project: {cfg.project!r} is not a project id (6-30 lowercase "
                         "letters, digits or '-', starting with a letter)")
    if not _REGION.match(cfg.region):
        raise ValueError(f"region: {cfg.region!r} is not a Cloud Run region, e.g. us-central1")
    if cfg.api_endpoint:
        check_endpoint(cfg.api_endpoint)
    creds = cfg.credentials
    if creds is not None and creds.kind == "service_account_key":
        if creds.service_account_key is None:
            raise ValueError("credentials.service_account_key: kind 'service_account_key' "
                             "needs the key file's JSON")
        try:
            info = json.loads(creds.service_account_key.get_secret_value())
        except ValueError:
            raise ValueError("credentials.service_account_key: not JSON; paste the key file "
                             "as downloaded") from None
        if not isinstance(info, dict) or info.get("type") != "service_account" or \
                not info.get("private_key") or not info.get("client_email"):
            raise ValueError("credentials.service_account_key: not a service account key "
                             "(type 'service_account' with private_key and client_email)")
    check_cpu_memory(cpu_quantity(cfg.cpu), memory_mib(cfg.memory))
    if cfg.timeout is not None and cfg.timeout > MAX_TIMEOUT:
        raise ValueError(f"timeout: {cfg.timeout}s is over Cloud Run's maximum of "
                         f"{MAX_TIMEOUT}s (168 h)")
    if cfg.max_retries > MAX_RETRIES:
        raise ValueError(f"max_retries: {cfg.max_retries} is over Cloud Run's maximum of "
                         f"{MAX_RETRIES}")
    if cfg.task_count > MAX_TASKS:
        raise ValueError(f"task_count: {cfg.task_count} is over Cloud Run's maximum of "
                         f"{MAX_TASKS}")
    if cfg.parallelism > cfg.task_count:
        raise ValueError(f"parallelism: {cfg.parallelism} is more than task_count "
                         f"({cfg.task_count}); lower it or use 0 (no limit)")
    check_labels(cfg.labels)
    if cfg.service_account_name and not _SERVICE_ACCOUNT.match(cfg.service_account_name):
        raise ValueError(f"service_account_name: {cfg.service_account_name!r} is not a "
                         "service account email (NAME@PROJECT.iam.gserviceaccount.com)")
    if cfg.vpc_connector and not _CONNECTOR.match(cfg.vpc_connector):
        raise ValueError(f"vpc_connector: {cfg.vpc_connector!r} is not a connector name or "
                         "projects/P/locations/R/connectors/NAME")
    if cfg.vpc_connector and cfg.network_interfaces:
        raise ValueError("network_interfaces: direct VPC egress cannot be combined with "
                         "vpc_connector; use one of them")
    for name, ref in cfg.env_from_secrets.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"env_from_secrets: {name!r} is not an environment variable name")
        if not _SECRET_REF.match(ref.secret):
            raise ValueError(f"env_from_secrets.{name}.secret: use a secret name or "
                             "projects/P/secrets/NAME")
    if cfg.launch_stage is not None and cfg.launch_stage not in LAUNCH_STAGES:
        raise ValueError(f"launch_stage: {cfg.launch_stage!r} is not one of "
                         f"{', '.join(LAUNCH_STAGES)}")
    for name in cfg.env:
        if not _ENV_NAME.match(name):
            raise ValueError(f"env: {name!r} is not an environment variable name")
    return cfg
