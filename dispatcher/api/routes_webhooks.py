"""Handlers for webhooks: managing them under /api/webhooks (the API token), and their
deliveries at /hooks/{slug}, which the API token does not guard: each delivery proves
itself with the webhook's own secret (dispatcher/operations/webhooks.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dispatcher import operations
from dispatcher.api import json_body
from dispatcher.api.context import db_of, wake_engine
from dispatcher.api.errors import MalformedJson
from dispatcher.api.routing import Call, json_model, json_models, no_content
from dispatcher.errors import UnsupportedMediaType
from dispatcher.store import webhooks as hook_store
from dispatcher.webhooks.models import HookAccepted, SecretRotation, WebhookCreate

# Form encodings carry JSON only as a field (GitHub's "payload="): refused, saying how.
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

REQUEST_SCHEMA: dict[str, Any] = {
    "description": "Any JSON value, sent as the sender signs it (README, 'Webhooks'); the "
                   "webhook's parameters template maps it to the run's parameters",
}


def _name(request: web.Request) -> str:
    return request.match_info["webhook"]


async def list_webhooks(request: web.Request, call: Call) -> web.StreamResponse:
    return json_models(await hook_store.list_webhooks(db_of(request)))


async def create_webhook(request: web.Request, call: Call) -> web.StreamResponse:
    created = await operations.webhooks.create_webhook(
        db_of(request), db_of(request).secrets, call.body_as(WebhookCreate))
    return json_model(created, status=201)


async def get_webhook(request: web.Request, call: Call) -> web.StreamResponse:
    return json_model(await hook_store.get_webhook(db_of(request), _name(request)))


async def delete_webhook(request: web.Request, call: Call) -> web.StreamResponse:
    await hook_store.delete_webhook(db_of(request), _name(request))
    return no_content()


async def rotate_webhook_secret(request: web.Request, call: Call) -> web.StreamResponse:
    rotated = await operations.webhooks.rotate_secret(
        db_of(request), db_of(request).secrets, _name(request),
        call.body_as(SecretRotation))
    return json_model(rotated)


async def disable_webhook(request: web.Request, call: Call) -> web.StreamResponse:
    return json_model(await operations.webhooks.set_enabled(db_of(request), _name(request),
                                                            False))


async def enable_webhook(request: web.Request, call: Call) -> web.StreamResponse:
    return json_model(await operations.webhooks.set_enabled(db_of(request), _name(request),
                                                            True))


def _decode(raw: bytes) -> Any:
    try:
        return json_body.loads(raw)
    except json_body.NotJson as exc:
        raise MalformedJson(f"the body is not valid JSON ({exc}); send JSON with "
                            "Content-Type: application/json") from None


async def deliver_hook(request: web.Request, call: Call) -> web.StreamResponse:
    if request.content_type in FORM_TYPES:
        raise UnsupportedMediaType(
            f"a {request.content_type} body is not taken; webhooks take JSON (in GitHub's "
            "webhook settings, choose Content type: application/json)")
    body = await request.read()  # raises 413 past client_max_size
    run, created = await operations.webhooks.deliver(
        db_of(request), db_of(request).secrets, request.match_info["slug"],
        request.headers, body, _decode)
    if created:
        wake_engine(request)
    return json_model(HookAccepted(run_id=run.id, created=created), status=202)
