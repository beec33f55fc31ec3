"""The modal:push job configuration: base job template, its pydantic model, early checks.

``default_base_job_template()`` is what a new Modal pool starts with; ``parse_config``
turns a rendered job configuration into ``ModalConfig``; ``validate_config`` adds what
Modal would only refuse when a run starts (names, the 24 h sandbox limit, GPU spellings,
options pushpool sets itself), so a deployment with a bad value is refused (HTTP 422)
when it is created. Messages start with the field and say the fix; they never echo a
secret. Nothing here imports the ``modal`` SDK.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from providers.base import COMMON_VARIABLES, ProviderConfig

DEFAULT_SERVER_URL = "https://api.modal.com"  # modal.config's default
MAX_TIMEOUT = 24 * 60 * 60  # Modal's longest sandbox lifetime
_SECRET = {"format": "password", "writeOnly": True}
# Modal object names (apps, sandboxes, secrets, environments): modal._utils.name_utils.
_OBJECT_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,64}$")
_APP_ID = re.compile(r"^ap-[a-zA-Z0-9]{22}$")
# "T4", "a10g", "A100-80GB", "H100:8", "any" (Modal's GPU spellings; count after a colon).
_GPU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(:[1-9][0-9]?)?$")
_PIP_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~*;:/@+ '\"]*$")

# Sandbox.create arguments pushpool sets from its own variables; ``options`` may not
# override them (the variable is the one place to set each).
RESERVED_OPTIONS: dict[str, str] = {
    "args": "command", "app": "app_name", "name": "(pushpool names sandboxes itself)",
    "tags": "labels", "image": "image / pip_packages", "env": "env", "secrets": "secrets",
    "client": "credentials / server_url", "cpu": "cpu", "memory": "memory", "gpu": "gpu",
    "region": "region", "cloud": "cloud", "timeout": "timeout",
    "environment_name": "environment",
}


class Credentials(BaseModel):
    """A Modal API token (``modal token new``); null means MODAL_TOKEN_ID /
    MODAL_TOKEN_SECRET or the active ~/.modal.toml profile of the dispatcher's host."""

    model_config = ConfigDict(extra="forbid")

    token_id: str
    token_secret: SecretStr


class ModalConfig(ProviderConfig):
    """A rendered modal:push job configuration (unset optional values are absent)."""

    # Common variables (the dispatcher passes them in the JobSpec too; the JobSpec wins,
    # except cpu, which is read from here first).
    image: str | None = None
    command: list[str] | None = None
    env: dict[str, str | None] = Field(default_factory=dict)
    cpu: float | None = Field(default=None, gt=0)
    memory: int | None = Field(default=None, ge=1)
    timeout: int | None = Field(default=None, ge=1)
    labels: dict[str, str] = Field(default_factory=dict)

    credentials: Credentials | None = None
    server_url: str | None = None
    app_name: str | None = None
    environment: str | None = None
    pip_packages: list[str] = Field(default_factory=list)
    python_version: str | None = None
    registry_secret: str | None = None
    secrets: list[str] = Field(default_factory=list)
    gpu: str | None = None
    region: str | list[str] | None = None
    cloud: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


_MODAL_VARIABLES: dict[str, Any] = {
    "credentials": {
        "type": ["object", "null"], "title": "Modal token", "default": None,
        "description": "A token from `modal token new` (stored encrypted). null: the "
                       "dispatcher's MODAL_TOKEN_ID / MODAL_TOKEN_SECRET or its "
                       "~/.modal.toml profile.",
        "properties": {"token_id": {"type": "string", "title": "Token id"},
                       "token_secret": {"type": "string", "title": "Token secret", **_SECRET}},
        "required": ["token_id", "token_secret"],
        "additionalProperties": False},
    "server_url": {"type": ["string", "null"], "title": "Server URL", "default": None,
                   "description": f"Modal's API; default: MODAL_SERVER_URL, else "
                                  f"{DEFAULT_SERVER_URL}."},
    "app_name": {"type": ["string", "null"], "title": "App", "default": None,
                 "description": "The Modal app the pool's sandboxes run in (made if missing); "
                                "default: pushpool-<pool>."},
    "environment": {"type": ["string", "null"], "title": "Environment", "default": None,
                    "description": "Modal environment; default: MODAL_ENVIRONMENT, else the "
                                   "workspace's default."},
    "pip_packages": {"type": "array", "items": {"type": "string"}, "title": "pip packages",
                     "default": [],
                     "description": "Installed into the image; with no image, into Modal's "
                                    "Debian slim Python image (add 'pushpool' for entrypoint "
                                    "deployments)."},
    "python_version": {"type": ["string", "null"], "title": "Python version", "default": None,
                       "description": "Of the Debian slim image used when no image is set."},
    "registry_secret": {"type": ["string", "null"], "title": "Registry secret",
                        "default": None,
                        "description": "Modal secret with REGISTRY_USERNAME / "
                                       "REGISTRY_PASSWORD for a private image."},
    "secrets": {"type": "array", "items": {"type": "string"}, "title": "Modal secrets",
                "default": [],
                "description": "Names of Modal secrets whose keys become environment "
                               "variables."},
    "gpu": {"type": ["string", "null"], "title": "GPU", "default": None,
            "description": "e.g. 'T4', 'A10G', 'A100-80GB', 'H100:2', 'any'."},
    "region": {"type": ["string", "array", "null"], "items": {"type": "string"},
               "title": "Region", "default": None,
               "description": "A Modal region or a list of them, e.g. 'us-east'."},
    "cloud": {"type": ["string", "null"], "title": "Cloud", "default": None,
              "description": "'aws', 'gcp', 'oci' or 'auto'."},
    "options": {"type": "object", "title": "Other Sandbox.create options", "default": {},
                "description": "Any other keyword the modal client's Sandbox.create takes "
                               "(e.g. workdir, idle_timeout, block_network)."},
}

