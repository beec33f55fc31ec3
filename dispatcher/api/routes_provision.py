"""Handlers for provisioning a cloud pool's infrastructure from the API (and the console):
the options a type takes, and its plan. Applying is ``POST /api/work-pools`` with
``provision``; each uses the server's own cloud identity (its environment, role or
profile), never credentials sent in a request."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.context import db_of
from dispatcher.api.routing import Call, json_model, json_models
from dispatcher.api.schemas import (
    PlanStep,
    ProvisionOptionInfo,
    ProvisionPlanRequest,
    ProvisionPlanView,
)
from dispatcher.operations import pools, provisioning


async def provision_options(request: web.Request, call: Call) -> web.StreamResponse:
    provider = pools.check_pool_type(request.match_info["type"])
    return json_models([ProvisionOptionInfo(
        name=o.name, help=o.help, kind=o.kind,  # type: ignore[arg-type]
        choices=list(o.choices), aliases=list(o.aliases))
        for o in provisioning.declared_options(provider)])


async def provision_plan(request: web.Request, call: Call) -> web.StreamResponse:
    pool_type = request.match_info["type"]
    body = call.body_as(ProvisionPlanRequest)
    provider = provisioning.provisioning_provider(pool_type, "type")
    template = body.base_job_template or provider.default_base_job_template()
    options = provisioning.options_for(pool_type, provider, body.options, template,
                                       "options")
    await provisioning.refuse_existing(db_of(request), body.name)
    plan = await provisioning.plan(provider, body.name, options)
    return json_model(ProvisionPlanView(
        target=plan.target, changes=plan.changes, options=options,
        steps=[PlanStep(resource=s.resource, name=s.name, action=s.action, detail=s.detail)
               for s in plan.steps],
        digest=provisioning.plan_digest(pool_type, body.name, options, plan)))
