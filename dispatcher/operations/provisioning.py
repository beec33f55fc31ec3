"""Provisioning a cloud pool's infrastructure: the one logic the CLI and the API share.

An adapter's ``provision(pool_name, options, apply)`` plans (reading only) or makes what
a pool of its type needs. Around it: the options it declares, checked (a ValueError or
InvalidInput naming the option), filled from a template's variable defaults; a digest of
the plan, so an apply can be refused when the cloud or the options changed since the
plan was shown; and, after applying, the template with the defaults the plan filled and
the ``provisioned`` record that deprovisioning later reads. Who calls decides whose cloud
identity is used: the CLI's is the operator's, the API's is the server's own.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from dispatcher import store
from dispatcher.errors import Conflict, InvalidInput, NotFound, PushpoolError
from dispatcher.models import WorkPool, WorkPoolCreate
from dispatcher.operations.pools import check_pool_type, create_pool
from dispatcher.store import Database
from providers.base import ProviderError, ProvisionPlan, ProvisionStep
from providers.provision_options import ProvisionOption, UnknownOption, check_values


class ProvisionFailed(PushpoolError):
    """The cloud refused a step; the provider's message says what was made and what not."""

    status = 502
    code = "provision_failed"


def declared_options(provider: Any) -> tuple[ProvisionOption, ...]:
    return tuple(getattr(provider, "provision_options", ()))


def template_options(declared: tuple[ProvisionOption, ...],
                     template: Mapping[str, Any] | None) -> dict[str, Any]:
    """The declared options a template's variable defaults already set (region, say)."""
    properties = ((template or {}).get("variables") or {}).get("properties") or {}
    options: dict[str, Any] = {}
    for option in declared:
        default = (properties.get(option.name) or {}).get("default")
        if default not in (None, "", [], {}):
            options[option.name] = default
    return options


def options_for(pool_type: str, provider: Any, given: Mapping[str, Any],
                template: Mapping[str, Any] | None, field: str) -> dict[str, Any]:
    """The options ``provision`` gets from an API body: the template's defaults, then
    ``given`` (at ``field`` in the body); a 422 naming the option it does not take or
    whose value is wrong, in the words the CLI uses for ``--infra-option``."""
    declared = declared_options(provider)
    try:
        checked = check_values(declared, given, pool_type)
    except ValueError as exc:
        key, _, message = str(exc).partition(": ")
        fix = (f"see GET /api/pool-types/{pool_type}/provision-options"
               if isinstance(exc, UnknownOption) else "")
        raise InvalidInput(f"{field}.{key}", message, fix) from None
    return {**template_options(declared, template), **checked}


def provisioning_provider(pool_type: str, field: str) -> Any:
    """The adapter of a type that can provision; a 422 naming ``type`` or ``field``."""
    provider = check_pool_type(pool_type)
    if not declared_options(provider):
        raise InvalidInput(field, f"pool type {pool_type!r} has nothing to provision",
                           "create the pool without provisioning")
    return provider


async def refuse_existing(db: Database, name: str) -> None:
    """A 409 if the pool exists: checked before the cloud is touched."""
    try:
        await store.get_pool(db, name)
    except NotFound:
        return
    raise Conflict(f"work pool {name!r} already exists; nothing was provisioned",
                   [{"field": "name", "message": "already exists",
                     "fix": "choose another name"}])


def plan_digest(pool_type: str, name: str, options: Mapping[str, Any],
                plan: ProvisionPlan) -> str:
    """What the user saw, as a short hash: pool, options, target and each step."""
    seen = {"type": pool_type, "name": name, "options": options, "target": plan.target,
            "steps": [dataclasses.asdict(step) for step in plan.steps]}
    text = json.dumps(seen, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# ``provider`` is Any: the adapters' ``provision`` takes an ``on_step`` keyword that the
# Provider protocol does not declare.
async def plan(provider: Any, name: str, options: Mapping[str, Any]) -> ProvisionPlan:
    """The plan; nothing in the cloud changes."""
    try:
        return await provider.provision(name, options, False)
    except ProviderError as exc:
        raise ProvisionFailed(str(exc)) from None


async def apply(provider: Any, name: str, options: Mapping[str, Any],
                on_step: Callable[[ProvisionStep], None] | None = None) -> ProvisionPlan:
    """Make what the plan said (each step idempotent, so a rerun finishes a stopped one)."""
    try:
        return await provider.provision(name, options, True, on_step=on_step)
    except ProviderError as exc:
        raise ProvisionFailed(str(exc)) from None


def filled_template(template: Mapping[str, Any], done: ProvisionPlan) -> dict[str, Any]:
    """``template`` with the variable defaults provisioning filled (a copy)."""
    filled = copy.deepcopy(dict(template))
    properties = (filled.get("variables") or {}).get("properties") or {}
    for key, value in done.template_defaults.items():
        if key in properties:
            properties[key]["default"] = value
    return filled


def provisioned_record(done: ProvisionPlan, options: Mapping[str, Any]) -> dict[str, Any]:
    """What the pool keeps so deprovisioning removes what was made (and only that)."""
    return {**dataclasses.asdict(done), "options": dict(options)}


async def create_provisioned_pool(db: Database, data: WorkPoolCreate) -> WorkPool:
    """``data.provision``: plan again, refuse (409) if that is not the plan the user
    confirmed, apply it with the server's own cloud identity, then create the pool with
    the filled defaults."""
    if data.provision is None:
        raise TypeError("create_provisioned_pool needs data.provision")
    given, confirm_plan = data.provision.options, data.provision.confirm_plan
    provider = provisioning_provider(data.type, "provision")
    template = data.base_job_template or provider.default_base_job_template()
    options = options_for(data.type, provider, given, template, "provision.options")
    await refuse_existing(db, data.name)
    current = await plan(provider, data.name, options)
    if plan_digest(data.type, data.name, options, current) != confirm_plan:
        raise Conflict("provision.confirm_plan: the plan changed since it was shown (or "
                       "it is not the plan of these options); nothing was made: show the "
                       "plan again and confirm that one")
    try:
        done = await apply(provider, data.name, options)
    except ProvisionFailed as exc:
        raise ProvisionFailed(f"{exc.message}; no pool was created: fix the cause and "
                              "apply again (every step is idempotent)") from None
    return await create_pool(db, data.model_copy(update={
        "provision": None, "base_job_template": filled_template(template, done),
        "provisioned": provisioned_record(done, options)}))
