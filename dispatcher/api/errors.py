"""Turns every failure into a JSON error ``{"error", "message", "details"}`` with the right status.

Domain errors keep their status and text; aiohttp's own answers (404, 405, 413) get JSON
bodies; anything unexpected is a 500 whose body says nothing about the exception (it may
hold secrets) while the traceback goes to the server log.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from dispatcher.api.context import MAX_BODY_BYTES
from dispatcher.errors import Forbidden, PushpoolError, validation_messages
from dispatcher.store.reachability import store_unreachable
from providers.registry import ProviderUnavailable

log = logging.getLogger("pushpool.api")

INTERNAL_MESSAGE = "internal error (see server log)"
STORE_UNAVAILABLE_MESSAGE = ("the database does not answer; try again shortly (GET "
                             "/api/health shows when it is back)")
STORE_RETRY_AFTER_SECONDS = 2


class MalformedJson(PushpoolError):
    status = 400
    code = "invalid_json"


class UnsupportedMediaType(PushpoolError):
    status = 415
    code = "unsupported_media_type"


class CrossOrigin(Forbidden):
    code = "cross_origin"


class BodyInvalid(PushpoolError):
    """A request body failed validation; ``details`` name each field, the message the first."""

    status = 422
    code = "invalid_input"

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> BodyInvalid:
        details = [{"field": field or "body", "message": message}
                   for field, message in validation_messages(exc)]
        first = details[0]
        return cls(f"{first['field']}: {first['message']}", details)


def error_response(status: int, code: str, message: str,
                   details: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": code, "message": message, "details": details or []}
    return web.json_response(body, status=status, headers=headers)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """JSON for the errors aiohttp raises itself: unknown route, wrong method, huge body."""
    if isinstance(exc, web.HTTPNotFound):
        return error_response(404, "not_found",
                              f"no route {request.method} {request.path}; "
                              "the routes are listed at /api/openapi.json")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(405, "method_not_allowed",
                              f"{request.method} is not allowed on {request.path}; "
                              f"use one of: {allowed}", headers={"Allow": allowed})
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(413, "payload_too_large",
                              f"request body is larger than {MAX_BODY_BYTES} bytes (1 MiB); "
                              "send less data per request")
    code = exc.reason.lower().replace(" ", "_") if exc.reason else "http_error"
    return error_response(exc.status, code, exc.reason or "HTTP error")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PushpoolError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return web.json_response(exc.to_json(), status=exc.status, headers=headers)
    except ProviderUnavailable as exc:
        # The server lacks a provider's SDK (the rules layer names the field when it can):
        # the message says which extra to install, and holds no secrets.
        return error_response(422, "provider_unavailable", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except Exception as exc:  # CancelledError is a BaseException and passes through
        if store_unreachable(exc):
            # Not our bug and not the caller's: say when to try again, and log one line.
            log.warning("%s %s: the database does not answer (%s)", request.method,
                        request.path, type(exc).__name__)
            return error_response(503, "store_unavailable", STORE_UNAVAILABLE_MESSAGE,
                                  headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)})
        # ValidationError lands here too when it comes from our own code, not the body.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", INTERNAL_MESSAGE)


class QuietProtocolErrors(logging.Filter):
    """aiohttp answers a request it cannot parse (a header line or URL over 8 KiB, say) with
    a 400 itself and logs it at ERROR with a traceback and the first 100 bytes of the line,
    which may be a token. This keeps one warning line that says what, not the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "refused a malformed request from %s (%s)", (
                remote, type(exc).__name__)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_protocol_errors() -> None:
    """Install ``QuietProtocolErrors`` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietProtocolErrors) for f in logger.filters):
        logger.addFilter(QuietProtocolErrors())


__all__ = ["INTERNAL_MESSAGE", "STORE_UNAVAILABLE_MESSAGE", "BodyInvalid", "CrossOrigin",
           "MalformedJson", "UnsupportedMediaType", "error_middleware", "error_response",
           "quiet_protocol_errors"]
