"""Provider events: cloud-side state changes that update a run at once (polling stays the
fallback). ``POST /api/events/{provider}`` serves every adapter that implements
``providers.base.EventSource``; the adapter authenticates the delivery itself (a shared
secret, a signed token) and says what it holds. ``/api/events/aws/ecs`` is the ECS
adapter's address from before the generic route, kept as it was."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from dispatcher.api.context import db_of, infra_changed, settings_of
from dispatcher.api.routing import Call, json_model
from dispatcher.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from dispatcher.models import RunState
from dispatcher.operations.events import apply_event
from providers import registry
from providers.base import EventAuthError, EventsNotEnabled, EventSource

REQUEST_SCHEMA: dict[str, Any] = {
    "description": "The delivery exactly as the cloud sends it (EventBridge, Eventarc / "
                   "Pub/Sub push, Event Grid); its adapter reads and authenticates it.",
}


class ProviderEventResult(BaseModel):
    applied: bool
    run_id: str | None = None
    state: RunState | None = None
    reason: str | None = None


class ProviderEventResults(BaseModel):
    """The answer to a delivery that held no event or several."""

    applied: bool
    reason: str | None = None
    results: list[ProviderEventResult]


def _event_source(name: str) -> EventSource:
    """The adapter behind ``name``: a pool type (``ecs:push``) or its short form (``ecs``)."""
    types = registry.available_types()
    pool_type = name if name in types else f"{name}:push"
    if pool_type not in types:
        choices = ", ".join(sorted(t.removesuffix(":push") for t in types))
        raise NotFound(f"no provider {name!r} takes events; known providers: {choices}")
    try:
        provider = registry.get_provider(pool_type)
    except registry.ProviderUnavailable as exc:
        raise NotFound(str(exc)) from None
    if not isinstance(provider, EventSource):
        raise NotFound(f"provider {pool_type!r} takes no pushed events; its runs are polled")
    return provider


async def provider_events(request: web.Request, call: Call) -> web.StreamResponse:
    return await _deliver(request, request.match_info["provider"])


async def ecs_task_state_change(request: web.Request, call: Call) -> web.StreamResponse:
    return await _deliver(request, "ecs:push")


async def _deliver(request: web.Request, name: str) -> web.StreamResponse:
    source = _event_source(name)
    body = await request.read()  # raises 413 past client_max_size
    secret = settings_of(request).events_secret
    try:
        delivery = source.parse_events(
            request.headers, body,
            shared_secret=secret.get_secret_value() if secret is not None else None)
    except EventsNotEnabled as exc:
        raise Forbidden(str(exc)) from None
    except EventAuthError as exc:
        raise Unauthorized(str(exc)) from None
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        raise InvalidInput(field if reason else "body", reason or str(exc),
                           "send the event exactly as the cloud delivers it") from None
    if delivery.reply is not None:  # a handshake (Event Grid validation): answered as asked
        return web.json_response(delivery.reply, status=200)
    db = db_of(request)
    outcomes = [await apply_event(db, event) for event in delivery.events]
    if delivery.events:
        # A freed slot, or news the event could not carry (an ARM write event says only
        # that something changed): the engine looks again now rather than at its timer.
        infra_changed(request)
    results = [ProviderEventResult(applied=o.applied, run_id=o.run_id, state=o.state,
                                   reason=o.reason) for o in outcomes]
    if len(results) == 1:
        return json_model(results[0], status=202)
    summary = ProviderEventResults(applied=any(r.applied for r in results),
                                   reason=delivery.note if not results else None,
                                   results=results)
    return json_model(summary, status=202)
