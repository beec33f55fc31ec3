"""The route-table entry and the glue that turns one into an aiohttp route.

A ``Route`` says everything about an endpoint once: method, path, handler, summary, body
model, response model, query parameters. ``register_routes`` registers it with a wrapper
that validates the query and parses the body before the handler runs, and ``openapi.py``
documents it from the same entry, so the served routes and the document cannot drift.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import hdrs, web
from multidict import MultiMapping
from pydantic import BaseModel, ValidationError

from dispatcher import redaction
from dispatcher.api import json_body
from dispatcher.api.errors import BodyInvalid, MalformedJson
from dispatcher.errors import InvalidInput
from dispatcher.models import RunState

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class QueryParam:
    name: str
    kind: Literal["int", "str", "state", "bool"]
    description: str
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None


@dataclass
class Call:
    """What the wrapper parsed for the handler: query values (defaults filled) and the body."""

    query: dict[str, Any]
    body: BaseModel | None = None

    def body_as(self, model: type[M]) -> M:
        if not isinstance(self.body, model):  # a route-table mistake, not the caller's
            raise TypeError(f"route declares body {type(self.body).__name__}, "
                            f"handler wants {model.__name__}")
        return self.body


RouteHandler = Callable[[web.Request, Call], Awaitable[web.StreamResponse]]
# Raises Unauthorized or Forbidden; runs before the query and body are read, so an anonymous
# caller learns nothing from validation errors and costs no parsing.
Authorize = Callable[[web.Request], Awaitable[None]]


@dataclass(frozen=True, eq=False)  # hashed by identity, so a table can key a cache
class Route:
    method: str
    path: str
    handler: RouteHandler
    summary: str
    body: type[BaseModel] | None = None
    request_schema: Mapping[str, Any] | None = None  # a body the handler reads itself
    response: type[BaseModel] | None = None
    many: bool = False  # the answer is a list of ``response``
    response_schema: Mapping[str, Any] | None = None  # when the answer has no model
    status: int = 200
    other_statuses: Mapping[int, str] = field(default_factory=dict)  # e.g. {200: "replayed"}
    query: tuple[QueryParam, ...] = ()
    errors: tuple[int, ...] = ()  # besides the ones every route of its kind can answer
    idempotency_key: bool = False  # reads the Idempotency-Key header
    public: bool = False  # needs no API token
    run_token: bool = False  # also takes the {id} run's own token; the handler checks it
    media_type: str = "application/json"  # of the success answer (/metrics: text)
    events_secret: bool = False  # public to the API token; ``authorize`` checks its own secret
    signed_delivery: bool = False  # a webhook delivery: public to the API token, the
    # handler checks the webhook's own secret (dispatcher/operations/webhooks.py)
    authorize: Authorize | None = None  # the route's own credential check (run token, secret)
    # Path parameters narrower than any string, by name: their JSON Schema.
    path_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


# ---------------------------------------------------------------------------- parsing


def parse_query(query: MultiMapping[str], params: tuple[QueryParam, ...]) -> dict[str, Any]:
    """Validate query parameters; unknown ones are rejected so a typo never filters nothing."""
    known = {param.name: param for param in params}
    for name in query:
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise InvalidInput(name, "unknown query parameter", f"allowed here: {allowed}")
    values: dict[str, Any] = {}
    for param in params:
        given = query.getall(param.name, [])
        if not given:
            values[param.name] = param.default
            continue
        if len(given) > 1:
            raise InvalidInput(param.name, "given more than once", "send it once")
        values[param.name] = _convert(param, given[0])
    return values


def _convert(param: QueryParam, raw: str) -> Any:
    if param.kind == "str":
        if not raw:
            raise InvalidInput(param.name, "must not be empty", "leave the parameter out instead")
        return raw
    if param.kind == "bool":
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise InvalidInput(param.name, f"{raw!r} is not a boolean", "use true or false")
    if param.kind == "state":
        try:
            return RunState(raw.upper())
        except ValueError:
            states = ", ".join(state.value for state in RunState)
            raise InvalidInput(param.name, f"{raw!r} is not a run state",
                               f"use one of: {states}") from None
    try:
        number = int(raw)
    except ValueError:
        raise InvalidInput(param.name, f"{raw!r} is not an integer", _range(param)) from None
    if (param.minimum is not None and number < param.minimum) or (
            param.maximum is not None and number > param.maximum):
        raise InvalidInput(param.name, f"{number} is out of range", _range(param))
    return number


def _range(param: QueryParam) -> str:
    if param.maximum is None:
        return f"use an integer >= {param.minimum}"
    return f"use an integer from {param.minimum} to {param.maximum}"


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The JSON body as ``model``; an empty body counts as ``{}``."""
    raw = await request.read()  # raises 413 past client_max_size
    try:
        data = json_body.loads(raw)  # 422 past MAX_JSON_DEPTH
    except json_body.NotJson as exc:
        raise MalformedJson(f"request body is not valid JSON ({exc}); "
                            "send a JSON object with Content-Type: application/json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BodyInvalid.from_validation_error(exc) from None


# ---------------------------------------------------------------------------- registration


def _endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        if route.authorize is not None:
            await route.authorize(request)
        call = Call(query=parse_query(request.query, route.query))
        if route.body is not None:
            call.body = await parse_body(request, route.body)
        return await route.handler(request, call)

    endpoint.__name__ = route.handler.__name__
    endpoint.__doc__ = route.summary
    return endpoint


def register_routes(app: web.Application, routes: tuple[Route, ...]) -> None:
    """The table's routes, path by path in the table's order, each path closed by a 405
    for the methods it does not have.

    Without that, aiohttp would hand ``PATCH /api/deployments/id/x`` to the
    ``{flow}/{name}`` path (flow "id"), and its 405s would list the methods of every
    path that matches the URL, not those the document gives this one."""
    by_path: dict[str, list[Route]] = {}
    for route in routes:
        same_path = by_path.setdefault(route.path, [])
        if any(other.method == route.method for other in same_path):
            raise ValueError(f"route {route.method} {route.path} is in the table twice")
        same_path.append(route)
    for path, same_path in by_path.items():
        for route in same_path:
            app.router.add_route(route.method, path, _endpoint(route))
        app.router.add_route(hdrs.METH_ANY, path,
                             _method_not_allowed([route.method for route in same_path]))


def _method_not_allowed(methods: list[str]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def method_not_allowed(request: web.Request) -> web.Response:
        raise web.HTTPMethodNotAllowed(request.method, methods)

    return method_not_allowed


# ---------------------------------------------------------------------------- answers


# Every answer goes through these two, so no route can show a secret the store holds.


def json_model(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(redaction.redact_model(model).model_dump(mode="json"),
                             status=status)


def json_models(models: list[M]) -> web.Response:
    return web.json_response([redaction.redact_model(model).model_dump(mode="json")
                              for model in models])


def no_content() -> web.Response:
    return web.Response(status=204)
