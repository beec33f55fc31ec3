"""Domain errors. The API maps each to a status code and ``{"error", "message", "details"}``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class PushpoolError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("schedules", 0, "cron")`` -> ``schedules[0].cron``: how every error names a field."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return path.lstrip(".")


def validation_messages(exc: ValidationError) -> list[tuple[str, str]]:
    """Each error of ``exc`` as (field path, message), the way the API words them, so the
    SDK, pushpool.yaml and the API refuse the same input with the same words."""
    found = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"])
        # pydantic prefixes messages from our own validators; the prefix helps nobody.
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        found.append((field_path(tuple(error["loc"])), message))
    return found


class InvalidInput(PushpoolError):
    """A field the caller sent is wrong. ``field`` is its dotted path, ``fix`` says what to do."""

    status = 422
    code = "invalid_input"

    def __init__(self, field: str, message: str, fix: str = "",
                 details: list[dict[str, Any]] | None = None):
        text = f"{field}: {message}" + (f"; {fix}" if fix else "")
        super().__init__(text, details or [{"field": field, "message": message, "fix": fix}])
        self.field = field


class NotFound(PushpoolError):
    status = 404
    code = "not_found"


class Conflict(PushpoolError):
    status = 409
    code = "conflict"


class Unauthorized(PushpoolError):
    status = 401
    code = "unauthorized"


class Forbidden(PushpoolError):
    status = 403
    code = "forbidden"


class UnsupportedMediaType(PushpoolError):
    status = 415
    code = "unsupported_media_type"
