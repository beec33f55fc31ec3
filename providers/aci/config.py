"""The azure-container-instance:push job configuration: template, pydantic model, checks.

``default_base_job_template()`` is what a new ACI pool starts with; ``parse_config``
turns a rendered job configuration into ``AciConfig``; ``validate_config`` adds what
Azure would only refuse at run time (resource sizes, GPU SKUs, ARM id shapes, a restart
policy that would never let a run end), so a deployment with a bad value is refused
(HTTP 422) when it is created, not when it runs. Messages start with the field and say
the fix; they never echo a secret.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from providers.base import COMMON_VARIABLES, ProviderConfig

DEFAULT_CPU = 1.0
DEFAULT_MEMORY_GB = 1.5
DEFAULT_CONTAINER_NAME = "pushpool"
DEFAULT_START_TIMEOUT = 600
# ACI's standard (non-GPU) limit per container group in most regions.
MAX_CPU, MAX_MEMORY_GB = 4.0, 16.0
MAX_GPU_CPU, MAX_GPU_MEMORY_GB = 24.0, 448.0
GPU_SKUS = ("K80", "P100", "V100")
GPU_COUNTS = (1, 2, 4)

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")
_LOCATION = re.compile(r"^[a-z][a-z0-9]{2,39}$")
_DNS_NAME = re.compile(r"^[a-z0-9]([a-z0-9]|-(?!-)){0,61}[a-z0-9]$|^[a-z0-9]$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_IDENTITY_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                          r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$",
                          re.IGNORECASE)
_SUBNET_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                        r"Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+$",
                        re.IGNORECASE)


class Credentials(BaseModel):
    """Who the dispatcher is to Azure. ``default``: azure-identity's DefaultAzureCredential
    chain (environment, workload identity, managed identity, Azure CLI, ...)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["default", "service_principal", "managed_identity"] = "default"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    authority_host: str | None = None  # Microsoft Entra endpoint; default: the cloud's


class ImageRegistry(BaseModel):
    """Pull credentials: an ACR reached with a managed identity, or username/password."""

    model_config = ConfigDict(extra="forbid")

    server: str
    identity: str | None = None
    username: str | None = None
    password: SecretStr | None = None


class AciConfig(ProviderConfig):
    """A rendered azure-container-instance:push job configuration."""

    # Common variables (the JobSpec's own image/command/env win).
    image: str | None = None
    command: list[str] | None = None
    env: dict[str, str | None] = Field(default_factory=dict)
    cpu: float | None = Field(default=None, gt=0)
    memory: float | None = Field(default=None, gt=0)
    timeout: int | None = Field(default=None, ge=1)
    labels: dict[str, str] = Field(default_factory=dict)

    subscription_id: str | None = None
    resource_group_name: str | None = None
    location: str | None = None
    credentials: Credentials | None = None
    cloud: Literal["public", "china", "usgovernment"] = "public"
    resource_manager_endpoint: str | None = None
    token_scope: str | None = None
    ca_bundle: str | None = None
    identities: list[str] | None = None
    image_registry: ImageRegistry | None = None
    gpu_count: int | None = None
    gpu_sku: str | None = None
    subnet_ids: list[str] | None = None
    dns_servers: list[str] | None = None
    restart_policy: str = "Never"
    os_type: str = "Linux"
    container_name: str | None = None
    keep_container_group: bool = False
    start_timeout: int = Field(default=DEFAULT_START_TIMEOUT, ge=1)
    tags: dict[str, str] = Field(default_factory=dict)
    container_group: dict[str, Any] = Field(default_factory=dict)


def _nullable(kind: str) -> list[str]:
    return [kind, "null"]


_SECRET = {"format": "password", "writeOnly": True}

