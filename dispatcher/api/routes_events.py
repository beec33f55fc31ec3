"""Provider events: cloud-side state changes that update a run at once (polling stays the
fallback). ``POST /api/events/aws/ecs`` takes EventBridge "ECS Task State Change" events,
exactly as AWS sends them, authenticated by a shared secret header."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from dispatcher import store
from dispatcher.api.context import db_of, settings_of, wake_engine
from dispatcher.api.routing import Call, json_model
from dispatcher.engine.watcher import state_for
from dispatcher.errors import Forbidden, NotFound, Unauthorized
from dispatcher.models import RunState
from dispatcher.store.runs import steps_to

SECRET_HEADER = "X-Pushpool-Events-Secret"


class EventBridgeEvent(BaseModel):
    """The EventBridge envelope; ``detail`` is the service's own payload."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    source: str
    detail_type: str = Field(alias="detail-type")
    region: str | None = None
    detail: dict[str, Any]


class ProviderEventResult(BaseModel):
    applied: bool
    run_id: str | None = None
    state: RunState | None = None
    reason: str | None = None


def _check_secret(request: web.Request) -> None:
    secret = settings_of(request).events_secret
    if secret is None:
        raise Forbidden("provider events are not enabled; set PUSHPOOL_EVENTS_SECRET on the "
                        f"server and send it in the {SECRET_HEADER} header")
    given = request.headers.get(SECRET_HEADER, "")
    if not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
        raise Unauthorized(f"missing or wrong {SECRET_HEADER} header")


async def authorize(request: web.Request) -> None:
    """``Route.authorize``: the shared secret, checked before the body is read."""
    _check_secret(request)


async def ecs_task_state_change(request: web.Request, call: Call) -> web.StreamResponse:
    from providers.ecs_events import STARTED_BY_PREFIX, parse_task_state_change

    assert isinstance(call.body, EventBridgeEvent)
    event = call.body.model_dump(by_alias=True)
    parsed = parse_task_state_change(event)
    if parsed is None:
        return json_model(ProviderEventResult(
            applied=False, reason="not an ECS task state change of a task pushpool started"),
            status=202)
    infra_id, status = parsed
    run_id = str(event["detail"]["startedBy"]).removeprefix(STARTED_BY_PREFIX)
    db = db_of(request)
    try:
        run = await store.get_run(db, run_id)
    except NotFound:
        return json_model(ProviderEventResult(applied=False, run_id=run_id,
                                              reason="no such run"), status=202)
    if run.infra_id not in (None, infra_id):
        return json_model(ProviderEventResult(
            applied=False, run_id=run_id, state=run.state,
            reason="the event is about another attempt's task"), status=202)
    decided = state_for(status, run.state)
    if decided is None:  # nothing new, or out of order: the state machine only moves on
        return json_model(ProviderEventResult(applied=False, run_id=run_id, state=run.state,
                                              reason="no change"), status=202)
    state, message = decided
    fields = {"exit_code": status.exit_code} if status.exit_code is not None else {}
    moved = run_id in await store.apply_state_changes(
        db, steps_to(run_id, state, message, fields))
    if moved and state.is_final:
        wake_engine(request)  # a slot may have freed
    return json_model(ProviderEventResult(applied=moved, run_id=run_id,
                                          state=state if moved else run.state), status=202)
