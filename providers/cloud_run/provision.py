"""``--provision-infra`` for cloud-run:push: plan, make, and remove.

What a pool needs: the Cloud Run, Artifact Registry and IAM APIs enabled; an Artifact
Registry Docker repository (labelled ``pushpool-pool=<pool>``, ``managed-by=pushpool``);
a service account the runs' containers run as (service accounts take no labels, so its
description carries the pool's mark), allowed to pull from that repository. The pool's
template defaults are filled from what was made (project, region, service account).

Keyless by default: the dispatcher runs with its own identity (workload identity, the
Cloud Run or GCE service account, ADC). Only with the option ``mint_key`` (a dispatcher
outside Google Cloud) is a second service account made for the dispatcher, with
``roles/run.developer`` and ``roles/logging.viewer`` on the project and
``roles/iam.serviceAccountUser`` on the runs' account, and a key minted for it, once:
a rerun that finds a user-managed key on it mints none (the first key is in the pool's
template, stored encrypted; delete the key in IAM to have a new one minted).

Planning only reads; each step is "create" or "exists", so a rerun changes nothing and
says so, and one stopped by a failure is finished by the next. Deprovisioning removes
what carries the pool's mark and nothing else; APIs stay enabled (other things may use
them). The REST APIs are called through google-auth's ``AuthorizedSession`` in the
adapter's thread pool: the IAM admin client library has no REST transport, and these
few documented calls need no other package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.base import (
    PermanentProviderError,
    ProviderError,
    ProvisionPlan,
    ProvisionStep,
    RetryableProviderError,
)
from providers.cloud_run.config import DEFAULT_REGION, check_endpoint
from providers.cloud_run.connection import Connection, GoogleClients, default_project
from providers.provision_options import ProvisionOption

SERVICE_USAGE = "https://serviceusage.googleapis.com"
ARTIFACT_REGISTRY = "https://artifactregistry.googleapis.com"
IAM = "https://iam.googleapis.com"
RESOURCE_MANAGER = "https://cloudresourcemanager.googleapis.com"
APIS = ("run.googleapis.com", "artifactregistry.googleapis.com", "iam.googleapis.com")
MARK = "pushpool-pool="
RUN_ROLES_ON_REPO = ("roles/artifactregistry.reader",)
DISPATCHER_PROJECT_ROLES = ("roles/run.developer", "roles/logging.viewer")
_UNSAFE = re.compile(r"[^a-z0-9-]+")

Apply = Callable[[], Awaitable[None]]


class ProvisionError(PermanentProviderError):
    """Provisioning stopped part way; the message lists what was and was not done."""


@dataclass(frozen=True)
class Names:
    repository: str
    run_account: str
    dispatcher_account: str


PROVISION_OPTIONS = (
    ProvisionOption("project", "Google Cloud project (default: GOOGLE_CLOUD_PROJECT)"),
    ProvisionOption("region", f"Cloud Run region (default: {DEFAULT_REGION})"),
    ProvisionOption("endpoint_url", "API endpoint (private endpoints, emulators)",
                    aliases=("api_endpoint",)),
    ProvisionOption("repository", "Artifact Registry repository name"),
    ProvisionOption("service_account_id", "the runs' service account id"),
    ProvisionOption("mint_key", "also mint a key for the dispatcher's service account",
                    "bool"),
)


def names_for(pool_name: str, options: Mapping[str, Any]) -> Names:
    base = _UNSAFE.sub("-", pool_name.lower()).strip("-") or "pool"
    if not base[0].isalpha():
        base = f"p{base}"
    digest = hashlib.sha256(pool_name.encode()).hexdigest()[:4]
    short = f"{base[:17].rstrip('-')}-{digest}"
    return Names(repository=str(options.get("repository") or f"pushpool-{base}"[:63]),
                 run_account=str(options.get("service_account_id") or f"pp-{short}-run"),
                 dispatcher_account=f"pp-{short}-disp")


def connection_from(options: Mapping[str, Any]) -> Connection:
    project = options.get("project") or default_project()
    if not project:
        raise PermanentProviderError(
            "project: provisioning needs the Google Cloud project; pass it as an option or "
            "set GOOGLE_CLOUD_PROJECT (e.g. from `gcloud config get-value project`)")
    endpoint = options.get("api_endpoint") or options.get("endpoint_url")
    kind, key = "default", None
    if endpoint:
        try:
            check_endpoint(str(endpoint))
        except ValueError as exc:
            raise PermanentProviderError(str(exc)) from None
        if str(endpoint).startswith("http://"):
            kind = "anonymous"
    creds = options.get("credentials")
    if isinstance(creds, Mapping) and creds.get("service_account_key") and kind != "anonymous":
        kind, key = "service_account_key", str(creds["service_account_key"])
    return Connection(project=str(project), region=str(options.get("region") or DEFAULT_REGION),
                      endpoint=str(endpoint).rstrip("/") if endpoint else None,
                      credential=kind, key_json=key)


@dataclass
class Planned:
    step: ProvisionStep
    apply: Apply | None = None  # None: nothing to do


@dataclass
class Context:
    google: GoogleClients
    conn: Connection
    pool_name: str
    names: Names
    mint_key: bool
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return self.conn.project

    def email(self, account: str) -> str:
        return f"{account}@{self.project}.iam.gserviceaccount.com"

    @property
    def repository(self) -> str:
        return f"projects/{self.project}/locations/{self.conn.region}/repositories/" \
               f"{self.names.repository}"

    @property
    def description(self) -> str:
        return f"Made by pushpool for work pool {self.pool_name!r} ({MARK}{self.pool_name})"

    async def call(self, method: str, host: str, path: str, body: Any = None,
                   *, missing_ok: bool = False) -> Any:
        """One REST call; 404 gives None when ``missing_ok``; errors are the contract's."""
        session = await self.google.call(self.google.session, self.conn)
        url = f"{self.conn.base_url(host)}/{path.lstrip('/')}"

        def send() -> Any:
            return session.request(method, url, json=body, timeout=60)

        try:
            response = await self.google.call(send)
        except Exception as exc:
            raise RetryableProviderError(f"{method} {path}: Google did not answer "
                                         f"({type(exc).__name__})") from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            try:
                error = response.json().get("error") or {}
            except ValueError:
                error = {}
            text = (f"{method} {path}: Google {response.status_code} "
                    f"{error.get('status', '')}: {error.get('message') or response.text[:200]}")
            if response.status_code in (429, 500, 502, 503, 504):
                raise RetryableProviderError(text, throttled=response.status_code == 429)
            raise PermanentProviderError(text)
        return response.json() if response.content else {}

    async def wait(self, host: str, operation: Mapping[str, Any]) -> None:
        """Poll a long-running operation until done (enable, create, delete)."""
        deadline = time.monotonic() + 300
        delay = 0.05
        op = dict(operation)
        while not op.get("done"):
            if time.monotonic() > deadline:
                raise RetryableProviderError(f"operation {op.get('name')} is still running")
            await _sleep(delay)
            delay = min(delay * 2, 5.0)
            op = await self.call("GET", host, f"v1/{op['name']}")
        if op.get("error"):
            raise PermanentProviderError(f"operation {op.get('name')}: "
                                         f"{op['error'].get('message')}")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


