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
from dispatcher.display import (
    relative_time,
    run_duration,
    short_id,
    state_detail,
    state_text,
    time_and_distance,
)

run_app = typer.Typer(help="List, inspect, follow, cancel and resubmit runs.",
                      no_args_is_help=True,
                      rich_markup_mode=None)

# Mirrors dispatcher.models.FINAL_STATES (not imported: pydantic would slow every command).
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
NOT_STARTED = frozenset({"SCHEDULED", "PENDING"})
STATE_STYLES = {"COMPLETED": "green", "FAILED": "red", "CRASHED": "red", "LATE": "yellow",
                "RUNNING": "blue", "PENDING": "cyan", "CANCELLING": "magenta",
                "CANCELLED": "dim"}
# How often --watch and --follow ask the API for news. Module-level so tests can shorten it.
POLL_SECONDS = 1.0
LOG_PAGE_SIZE = 500

RunId = Annotated[str, typer.Argument(
    help="The run's id, or its first 8 characters as `pushpool run ls` shows them.")]
STREAM_WIDTH = 7  # "runtime", the longest stream name (stdout, stderr, log, runtime)
MAX_TAIL = 1000  # the API's largest log page: --tail reads one


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

    state = str(record.get("state"))
    line = Text(f"{format_clock(record.get('timestamp'))}  run {run_name!r} is ")
    line.append(styled_state(state))
    detail = state_detail(state, record.get("message"))
    if detail:
        line.append(f": {detail}")
    console().print(line, soft_wrap=True)


def print_log_line(entry: dict[str, Any]) -> None:
    from rich.text import Text

    stream = str(entry.get("stream") or "stdout")
    line = Text(f"{format_clock(entry.get('timestamp'))} {stream:<{STREAM_WIDTH}} | ",
                style="dim")
    line.append(str(entry.get("message", "")).rstrip("\n"),
                style="red" if stream == "stderr" else "")
    console().print(line, soft_wrap=True)


def fetch_new_logs(client: ApiClient, run_id: str, after: int | None,
                   most: int | None = None) -> tuple[list[Any], int | None]:
    """The log entries after id ``after`` (all pages, or the first ``most``); answers them
    and the last id seen."""
    entries: list[Any] = []
    while True:
        size = LOG_PAGE_SIZE if most is None else min(LOG_PAGE_SIZE, most - len(entries))
        page = client.get(f"{_run_path(run_id)}/logs",
                          params={"after": after, "limit": size}) or []
        entries.extend(page)
        if page:
            after = int(page[-1]["id"])
        if len(page) < size or (most is not None and len(entries) >= most):
            return entries, after


def fetch_last_logs(client: ApiClient, run_id: str, count: int) -> list[Any]:
    """The run's last ``count`` log entries, in order."""
    entries: list[Any] = client.get(f"{_run_path(run_id)}/logs",
                                    params={"tail": "true", "limit": count}) or []
    return entries


