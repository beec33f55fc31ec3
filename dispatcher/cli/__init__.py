"""``pushpool``: the command line. Typer + Rich, and it talks only to the HTTP API, but for
the two commands that must work with no server running: ``secrets rotate-key`` (the store
and its key, cli/secrets.py) and ``tick`` (one pass of the engine, cli/serverless.py).

The command groups live in pools (work-pool, work-queue), deployments (deployment), runs
(run), webhooks (webhook), secrets and serverless (tick, serverless package); this module
holds the root, ``deploy`` (pushpool.yaml) and ``server start``.
Start-up budget: ``pushpool --help`` under 300 ms, so httpx, yaml, pydantic, rich.table and the
server are imported inside the commands that need them, and help is plain text (Typer's Rich
help formatter alone costs ~150 ms).
"""


from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from dispatcher import __version__
from dispatcher.cli.deploy import PlannedDeployment, load_deployments
from dispatcher.cli.deployments import deployment_app
from dispatcher.cli.output import (
    CliError,
    print_deploy_summary,
    report,
)
from dispatcher.cli.pools import pool_app, queue_app
from dispatcher.cli.runs import run_app
from dispatcher.cli.secrets import secrets_app
from dispatcher.cli.serverless import serverless_app
from dispatcher.cli.serverless import tick as tick_command
from dispatcher.cli.webhooks import webhook_app
from dispatcher.client import ApiError, ApiTransportError, ApiUnreachable, client_from_env


class ErrorReportingGroup(TyperGroup):
    """Turns the CLI's and the API's errors into one ``Error:`` line and the exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (CliError, ApiError, ApiUnreachable, ApiTransportError) as exc:
            raise typer.Exit(report(exc)) from None


app = typer.Typer(
    name="pushpool", cls=ErrorReportingGroup, no_args_is_help=True, rich_markup_mode=None,
    pretty_exceptions_enable=False, add_completion=False,
    help="pushpool: push runs straight to serverless containers, no worker in between. "
         "Talks to the API at PUSHPOOL_API_URL (default http://127.0.0.1:4300).")
server_app = typer.Typer(help="Run the pushpool API server and dispatcher.",
                         no_args_is_help=True, rich_markup_mode=None)

app.add_typer(server_app, name="server")
app.add_typer(pool_app, name="work-pool")
app.add_typer(queue_app, name="work-queue")
app.add_typer(deployment_app, name="deployment")
app.add_typer(run_app, name="run")
app.add_typer(webhook_app, name="webhook")
app.add_typer(secrets_app, name="secrets")
app.add_typer(serverless_app, name="serverless")
app.command("tick")(tick_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"pushpool {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version.")]
    = False,
) -> None:
    """pushpool: push runs straight to serverless containers, no worker in between."""


@server_app.command("start")
def server_start(
    host: Annotated[str | None, typer.Option(help="Interface (default PUSHPOOL_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default PUSHPOOL_PORT).")] = None,
) -> None:
    """Start the API server with its scheduler and dispatcher."""
    from dispatcher.server import run_server

    run_server(host, port)


def select_deployments(planned: list[PlannedDeployment], names: list[str], everything: bool,
                       filename: str) -> list[PlannedDeployment]:
    """Which entries ``deploy`` applies: ``--name`` (name or flow/name), ``--all``, or the one."""
    available = ", ".join(p.full_name for p in planned)
    if names and everything:
        raise CliError("use --name or --all, not both")
    if everything:
        return planned
    if not names:
        if len(planned) == 1:
            return planned
        raise CliError(f"{filename} defines {len(planned)} deployments ({available})",
                       "pick some with --name NAME or deploy them all with --all")
    chosen: list[PlannedDeployment] = []
    for wanted in names:
        matches = [p for p in planned if wanted in (p.name, p.full_name)]
        if not matches:
            raise CliError(f"--name {wanted!r} is not in {filename}",
                           f"deployments there: {available}")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


@app.command("execute", add_help_option=False, hidden=True,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def execute(ctx: typer.Context) -> None:
    """Run one flow run inside its job (the dispatcher starts this; not for humans)."""
    from dispatcher.runtime import main as run_main

    raise typer.Exit(run_main(ctx.args))


@app.command("deploy")
def deploy(
    file: Annotated[Path, typer.Option(
        "--file", "-f", help="The deployments file.")] = Path("pushpool.yaml"),
    name: Annotated[list[str] | None, typer.Option(
        "--name", "-n", help="Only this deployment (NAME or FLOW/NAME). Repeat it.")] = None,
    everything: Annotated[bool, typer.Option(
        "--all", help="Every deployment in the file.")] = False,
) -> None:
    """Create or update the deployments described in pushpool.yaml."""
    chosen = select_deployments(load_deployments(file), name or [], everything, str(file))
    rows: list[list[str]] = []
    failures: list[ApiError] = []
    applied: list[PlannedDeployment] = []
    with client_from_env() as client:
        for item in chosen:
            try:
                answer = client.put("/deployments", json=item.body)
            except ApiError as exc:
                failures.append(exc)
                rows.append([item.full_name, "failed", exc.message])
                continue
            applied.append(item)
            verb = "created" if answer.get("created") else "updated"
            rows.append([item.full_name, "applied",
                         f"{verb} in work pool {item.body.get('pool_name')!r}"])
    print_deploy_summary(rows, [item.full_name for item in applied], all_ok=not failures)
    if failures:
        raise CliError(f"{len(failures)} of {len(chosen)} deployments could not be "
                       "created/updated (see Details above)",
                       exit_code=max(f.exit_code for f in failures))


def main() -> None:
    app()


