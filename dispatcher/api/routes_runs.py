"""Handlers for runs: listing, one run with its history, cancelling, resubmitting, logs."""

from __future__ import annotations

from aiohttp import web

from dispatcher import operations, store
from dispatcher.api.context import db_of, notify_cancel, wake_engine
from dispatcher.api.display import with_display_state
from dispatcher.api.routing import Call, json_model, json_models


async def list_runs(request: web.Request, call: Call) -> web.StreamResponse:
    db = db_of(request)
    query = call.query
    runs = await store.list_runs(db, state=query["state"], pool_name=query["pool"],
                                 deployment_ref=query["deployment"],
                                 dead_letter=query["dead_letter"], limit=query["limit"],
                                 offset=query["offset"])
    return json_models(await with_display_state(db, runs))


async def run_id(request: web.Request) -> str:
    """The run the path names: its id, or the first characters of it (422 when those are
    malformed or shared by several runs)."""
    return await store.resolve_run_id(db_of(request), request.match_info["id"])


async def get_run(request: web.Request, call: Call) -> web.StreamResponse:
    db = db_of(request)
    (run,) = await with_display_state(db, [await store.get_run(db, await run_id(request))])
    return json_model(run)


async def cancel_run(request: web.Request, call: Call) -> web.StreamResponse:
    db = db_of(request)
    run = await store.cancel_run(db, await run_id(request))
    notify_cancel(request, run.id)
    (run,) = await with_display_state(db, [run])
    return json_model(run)


async def resubmit_run(request: web.Request, call: Call) -> web.StreamResponse:
    db = db_of(request)
    run, created = await operations.runs.resubmit_run(db, await run_id(request))
    if created:
        wake_engine(request)
    (run,) = await with_display_state(db, [run])
    return json_model(run, status=201 if created else 200)


async def read_logs(request: web.Request, call: Call) -> web.StreamResponse:
    return json_models(await store.read_logs(db_of(request), await run_id(request),
                                             after_id=call.query["after"],
                                             limit=call.query["limit"],
                                             tail=call.query["tail"]))