# ---------------------------------------------------------------------------- planning


async def _api_steps(ctx: Context) -> list[Planned]:
    out = []
    for api in APIS:
        found = await ctx.call("GET", SERVICE_USAGE, f"v1/projects/{ctx.project}/services/{api}",
                               missing_ok=True)
        if found is not None and found.get("state") == "ENABLED":
            out.append(Planned(ProvisionStep("API", api, "exists", "enabled")))
            continue

        async def enable(api: str = api) -> None:
            op = await ctx.call("POST", SERVICE_USAGE,
                                f"v1/projects/{ctx.project}/services/{api}:enable", {})
            await ctx.wait(SERVICE_USAGE, op)
        out.append(Planned(ProvisionStep("API", api, "create", "enable"), enable))
    return out


async def _repository_step(ctx: Context, *, read: bool) -> Planned:
    region, repo = ctx.conn.region, ctx.names.repository
    url = f"{region}-docker.pkg.dev/{ctx.project}/{repo}"
    ctx.defaults["_image_namespace"] = url
    found = await ctx.call("GET", ARTIFACT_REGISTRY, f"v1/{ctx.repository}",
                           missing_ok=True) if read else None
    step = ProvisionStep("Artifact Registry repository", f"{region}/{repo}",
                         "exists" if found is not None else "create", f"push images to {url}")
    if found is not None:
        return Planned(step)

    async def create() -> None:
        if await ctx.call("GET", ARTIFACT_REGISTRY, f"v1/{ctx.repository}",
                          missing_ok=True) is not None:
            return  # made meanwhile (or the plan could not read it before)
        op = await ctx.call(
            "POST", ARTIFACT_REGISTRY,
            f"v1/projects/{ctx.project}/locations/{region}/repositories?repositoryId={repo}",
            {"format": "DOCKER", "description": ctx.description,
             "labels": {"pushpool-pool": _label(ctx.pool_name), "managed-by": "pushpool"}})
        await ctx.wait(ARTIFACT_REGISTRY, op)
    return Planned(step, create)


