"""How pushpool prints for people: Rich tables, name/value panels, plain lines and times.

Shared by the command line and the Python SDK (``.deploy()`` prints what ``pushpool
deploy`` prints), so neither depends on the other. Rich is imported when something is
printed, never at import.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dispatcher.display import format_time

if TYPE_CHECKING:
    from rich.console import Console


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


def print_table(title: str | None, columns: Sequence[str],
                rows: Iterable[Sequence[Any]], unbroken: Sequence[str] = ("ID",)) -> None:
    """A Rich table that fits the terminal: the ``unbroken`` columns (ids, times, states)
    stay on one line, the others wrap between words, and a word wider than its column
    ends in "…" instead of being folded over several lines. Whole values are in
    ``--output json``; ids are short and accepted as they are shown."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="ellipsis", no_wrap=column in unbroken)
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


def format_clock(value: str | None) -> str:
    """Just the time of day, for streamed state changes and log lines."""
    full = format_time(value)
    return full[11:] if full and len(full) >= 19 else (full or "")


def limit_text(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


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
