"""How the CLI prints: Rich tables, raw JSON for ``--output json``, and the one-line errors.

Every failure reaches the user as one red ``Error: <message>`` line on stderr, optionally
followed by a hint, and maps to an exit code: 2 for input errors, 1 for everything else.
Rich is imported when something is printed, never at import.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dispatcher.cli_client import ApiError, ApiTransportError, ApiUnreachable

if TYPE_CHECKING:
    from rich.console import Console


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


def console(stderr: bool = False) -> Console:
    # A new console per call: sys.stdout may have been swapped (tests, pipes) since import.
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    """The raw API JSON, unstyled, so it can be piped into jq."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def say(message: str, style: str | None = None) -> None:
    """One line of plain text (never interpreted as Rich markup)."""
    from rich.text import Text

    console().print(Text(message, style=style or ""), soft_wrap=True)


def print_error(message: str, hint: str | None = None) -> None:
    from rich.text import Text

    err = console(stderr=True)
    err.print(Text(f"Error: {message}", style="red"), soft_wrap=True)
    if hint and hint not in message:  # the API's message may already say how to fix it
        err.print(Text(hint, style="dim"), soft_wrap=True)


def print_table(title: str | None, columns: Sequence[str],
                rows: Iterable[Sequence[Any]], unbroken: Sequence[str] = ("ID",)) -> None:
    """A Rich table; the ``unbroken`` columns are never wrapped, so ids can be copied."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        # fold, never "…": names must stay whole to be typed into the next command.
        table.add_column(column, overflow="fold", no_wrap=column in unbroken)
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    console().print(table)


def print_fields(title: str, fields: Sequence[tuple[str, Any]]) -> None:
    """Name/value pairs, one per line, for ``inspect`` commands."""
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in fields:
        table.add_row(name, _cell(value))
    console().print(table)


def print_json_block(title: str, data: Any) -> None:
    """A titled, indented JSON value inside human output (parameters, job configuration)."""
    from rich.text import Text

    out = console()
    out.print(Text(title, style="bold"))
    out.print(Text(json.dumps(data, indent=2, sort_keys=True)), soft_wrap=True)


def _cell(value: Any) -> Any:
    from rich.text import Text

    if value is None:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return Text(json.dumps(value, sort_keys=True))
    if isinstance(value, Text):
        return value
    return Text(str(value))


def format_time(value: str | None) -> str | None:
    """An RFC 3339 time from the API as ``YYYY-MM-DD HH:MM:SS`` UTC (None stays None)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_clock(value: str | None) -> str:
    """Just the time of day, for streamed state changes and log lines."""
    full = format_time(value)
    return full[11:] if full and len(full) >= 19 else (full or "")


def limit_text(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


# ------------------------------------------------------------------------- errors

_NOT_FOUND_HINTS = (
    ("/work-pools/", "/queues", "list work queues with `pushpool work-queue ls`"),
    ("/work-pools", "", "list work pools with `pushpool work-pool ls`"),
    ("/deployments", "", "list deployments with `pushpool deployment ls`"),
    ("/runs", "", "list runs with `pushpool run ls`"),
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


DEPLOY_SUCCESS = "Successfully created/updated all deployments!"


def print_deploy_summary(rows: list[list[str]], applied: list[str], all_ok: bool) -> None:
    """What `pushpool deploy` and the SDK's ``.deploy()`` print: the outcome, a table of
    deployments (Name, Status, Details) and how to run the ones that were applied."""
    if all_ok:
        say(DEPLOY_SUCCESS, "green")
    print_table("Deployments", ["Name", "Status", "Details"], rows)
    if applied:
        say("")
        say("To execute flow runs from these deployments, run:")
        for full_name in applied:
            say(f"        $ pushpool deployment run '{full_name}'")