def _label(value: str) -> str:
    safe = re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-")
    return safe[:63]


async def _read_account(ctx: Context, email: str) -> Any:
    found = await ctx.call("GET", IAM, f"v1/projects/{ctx.project}/serviceAccounts/{email}",
                           missing_ok=True)
    if found is not None and f"{MARK}{ctx.pool_name})" not in str(found.get("description")
                                                                 or ""):
        raise PermanentProviderError(
            f"service account {email} exists and was not made for work pool "
            f"{ctx.pool_name!r}; pass the option service_account_id to use another name")
    return found


async def _account_step(ctx: Context, account: str, purpose: str, *, read: bool) -> Planned:
    email = ctx.email(account)
    if read and await _read_account(ctx, email) is not None:
        return Planned(ProvisionStep("service account", email, "exists", purpose))

    async def create() -> None:
        if await _read_account(ctx, email) is not None:
            return
        await ctx.call("POST", IAM, f"v1/projects/{ctx.project}/serviceAccounts",
                       {"accountId": account, "serviceAccount": {
                           "displayName": f"pushpool {ctx.pool_name} ({purpose})"[:100],
                           "description": ctx.description}})
    return Planned(ProvisionStep("service account", email, "create", purpose), create)


def _has_binding(policy: Mapping[str, Any], role: str, member: str) -> bool:
    return any(b.get("role") == role and member in (b.get("members") or [])
               for b in policy.get("bindings") or [] if not b.get("condition"))


def _with_binding(policy: Mapping[str, Any], role: str, member: str) -> dict[str, Any]:
    out = json.loads(json.dumps(policy))
    bindings = out.setdefault("bindings", [])
    for binding in bindings:
        if binding.get("role") == role and not binding.get("condition"):
            if member not in binding.setdefault("members", []):
                binding["members"].append(member)
            return out
    bindings.append({"role": role, "members": [member]})
    return out


def _without_member(policy: Mapping[str, Any], member: str) -> dict[str, Any]:
    out = json.loads(json.dumps(policy))
    kept = []
    for binding in out.get("bindings") or []:
        binding["members"] = [m for m in binding.get("members") or [] if m != member]
        if binding["members"]:
            kept.append(binding)
    out["bindings"] = kept
    return out


@dataclass(frozen=True)
class PolicyTarget:
    """A resource with an IAM policy: how to read and write it."""

    host: str
    resource: str
    get_method: str  # Artifact Registry reads policies with GET, the others with POST

    async def read(self, ctx: Context, *, missing_ok: bool = False) -> Any:
        body = None if self.get_method == "GET" else {"options": {"requestedPolicyVersion": 3}}
        return await ctx.call(self.get_method, self.host, f"v1/{self.resource}:getIamPolicy",
                              body, missing_ok=missing_ok)

    async def write(self, ctx: Context, policy: Mapping[str, Any]) -> None:
        await ctx.call("POST", self.host, f"v1/{self.resource}:setIamPolicy",
                       {"policy": policy})


