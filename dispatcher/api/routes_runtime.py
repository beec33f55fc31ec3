"""Handlers for the in-container runtime: a run reports its own state and sends its logs.

These routes take the run's own token (``PUSHPOOL_RUN_TOKEN``, see dispatcher/run_tokens.py)
or the API token. The auth middleware lets them through (``Route.run_token``) and
``authorize_run`` decides here, where the run id of the path is known: a token for
another run is a 403, a forged or expired one a 401.
"""

from __future__ import annotations

import time
import weakref
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from dispatcher import run_tokens, store
from dispatcher.api.auth import bearer_token, token_matches
from dispatcher.api.context import db_of, settings_of
from dispatcher.api.display import with_display_state
from dispatcher.api.routing import Call, json_model
from dispatcher.errors import Unauthorized
from dispatcher.models import RunState
from dispatcher.store.db import Database
from providers.base import LogLine

MAX_LOG_ENTRIES = 1000
MAX_LOG_MESSAGE = 64 * 1024
MAX_STATE_MESSAGE = 8 * 1024
MISSING_MESSAGE = ("this route needs the run's token: send 'Authorization: Bearer "
                   "<PUSHPOOL_RUN_TOKEN>' (or the API token)")

# The signing key per store, read once: it never changes while a server runs.
_keys: weakref.WeakKeyDictionary[Database, bytes] = weakref.WeakKeyDictionary()


class RunStateReport(BaseModel):
    """What the runtime says about its run: started, or ended with a result or an error."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["RUNNING", "COMPLETED", "FAILED"]
    message: str | None = Field(default=None, max_length=MAX_STATE_MESSAGE)
    result: Any = Field(default=None, description="The flow's return value as JSON")
    exit_code: int | None = Field(default=None, ge=0, le=255,
                                  description="The exit code the runtime ends with")


class RuntimeLogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timestamp: AwareDatetime
    stream: str = Field(default="stdout", min_length=1, max_length=20)
    message: str = Field(max_length=MAX_LOG_MESSAGE)


class RuntimeLogBatch(RootModel[list[RuntimeLogEntry]]):
    """Log lines in the order they were written (at most 1000 per request)."""

    root: list[RuntimeLogEntry] = Field(max_length=MAX_LOG_ENTRIES)


class LogsAccepted(BaseModel):
    accepted: int


async def _signing_key(db: Database, secret_key: str | None) -> bytes:
    key = _keys.get(db)
    if key is None:
        key = await store.run_token_key(db, secret_key)
        _keys[db] = key
    return key


async def authorize_run(request: web.Request, run_id: str) -> None:
    """Let the request through with the API token (when set) or this run's own token."""
    settings = settings_of(request)
    given = bearer_token(request.headers.get("Authorization"))
    if given is None:
        raise Unauthorized(MISSING_MESSAGE)
    api_token = settings.api_token.get_secret_value() if settings.api_token else ""
    if api_token and token_matches(given, api_token):
        return
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    key = await _signing_key(db_of(request), secret)
    run_tokens.verify(key, given, run_id, time.time())


async def authorize(request: web.Request) -> None:
    """``Route.authorize`` of these routes: the API token or the {id} run's own token."""
    await authorize_run(request, request.match_info["id"])


async def report_state(request: web.Request, call: Call) -> web.StreamResponse:
    run_id = request.match_info["id"]
    body = call.body_as(RunStateReport)
    db = db_of(request)
    run = await store.report_run_state(db, run_id, RunState(body.state), body.message,
                                       body.result, exit_code=body.exit_code)
    (run,) = await with_display_state(db, [run])
    return json_model(run)


async def append_logs(request: web.Request, call: Call) -> web.StreamResponse:
    run_id = request.match_info["id"]
    entries = call.body_as(RuntimeLogBatch).root
    lines = [LogLine(timestamp=_utc(e.timestamp), stream=e.stream, message=e.message)
             for e in entries]
    count = await store.append_run_logs(db_of(request), run_id, lines)
    return json_model(LogsAccepted(accepted=count))


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
