"""What handlers read from the application: the database, the engine handle, the settings.

The keys are plain strings ("db", "engine", "settings") because other layers (engine,
console) look them up by those names.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, cast

from aiohttp import web

from dispatcher.settings import Settings

if TYPE_CHECKING:
    from dispatcher.store.db import Database

log = logging.getLogger("pushpool.api")

DB_KEY = "db"
ENGINE_KEY = "engine"
SETTINGS_KEY = "settings"
ROUTES_KEY = "routes"

MAX_BODY_BYTES = 1024 * 1024  # client_max_size: larger bodies get a 413


class EngineHandle(Protocol):
    """The part of the dispatcher engine the API talks to (None when no engine runs)."""

    def wake(self) -> None:
        """Something may have become due: look for claimable runs now."""

    def notify_cancel(self, run_id: str) -> None:
        """A run was asked to cancel: stop its infrastructure."""

    def schedules_changed(self) -> None:
        """A deployment's schedules or pause changed: materialise its runs again."""

    def infra_changed(self) -> None:
        """A provider pushed news of a run's infrastructure: claim and read statuses now."""


def db_of(request: web.Request) -> Database:
    return cast("Database", request.app[DB_KEY])


def settings_of(request: web.Request) -> Settings:
    return cast(Settings, request.app[SETTINGS_KEY])


def _engine_of(request: web.Request) -> EngineHandle | None:
    return cast("EngineHandle | None", request.app[ENGINE_KEY])


def wake_engine(request: web.Request) -> None:
    """Tell the engine to look for due runs. The write is already committed, so a failing
    wake-up only delays the run until the engine's next timer; it must not fail the request."""
    engine = _engine_of(request)
    if engine is None:
        return
    try:
        engine.wake()
    except Exception:
        log.exception("engine.wake() failed; the run will be picked up on the next timer")


def infra_changed(request: web.Request) -> None:
    """A provider event arrived: the engine claims and reads statuses now."""
    engine = _engine_of(request)
    if engine is None:
        return
    try:
        engine.infra_changed()
    except Exception:
        log.exception("engine.infra_changed() failed; the next poll will read the status")


def schedules_changed(request: web.Request) -> None:
    engine = _engine_of(request)
    if engine is None:
        return
    try:
        engine.schedules_changed()
    except Exception:
        log.exception("engine.schedules_changed() failed; the scheduler's timer will catch up")


def notify_cancel(request: web.Request, run_id: str) -> None:
    engine = _engine_of(request)
    if engine is None:
        return
    try:
        engine.notify_cancel(run_id)
    except Exception:
        log.exception("engine.notify_cancel(%s) failed; the watcher will see CANCELLING", run_id)
