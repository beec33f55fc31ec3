"""Handlers for deployments and for starting their runs (API and webhook)."""

from __future__ import annotations

from aiohttp import web

from dispatcher import operations, store
from dispatcher.api.context import db_of, schedules_changed, wake_engine
from dispatcher.api.display import with_display_state
from dispatcher.api.routing import Call, json_model, json_models, no_content
from dispatcher.api.schemas import DeploymentApplied, WebhookPayload
from dispatcher.errors import InvalidInput
from dispatcher.models import DeploymentApply, DeploymentUpdate, Run, RunCreate

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 200


def deployment_ref(request: web.Request) -> str:
    return f"{request.match_info['flow']}/{request.match_info['name']}"


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidInput(IDEMPOTENCY_HEADER, "must be 1-200 characters",
                           "send a unique id per logical request, e.g. a UUID")
    return key


async def _run_json(request: web.Request, run: Run, status: int) -> web.Response:
    (shown,) = await with_display_state(db_of(request), [run])
    return json_model(shown, status=status)


async def list_deployments(request: web.Request, call: Call) -> web.StreamResponse:
    return json_models(await store.list_deployments(
        db_of(request), pool_name=call.query["pool"], flow_name=call.query["flow"]))


async def apply_deployment(request: web.Request, call: Call) -> web.StreamResponse:
    deployment, created = await operations.deployments.apply_deployment(
        db_of(request), call.body_as(DeploymentApply))
    schedules_changed(request)
    wake_engine(request)  # new schedules, or an unpaused deployment, may have runs due
    return json_model(DeploymentApplied(deployment=deployment, created=created),
                      status=201 if created else 200)


async def get_deployment(request: web.Request, call: Call) -> web.StreamResponse:
    return json_model(await store.get_deployment(db_of(request), deployment_ref(request)))


async def get_deployment_by_id(request: web.Request, call: Call) -> web.StreamResponse:
    return json_model(await store.get_deployment(db_of(request), request.match_info["id"]))


async def update_deployment(request: web.Request, call: Call) -> web.StreamResponse:
    data = call.body_as(DeploymentUpdate)
    deployment = await store.update_deployment(db_of(request), deployment_ref(request), data)
    if data.paused is not None:
        schedules_changed(request)
    if data.paused is False or data.concurrency_limit is not None \
            or data.clear_concurrency_limit:
        wake_engine(request)
    return json_model(deployment)


async def delete_deployment(request: web.Request, call: Call) -> web.StreamResponse:
    await store.delete_deployment(db_of(request), deployment_ref(request))
    return no_content()


async def create_run(request: web.Request, call: Call) -> web.StreamResponse:
    run, created = await operations.runs.create_run(
        db_of(request), deployment_ref(request), call.body_as(RunCreate),
        idempotency_key=idempotency_key(request))
    if created:
        wake_engine(request)
    return await _run_json(request, run, status=201 if created else 200)


async def webhook(request: web.Request, call: Call) -> web.StreamResponse:
    payload = call.body_as(WebhookPayload)
    run, created = await operations.runs.create_run(
        db_of(request), deployment_ref(request), RunCreate(parameters=payload.parameters),
        idempotency_key=idempotency_key(request))
    if created:
        wake_engine(request)
    return await _run_json(request, run, status=202)
