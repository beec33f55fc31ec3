"""Modal's exceptions, translated into the two errors the dispatcher acts on.

Transient trouble (the connection, Modal's 5xx after the client's own retries, capacity
and rate limits) is ``RetryableProviderError``; what waiting cannot fix (the token, a
missing secret or app, an image that does not build, an argument Modal refuses) is
``PermanentProviderError`` carrying Modal's own message. A client version Modal no longer
accepts (it answers FAILED_PRECONDITION on every call, which modal raises as
``ConflictError``) is said plainly, with the upgrade to make, because every run of every
Modal pool fails the same way until the dispatcher's ``modal`` is upgraded.
"""

from __future__ import annotations

import asyncio
import re

from providers.base import PermanentProviderError, ProviderError, RetryableProviderError

UPGRADE_HINT = "pip install -U 'pushpool[modal]'"
_VERSION_WORDS = re.compile(r"client version|deprecated|no longer supported|unsupported "
                            r"client|old client|upgrade", re.IGNORECASE)


def client_version() -> str:
    try:
        from importlib.metadata import version

        return version("modal")
    except Exception:  # not installed as a distribution (vendored): say so generically
        return "unknown"


def deprecated_client_error(message: str) -> PermanentProviderError:
    return PermanentProviderError(
        f"Modal no longer accepts this dispatcher's Modal client (modal {client_version()}): "
        f"every Modal run fails until it is upgraded. Upgrade the dispatcher with "
        f"`{UPGRADE_HINT}` (or `pip install -U modal`) and restart it. Modal said: {message}")


def is_version_refusal(exc: BaseException) -> bool:
    from modal.exception import ConflictError, VersionError

    if isinstance(exc, VersionError):
        return True
    return isinstance(exc, ConflictError) and bool(_VERSION_WORDS.search(str(exc)))


def translate(exc: BaseException, doing: str) -> BaseException:
    """The ProviderError for a failed Modal call (``doing`` names the call, e.g.
    "create sandbox"); anything that is not Modal's or the network's is returned as is."""
    if isinstance(exc, ProviderError):
        return exc
    from modal.exception import (
        AuthError,
        ConflictError,
        ConnectionError,
        DataLossError,
        Error,
        InternalError,
        InternalFailure,
        InvalidError,
        NotFoundError,
        PermissionDeniedError,
        RemoteError,
        ResourceExhaustedError,
        ServiceError,
        TimeoutError,
        UnimplementedError,
    )

    message = str(exc).strip() or type(exc).__name__
    text = f"Modal {doing} failed: {message}"
    if is_version_refusal(exc):
        return deprecated_client_error(message)
    if isinstance(exc, ResourceExhaustedError):
        return RetryableProviderError(text, throttled=True)
    if isinstance(exc, ConnectionError | ServiceError | InternalError | InternalFailure
                  | DataLossError | TimeoutError | OSError | asyncio.TimeoutError):
        return RetryableProviderError(text)
    if isinstance(exc, AuthError):
        return PermanentProviderError(
            f"{text} (credentials: check the pool's Modal token, or MODAL_TOKEN_ID / "
            "MODAL_TOKEN_SECRET; `modal token new` makes one)")
    if isinstance(exc, UnimplementedError):
        return PermanentProviderError(
            f"{text} (Modal does not know this call: the dispatcher's modal "
            f"{client_version()} may be too new or too old; `{UPGRADE_HINT}`)")
    if isinstance(exc, PermissionDeniedError | NotFoundError | InvalidError | ConflictError
                  | RemoteError | Error):
        return PermanentProviderError(text)
    return exc