async def _binding_step(ctx: Context, target: PolicyTarget, role: str, member: str,
                        where: str, exists: bool) -> Planned:
    step_name = f"{role} for {member.split(':', 1)[-1]} on {where}"
    if exists:
        policy = await target.read(ctx, missing_ok=True) or {}
        if _has_binding(policy, role, member):
            return Planned(ProvisionStep("IAM binding", step_name, "exists"))

    async def grant() -> None:
        # Read-modify-write with the policy's etag: a concurrent change makes it fail
        # (409), and the rerun tries again on the new policy.
        policy = await target.read(ctx) or {}
        if not _has_binding(policy, role, member):
            await target.write(ctx, _with_binding(policy, role, member))
    return Planned(ProvisionStep("IAM binding", step_name, "create"), grant)


async def _key_step(ctx: Context, email: str, exists: bool) -> Planned:
    if exists:
        keys = await ctx.call("GET", IAM, f"v1/projects/{ctx.project}/serviceAccounts/{email}"
                                          "/keys?keyTypes=USER_MANAGED", missing_ok=True) or {}
        if keys.get("keys"):
            return Planned(ProvisionStep(
                "service account key", email, "exists",
                "minted before and kept in the pool's template; never minted twice (delete "
                "the key in IAM to mint a new one)"))

    async def mint() -> None:
        made = await ctx.call("POST", IAM,
                              f"v1/projects/{ctx.project}/serviceAccounts/{email}/keys",
                              {"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE"})
        key_json = base64.b64decode(made["privateKeyData"]).decode()
        ctx.defaults["credentials"] = {"kind": "service_account_key",
                                       "service_account_key": key_json}
    return Planned(ProvisionStep("service account key", email, "create",
                                 "for the dispatcher; stored encrypted in the pool's template"),
                   mint)


async def _plan(ctx: Context) -> list[Planned]:
    planned = await _api_steps(ctx)
    # With an API still disabled its resources cannot be read yet: they are to be made
    # (each apply looks again first, so nothing is made twice).
    read = all(p.apply is None for p in planned)
    repo = await _repository_step(ctx, read=read)
    run_sa = await _account_step(ctx, ctx.names.run_account, "the runs' identity", read=read)
    planned += [repo, run_sa]
    run_member = f"serviceAccount:{ctx.email(ctx.names.run_account)}"
    repo_policy = PolicyTarget(ARTIFACT_REGISTRY, ctx.repository, "GET")
    for role in RUN_ROLES_ON_REPO:
        planned.append(await _binding_step(ctx, repo_policy, role, run_member,
                                           f"repository {ctx.names.repository}",
                                           exists=repo.apply is None))
    ctx.defaults.update(project=ctx.project, region=ctx.conn.region,
                        service_account_name=ctx.email(ctx.names.run_account))
    if ctx.mint_key:
        disp_email = ctx.email(ctx.names.dispatcher_account)
        disp = await _account_step(ctx, ctx.names.dispatcher_account, "the dispatcher",
                                   read=read)
        planned.append(disp)
        member = f"serviceAccount:{disp_email}"
        project_policy = PolicyTarget(RESOURCE_MANAGER, f"projects/{ctx.project}", "POST")
        for role in DISPATCHER_PROJECT_ROLES:
            planned.append(await _binding_step(ctx, project_policy, role, member,
                                               f"project {ctx.project}", exists=True))
        sa_policy = PolicyTarget(IAM, f"projects/{ctx.project}/serviceAccounts/"
                                      f"{ctx.email(ctx.names.run_account)}", "POST")
        planned.append(await _binding_step(ctx, sa_policy, "roles/iam.serviceAccountUser",
                                           member, f"service account {ctx.names.run_account}",
                                           exists=run_sa.apply is None))
        planned.append(await _key_step(ctx, disp_email, exists=disp.apply is None))
    return planned


def _context(google: GoogleClients, pool_name: str, options: Mapping[str, Any]) -> Context:
    return Context(google, connection_from(options), pool_name, names_for(pool_name, options),
                   bool(options.get("mint_key")))