_ACI_VARIABLES: dict[str, Any] = {
    "subscription_id": {"type": "string", "title": "Subscription id",
                        "description": "The Azure subscription (a GUID) the container groups "
                                       "run in."},
    "resource_group_name": {"type": "string", "title": "Resource group",
                            "description": "Where container groups are made; it must exist "
                                           "(`--provision-infra` makes one)."},
    "location": {"type": _nullable("string"), "title": "Location", "default": None,
                 "description": "Azure region, e.g. 'eastus'; default: the resource "
                                "group's."},
    "credentials": {
        "type": _nullable("object"), "title": "Azure credentials", "default": None,
        "description": "null or kind 'default': DefaultAzureCredential (environment, "
                       "workload identity, managed identity, Azure CLI). "
                       "'service_principal': tenant_id, client_id, client_secret. "
                       "'managed_identity': the dispatcher's own identity (client_id for a "
                       "user-assigned one).",
        "properties": {
            "kind": {"type": "string", "enum": ["default", "service_principal",
                                                "managed_identity"]},
            "tenant_id": {"type": _nullable("string")},
            "client_id": {"type": _nullable("string")},
            "client_secret": {"type": _nullable("string"), **_SECRET},
            "authority_host": {"type": _nullable("string"),
                               "description": "Microsoft Entra endpoint; default: the "
                                              "cloud's."}},
        "additionalProperties": False},
    "cloud": {"type": "string", "enum": ["public", "china", "usgovernment"],
              "title": "Azure cloud", "default": "public",
              "description": "Picks the Resource Manager endpoint, token scope and sign-in "
                             "authority."},
    "resource_manager_endpoint": {
        "type": _nullable("string"), "title": "Resource Manager endpoint", "default": None,
        "description": "For Azure Stack Hub or an emulator (https only); default: the "
                       "cloud's. Set token_scope with it."},
    "token_scope": {"type": _nullable("string"), "title": "Token scope", "default": None,
                    "description": "Default: '<the cloud's Resource Manager>/.default'."},
    "ca_bundle": {"type": _nullable("string"), "title": "CA bundle", "default": None,
                  "description": "PEM file to verify the Resource Manager endpoint with "
                                 "(a private CA in front of Azure Stack, an emulator)."},
    "identities": {"type": _nullable("array"), "items": {"type": "string"},
                   "title": "Managed identities", "default": None,
                   "description": "Resource ids of user-assigned managed identities given "
                                  "to the container group."},
    "image_registry": {
        "type": _nullable("object"), "title": "Image registry", "default": None,
        "description": "{server, identity} for an ACR pulled with a managed identity, or "
                       "{server, username, password}.",
        "properties": {"server": {"type": "string"},
                       "identity": {"type": _nullable("string")},
                       "username": {"type": _nullable("string")},
                       "password": {"type": _nullable("string"), **_SECRET}},
        "required": ["server"], "additionalProperties": False},
    "gpu_count": {"type": _nullable("integer"), "enum": [None, *GPU_COUNTS],
                  "title": "GPU count", "default": None},
    "gpu_sku": {"type": _nullable("string"), "enum": [None, *GPU_SKUS], "title": "GPU SKU",
                "default": None},
    "subnet_ids": {"type": _nullable("array"), "items": {"type": "string"},
                   "title": "Subnets", "default": None,
                   "description": "Virtual network subnet resource ids (private groups)."},
    "dns_servers": {"type": _nullable("array"), "items": {"type": "string"},
                    "title": "DNS servers", "default": None},
    "restart_policy": {"type": "string", "enum": ["Never", "OnFailure"],
                       "title": "Restart policy", "default": "Never",
                       "description": "Never: the run ends when its container exits."},
    "os_type": {"type": "string", "enum": ["Linux", "Windows"], "title": "OS type",
                "default": "Linux"},
    "container_name": {"type": _nullable("string"), "title": "Container name",
                       "default": None,
                       "description": f"Default: '{DEFAULT_CONTAINER_NAME}'."},
    "keep_container_group": {
        "type": "boolean", "title": "Keep container group", "default": False,
        "description": "Keep the group after the run ends (a region holds 100 by default)."},
    "start_timeout": {"type": "integer", "minimum": 1, "title": "Start timeout (s)",
                      "default": DEFAULT_START_TIMEOUT,
                      "description": "A group still pending after this long is crashed."},
    "tags": {"type": "object", "additionalProperties": {"type": "string"}, "title": "Tags",
             "default": {}, "description": "Added to every container group."},
}

_JOB_CONFIGURATION_KEYS = (*COMMON_VARIABLES, *_ACI_VARIABLES)


def default_base_job_template() -> dict[str, Any]:
    """``{"job_configuration", "variables"}`` for a new ACI pool.

    Every variable is a whole-value placeholder. ``container_group`` is a raw ARM
    container group body merged over what pushpool builds (dicts merge, lists and
    values replace; containers merge by name), for anything ACI supports that no
    variable names (volumes, probes, confidential SKUs, priority...).
    """
    job_configuration: dict[str, Any] = {key: f"{{{{ {key} }}}}"
                                         for key in _JOB_CONFIGURATION_KEYS}
    job_configuration["container_group"] = {}
    properties = copy.deepcopy({**COMMON_VARIABLES, **_ACI_VARIABLES})
    properties["cpu"] = {"type": _nullable("number"), "exclusiveMinimum": 0, "title": "CPU cores",
                         "default": None,
                         "description": f"Cores, e.g. 0.5; default {DEFAULT_CPU}."}
    properties["memory"] = {"type": _nullable("number"), "exclusiveMinimum": 0,
                            "title": "Memory (GB)", "default": None,
                            "description": f"GB in steps of 0.1; default {DEFAULT_MEMORY_GB}."}
    return {"job_configuration": job_configuration,
            "variables": {"type": "object", "properties": properties,
                          "required": ["subscription_id", "resource_group_name"]}}


