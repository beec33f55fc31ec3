"""Bearer-token check: with PUSHPOOL_API_TOKEN set, every route but the public ones needs it.

The token is compared in constant time and never written to a response or a log line.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from dispatcher.errors import Unauthorized

MISSING_MESSAGE = ("this server needs an API token: send the header "
                   "'Authorization: Bearer <token>' with the value of PUSHPOOL_API_TOKEN")
WRONG_MESSAGE = "the API token is not valid; check PUSHPOOL_API_TOKEN on client and server"


def bearer_token(header: str | None) -> str | None:
    """The token from an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def auth_middleware(token: str, public_paths: frozenset[str],
                    run_token_routes: frozenset[tuple[str, str]] = frozenset()) -> Middleware:
    """A middleware that lets requests to ``public_paths`` (route paths) through untouched,
    and those to ``run_token_routes`` (method, path) with a bearer token through to their
    ``Route.authorize``, which checks the API token or the run's own token itself
    (dispatcher/api/routes_runtime.py) before the body is read."""

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is not None and resource.canonical in public_paths:
            return await handler(request)
        given = bearer_token(request.headers.get("Authorization"))
        if given is None:
            raise Unauthorized(MISSING_MESSAGE)
        if resource is not None and \
                (request.method, resource.canonical) in run_token_routes:
            return await handler(request)
        if not token_matches(given, token):
            raise Unauthorized(WRONG_MESSAGE)
        return await handler(request)

    return check_token
