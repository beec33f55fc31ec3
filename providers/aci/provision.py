"""``--provision-infra`` for azure-container-instance:push: plan, make, and remove.

What a pool needs, all tagged ``pushpool:pool=<pool>``: a resource group, a
user-assigned managed identity (the container groups' identity; keyless, no client
secret is minted), an Azure Container Registry, and an AcrPull role assignment for that
identity on the registry. The pool's template defaults are filled from what was made
(subscription, resource group, location, identities, image_registry).

Planning only reads; each step is "create" or "exists", so a rerun makes nothing and
one stopped by a failure is finished by the next. Deprovisioning removes what carries
the pool's tag (the role assignment: ours by its deterministic name on our registry)
and keeps everything else; the resource group goes only if nothing else is left in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.aci.arm import (
    CLOUDS,
    ArmClients,
    Connection,
    client_kwargs,
    is_not_found,
    provider_error,
)
from providers.aci.body import MANAGED_TAG, POOL_TAG
from providers.base import (
    PermanentProviderError,
    ProviderError,
    ProvisionPlan,
    ProvisionStep,
    RetryableProviderError,
)
from providers.provision_options import ProvisionOption

ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"  # built-in role definition id
DEFAULT_LOCATION = "eastus"
CREDENTIAL_KINDS = ("default", "service_principal", "managed_identity")
REGISTRY_SUFFIX = {"public": "azurecr.io", "china": "azurecr.cn", "usgovernment": "azurecr.us"}

Apply = Callable[[], Awaitable[str | None]]


class ProvisionError(PermanentProviderError):
    """Provisioning stopped part way; the message lists what was and was not done."""

    def __init__(self, message: str, *, done: list[ProvisionStep],
                 not_done: list[ProvisionStep], retryable: bool = False):
        super().__init__(message)
        self.done, self.not_done, self.retryable = done, not_done, retryable


@dataclass(frozen=True)
class Names:
    resource_group: str
    identity: str
    registry: str


PROVISION_OPTIONS = (
    ProvisionOption("subscription_id", "Azure subscription (default: AZURE_SUBSCRIPTION_ID)"),
    ProvisionOption("location", f"Azure location (default: {DEFAULT_LOCATION})",
                    aliases=("region",)),
    ProvisionOption("resource_group_name", "resource group (default: pushpool-<pool>)"),
    ProvisionOption("identity_name", "user-assigned managed identity name"),
    ProvisionOption("registry_name", "container registry name"),
    ProvisionOption("cloud", "Azure cloud", choices=tuple(CLOUDS)),
    ProvisionOption("resource_manager_endpoint", "Resource Manager endpoint (Azure Stack, "
                    "emulators)", aliases=("endpoint_url",)),
    ProvisionOption("token_scope", "token scope (default: <cloud's endpoint>/.default)"),
    ProvisionOption("ca_bundle", "CA bundle file that verifies the endpoint's TLS"),
    ProvisionOption("credentials", "how to sign in; service_principal takes its secret "
                    "from AZURE_CLIENT_SECRET", choices=CREDENTIAL_KINDS),
    ProvisionOption("tenant_id", "Entra tenant (service_principal)"),
    ProvisionOption("client_id", "client id (service_principal, managed_identity)"),
    ProvisionOption("authority_host", "Entra sign-in host (sovereign clouds, emulators)"),
)


def names_for(pool_name: str, subscription_id: str, options: Mapping[str, Any]) -> Names:
    base = re.sub(r"[^A-Za-z0-9-]+", "-", pool_name).strip("-").lower() or "pool"
    digest = hashlib.sha256(f"{subscription_id}:{pool_name}".encode()).hexdigest()[:8]
    registry = "pushpool" + re.sub(r"[^a-z0-9]", "", base)[:30] + digest
    return Names(
        resource_group=str(options.get("resource_group_name") or f"pushpool-{base}")[:90],
        identity=str(options.get("identity_name") or f"pushpool-{base}-identity")[:128],
        registry=str(options.get("registry_name") or registry)[:50])


def _tags(pool_name: str) -> dict[str, str]:
    return {POOL_TAG: pool_name, MANAGED_TAG: "pushpool"}


def connection_from(options: Mapping[str, Any]) -> Connection:
    """The connection provisioning uses: options first, then AZURE_* environment."""
    subscription = options.get("subscription_id") or os.environ.get("AZURE_SUBSCRIPTION_ID")
    if not subscription:
        raise PermanentProviderError(
            "subscription_id: provisioning needs the Azure subscription; set "
            "AZURE_SUBSCRIPTION_ID (e.g. from `az account show --query id -o tsv`)")
    cloud = str(options.get("cloud") or "public")
    if cloud not in CLOUDS:
        raise PermanentProviderError(f"cloud: {cloud!r} is not one of {', '.join(CLOUDS)}")
    endpoint = str(options.get("resource_manager_endpoint") or options.get("endpoint_url")
                   or CLOUDS[cloud].resource_manager).rstrip("/")
    given = options.get("credentials")
    creds: Mapping[str, Any] = given if isinstance(given, Mapping) else {
        "kind": given, **{k: options[k] for k in ("tenant_id", "client_id", "authority_host")
                          if options.get(k)}}
    kind = str(creds.get("kind") or "default")
    if kind not in CREDENTIAL_KINDS:
        raise PermanentProviderError(f"credentials: {kind!r} is not one of "
                                     f"{', '.join(CREDENTIAL_KINDS)}")
    secret = creds.get("client_secret")
    if not secret and kind == "service_principal":
        # Never an option (options are stored with the pool): the environment's, as
        # azure-identity's EnvironmentCredential reads it.
        secret = os.environ.get("AZURE_CLIENT_SECRET")
        if not secret:
            raise PermanentProviderError(
                "credentials: service_principal needs its secret in AZURE_CLIENT_SECRET")
    return Connection(
        subscription_id=str(subscription), resource_group="-", cloud=cloud, endpoint=endpoint,
        token_scope=str(options.get("token_scope") or CLOUDS[cloud].resource_manager
                        + "/.default"),
        credential=kind, tenant_id=creds.get("tenant_id"),
        client_id=creds.get("client_id"), authority_host=creds.get("authority_host"),
        ca_bundle=options.get("ca_bundle"),
        client_secret=str(secret) if secret else None)


@dataclass
class Planned:
    step: ProvisionStep
    apply: Apply | None = None  # None: nothing to do


@dataclass
class Context:
    arm: ArmClients
    conn: Connection
    pool_name: str
    names: Names
    location: str
    state: dict[str, Any] = field(default_factory=dict)

    def client(self, name: str) -> Any:
        conn, arm = self.conn, self.arm
        kwargs = client_kwargs(conn, arm.polling_interval)

        def factory() -> Any:
            cred = arm.credential(conn)
            if name == "resources":
                from azure.mgmt.resource.resources.aio import ResourceManagementClient

                return ResourceManagementClient(cred, conn.subscription_id, **kwargs)
            if name == "msi":
                from azure.mgmt.msi.aio import ManagedServiceIdentityClient

                return ManagedServiceIdentityClient(cred, conn.subscription_id, **kwargs)
            if name == "acr":
                from azure.mgmt.containerregistry.aio import ContainerRegistryManagementClient

                return ContainerRegistryManagementClient(cred, conn.subscription_id, **kwargs)
            from azure.mgmt.authorization.aio import AuthorizationManagementClient

            return AuthorizationManagementClient(cred, conn.subscription_id,
                                                 api_version="2022-04-01", **kwargs)
        return arm.other(conn, name, factory)

    @property
    def rg_id(self) -> str:
        return f"/subscriptions/{self.conn.subscription_id}/resourceGroups/" \
               f"{self.names.resource_group}"

    @property
    def identity_id(self) -> str:
        return (f"{self.rg_id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
                f"{self.names.identity}")

    @property
    def registry_id(self) -> str:
        return f"{self.rg_id}/providers/Microsoft.ContainerRegistry/registries/" \
               f"{self.names.registry}"

    @property
    def assignment_name(self) -> str:
        key = f"{self.registry_id.lower()}|{self.identity_id.lower()}|{ACR_PULL}"
        return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def _raw(response: Any, deserialized: Any, headers: Any) -> Any:
    return json.loads(response.http_response.text() or "null")


async def _get(what: str, call: Callable[[], Awaitable[Any]]) -> Any:
    """A GET's JSON, or None when the resource (or its resource group) is not there."""
    try:
        return await call()
    except Exception as exc:
        if getattr(exc, "status_code", None) == 404:
            return None
        raise provider_error(exc, what) from None


