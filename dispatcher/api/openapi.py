"""Builds the OpenAPI 3.1 document from the route table (never written by hand).

Component schemas come from the pydantic models themselves (request bodies in validation
mode, answers in serialization mode), so the document says what the server accepts and
returns. Security follows the server's settings: the API token is required only by a
server that has one (PUSHPOOL_API_TOKEN), so each server serves its own document.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from dispatcher import __version__
from dispatcher.api.browser_guard import MUTATING, OWN_AUTH_PREFIXES
from dispatcher.api.routing import QueryParam, Route
from dispatcher.api.schemas import Error
from dispatcher.models import RunState

REF_TEMPLATE = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearer"
RUN_TOKEN_SCHEME = "runToken"
EVENTS_SCHEME = "eventsSecret"
WEBHOOK_SCHEME = "webhookSignature"
PATH_PARAM = re.compile(r"\{(\w+)\}")

ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    401: "The API token (or a webhook delivery's signature) is missing, wrong or stale",
    403: "Refused: a browser request from another site, a console request without its "
         "CSRF token, or a run token of another run",
    404: "No such object (or no such route)",
    409: "Conflicts with what is stored (duplicate name, object in use, run already final, "
         "a webhook delivery already taken, a provisioning plan changed since it was "
         "shown)",
    413: "The body is larger than 1 MiB",
    415: "The body's Content-Type is not one this route takes; the message says which",
    422: "A field, query parameter or header is invalid or over its limit, or the pool "
         "type's SDK is not installed on this server; the message names the field or extra",
    500: "The server's own fault; the log has the details",
    502: "The cloud refused a provisioning step; the message says what was made and what "
         "was not",
    503: "The database does not answer; retry after the Retry-After header's seconds",
}

ModelKey = tuple[type[BaseModel], JsonSchemaMode]


def _models(routes: tuple[Route, ...]) -> list[ModelKey]:
    keys: list[ModelKey] = [(Error, "serialization")]
    for route in routes:
        if route.body is not None:
            keys.append((route.body, "validation"))
        if route.response is not None:
            keys.append((route.response, "serialization"))
    return list(dict.fromkeys(keys))  # unique, in order


def _query_schema(param: QueryParam) -> dict[str, Any]:
    if param.kind == "state":
        return {"type": "string", "enum": [state.value for state in RunState]}
    if param.kind == "bool":
        return {"type": "boolean", "default": bool(param.default)}
    if param.kind == "str":
        return {"type": "string", "minLength": 1}
    schema: dict[str, Any] = {"type": "integer"}
    if param.minimum is not None:
        schema["minimum"] = param.minimum
    if param.maximum is not None:
        schema["maximum"] = param.maximum
    if param.default is not None:
        schema["default"] = param.default
    return schema


def _parameters(route: Route) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": dict(route.path_schemas.get(name, {"type": "string"}))}
        for name in PATH_PARAM.findall(route.path)]
    params += [{"name": param.name, "in": "query", "required": False,
                "description": param.description, "schema": _query_schema(param)}
               for param in route.query]
    if route.idempotency_key:
        params.append({
            "name": "Idempotency-Key", "in": "header", "required": False,
            "description": "Sending the same key again returns the run it made the first time",
            "schema": {"type": "string", "minLength": 1, "maxLength": 200}})
    return params


def _error_statuses(route: Route, api_token: bool) -> list[int]:
    statuses = {500, 503, *route.errors}
    if route.run_token or (api_token and not route.public):
        statuses.add(401)
    if PATH_PARAM.search(route.path):
        statuses.add(404)
    if route.method in MUTATING and not route.path.startswith(OWN_AUTH_PREFIXES):
        statuses |= {403, 415}  # dispatcher/api/browser_guard.py
    if route.body is not None or route.request_schema is not None:
        statuses |= {400, 413, 415, 422}
    if route.query or route.idempotency_key:
        statuses.add(422)
    return sorted(statuses)


def _success_schema(route: Route, refs: Mapping[Any, Any]) -> dict[str, Any] | None:
    if route.response is not None:
        ref = refs[(route.response, "serialization")]
        return {"type": "array", "items": ref} if route.many else ref
    if route.response_schema is not None:
        return dict(route.response_schema)
    return None


def _tag(path: str) -> str:
    """The first segment after /api ("/api/runs/{id}" -> "runs"; "/metrics" -> "metrics")."""
    parts = [part for part in path.split("/") if part]
    return parts[1] if parts[0] == "api" and len(parts) > 1 else parts[0]


def _security(route: Route, api_token: bool) -> list[dict[str, list[str]]] | None:
    """The operation's requirement, as the server checks it (None: the document's own)."""
    if route.events_secret:
        return [{EVENTS_SCHEME: []}]
    if route.signed_delivery:
        return [{WEBHOOK_SCHEME: []}]
    if route.run_token:  # the run's own token, or the API token where there is one
        return [{SECURITY_SCHEME: []}, {RUN_TOKEN_SCHEME: []}] if api_token \
            else [{RUN_TOKEN_SCHEME: []}]
    if route.public:
        return []
    return None


def _operation(route: Route, refs: Mapping[Any, Any], api_token: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [_tag(route.path)],
    }
    parameters = _parameters(route)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        required = any(field.is_required() for field in route.body.model_fields.values())
        operation["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": refs[(route.body, "validation")]}}}
    elif route.request_schema is not None:
        operation["requestBody"] = {
            "required": True, "content": {"application/json": {
                "schema": {"type": "object", **route.request_schema}}}}
    schema = _success_schema(route, refs)
    responses: dict[str, Any] = {}
    successes = {route.status: HTTPStatus(route.status).phrase, **route.other_statuses}
    for status, description in successes.items():
        answer: dict[str, Any] = {"description": description}
        if schema is not None and status != 204:
            answer["content"] = {route.media_type: {"schema": schema}}
        responses[str(status)] = answer
    error_ref = refs[(Error, "serialization")]
    for status in _error_statuses(route, api_token):
        responses[str(status)] = {"description": ERROR_DESCRIPTIONS.get(status, "Error"),
                                  "content": {"application/json": {"schema": error_ref}}}
    operation["responses"] = responses
    security = _security(route, api_token)
    if security is not None:
        operation["security"] = security
    return operation


@functools.lru_cache(maxsize=4)
def build_document(routes: tuple[Route, ...], *, api_token: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` on a server with or without an API token
    (cached: neither changes while a server runs)."""
    refs, definitions = models_json_schema(_models(routes), ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs,
                                                                            api_token)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "pushpool", "version": __version__,
                 "description": "Push-pool dispatcher: work pools, deployments and runs."},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http", "scheme": "bearer",
                    "description": "The value of PUSHPOOL_API_TOKEN (only when the server "
                                   "sets it)"},
                RUN_TOKEN_SCHEME: {
                    "type": "http", "scheme": "bearer",
                    "description": "PUSHPOOL_RUN_TOKEN, which a run's job gets: valid for "
                                   "that run's state and logs only, until it expires"},
                EVENTS_SCHEME: {
                    "type": "apiKey", "in": "header", "name": "X-Pushpool-Events-Secret",
                    "description": "PUSHPOOL_EVENTS_SECRET, sent by provider event pushes "
                                   "(an EventBridge API destination, say)"},
                WEBHOOK_SCHEME: {
                    "type": "apiKey", "in": "header", "name": "X-Pushpool-Signature",
                    "description": "The webhook's secret proves a delivery, as its scheme "
                                   "says: pushpool (X-Pushpool-Signature over "
                                   "X-Pushpool-Timestamp, X-Pushpool-Delivery and the "
                                   "body), github (X-Hub-Signature-256) or bearer "
                                   "(Authorization: Bearer <secret>)"}},
        },
    }
    if api_token:
        document["security"] = [{SECURITY_SCHEME: []}]
    return document
