"""``pushpool tick`` and ``pushpool serverless package``: the serverless mode's commands.

``tick`` runs one bounded pass of the engine against the store (cron on a VM does what a
cloud function's timer does); ``serverless package`` builds a cloud function's artefact
from the installed package (dispatcher/triggers/package.py).
"""

from pathlib import Path
from typing import Annotated

import typer

from dispatcher.cli.output import CliError, Output, OutputOption, print_json, say

serverless_app = typer.Typer(
    help="Serverless mode: package pushpool as a cloud function.", no_args_is_help=True,
    rich_markup_mode=None)

MAX_TICK_SECONDS = 900.0  # Lambda's longest invocation


def tick(
    max_seconds: Annotated[float, typer.Option(
        "--max-seconds", help="End the pass within this many seconds; work left over is "
                              "for the next tick.")] = 50.0,
    allow_sqlite: Annotated[bool, typer.Option(
        "--allow-sqlite", help="Run on a SQLite store (tests, a single VM); also "
                               "PUSHPOOL_TICK_ALLOW_SQLITE=1.")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Run one bounded pass: schedule, watch active runs, claim and submit due runs."""
    import asyncio

    from dispatcher.engine.idle_probe import idle_tick
    from dispatcher.engine.tick_summary import TickRefused, TickSummary
    from dispatcher.settings import get_settings

    if not 0 < max_seconds <= MAX_TICK_SECONDS:
        raise CliError(f"--max-seconds {max_seconds:g} is out of range",
                       f"give a number of seconds above 0 and at most {MAX_TICK_SECONDS:g}")
    settings = get_settings()

    async def one_tick() -> TickSummary:
        idle, handed = await idle_tick(settings)  # nothing to do: no store loaded
        if idle is not None:
            return idle
        from dispatcher.engine.tick import tick_once
        from dispatcher.server import configure_logging

        configure_logging("WARNING")
        return await tick_once(settings, max_seconds, allow_sqlite=allow_sqlite,
                               first_connection=handed)

    try:
        summary = asyncio.run(one_tick())
    except TickRefused as exc:
        raise CliError(str(exc)) from None
    if output is Output.json:
        print_json(summary.as_dict())
        return
    say(summary.line(), None if summary.complete else "yellow")


def package(
    cloud: Annotated[str, typer.Option(
        "--cloud", help="aws (a Lambda zip), gcp (a Cloud Functions folder) or azure "
                        "(a function app folder).")],
    output: Annotated[Path, typer.Option(
        "--output", help="Where to write it.")] = Path("dist"),
) -> None:
    """Build a cloud function's artefact from this installation (no download)."""
    from dispatcher.triggers.package import CLOUDS, PackageError, build

    if cloud not in CLOUDS:
        raise CliError(f"--cloud {cloud!r} is not a cloud pushpool packages for",
                       f"use one of: {', '.join(CLOUDS)}")
    say(f"Packaging pushpool for {cloud} from this Python environment ...")

    def progress(name: str, files: int) -> None:
        say(f"  copied {name} ({files} files)", "dim")

    try:
        built = build(cloud, output, progress)
    except PackageError as exc:
        raise CliError(exc.message, exc.hint, exit_code=1) from None
    except OSError as exc:
        raise CliError(f"--output: cannot write {output}: {exc.strerror}") from None
    say(f"Built {built}", "green")


serverless_app.command("package")(package)
