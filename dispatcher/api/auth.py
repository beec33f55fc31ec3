"""Bearer-token check: with PUSHPOOL_API_TOKEN set, every route but the public ones needs it.

The token is compared in constant time and never written to a response or a log line.
The web console's signed-in session cookie stands for the token too, and a request that
changes something must then carry the session's CSRF token as well (the console's
script sends it), so another site cannot act with a user's cookie.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from dispatcher.console import session
from dispatcher.errors import Forbidden, Unauthorized

MISSING_MESSAGE = ("this server needs an API token: send the header "
                   "'Authorization: Bearer <token>' with the value of PUSHPOOL_API_TOKEN")
WRONG_MESSAGE = "the API token is not valid; check PUSHPOOL_API_TOKEN on client and server"
CSRF_MESSAGE = ("a request signed in by the console's cookie must send the page's CSRF "
                f"token in {session.CSRF_HEADER}; reload the page")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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


def _cookie_signed_in(request: web.Request, token: str) -> bool:
    """The console's session cookie is valid (and, for a change, so is its CSRF token)."""
    cookie = request.cookies.get(session.COOKIE)
    if not session.session_valid(token, cookie):
        return False
    if request.method not in SAFE_METHODS and not session.csrf_valid(
            token, cookie or "", request.headers.get(session.CSRF_HEADER)):
        raise Forbidden(CSRF_MESSAGE)
    return True


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
            if _cookie_signed_in(request, token):
                return await handler(request)
            raise Unauthorized(MISSING_MESSAGE)
        if resource is not None and \
                (request.method, resource.canonical) in run_token_routes:
            return await handler(request)
        if not token_matches(given, token):
            raise Unauthorized(WRONG_MESSAGE)
        return await handler(request)

    return check_token
