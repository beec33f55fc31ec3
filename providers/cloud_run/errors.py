"""Google API errors as the contract's two errors, with Google's own message.

429 (RESOURCE_EXHAUSTED), 503 (UNAVAILABLE), 500/502/504, DEADLINE_EXCEEDED and a lost
connection are ``RetryableProviderError`` (``throttled`` for 429, so the token bucket
shrinks); PERMISSION_DENIED, UNAUTHENTICATED, NOT_FOUND, INVALID_ARGUMENT,
FAILED_PRECONDITION and the rest of 4xx are ``PermanentProviderError``. Each message
names what was being done, Google's status and message, and the fix where one is known.
"""

from __future__ import annotations

import re
from typing import Any

from providers.base import PermanentProviderError, ProviderError, RetryableProviderError

_HINTS = {
    "PERMISSION_DENIED": "grant the dispatcher's identity roles/run.developer on the project "
                         "and roles/iam.serviceAccountUser on the job's service account",
    "UNAUTHENTICATED": "check credentials (the key, or the Application Default Credentials "
                       "the dispatcher runs with)",
    "SERVICE_DISABLED": "enable the API: `gcloud services enable run.googleapis.com` or "
                        "`work-pool create --provision-infra`",
}


_HTTP_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 409: "ABORTED", 412: "FAILED_PRECONDITION",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED"}
# The REST transport puts "METHOD URL: " before Google's message.
_REST_PREFIX = re.compile(r"^(?:GET|POST|PATCH|PUT|DELETE) \S+: ")


def _status_name(exc: Any) -> str:
    grpc_status = getattr(exc, "grpc_status_code", None)
    if grpc_status is not None:
        return str(getattr(grpc_status, "name", grpc_status))
    return _HTTP_STATUS.get(getattr(exc, "code", None) or 0, "")


def google_message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if message:
        return _REST_PREFIX.sub("", str(message))
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def retry_after_of(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def provider_error(exc: BaseException, what: str) -> ProviderError:
    """An SDK or transport exception as the contract's error."""
    if isinstance(exc, ProviderError):
        return exc
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPICallError):
        code = getattr(exc, "code", None)
        status = _status_name(exc) or type(exc).__name__
        message = google_message(exc)
        reason = str(getattr(exc, "reason", "") or "")
        text = f"{what}: Google {code or ''} {status}: {message}".replace("  ", " ")
        hint = _HINTS.get(reason) or _HINTS.get(status)
        if isinstance(exc, gexc.TooManyRequests | gexc.ResourceExhausted):
            return RetryableProviderError(text, throttled=True, retry_after=retry_after_of(exc))
        if isinstance(exc, gexc.ServerError | gexc.DeadlineExceeded):
            return RetryableProviderError(text, retry_after=retry_after_of(exc))
        if isinstance(exc, gexc.Conflict | gexc.Aborted) and not isinstance(
                exc, gexc.AlreadyExists):
            return RetryableProviderError(text)  # a concurrent change: try again
        return PermanentProviderError(text + (f" ({hint})" if hint else ""))
    if isinstance(exc, gexc.RetryError):
        return RetryableProviderError(f"{what}: Google did not answer in time ({exc})")
    try:
        from google.auth import exceptions as auth_exc
    except ImportError:  # pragma: no cover - google-auth comes with the SDK
        auth_exc = None  # type: ignore[assignment]
    if auth_exc is not None and isinstance(exc, auth_exc.TransportError):
        return RetryableProviderError(f"{what}: could not reach Google's token service ({exc})")
    if auth_exc is not None and isinstance(exc, auth_exc.RefreshError):
        return PermanentProviderError(f"{what}: Google sign-in failed: {exc}; check credentials")
    import requests

    if isinstance(exc, requests.ConnectionError | requests.Timeout | TimeoutError
                  | ConnectionError):
        return RetryableProviderError(f"{what}: Google did not answer "
                                      f"({type(exc).__name__})")
    if isinstance(exc, TypeError | ValueError | AttributeError | KeyError):
        # A bug or an answer this adapter cannot read: retrying would not help.
        return PermanentProviderError(f"{what}: {type(exc).__name__}: {google_message(exc)}")
    return RetryableProviderError(f"{what}: {type(exc).__name__}: {google_message(exc)}")


def is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "code", None) == 404 or _status_name(exc) == "NOT_FOUND"


def is_conflict(exc: BaseException) -> bool:
    """HTTP 409: ALREADY_EXISTS or ABORTED (the REST transport maps by HTTP status only)."""
    return getattr(exc, "code", None) == 409
