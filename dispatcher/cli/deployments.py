"""``pushpool deployment ...``: list, inspect, pause, delete deployments and start their runs."""


import shlex
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from dispatcher.cli.args import (
    param_quoting_hint,
    parse_job_variables,
    parse_params,
    scheduled_time,
    split_deployment_name,
)
from dispatcher.cli.output import (
    CliError,
    Output,
    OutputOption,
    console,
    format_time,
    limit_text,
    print_fields,
    print_json,
    print_json_block,
    print_table,
    say,
)
from dispatcher.cli.runs import watch_exit_code, watch_run
from dispatcher.client import ApiError, client_from_env, segment
from dispatcher.display import NOW_SECONDS, relative_time, short_id, time_and_distance

deployment_app = typer.Typer(help="List, inspect, pause and run deployments.",
                             no_args_is_help=True, rich_markup_mode=None)

DeploymentName = Annotated[str, typer.Argument(
    metavar="FLOW/DEPLOYMENT", help="The deployment, e.g. hello/my-deployment")]


def _deployment_path(full_name: str) -> str:
    flow, name = split_deployment_name(full_name)
    return f"/deployments/{segment(flow)}/{segment(name)}"


def schedule_summary(schedule: dict[str, Any]) -> str:
    """``cron */5 * * * * (Europe/Paris)``, ``every 600s``, ``rrule FREQ=DAILY`` (+ inactive)."""
    zone = schedule.get("timezone") or "UTC"
    if schedule.get("cron"):
        text = f"cron {schedule['cron']} ({zone})"
    elif schedule.get("interval") is not None:
        interval = float(schedule["interval"])
        text = f"every {interval:g}s"
    else:
        text = f"rrule {schedule.get('rrule')} ({zone})"
    return text if schedule.get("active", True) else f"{text} [inactive]"


def _full_name(deployment: dict[str, Any]) -> str:
    return f"{deployment.get('flow_name')}/{deployment.get('name')}"


