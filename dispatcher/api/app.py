"""``create_app``: the aiohttp application with its middlewares and the route table."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from dispatcher.api.auth import auth_middleware
from dispatcher.api.browser_guard import browser_guard_middleware
from dispatcher.api.context import (
    DB_KEY,
    ENGINE_KEY,
    MAX_BODY_BYTES,
    ROUTES_KEY,
    SETTINGS_KEY,
    EngineHandle,
)
from dispatcher.api.errors import error_middleware, quiet_protocol_errors
from dispatcher.api.route_table import ROUTES
from dispatcher.api.routing import register_routes
from dispatcher.settings import Settings

if TYPE_CHECKING:
    from dispatcher.store.db import Database

__all__ = ["EngineHandle", "create_app"]


def create_app(db: Database, engine: EngineHandle | None, settings: Settings) -> web.Application:
    """The API application. ``engine`` is None when no engine runs in this process."""
    # Imported here: the console's pages use the API's context and display helpers.
    from dispatcher.console.routes import CONSOLE_PATHS, add_console

    quiet_protocol_errors()
    middlewares: list[Middleware] = [error_middleware, browser_guard_middleware()]
    token = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    if token:  # an empty PUSHPOOL_API_TOKEN means no token, as when it is unset
        # The console's pages check its session themselves (a sign-in page, not a 401).
        public = frozenset(route.path for route in ROUTES if route.public) | CONSOLE_PATHS
        run_token = frozenset((route.method, route.path) for route in ROUTES
                              if route.run_token)
        middlewares.append(auth_middleware(token, public, run_token))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    with warnings.catch_warnings():
        # Other layers look these up by name, so they stay strings, not web.AppKey.
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app[DB_KEY] = db
        app[ENGINE_KEY] = engine
        app[SETTINGS_KEY] = settings
        app[ROUTES_KEY] = ROUTES
    register_routes(app, ROUTES)
    add_console(app)
    return app
