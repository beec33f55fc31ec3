"""How the CLI prints: Rich tables, raw JSON for ``--output json``, and the one-line errors.

Every failure reaches the user as one red ``Error: <message>`` line on stderr, optionally
followed by a hint, and maps to an exit code: 2 for input errors, 1 for everything else.
Rich is imported when something is printed, never at import.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated

import typer

from dispatcher.client import ApiError, ApiTransportError, ApiUnreachable
from dispatcher.terminal import (
    DEPLOY_SUCCESS,
    console,
    format_clock,
    format_time,
    limit_text,
    print_deploy_summary,
    print_fields,
    print_json,
    print_json_block,
    print_table,
    say,
)

if TYPE_CHECKING:
    pass


class Output(enum.StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[Output, typer.Option(
    "--output", "-o", help="table for people, json for scripts (the raw API JSON)")]


class CliError(Exception):
    """Something the CLI itself found wrong (bad flag value, bad pushpool.yaml)."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


def print_error(message: str, hint: str | None = None) -> None:
    from rich.text import Text

    err = console(stderr=True)
    err.print(Text(f"Error: {message}", style="red"), soft_wrap=True)
    if hint and hint not in message:  # the API's message may already say how to fix it
        err.print(Text(hint, style="dim"), soft_wrap=True)


# ------------------------------------------------------------------------- errors

_NOT_FOUND_HINTS = (
    ("/work-pools/", "/queues", "list work queues with `pushpool work-queue ls`"),
    ("/work-pools", "", "list work pools with `pushpool work-pool ls`"),
    ("/deployments", "", "list deployments with `pushpool deployment ls`"),
    ("/runs", "", "list runs with `pushpool run ls`"),
    ("/webhooks", "", "list webhooks with `pushpool webhook ls`"),
)


def _api_hint(error: ApiError) -> str | None:
    for detail in error.details:
        if isinstance(detail, dict) and detail.get("hint"):
            return str(detail["hint"])
    if error.status == 401:
        import os

        if os.environ.get("PUSHPOOL_API_TOKEN"):
            return "PUSHPOOL_API_TOKEN does not match the server's token"
        return "the server needs a token: set PUSHPOOL_API_TOKEN"
    if error.status == 404:
        for prefix, contains, hint in _NOT_FOUND_HINTS:
            if error.path.startswith(prefix) and contains in error.path:
                return hint
    if error.status >= 500:
        return "this is a fault in the pushpool server; its log has the details"
    return None


def report(exc: BaseException) -> int:
    """Print ``exc`` as the one-line error and answer the exit code; raise what it can't."""
    if isinstance(exc, CliError):
        print_error(exc.message, exc.hint)
        return exc.exit_code
    if isinstance(exc, ApiError):
        print_error(exc.message, _api_hint(exc))
        return exc.exit_code
    if isinstance(exc, ApiUnreachable):
        print_error(f"cannot reach the pushpool API at {exc.url}; start it with "
                    "`pushpool server start` or set PUSHPOOL_API_URL")
        return 1
    if isinstance(exc, ApiTransportError):
        print_error(f"the pushpool API at {exc.url} did not answer properly ({exc.reason})",
                    "try again; if it persists, check the server's log")
        return 1
    raise exc


__all__ = [
    "DEPLOY_SUCCESS",
    "CliError",
    "Output",
    "OutputOption",
    "console",
    "format_clock",
    "format_time",
    "limit_text",
    "print_deploy_summary",
    "print_error",
    "print_fields",
    "print_json",
    "print_json_block",
    "print_table",
    "report",
    "say",
]
