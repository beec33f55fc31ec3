"""Handlers for work pools and their queues."""

from __future__ import annotations

from aiohttp import web

from dispatcher import operations, store
from dispatcher.api.context import db_of, wake_engine
from dispatcher.api.display import with_display_state
from dispatcher.api.routing import Call, json_model, json_models, no_content
from dispatcher.models import WorkPoolCreate, WorkPoolUpdate, WorkQueueCreate, WorkQueueUpdate


def may_free_runs(data: WorkPoolUpdate | WorkQueueUpdate) -> bool:
    """Whether an update can make waiting runs claimable: unpausing or a limit change."""
    return (data.paused is False or data.concurrency_limit is not None
            or data.clear_concurrency_limit)


# ---------------------------------------------------------------------------- pools


async def list_pools(request: web.Request, call: Call) -> web.StreamResponse:
    return json_models(await store.list_pools(db_of(request)))


async def create_pool(request: web.Request, call: Call) -> web.StreamResponse:
    data = call.body_as(WorkPoolCreate)
    if data.provision is None:
        pool = await operations.pools.create_pool(db_of(request), data)
    else:
        pool = await operations.provisioning.create_provisioned_pool(db_of(request), data)
    return json_model(pool, status=201)


async def get_pool(request: web.Request, call: Call) -> web.StreamResponse:
    return json_model(await store.get_pool(db_of(request), request.match_info["pool"]))


async def update_pool(request: web.Request, call: Call) -> web.StreamResponse:
    data = call.body_as(WorkPoolUpdate)
    pool = await operations.pools.update_pool(db_of(request), request.match_info["pool"], data)
    if may_free_runs(data):
        wake_engine(request)
    return json_model(pool)


async def delete_pool(request: web.Request, call: Call) -> web.StreamResponse:
    await store.delete_pool(db_of(request), request.match_info["pool"],
                            cascade=call.query["cascade"],
                            deployments_confirmed=call.query["deployments"])
    return no_content()


async def pause_pool(request: web.Request, call: Call) -> web.StreamResponse:
    pool = await operations.pools.update_pool(db_of(request), request.match_info["pool"],
                                   WorkPoolUpdate(paused=True))
    return json_model(pool)


async def resume_pool(request: web.Request, call: Call) -> web.StreamResponse:
    pool = await operations.pools.update_pool(db_of(request), request.match_info["pool"],
                                   WorkPoolUpdate(paused=False))
    wake_engine(request)
    return json_model(pool)


async def preview_pool(request: web.Request, call: Call) -> web.StreamResponse:
    db = db_of(request)
    runs = await store.preview_pool(db, request.match_info["pool"], limit=call.query["limit"])
    return json_models(await with_display_state(db, runs))


# ---------------------------------------------------------------------------- queues


async def list_pool_queues(request: web.Request, call: Call) -> web.StreamResponse:
    return json_models(await store.list_queues(db_of(request), request.match_info["pool"]))


async def create_queue(request: web.Request, call: Call) -> web.StreamResponse:
    queue = await store.create_queue(db_of(request), request.match_info["pool"],
                                     call.body_as(WorkQueueCreate))
    return json_model(queue, status=201)


async def get_queue(request: web.Request, call: Call) -> web.StreamResponse:
    return json_model(await store.get_queue(db_of(request), request.match_info["pool"],
                                            request.match_info["queue"]))


async def update_queue(request: web.Request, call: Call) -> web.StreamResponse:
    data = call.body_as(WorkQueueUpdate)
    queue = await store.update_queue(db_of(request), request.match_info["pool"],
                                     request.match_info["queue"], data)
    if may_free_runs(data):
        wake_engine(request)
    return json_model(queue)


async def delete_queue(request: web.Request, call: Call) -> web.StreamResponse:
    await store.delete_queue(db_of(request), request.match_info["pool"],
                             request.match_info["queue"])
    return no_content()


async def list_all_queues(request: web.Request, call: Call) -> web.StreamResponse:
    return json_models(await store.list_queues(db_of(request), call.query["pool"]))