async def provision(google: GoogleClients, pool_name: str, options: Mapping[str, Any],
                    apply: bool, *, on_step: Callable[[ProvisionStep], None] | None = None
                    ) -> ProvisionPlan:
    ctx = _context(google, pool_name, options)
    planned = await _plan(ctx)
    target = f"project {ctx.project}, region {ctx.conn.region}"
    if apply:
        done: list[ProvisionStep] = []
        for item in planned:
            if item.apply is not None:
                try:
                    await item.apply()
                except ProviderError as exc:
                    left = [p.step for p in planned[len(done):]]
                    made = ", ".join(f"{s.resource} {s.name}" for s in done) or "nothing"
                    raise type(exc)(
                        f"provisioning stopped at {item.step.resource} {item.step.name}: "
                        f"{exc}. Done: {made}. Not done: {len(left)} step(s); run the same "
                        "command again to finish") from exc
            done.append(item.step)
            if on_step is not None:
                on_step(item.step)
    defaults = {k: v for k, v in ctx.defaults.items() if not k.startswith("_")}
    if ctx.defaults.get("_image_namespace"):
        target += f"; images: {ctx.defaults['_image_namespace']}"
    return ProvisionPlan(target, [p.step for p in planned], defaults)


# ---------------------------------------------------------------------------- removing


async def deprovision(google: GoogleClients, pool_name: str, provisioned: Mapping[str, Any],
                      apply: bool, *, on_step: Callable[[ProvisionStep], None] | None = None
                      ) -> ProvisionPlan:
    options = provisioned.get("options") if isinstance(provisioned.get("options"), Mapping) \
        else {}
    assert isinstance(options, Mapping)
    ctx = _context(google, pool_name, options)
    steps: list[tuple[ProvisionStep, Apply | None]] = []
    for api in APIS:
        steps.append((ProvisionStep("API", api, "keep", "other things may use it"), None))
    repo = await ctx.call("GET", ARTIFACT_REGISTRY, f"v1/{ctx.repository}", missing_ok=True)
    repo_name = f"{ctx.conn.region}/{ctx.names.repository}"
    if repo is None:
        steps.append((ProvisionStep("Artifact Registry repository", repo_name, "absent"), None))
    elif (repo.get("labels") or {}).get("pushpool-pool") != _label(pool_name):
        steps.append((ProvisionStep("Artifact Registry repository", repo_name, "keep",
                                    "not made for this pool"), None))
    else:
        async def delete_repo() -> None:
            op = await ctx.call("DELETE", ARTIFACT_REGISTRY, f"v1/{ctx.repository}",
                                missing_ok=True)
            if op:
                await ctx.wait(ARTIFACT_REGISTRY, op)
        steps.append((ProvisionStep("Artifact Registry repository", repo_name, "delete",
                                    "with its images"), delete_repo))
    for account in (ctx.names.dispatcher_account, ctx.names.run_account):
        email = ctx.email(account)
        found = await ctx.call("GET", IAM, f"v1/projects/{ctx.project}/serviceAccounts/{email}",
                               missing_ok=True)
        if found is None:
            if account == ctx.names.run_account or ctx.mint_key:
                steps.append((ProvisionStep("service account", email, "absent"), None))
            continue
        if f"{MARK}{pool_name})" not in str(found.get("description") or ""):
            steps.append((ProvisionStep("service account", email, "keep",
                                        "not made for this pool"), None))
            continue

        async def delete_account(email: str = email) -> None:
            member = f"serviceAccount:{email}"
            project_policy = PolicyTarget(RESOURCE_MANAGER, f"projects/{ctx.project}", "POST")
            policy = await project_policy.read(ctx) or {}
            if any(member in (b.get("members") or []) for b in policy.get("bindings") or []):
                await project_policy.write(ctx, _without_member(policy, member))
            await ctx.call("DELETE", IAM, f"v1/projects/{ctx.project}/serviceAccounts/{email}",
                           missing_ok=True)
        steps.append((ProvisionStep("service account", email, "delete",
                                    "with its keys and its project roles"), delete_account))
    if apply:
        for step, run in steps:
            if run is not None:
                await run()
            if on_step is not None:
                on_step(step)
    return ProvisionPlan(f"project {ctx.project}, region {ctx.conn.region}",
                         [s for s, _ in steps])
