"""Domain errors. The API maps each to a status code and ``{"error", "message", "details"}``."""

from __future__ import annotations

from typing import Any


class PushpoolError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


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
