"""The cross-site guard: a web page the user happens to visit cannot make changes here.

With no API token (the default on a laptop) any page could otherwise post a form to
127.0.0.1:4300 and start runs. Browsers mark what a page makes them send: ``Sec-Fetch-Site``
says where a request comes from, ``Origin`` names the page, and without a CORS preflight
(which this API never grants) a page can send only the form types
(``application/x-www-form-urlencoded``, ``multipart/form-data``, ``text/plain``), never
``application/json``. So a request that changes something (POST, PUT, PATCH, DELETE):

- from a page of another origin (``Sec-Fetch-Site`` other than ``same-origin`` or
  ``none``, or an ``Origin`` whose host is not this server's) is a 403;
- with a body not declared as ``application/json``, or declaring one of the form types
  even with an empty body, is a 415. An empty request of another type (``curl -X POST
  .../pause`` sends none, some clients say ``application/octet-stream``) passes: there is
  nothing to misread, and no page can send it without a preflight.

The CLI, the SDK and scripts send no ``Origin`` and JSON bodies, so they never notice. Routes
whose senders are other servers that authenticate themselves (provider events: the
adapter checks its shared secret or OIDC token; signed webhook deliveries) are exempt by
path prefix, and so are the console's sign-in and sign-out forms, which check the origin
(and sign-out its CSRF token) themselves.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from dispatcher.api.errors import CrossOrigin, UnsupportedMediaType

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SAME_ORIGIN_FETCH_SITES = frozenset({"same-origin", "none"})  # "none": the user typed it
JSON_TYPE = "application/json"
# What an HTML form sends, so what a page can post without a preflight: refused even empty.
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data",
                        "text/plain"})
# Route path prefixes whose requests authenticate themselves (see the module docstring).
OWN_AUTH_PREFIXES: tuple[str, ...] = ("/api/events/", "/hooks/", "/login", "/logout")

CROSS_ORIGIN_MESSAGE = ("requests from web pages of other sites are refused: this API takes "
                        "changes from its CLI, SDK and scripts; call it from one of those")


def check_same_origin(request: web.Request) -> None:
    """Raise CrossOrigin when a browser says the request comes from another origin."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.lower() not in SAME_ORIGIN_FETCH_SITES:
        raise CrossOrigin(CROSS_ORIGIN_MESSAGE)
    origin = request.headers.get(hdrs.ORIGIN)
    # The host only, not the scheme: behind a TLS proxy the page is https and we see http.
    if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
        raise CrossOrigin(CROSS_ORIGIN_MESSAGE)


def check_json_body(request: web.Request) -> None:
    """Raise UnsupportedMediaType for a body not declared as JSON, or for a form's type."""
    declared = request.headers.get(hdrs.CONTENT_TYPE)
    if declared is None and request.body_exists:
        raise UnsupportedMediaType("the request has a body but no Content-Type; send JSON "
                                   f"with the header Content-Type: {JSON_TYPE}")
    if declared is not None and (request.content_type in FORM_TYPES or (
            request.body_exists and request.content_type != JSON_TYPE)):
        shown = request.content_type[:100]
        raise UnsupportedMediaType(f"Content-Type {shown!r} is not accepted here; send JSON "
                                   f"with the header Content-Type: {JSON_TYPE}")


def browser_guard_middleware(exempt_prefixes: tuple[str, ...] = OWN_AUTH_PREFIXES
                             ) -> Middleware:
    """The guard for every matched route whose path starts with none of
    ``exempt_prefixes``; unmatched paths go on to their 404 or 405."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if request.method in MUTATING and resource is not None \
                and not resource.canonical.startswith(exempt_prefixes):
            check_same_origin(request)
            check_json_body(request)
        return await handler(request)

    return guard
