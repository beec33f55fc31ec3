"""``pushpool run ...``: list, inspect, follow the logs of, cancel and resubmit runs.

``follow_run`` is shared with ``pushpool deployment run --watch``: it polls the run and its
logs until the run reaches a final state, printing each state change and each new log line.
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

import typer

from dispatcher.cli.output import (
    CliError,
    Output,
    OutputOption,
    console,
    format_clock,
    format_time,
    print_fields,
    print_json,
    print_json_block,
    print_table,
    say,
)
from dispatcher.client import ApiClient, client_from_env, segment

run_app = typer.Typer(help="List, inspect, follow, cancel and resubmit runs.",
                      no_args_is_help=True,
                      rich_markup_mode=None)

# Mirrors dispatcher.models.FINAL_STATES (not imported: pydantic would slow every command).
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
STATE_STYLES = {"COMPLETED": "green", "FAILED": "red", "CRASHED": "red", "LATE": "yellow",
                "RUNNING": "blue", "PENDING": "cyan", "CANCELLING": "magenta",
                "CANCELLED": "dim"}
# How often --watch and --follow ask the API for news. Module-level so tests can shorten it.
POLL_SECONDS = 1.0
LOG_PAGE_SIZE = 500

RunId = Annotated[str, typer.Argument(help="The run's id.")]


def _run_path(run_id: str) -> str:
    return f"/runs/{segment(run_id)}"


def shown_state(run: dict[str, Any]) -> str:
    """LATE (from display_state) when the API says so, else the stored state."""
    return str(run.get("display_state") or run.get("state") or "?")


def styled_state(state: str) -> Any:
    from rich.text import Text

    return Text(state, style=STATE_STYLES.get(state, ""))


# ---------------------------------------------------------------------------- following


def print_state_change(record: dict[str, Any], run_name: str) -> None:
    from rich.text import Text

    line = Text(f"{format_clock(record.get('timestamp'))}  run {run_name!r} is ")
    line.append(styled_state(str(record.get("state"))))
    if record.get("message"):
        line.append(f": {record['message']}")
    console().print(line, soft_wrap=True)


def print_log_line(entry: dict[str, Any]) -> None:
    from rich.text import Text

    line = Text(f"{format_clock(entry.get('timestamp'))} | ", style="dim")
    line.append(str(entry.get("message", "")).rstrip("\n"),
                style="red" if entry.get("stream") == "stderr" else "")
    console().print(line, soft_wrap=True)


def fetch_new_logs(client: ApiClient, run_id: str,
                   after: int | None) -> tuple[list[Any], int | None]:
    """Every log entry after id ``after`` (all pages); answers them and the last id seen."""
    entries: list[Any] = []
    while True:
        page = client.get(f"{_run_path(run_id)}/logs",
                          params={"after": after, "limit": LOG_PAGE_SIZE}) or []
        entries.extend(page)
        if page:
            after = int(page[-1]["id"])
        if len(page) < LOG_PAGE_SIZE:
            return entries, after


def _moment(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def follow_run(client: ApiClient, run_id: str, *, states: bool, logs: bool) -> dict[str, Any]:
    """Print state changes and/or log lines until the run is final; answer the final run.

    What arrived in one poll is printed in time order; at equal times a state change goes
    before the log lines and a final state after them, as they happened.
    """
    seen_states = 0
    last_log: int | None = None
    while True:
        # The run first, then the logs: logs written before a final state are then all in.
        run: dict[str, Any] = client.get(_run_path(run_id))
        news: list[tuple[datetime, int, Callable[[], None]]] = []
        if states:
            history = run.get("history") or []
            for record in history[seen_states:]:
                rank = 2 if record.get("state") in FINAL_STATES else 0
                news.append((_moment(record.get("timestamp")), rank,
                             partial(print_state_change, record, str(run.get("name")))))
            seen_states = max(seen_states, len(history))
        if logs:
            entries, last_log = fetch_new_logs(client, run_id, last_log)
            news.extend((_moment(e.get("timestamp")), 1, partial(print_log_line, e))
                        for e in entries)
        for _, _, show in sorted(news, key=lambda item: (item[0], item[1])):
            show()
        if run.get("state") in FINAL_STATES:
            return run
        time.sleep(POLL_SECONDS)


def watch_exit_code(run: dict[str, Any]) -> int:
    """0 when the run COMPLETED, 1 for any other final state."""
    state = run.get("state")
    message = f": {run['state_message']}" if run.get("state_message") else ""
    style = "green" if state == "COMPLETED" else "red"
    say(f"Run {run.get('name')!r} finished in state {state}{message}", style)
    return 0 if state == "COMPLETED" else 1


def watch_run(client: ApiClient, run_id: str, *, states: bool,
                          logs: bool) -> dict[str, Any]:
    try:
        return follow_run(client, run_id, states=states, logs=logs)
    except KeyboardInterrupt:
        raise CliError("stopped following; the run itself goes on",
                       f"cancel it with `pushpool run cancel {run_id}`", exit_code=130) from None


# ---------------------------------------------------------------------------- commands


@run_app.command("ls")
def run_ls(
    state: Annotated[str | None, typer.Option(
        help="Only runs in this state (SCHEDULED, LATE, RUNNING, COMPLETED, FAILED, ...).")]
    = None,
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only this pool's runs.")]
    = None,
    deployment: Annotated[str | None, typer.Option(
        "--deployment", "-d", help="Only this deployment's runs (FLOW/DEPLOYMENT).")] = None,
    dead_letter: Annotated[bool, typer.Option(
        "--dead-letter", help="Only dead letters: runs that failed before reaching their "
                              "provider (see `pushpool run resubmit`).")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs.")] = 20,
    output: OutputOption = Output.table,
) -> None:
    """List runs, newest first."""
    with client_from_env() as client:
        runs = client.get("/runs", params={"state": state.upper() if state else None,
                                           "pool": pool, "deployment": deployment,
                                           "dead_letter": "true" if dead_letter else None,
                                           "limit": limit})
    if output is Output.json:
        print_json(runs)
        return
    if not runs:
        say("No runs match")
        return
    print_table("Runs",
                ["ID", "Name", "Deployment", "Pool", "State", "Scheduled", "Started", "Ended"],
                [[r.get("id"), r.get("name"), r.get("deployment_name"), r.get("pool_name"),
                  styled_state(shown_state(r)), format_time(r.get("scheduled_time")),
                  format_time(r.get("started_at")), format_time(r.get("ended_at"))]
                 for r in runs])


@run_app.command("inspect")
def run_inspect(run_id: RunId, output: OutputOption = Output.table) -> None:
    """Show a run: parameters, job variables, rendered job configuration, state history."""
    with client_from_env() as client:
        run = client.get(_run_path(run_id))
    if output is Output.json:
        print_json(run)
        return
    print_run(run)


def print_run(run: dict[str, Any]) -> None:
    state = shown_state(run)
    print_fields(f"Run {run.get('name')!r}", [
        ("ID", run.get("id")),
        ("Deployment", run.get("deployment_name")),
        ("Pool", run.get("pool_name")),
        ("Queue", run.get("queue_name")),
        ("State", styled_state(state)),
        ("State message", run.get("state_message")),
        ("Scheduled", format_time(run.get("scheduled_time"))),
        ("Started", format_time(run.get("started_at"))),
        ("Ended", format_time(run.get("ended_at"))),
        ("Attempt", run.get("attempt")),
        ("Exit code", run.get("exit_code")),
        ("Timeout", f"{run['timeout_seconds']} s" if run.get("timeout_seconds") else None),
        ("Infrastructure id", run.get("infra_id")),
        ("Console URL", run.get("console_url")),
        ("Idempotency key", run.get("idempotency_key")),
    ])
    print_json_block("Parameters", run.get("parameters") or {})
    print_json_block("Job variables (this run's overrides)", run.get("job_variables") or {})
    if run.get("job_configuration") is None:
        say("Job configuration: not rendered yet (the run has not been submitted)")
    else:
        print_json_block("Job configuration (after merging)", run["job_configuration"])
    history = run.get("history") or []
    if history:
        print_table("State history", ["Time", "State", "Message"],
                    [[format_time(h.get("timestamp")), styled_state(str(h.get("state"))),
                      h.get("message")] for h in history])


@run_app.command("logs")
def run_logs(
    run_id: RunId,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new lines until the run is final.")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Print a run's logs."""
    with client_from_env() as client:
        if follow:
            if output is Output.json:
                raise CliError("--follow prints lines as they come; it has no --output json",
                               "drop one of them")
            watch_run(client, run_id, states=False, logs=True)
            return
        client.get(_run_path(run_id))  # a clear 404 for an unknown run, not an empty list
        entries, _ = fetch_new_logs(client, run_id, None)
    if output is Output.json:
        print_json(entries)
        return
    if not entries:
        say("No logs yet")
    for entry in entries:
        print_log_line(entry)


@run_app.command("cancel")
def run_cancel(run_id: RunId) -> None:
    """Cancel a run (its infrastructure is stopped)."""
    with client_from_env() as client:
        run = client.post(f"{_run_path(run_id)}/cancel")
    say(f"Run {run.get('name')!r} is {run.get('state')}", "yellow")


@run_app.command("resubmit")
def run_resubmit(run_id: RunId, output: OutputOption = Output.table) -> None:
    """Start a finished run again (a dead letter, say): a new run with the same parameters
    and job variables, linked to this one. Resubmitting the same run twice answers the run
    made the first time."""
    with client_from_env() as client:
        run = client.post(f"{_run_path(run_id)}/resubmit")
    if output is Output.json:
        print_json(run)
        return
    say(f"Resubmitted run {run_id} as run {run.get('name')!r} ({run.get('id')}), "
        f"{run.get('state')}", "green")