_JOB_CONFIGURATION_KEYS = (*COMMON_VARIABLES, *_MODAL_VARIABLES)


def default_base_job_template() -> dict[str, Any]:
    """``{"job_configuration", "variables"}`` for a new modal:push pool.

    Every variable is a whole-value placeholder (it keeps its type; unset optional
    values drop their key)."""
    job_configuration: dict[str, Any] = {key: f"{{{{ {key} }}}}"
                                         for key in _JOB_CONFIGURATION_KEYS}
    properties = copy.deepcopy({**COMMON_VARIABLES, **_MODAL_VARIABLES})
    properties["cpu"] = {"type": ["number", "null"], "exclusiveMinimum": 0, "title": "CPU",
                         "default": None,
                         "description": "Fractional CPU cores, e.g. 0.5; default: Modal's."}
    properties["memory"]["description"] = "MiB; default: Modal's."
    properties["timeout"].update(
        default=MAX_TIMEOUT, maximum=MAX_TIMEOUT,
        description=f"Seconds before Modal ends the sandbox; at most {MAX_TIMEOUT} "
                    "(Modal's maximum, the default).")
    properties["image"]["description"] = (
        "A registry image (e.g. 'python:3.12-slim'); default: Modal's Debian slim Python "
        "image with pip_packages.")
    return {"job_configuration": job_configuration,
            "variables": {"type": "object", "properties": properties}}


def parse_config(config: Mapping[str, Any]) -> ModalConfig:
    """The typed configuration, or ValueError naming the field and the fix."""
    try:
        return ModalConfig.model_validate(dict(config))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(job configuration)"
            if err["type"] == "extra_forbidden":
                problems.append(f"{field}: unknown setting for a modal:push pool; remove it "
                                "or put Sandbox.create keywords under options")
            else:
                # err["msg"] describes the expected type, never the (maybe secret) value.
                problems.append(f"{field}: {err['msg']}")
        raise ValueError("; ".join(problems)) from None


def _check_name(field: str, value: str, what: str) -> None:
    if not _OBJECT_NAME.match(value) or _APP_ID.match(value):
        raise ValueError(f"{field}: {value!r} is not a valid Modal {what} name; use at most "
                         "64 letters, digits, '-', '_' or '.'")


def validate_config(config: Mapping[str, Any]) -> ModalConfig:
    """Everything about a rendered configuration that can be known before a run exists.

    Raises ValueError whose message starts with the field and says the fix.
    """
    cfg = parse_config(config)
    if cfg.credentials is not None:
        if not cfg.credentials.token_id.strip():
            raise ValueError("credentials.token_id: is empty; paste the id from "
                             "`modal token new` (it starts with 'ak-')")
        if not cfg.credentials.token_secret.get_secret_value().strip():
            raise ValueError("credentials.token_secret: is empty; paste the secret from "
                             "`modal token new` (it starts with 'as-')")
    if cfg.server_url is not None and not re.match(r"^(https?|unix)://[^\s]+$", cfg.server_url):
        raise ValueError(f"server_url: {cfg.server_url!r} is not a URL; use e.g. "
                         f"{DEFAULT_SERVER_URL}")
    if cfg.app_name is not None:
        _check_name("app_name", cfg.app_name, "app")
    if cfg.environment is not None and cfg.environment != "":
        _check_name("environment", cfg.environment, "environment")
    for index, name in enumerate(cfg.secrets):
        _check_name(f"secrets[{index}]", name, "secret")
    if cfg.registry_secret is not None:
        _check_name("registry_secret", cfg.registry_secret, "secret")
    if cfg.timeout is not None and cfg.timeout > MAX_TIMEOUT:
        raise ValueError(f"timeout: {cfg.timeout} s is longer than Modal allows a sandbox to "
                         f"live; use at most {MAX_TIMEOUT} (24 h)")
    if cfg.gpu is not None and not _GPU.match(cfg.gpu):
        raise ValueError(f"gpu: {cfg.gpu!r} is not a Modal GPU; use a type such as 'T4', "
                         "'A10G', 'A100-80GB' or 'any', optionally with a count ('H100:2')")
    if cfg.python_version is not None and not re.match(r"^3\.\d{1,2}$", cfg.python_version):
        raise ValueError(f"python_version: {cfg.python_version!r} is not a Python version "
                         "like '3.12'")
    for index, requirement in enumerate(cfg.pip_packages):
        if not requirement.strip() or not _PIP_REQUIREMENT.match(requirement.strip()):
            raise ValueError(f"pip_packages[{index}]: {requirement!r} is not a pip "
                             "requirement such as 'pandas==2.2'")
    regions = [cfg.region] if isinstance(cfg.region, str) else cfg.region or []
    for index, region in enumerate(regions):
        if not region.strip():
            raise ValueError(f"region[{index}]: is empty; name a Modal region such as "
                             "'us-east'")
    for key in cfg.options:
        if key in RESERVED_OPTIONS:
            raise ValueError(f"options.{key}: pushpool sets this itself; use "
                             f"{RESERVED_OPTIONS[key]} instead")
        if not key.isidentifier():
            raise ValueError(f"options.{key}: is not a keyword argument name")
    if cfg.command is not None and not cfg.command:
        raise ValueError("command: is an empty list; give the argv to run, or null")
    for key in cfg.env:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ValueError(f"env.{key}: is not a valid environment variable name")
    return cfg