async def _do(what: str, call: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await call()
    except Exception as exc:
        raise provider_error(exc, what) from None


def _ours(resource: Mapping[str, Any] | None, pool_name: str) -> bool:
    return bool(resource) and (resource.get("tags") or {}).get(POOL_TAG) == pool_name  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- provision


async def provision(arm: ArmClients, pool_name: str, options: Mapping[str, Any], apply: bool,
                    *, on_step: Callable[[ProvisionStep], None] | None = None
                    ) -> ProvisionPlan:
    """Plan (``apply=False``) or make (``apply=True``) an ACI pool's resources.

    ``options``: subscription_id (else AZURE_SUBSCRIPTION_ID), region/location,
    endpoint_url/resource_manager_endpoint, cloud, token_scope, ca_bundle,
    credentials {...}, and names: resource_group_name, identity_name, registry_name.
    """
    conn = connection_from(options)
    names = names_for(pool_name, conn.subscription_id, options)
    location = str(options.get("location") or options.get("region") or DEFAULT_LOCATION)
    ctx = Context(arm, dataclasses.replace(conn, resource_group=names.resource_group),
                  pool_name, names, location.replace(" ", "").lower())
    planned = [await _plan_group(ctx), await _plan_identity(ctx), await _plan_registry(ctx),
               await _plan_assignment(ctx)]
    defaults = _defaults(ctx, options)
    steps = await _run(planned, apply, "provisioning", pool_name, on_step)
    if apply and ctx.state.get("login_server"):
        defaults["image_registry"]["server"] = ctx.state["login_server"]
    target = f"subscription {conn.subscription_id}, location {ctx.location}"
    return ProvisionPlan(target=target, steps=steps, template_defaults=defaults)


def _defaults(ctx: Context, options: Mapping[str, Any]) -> dict[str, Any]:
    server = ctx.state.get("login_server") or \
        f"{ctx.names.registry.lower()}.{REGISTRY_SUFFIX[ctx.conn.cloud]}"
    defaults: dict[str, Any] = {
        "subscription_id": ctx.conn.subscription_id,
        "resource_group_name": ctx.names.resource_group, "location": ctx.location,
        "identities": [ctx.identity_id],
        "image_registry": {"server": server, "identity": ctx.identity_id}}
    if ctx.conn.cloud != "public":
        defaults["cloud"] = ctx.conn.cloud
    if ctx.conn.endpoint != CLOUDS[ctx.conn.cloud].resource_manager:
        defaults["resource_manager_endpoint"] = ctx.conn.endpoint
        defaults["token_scope"] = ctx.conn.token_scope
    if options.get("ca_bundle"):
        defaults["ca_bundle"] = options["ca_bundle"]
    return defaults


async def _run(planned: list[Planned], apply: bool, what: str, pool_name: str,
               on_step: Callable[[ProvisionStep], None] | None) -> list[ProvisionStep]:
    steps: list[ProvisionStep] = []
    for index, item in enumerate(planned):
        step = item.step
        if apply and item.apply is not None:
            try:
                made = await item.apply()
            except ProviderError as exc:
                rest = [p.step for p in planned[index + 1:] if p.apply]
                changed = [s for s in steps if s.action in ("create", "delete")]
                verb = "made" if what == "provisioning" else "removed"
                done = ", ".join(f"{s.resource} {s.name}" for s in changed) or "nothing"
                todo = ", ".join(f"{s.resource} {s.name}" for s in [step, *rest])
                raise ProvisionError(
                    f"{what} pool {pool_name!r} stopped at {step.resource} {step.name}: "
                    f"{exc}. {verb.capitalize()}: {done}. Not {verb}: {todo}. Fix the cause "
                    "and rerun; what is already there is kept.", done=changed,
                    not_done=[step, *rest],
                    retryable=isinstance(exc, RetryableProviderError)) from exc
            if made:
                step = dataclasses.replace(step, detail=f"{step.detail} ({made})".strip())
        steps.append(step)
        if on_step is not None:
            on_step(step)
    return steps


async def _plan_group(ctx: Context) -> Planned:
    name = ctx.names.resource_group
    client = ctx.client("resources")
    found = await _get(f"reading resource group {name}",
                       lambda: client.resource_groups.get(name, cls=_raw))
    if found is not None:
        ctx.location = str(found.get("location") or ctx.location).replace(" ", "").lower()
        how = "made by pushpool" if _ours(found, ctx.pool_name) else "yours, kept as it is"
        return Planned(ProvisionStep("resource group", name, "exists",
                                     f"{ctx.location}, {how}"))

    async def create() -> str | None:
        body = json.dumps({"location": ctx.location, "tags": _tags(ctx.pool_name)}).encode()
        await _do(f"creating resource group {name}", lambda: client.resource_groups
                  .create_or_update(name, body, content_type="application/json"))
        return None
    return Planned(ProvisionStep("resource group", name, "create", ctx.location), create)


async def _plan_identity(ctx: Context) -> Planned:
    name, rg = ctx.names.identity, ctx.names.resource_group
    client = ctx.client("msi")
    found = await _get(f"reading managed identity {name}", lambda: client
                       .user_assigned_identities.get(rg, name, cls=_raw))
    if found is not None:
        ctx.state["principal_id"] = (found.get("properties") or {}).get("principalId")
        return Planned(ProvisionStep("managed identity", name, "exists",
                                     "user-assigned, for the container groups"))

    async def create() -> str | None:
        body = json.dumps({"location": ctx.location, "tags": _tags(ctx.pool_name)}).encode()
        made = await _do(f"creating managed identity {name}", lambda: client
                         .user_assigned_identities.create_or_update(
                             rg, name, body, content_type="application/json", cls=_raw))
        ctx.state["principal_id"] = (made.get("properties") or {}).get("principalId")
        return None
    return Planned(ProvisionStep("managed identity", name, "create",
                                 "user-assigned, for the container groups (no secret)"), create)


async def _plan_registry(ctx: Context) -> Planned:
    name, rg = ctx.names.registry, ctx.names.resource_group
    client = ctx.client("acr")
    found = await _get(f"reading container registry {name}",
                       lambda: client.registries.get(rg, name, cls=_raw))
    if found is not None:
        ctx.state["login_server"] = (found.get("properties") or {}).get("loginServer")
        return Planned(ProvisionStep("container registry", name, "exists",
                                     str(ctx.state["login_server"])))

    async def create() -> str | None:
        body = {"location": ctx.location, "tags": _tags(ctx.pool_name),
                "sku": {"name": "Basic"}, "properties": {"adminUserEnabled": False}}
        poller = await _do(f"creating container registry {name}",
                           lambda: client.registries.begin_create(rg, name, body))
        await _do(f"creating container registry {name}", poller.result)
        made = await _do(f"reading container registry {name}",
                         lambda: client.registries.get(rg, name, cls=_raw))
        ctx.state["login_server"] = (made.get("properties") or {}).get("loginServer")
        return str(ctx.state["login_server"])
    return Planned(ProvisionStep("container registry", name, "create",
                                 "Basic SKU, admin user off, for flow images"), create)


async def _plan_assignment(ctx: Context) -> Planned:
    name = ctx.assignment_name
    client = ctx.client("authorization")
    label = f"AcrPull: {ctx.names.identity} on {ctx.names.registry}"
    found = None
    if ctx.state.get("login_server"):  # no registry, no assignment on it
        found = await _get("reading role assignment", lambda: client.role_assignments.get(
            ctx.registry_id, name, cls=_raw))
    if found is not None:
        return Planned(ProvisionStep("role assignment", label, "exists", name))

    async def create() -> str | None:
        body = json.dumps({"properties": {
            "roleDefinitionId": f"/subscriptions/{ctx.conn.subscription_id}/providers/"
                                f"Microsoft.Authorization/roleDefinitions/{ACR_PULL}",
            "principalId": ctx.state.get("principal_id"),
            # ServicePrincipal: no directory lookup, so a brand-new identity works.
            "principalType": "ServicePrincipal"}}).encode()
        await _do("assigning AcrPull", lambda: client.role_assignments.create(
            ctx.registry_id, name, body, content_type="application/json"))
        return None
    return Planned(ProvisionStep("role assignment", label, "create", name), create)


# ---------------------------------------------------------------------------- deprovision


async def deprovision(arm: ArmClients, pool_name: str, provisioned: Mapping[str, Any],
                      apply: bool, *, on_step: Callable[[ProvisionStep], None] | None = None
                      ) -> ProvisionPlan:
    """Plan or remove what provisioning made: only what carries ``pushpool:pool``.
    Steps are "delete", "keep" (there but not ours, or not empty) or "absent"."""
    defaults = dict(provisioned.get("template_defaults") or {})
    options: dict[str, Any] = {**defaults, **(provisioned.get("options") or {})}
    conn = connection_from(options)
    recorded = {str(s.get("resource")): str(s.get("name"))
                for s in provisioned.get("steps") or [] if isinstance(s, Mapping)}
    names = names_for(pool_name, conn.subscription_id, options)
    names = Names(recorded.get("resource group", names.resource_group),
                  recorded.get("managed identity", names.identity),
                  recorded.get("container registry", names.registry))
    ctx = Context(arm, dataclasses.replace(conn, resource_group=names.resource_group),
                  pool_name, names, str(defaults.get("location") or DEFAULT_LOCATION))
    rg = names.resource_group
    msi, acr, auth, res = (ctx.client(n) for n in ("msi", "acr", "authorization",
                                                    "resources"))
    registry = await _get("reading container registry",
                          lambda: acr.registries.get(rg, names.registry, cls=_raw))
    identity = await _get("reading managed identity",
                          lambda: msi.user_assigned_identities.get(rg, names.identity, cls=_raw))
    group = await _get("reading resource group",
                       lambda: res.resource_groups.get(rg, cls=_raw))
    planned: list[Planned] = []
    deleting: set[str] = set()

    label = f"AcrPull: {names.identity} on {names.registry}"
    assignment = None
    if registry is not None:
        assignment = await _get("reading role assignment", lambda: auth.role_assignments.get(
            ctx.registry_id, ctx.assignment_name, cls=_raw))
    if assignment is None:
        planned.append(Planned(ProvisionStep("role assignment", label, "absent")))
    elif _ours(registry, pool_name):
        async def unassign() -> str | None:
            await _do("removing role assignment", lambda: auth.role_assignments.delete(
                ctx.registry_id, ctx.assignment_name))
            return None
        planned.append(Planned(ProvisionStep("role assignment", label, "delete"), unassign))
    else:
        planned.append(Planned(ProvisionStep("role assignment", label, "keep",
                                             "on a registry pushpool did not make")))

    for kind, name, found, remove in (
            ("container registry", names.registry, registry,
             lambda: _await_poller(acr.registries.begin_delete(rg, names.registry))),
            ("managed identity", names.identity, identity,
             lambda: msi.user_assigned_identities.delete(rg, names.identity))):
        planned.append(_removal(kind, name, found, pool_name, remove, deleting))

    if group is None:
        planned.append(Planned(ProvisionStep("resource group", rg, "absent")))
    elif not _ours(group, pool_name):
        planned.append(Planned(ProvisionStep("resource group", rg, "keep",
                                             "not made by pushpool")))
    else:
        listed = [r async for r in res.resources.list_by_resource_group(rg)]
        others = [r for r in listed if str(r.id).lower() not in deleting]
        if others:
            planned.append(Planned(ProvisionStep(
                "resource group", rg, "keep",
                f"holds {len(others)} resource(s) pushpool did not remove")))
        else:
            async def remove_group() -> str | None:
                poller = await _do(f"deleting resource group {rg}",
                                   lambda: res.resource_groups.begin_delete(rg))
                await _do(f"deleting resource group {rg}", poller.result)
                return None
            planned.append(Planned(ProvisionStep("resource group", rg, "delete"),
                                   remove_group))
    steps = await _run(planned, apply, "deprovisioning", pool_name, on_step)
    return ProvisionPlan(target=f"subscription {conn.subscription_id}", steps=steps)


async def _await_poller(begin: Awaitable[Any]) -> None:
    poller = await begin
    await poller.result()


def _removal(kind: str, name: str, found: Mapping[str, Any] | None, pool_name: str,
             remove: Callable[[], Awaitable[Any]], deleting: set[str]) -> Planned:
    if found is None:
        return Planned(ProvisionStep(kind, name, "absent"))
    if not _ours(found, pool_name):
        return Planned(ProvisionStep(kind, name, "keep", "not made by pushpool"))
    deleting.add(str(found.get("id")).lower())

    async def apply() -> str | None:
        try:
            await remove()
        except Exception as exc:
            if not is_not_found(exc):
                raise provider_error(exc, f"deleting {kind} {name}") from None
        return None
    return Planned(ProvisionStep(kind, name, "delete"), apply)
