"""GET /metrics: this replica's Prometheus metrics in the text exposition format.

Counters and the dispatch latency histogram are this process's (dispatcher/metrics.py);
runs by pool and state and breaker-paused pools are read from the store for each scrape.
Like every route but /api/health, it needs the API token when the server has one.
"""

from __future__ import annotations

from aiohttp import web

from dispatcher import metrics, store
from dispatcher.api.context import db_of
from dispatcher.api.routing import Call

TEXT_SCHEMA = {"type": "string", "description": "Prometheus text exposition format"}
CONTENT_TYPE = "text/plain"  # for the OpenAPI document; the answer names its version


async def metrics_text(request: web.Request, call: Call) -> web.StreamResponse:
    body = metrics.exposition(await store.store_stats(db_of(request)))
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE_LATEST})
