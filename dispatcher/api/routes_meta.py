"""Handlers for the server itself: health, the OpenAPI document, the pool types."""

from __future__ import annotations

import logging

from aiohttp import web

from dispatcher import __version__, operations
from dispatcher.api import openapi
from dispatcher.api.context import ROUTES_KEY, db_of, settings_of
from dispatcher.api.routing import Call, json_model, json_models
from dispatcher.api.schemas import Health, PoolType
from providers.registry import available_types, missing_sdk_module

log = logging.getLogger("pushpool.api")


async def health(request: web.Request, call: Call) -> web.StreamResponse:
    try:
        database_ok = await db_of(request).ping()
    except Exception:  # ping should answer False, but a health check must answer anyway
        log.exception("database ping failed")
        database_ok = False
    return json_model(Health(status="ok" if database_ok else "degraded",
                             database="ok" if database_ok else "down", version=__version__))


async def openapi_json(request: web.Request, call: Call) -> web.StreamResponse:
    token = settings_of(request).api_token
    return web.json_response(openapi.build_document(
        request.app[ROUTES_KEY], api_token=bool(token and token.get_secret_value())))


async def list_pool_types(request: web.Request, call: Call) -> web.StreamResponse:
    return json_models([PoolType(type=name, description=entry.description, extra=entry.extra,
                                 installed=missing_sdk_module(entry) is None)
                        for name, entry in available_types().items()])


async def get_base_job_template(request: web.Request, call: Call) -> web.StreamResponse:
    return web.json_response(
        operations.pools.default_base_job_template(request.match_info["type"]))