def _moment(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def follow_run(client: ApiClient, run_id: str, *, states: bool, logs: bool) -> dict[str, Any]:
    """Print state changes and/or log lines until the run is final; answer the final run.

    What arrived in one poll is printed in time order; at equal times a state change goes
    before the log lines and a final state after them, as they happened. A job may log
    before the dispatcher records it RUNNING (the state comes with the next status poll),
    so no line is printed before the run has left PENDING: lines wait for that state
    change and follow it.
    """
    seen_states = 0
    last_log: int | None = None
    while True:
        # The run first, then the logs: logs written before a final state are then all in.
        run: dict[str, Any] = client.get(_run_path(run_id))
        history = run.get("history") or []
        news: list[tuple[datetime, int, Callable[[], None]]] = []
        if states:
            for record in history[seen_states:]:
                rank = 2 if record.get("state") in FINAL_STATES else 0
                news.append((_moment(record.get("timestamp")), rank,
                             partial(print_state_change, record, str(run.get("name")))))
            seen_states = max(seen_states, len(history))
        started = started_at(run)
        if logs and started is not None:
            entries, last_log = fetch_new_logs(client, run_id, last_log)
            news.extend((max(_moment(e.get("timestamp")), started), 1,
                         partial(print_log_line, e)) for e in entries)
        for _, _, show in sorted(news, key=lambda item: (item[0], item[1])):
            show()
        if run.get("state") in FINAL_STATES:
            return run
        time.sleep(POLL_SECONDS)


def started_at(run: dict[str, Any]) -> datetime | None:
    """When the run left SCHEDULED and PENDING (None: not yet)."""
    if run.get("state") in NOT_STARTED:
        return None
    for record in run.get("history") or []:
        if record.get("state") not in NOT_STARTED:
            return _moment(record.get("timestamp"))
    return datetime.min.replace(tzinfo=UTC)  # no record of it: hold nothing back


def watch_exit_code(run: dict[str, Any]) -> int:
    """0 when the run COMPLETED, 1 for any other final state."""
    state = str(run.get("state"))
    style = "green" if state == "COMPLETED" else "red"
    say(f"Run {run.get('name')!r} finished in state "
        f"{state_text(state, run.get('state_message'))}", style)
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
    print_table("Runs", ["ID", "Name", "Deployment", "State", "Scheduled", "Duration"],
                [[short_id(r.get("id")), r.get("name"), r.get("deployment_name"),
                  styled_state(shown_state(r)), relative_time(r.get("scheduled_time")),
                  run_duration(r.get("started_at"), r.get("ended_at"))] for r in runs],
                unbroken=("ID", "State", "Scheduled", "Duration"))


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
        ("State message", state_detail(state, run.get("state_message"))),
        ("Scheduled", time_and_distance(run.get("scheduled_time"))),
        ("Started", time_and_distance(run.get("started_at"))),
        ("Ended", time_and_distance(run.get("ended_at"))),
        ("Duration", run_duration(run.get("started_at"), run.get("ended_at"))),
        ("Attempt", run.get("attempt")),
        ("Exit code", run.get("exit_code")),
        ("Timeout", f"{run['timeout_seconds']} s" if run.get("timeout_seconds") else None),
        ("Infrastructure id", run.get("infra_id")),
        ("Console URL", run.get("console_url")),
        ("Idempotency key", run.get("idempotency_key")),
    ])
    print_json_block("Parameters", run.get("parameters") or {})
    if run.get("result") is not None:
        print_json_block("Result", run["result"])
    print_json_block("Job variables (this run's overrides)", run.get("job_variables") or {})
    if run.get("job_configuration") is None:
        say("Job configuration: not rendered yet (the run has not been submitted)")
    else:
        print_json_block("Job configuration (after merging)", run["job_configuration"])
    history = run.get("history") or []
    if history:
        print_table("State history", ["Time", "State", "Message"],
                    [[format_time(h.get("timestamp")), styled_state(str(h.get("state"))),
                      state_detail(str(h.get("state")), h.get("message"))]
                     for h in history],
                    unbroken=("Time", "State"))


@run_app.command("logs")
def run_logs(
    run_id: RunId,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new lines until the run is final.")] = False,
    head: Annotated[int | None, typer.Option(
        "--head", metavar="N", min=1, help="Only the first N lines.")] = None,
    tail: Annotated[int | None, typer.Option(
        "--tail", metavar="N", min=1, max=MAX_TAIL,
        help=f"Only the last N lines (at most {MAX_TAIL}).")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Print a run's logs: time, stream (stdout, stderr, runtime) and line."""
    if head is not None and tail is not None:
        raise CliError("--head and --tail cannot be used together", "pick one")
    if follow and (head is not None or tail is not None):
        raise CliError("--follow prints every line; it has no --head or --tail",
                       "drop one of them")
    with client_from_env() as client:
        if follow:
            if output is Output.json:
                raise CliError("--follow prints lines as they come; it has no --output json",
                               "drop one of them")
            watch_run(client, run_id, states=False, logs=True)
            return
        client.get(_run_path(run_id))  # a clear 404 for an unknown run, not an empty list
        if tail is not None:
            entries = fetch_last_logs(client, run_id, tail)
        else:
            entries, _ = fetch_new_logs(client, run_id, None, most=head)
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