def parse_config(config: Mapping[str, Any]) -> AciConfig:
    """The typed configuration, or ValueError naming the field and the fix."""
    try:
        return AciConfig.model_validate(dict(config))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(job configuration)"
            if err["type"] == "extra_forbidden":
                problems.append(f"{field}: unknown setting for an azure-container-instance "
                                "pool; remove it or put raw ARM fields under container_group")
            else:
                problems.append(f"{field}: {err['msg']}")
        raise ValueError("; ".join(problems)) from None


def normal_location(location: str) -> str:
    """'East US' -> 'eastus' (ARM accepts both; comparisons need one)."""
    return location.replace(" ", "").lower()


def check_container_group_name(name: str, field: str = "container_name") -> None:
    if not _DNS_NAME.match(name):
        raise ValueError(f"{field}: {name!r} is not a valid ACI name; use 1-63 lowercase "
                         "letters, digits and single hyphens, starting and ending with a "
                         "letter or digit")


def check_env_name(name: str) -> None:
    if not _ENV_NAME.match(name):
        raise ValueError(f"env: {name!r} is not a valid environment variable name for ACI; "
                         "use letters, digits, '_', '-' and '.', not starting with a digit")


def validate_config(config: Mapping[str, Any]) -> AciConfig:
    """Everything about a rendered configuration that can be known before a run exists.

    Raises ValueError whose message starts with the field and says the fix.
    """
    cfg = parse_config(config)
    if not cfg.subscription_id:
        raise ValueError("subscription_id: required; set the Azure subscription id (a GUID) "
                         "in the pool or the deployment")
    if not _GUID.match(cfg.subscription_id):
        raise ValueError(f"subscription_id: {cfg.subscription_id!r} is not a subscription id; "
                         "use the GUID from `az account show --query id`")
    if not cfg.resource_group_name:
        raise ValueError("resource_group_name: required; name an existing resource group "
                         "(or create the pool with --provision-infra)")
    rg = cfg.resource_group_name
    if not _RESOURCE_GROUP.match(rg) or rg.endswith("."):
        raise ValueError(f"resource_group_name: {rg!r} is not a valid resource group name; "
                         "use 1-90 letters, digits, '_', '-', '.', '(' or ')', not ending in "
                         "'.'")
    if cfg.location is not None and not _LOCATION.match(normal_location(cfg.location)):
        raise ValueError(f"location: {cfg.location!r} is not an Azure region name like "
                         "'eastus' or 'westeurope'")
    _check_credentials(cfg)
    _check_endpoint(cfg)
    _check_size(cfg)
    _check_network(cfg)
    _check_identities(cfg)
    if cfg.restart_policy not in ("Never", "OnFailure"):
        raise ValueError(f"restart_policy: {cfg.restart_policy!r} is not allowed; ACI's "
                         "'Always' restarts the container for ever, so the run would never "
                         "end: use 'Never' (or 'OnFailure')")
    if cfg.os_type not in ("Linux", "Windows"):
        raise ValueError(f"os_type: {cfg.os_type!r} is not an ACI OS type; use 'Linux' or "
                         "'Windows'")
    if cfg.container_name is not None:
        check_container_group_name(cfg.container_name)
    for name in cfg.env:
        check_env_name(name)
    if len(cfg.tags) > 40:
        raise ValueError("tags: at most 40 tags (Azure allows 50 and pushpool adds its own)")
    for key, value in cfg.tags.items():
        if len(key) > 512 or len(value) > 256 or any(c in key for c in "<>%&\\?/"):
            raise ValueError(f"tags: {key!r} is not a valid Azure tag (name ≤ 512 characters "
                             "without <>%&\\?/, value ≤ 256)")
    _check_raw(cfg.container_group)
    return cfg


def _check_credentials(cfg: AciConfig) -> None:
    creds = cfg.credentials
    if creds is None:
        return
    if creds.kind == "service_principal":
        for name in ("tenant_id", "client_id", "client_secret"):
            if not getattr(creds, name):
                raise ValueError(f"credentials.{name}: required for a service principal "
                                 "(kind 'service_principal'); or use kind 'default'")
    if creds.tenant_id and not _GUID.match(creds.tenant_id) and "." not in creds.tenant_id:
        raise ValueError("credentials.tenant_id: use the tenant's GUID or its domain name")
    if creds.authority_host and not creds.authority_host.startswith("https://"):
        raise ValueError("credentials.authority_host: must be an https:// URL")