@deployment_app.command("ls")
def deployment_ls(
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only this pool's.")] = None,
    flow: Annotated[str | None, typer.Option("--flow", help="Only this flow's.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """List deployments."""
    with client_from_env() as client:
        deployments = client.get("/deployments", params={"pool": pool, "flow": flow})
    if output is Output.json:
        print_json(deployments)
        return
    if not deployments:
        say("No deployments yet; create them with `pushpool deploy`")
        return
    print_table("Deployments",
                ["Name", "Pool", "Queue", "Schedules", "Status", "Concurrency Limit"],
                [[_full_name(d), d.get("pool_name"), d.get("queue_name"),
                  "; ".join(schedule_summary(s) for s in d.get("schedules") or []) or None,
                  "paused" if d.get("paused") else "ready", limit_text(d.get("concurrency_limit"))]
                 for d in deployments])


@deployment_app.command("inspect")
def deployment_inspect(name: DeploymentName, output: OutputOption = Output.table) -> None:
    """Show a deployment."""
    with client_from_env() as client:
        deployment = client.get(_deployment_path(name))
    if output is Output.json:
        print_json(deployment)
        return
    print_fields(f"Deployment {_full_name(deployment)!r}", [
        ("ID", deployment.get("id")),
        ("Pool", deployment.get("pool_name")),
        ("Queue", deployment.get("queue_name")),
        ("Status", "paused" if deployment.get("paused") else "ready"),
        ("Image", deployment.get("image")),
        ("Command", shlex.join(deployment["command"]) if deployment.get("command") else None),
        ("Source", deployment.get("source")),
        ("Entrypoint", deployment.get("entrypoint")),
        ("Concurrency limit", limit_text(deployment.get("concurrency_limit"))),
        ("Tags", ", ".join(deployment.get("tags") or []) or None),
        ("Version", deployment.get("version")),
        ("Description", deployment.get("description")),
        ("Created", format_time(deployment.get("created"))),
        ("Updated", format_time(deployment.get("updated"))),
    ])
    schedules = deployment.get("schedules") or []
    if schedules:
        print_table("Schedules", ["ID", "Schedule", "Anchor"],
                    [[short_id(s.get("id")), schedule_summary(s), format_time(s.get("anchor_date"))]
                     for s in schedules], unbroken=("ID", "Anchor"))
    print_json_block("Parameters", deployment.get("parameters") or {})
    print_json_block("Job variables", deployment.get("job_variables") or {})


def _set_paused(name: str, paused: bool) -> None:
    with client_from_env() as client:
        client.patch(_deployment_path(name), json={"paused": paused})


@deployment_app.command("pause")
def deployment_pause(name: DeploymentName) -> None:
    """Pause a deployment's schedules (runs started by hand still run)."""
    _set_paused(name, True)
    say(f"Paused deployment {name!r}", "yellow")


@deployment_app.command("resume")
def deployment_resume(name: DeploymentName) -> None:
    """Resume a paused deployment's schedules."""
    _set_paused(name, False)
    say(f"Resumed deployment {name!r}", "green")


@deployment_app.command("delete")
def deployment_delete(name: DeploymentName) -> None:
    """Delete a deployment and its schedules."""
    with client_from_env() as client:
        client.delete(_deployment_path(name))
    say(f"Deleted deployment {name!r}", "green")


def warn_if_past(when: datetime | None, start_at: str | None,
                 now: datetime | None = None) -> None:
    """A ``--start-at`` already gone by starts the run at once: say so, on stderr."""
    now = now or datetime.now(UTC)
    if when is None or start_at is None or when >= now - timedelta(seconds=NOW_SECONDS):
        return
    from rich.text import Text

    console(stderr=True).print(Text(
        f"Warning: --start-at {start_at} is in the past ({relative_time(when, now)}); "
        "the run starts as soon as it can", style="yellow"), soft_wrap=True)


@deployment_app.command("run")
def deployment_run(
    name: DeploymentName,
    param: Annotated[list[str] | None, typer.Option(
        "--param", metavar="KEY=VALUE", help="A parameter; VALUE is JSON when it parses as JSON, "
                                             "else a string. Repeat it.")] = None,
    params: Annotated[str | None, typer.Option(
        "--params", metavar="JSON",
        help="All parameters as one JSON object (--param wins over it).")] = None,
    job_variable: Annotated[list[str] | None, typer.Option(
        "--job-variable", metavar="KEY=VALUE", help="An override of the pool template's "
                                                    "variables; env.FOO=bar sets a nested key. "
                                                    "Repeat it.")] = None,
    start_in: Annotated[str | None, typer.Option(
        "--start-in", metavar="DURATION", help="Start after this long: 30s, 10m, 2h, 1d.")] = None,
    start_at: Annotated[str | None, typer.Option(
        "--start-at", metavar="TIME",
        help="Start at this ISO 8601 time (local time without a zone).")] = None,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Print state changes and logs until the run ends; exit 1 unless "
                        "it COMPLETED.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", metavar="KEY",
        help="Asking twice with the same key gives the same run.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Create a run of a deployment."""
    path = _deployment_path(name)
    if watch and output is Output.json:
        raise CliError("--watch prints as the run goes; it has no --output json",
                       "drop one of them")
    body: dict[str, Any] = {"parameters": parse_params(param or [], params),
                            "job_variables": parse_job_variables(job_variable or [])}
    when = scheduled_time(start_in, start_at)
    if when is not None:
        body["scheduled_time"] = when.isoformat()
    warn_if_past(when, start_at)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    with client_from_env() as client:
        if output is Output.table:
            say(f"Creating flow run for deployment {name!r}...")
        try:
            status, run = client.send("POST", f"{path}/runs", json=body, headers=headers)
        except ApiError as exc:
            hint = param_quoting_hint(exc, param or [])
            if hint is None:
                raise
            raise CliError(exc.message, hint, exc.exit_code) from None
        if output is Output.json:
            print_json(run)
        else:
            verb = "Created" if status == 201 else "Found the existing"
            say(f"{verb} flow run {run.get('name')!r}.", "green")
            say(f"└── UUID: {run.get('id')}")
            say(f"└── Parameters: {_compact(run.get('parameters'))}")
            say(f"└── Job Variables: {_compact(run.get('job_variables'))}")
            say("└── Scheduled start time: "
                f"{time_and_distance(run.get('scheduled_time')) or 'now'}")
            if not watch:
                say(f"Follow it with `pushpool run logs {short_id(run.get('id'))} --follow`")
        if not watch:
            return
        final = watch_run(client, str(run["id"]), states=True, logs=True)
    raise typer.Exit(watch_exit_code(final))


def _compact(value: Any) -> str:
    import json

    return json.dumps(value if value is not None else {}, sort_keys=True)

