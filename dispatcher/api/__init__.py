"""The HTTP API: an aiohttp application serving JSON under /api, described by OpenAPI 3.1.

``create_app(db, engine, settings)`` builds it; the route table in ``route_table.py`` is the
single source of both the registered routes and the OpenAPI document.
"""

from __future__ import annotations

from dispatcher.api.app import EngineHandle, create_app

__all__ = ["EngineHandle", "create_app"]