def _check_endpoint(cfg: AciConfig) -> None:
    endpoint = cfg.resource_manager_endpoint
    if endpoint is not None and not re.match(r"^https://[^/\s]+(/.*)?$", endpoint):
        raise ValueError(f"resource_manager_endpoint: {endpoint!r} must be an https:// URL "
                         "(Azure's SDK sends bearer tokens over TLS only)")
    if cfg.token_scope is not None and not cfg.token_scope.endswith("/.default"):
        raise ValueError("token_scope: must end in '/.default', e.g. "
                         "'https://management.azure.com/.default'")


def _check_size(cfg: AciConfig) -> None:
    gpu = cfg.gpu_count is not None or cfg.gpu_sku is not None
    if gpu:
        if cfg.gpu_count not in GPU_COUNTS:
            raise ValueError(f"gpu_count: use one of {', '.join(map(str, GPU_COUNTS))} with "
                             "gpu_sku")
        if cfg.gpu_sku not in GPU_SKUS:
            raise ValueError(f"gpu_sku: use one of {', '.join(GPU_SKUS)} with gpu_count")
        if cfg.os_type != "Linux":
            raise ValueError("gpu_count: GPU container groups run Linux only; set os_type "
                             "to 'Linux'")
        if cfg.subnet_ids:
            raise ValueError("gpu_count: ACI does not put GPU groups in a virtual network; "
                             "remove subnet_ids or the GPU")
    max_cpu, max_memory = (MAX_GPU_CPU, MAX_GPU_MEMORY_GB) if gpu else (MAX_CPU, MAX_MEMORY_GB)
    if cfg.cpu is not None and cfg.cpu > max_cpu:
        raise ValueError(f"cpu: {cfg.cpu:g} cores is more than ACI gives one container group "
                         f"({max_cpu:g}{' with a GPU' if gpu else ' without a GPU'})")
    if cfg.memory is not None:
        if cfg.memory > max_memory:
            raise ValueError(f"memory: {cfg.memory:g} GB is more than ACI gives one container "
                             f"group ({max_memory:g} GB{' with a GPU' if gpu else ''})")
        if abs(cfg.memory * 10 - round(cfg.memory * 10)) > 1e-9:
            raise ValueError(f"memory: {cfg.memory:g} GB is not a multiple of 0.1 GB, which "
                             "ACI requires; round it, e.g. to "
                             f"{round(cfg.memory, 1):g}")


def _check_network(cfg: AciConfig) -> None:
    for subnet in cfg.subnet_ids or []:
        if not _SUBNET_ID.match(subnet):
            raise ValueError(f"subnet_ids: {subnet!r} is not a subnet resource id like "
                             "'/subscriptions/<sub>/resourceGroups/<rg>/providers/"
                             "Microsoft.Network/virtualNetworks/<vnet>/subnets/<subnet>'")
    if cfg.subnet_ids and cfg.os_type == "Windows":
        raise ValueError("subnet_ids: ACI puts only Linux groups in a virtual network; "
                         "remove subnet_ids or use os_type 'Linux'")
    for server in cfg.dns_servers or []:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise ValueError(f"dns_servers: {server!r} is not an IP address") from None


def _check_identities(cfg: AciConfig) -> None:
    for identity in cfg.identities or []:
        if not _IDENTITY_ID.match(identity):
            raise ValueError(f"identities: {identity!r} is not a user-assigned identity "
                             "resource id like '/subscriptions/<sub>/resourceGroups/<rg>/"
                             "providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
                             "<name>'")
    registry = cfg.image_registry
    if registry is None:
        return
    if not registry.server or "/" in registry.server:
        raise ValueError("image_registry.server: use the registry's host name, e.g. "
                         "'myregistry.azurecr.io'")
    if registry.identity and (registry.username or registry.password):
        raise ValueError("image_registry: give either identity or username/password, not "
                         "both")
    if not registry.identity and not (registry.username and registry.password):
        raise ValueError("image_registry: give identity (a managed identity with AcrPull) or "
                         "both username and password")
    if registry.identity and not _IDENTITY_ID.match(registry.identity):
        raise ValueError("image_registry.identity: use a user-assigned identity resource id "
                         "(it is added to identities)")


def _check_raw(raw: Mapping[str, Any]) -> None:
    props = raw.get("properties", {})
    if not isinstance(props, Mapping):
        raise ValueError("container_group.properties: must be an object (a raw ARM body)")
    containers = props.get("containers", [])
    if not isinstance(containers, list) or not all(
            isinstance(c, Mapping) and isinstance(c.get("name"), str) for c in containers):
        raise ValueError("container_group.properties.containers: must be a list of "
                         "{name, properties} objects")
    policy = props.get("restartPolicy")
    if policy is not None and policy not in ("Never", "OnFailure"):
        raise ValueError("container_group.properties.restartPolicy: use 'Never' or "
                         "'OnFailure'; 'Always' would never let the run end")
