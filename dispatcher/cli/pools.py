"""``pushpool work-pool ...`` and ``pushpool work-queue ...``: pools, their queues and limits."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dispatcher.cli.output import (
    CliError,
    Output,
    OutputOption,
    format_time,
    limit_text,
    print_fields,
    print_json,
    print_json_block,
    print_table,
    say,
)
from dispatcher.client import ApiError, client_from_env, segment
from dispatcher.display import relative_time, short_id

pool_app = typer.Typer(help="Create, inspect and change work pools.", no_args_is_help=True,
                       rich_markup_mode=None)
queue_app = typer.Typer(help="Work queues inside a pool: priorities and concurrency limits.",
                        no_args_is_help=True, rich_markup_mode=None)

PoolName = Annotated[str, typer.Argument(help="The work pool's name.")]
QueueName = Annotated[str, typer.Argument(help="The work queue's name.")]
PoolOption = Annotated[str, typer.Option("--pool", "-p", help="The work pool of the queue.")]
LimitOption = Annotated[int | None, typer.Option(
    "--concurrency-limit", min=1, help="Most runs active at once (omit: no limit).")]
TemplateOption = Annotated[Path | None, typer.Option(
    "--base-job-template", help="A JSON (or YAML) file with job_configuration and variables.")]


def _pool_path(name: str) -> str:
    return f"/work-pools/{segment(name)}"


def _queue_path(pool: str, name: str) -> str:
    return f"{_pool_path(pool)}/queues/{segment(name)}"


def read_template_file(path: Path) -> dict[str, Any]:
    """A base job template file: JSON, or YAML when it ends in .yaml/.yml."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--base-job-template: cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json and yaml both: report the parser's words
        raise CliError(f"--base-job-template: {path} is not valid "
                       f"{'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: "
                       f"{str(exc).splitlines()[0]}",
                       "start from `pushpool work-pool get-default-base-job-template "
                       "--type TYPE --file FILE`") from None
    if not isinstance(data, dict):
        raise CliError(f"--base-job-template: {path} must hold an object with "
                       "job_configuration and variables")
    return data


def _status(pool: dict[str, Any]) -> str:
    if not pool.get("paused"):
        return "ready"
    return "paused (breaker)" if pool.get("paused_by") == "breaker" else "paused"


# ---------------------------------------------------------------------------- work pools


@pool_app.command("create")
def pool_create(
    name: PoolName,
    pool_type: Annotated[str, typer.Option(
        "--type", "-t", help="process, ecs:push, cloud-run:push, "
                             "azure-container-instance:push or modal:push")],
    base_job_template: TemplateOption = None,
    concurrency_limit: LimitOption = None,
    description: Annotated[str | None, typer.Option(help="What the pool is for.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    provision_infra: Annotated[bool, typer.Option(
        "--provision-infra", help="Create the cloud resources the pool needs (with your "
                                  "own credentials), after showing the plan.")] = False,
    region: Annotated[str | None, typer.Option(
        help="Cloud region for --provision-infra (default: your SDK's).")] = None,
    endpoint_url: Annotated[str | None, typer.Option(
        help="API endpoint for --provision-infra (VPC endpoints, emulators).")] = None,
    profile: Annotated[str | None, typer.Option(
        help="Credentials profile for --provision-infra.")] = None,
    infra_option: Annotated[list[str] | None, typer.Option(
        "--infra-option", metavar="KEY=VALUE",
        help="An option of the type's provisioning, e.g. subscription_id=... for "
             "azure-container-instance:push (repeatable; `work-pool infra-options --type "
             "TYPE` lists them). A --base-job-template's defaults for those keys count "
             "too; secrets come from the cloud SDK's environment.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
    = False,
) -> None:
    """Create a work pool."""
    if infra_option and not provision_infra:
        raise CliError("--infra-option is for --provision-infra", "add --provision-infra")
    body: dict[str, Any] = {"name": name, "type": pool_type, "paused": paused}
    if description is not None:
        body["description"] = description
    if concurrency_limit is not None:
        body["concurrency_limit"] = concurrency_limit
    if base_job_template is not None:
        body["base_job_template"] = read_template_file(base_job_template)
    with client_from_env() as client:
        if provision_infra:
            from dispatcher.cli import provision as cli_provision

            # An unknown type, a missing SDK or an option it does not take fails first.
            shorthands = [f"{k}={v}" for k, v in (("region", region),
                          ("endpoint_url", endpoint_url), ("profile", profile)) if v]
            options = cli_provision.options_for(pool_type, [*shorthands, *(infra_option or [])],
                                                body.get("base_job_template"))
            template = body.get("base_job_template") or client.get(
                f"/pool-types/{segment(pool_type)}/base-job-template")
            body["base_job_template"], body["provisioned"] = cli_provision.provision(
                name, pool_type, options, yes, template)
            try:
                client.get(_pool_path(name))
            except ApiError as exc:
                if exc.status != 404:
                    raise
            else:  # a rerun: the infrastructure was checked, the pool is there
                say(f"Work pool {name!r} already exists; its infrastructure is in place.",
                    "green")
                return
        pool = client.post("/work-pools", json=body)
    say(f"Created work pool {pool['name']!r}!", "green")
    if pool.get("paused"):
        say(f"It is paused; resume it with `pushpool work-pool resume {pool['name']}`")


@pool_app.command("infra-options")
def pool_infra_options(
    pool_type: Annotated[str, typer.Option("--type", "-t", help="The pool type.")],
    output: OutputOption = Output.table,
) -> None:
    """List the --infra-option keys a pool type's --provision-infra takes."""
    from dispatcher.cli import provision as cli_provision

    declared = getattr(cli_provision.provider_for(pool_type), "provision_options", ())
    rows = [{"name": o.name, "kind": o.kind, "choices": list(o.choices),
             "aliases": list(o.aliases), "help": o.help} for o in declared]
    if output is Output.json:
        print_json(rows)
        return
    if not rows:
        say(f"Pool type {pool_type!r} takes no provisioning options")
        return
    def what(row: dict[str, Any]) -> str:
        kind = "|".join(row["choices"]) if row["choices"] else \
            ("" if row["kind"] == "text" else row["kind"])
        return f"{row['help']} [{kind}]" if kind else str(row["help"])

    print_table(f"--infra-option keys of {pool_type}", ["Key", "What"],
                [["\n".join([r["name"], *(f"or {a}" for a in r["aliases"])]), what(r)]
                 for r in rows])


@pool_app.command("ls")
def pool_ls(output: OutputOption = Output.table) -> None:
    """List work pools."""
    with client_from_env() as client:
        pools = client.get("/work-pools")
    if output is Output.json:
        print_json(pools)
        return
    if not pools:
        say("No work pools yet; create one with `pushpool work-pool create NAME --type process`")
        return
    print_table("Work Pools",
                ["Name", "Type", "Status", "Concurrency Limit", "Queues", "Runs Active"],
                [[p["name"], p["type"], _status(p), limit_text(p.get("concurrency_limit")),
                  ", ".join(p.get("queues") or []) or None, p.get("active_runs", 0)]
                 for p in pools])


@pool_app.command("inspect")
def pool_inspect(name: PoolName, output: OutputOption = Output.table) -> None:
    """Show a work pool with its base job template."""
    with client_from_env() as client:
        pool = client.get(_pool_path(name))
    if output is Output.json:
        print_json(pool)
        return
    print_fields(f"Work pool {pool['name']!r}", [
        ("ID", pool.get("id")),
        ("Type", pool.get("type")),
        ("Status", _status(pool)),
        ("Paused reason", pool.get("paused_reason")),
        ("Description", pool.get("description")),
        ("Concurrency limit", limit_text(pool.get("concurrency_limit"))),
        ("Late after", f"{pool.get('late_after_seconds', 15)} s"),
        ("Queues", ", ".join(pool.get("queues") or []) or None),
        ("Runs active", pool.get("active_runs", 0)),
        ("Created", format_time(pool.get("created"))),
        ("Updated", format_time(pool.get("updated"))),
    ])
    if pool.get("provisioned"):
        print_json_block("Provisioned", pool["provisioned"])
    print_json_block("Base job template", pool.get("base_job_template") or {})


@pool_app.command("update")
def pool_update(
    name: PoolName,
    base_job_template: TemplateOption = None,
    concurrency_limit: LimitOption = None,
    clear_concurrency_limit: Annotated[bool, typer.Option(
        "--clear-concurrency-limit", help="Remove the pool's concurrency limit.")] = False,
    description: Annotated[str | None, typer.Option(help="What the pool is for.")] = None,
) -> None:
    """Change a work pool's template, concurrency limit or description."""
    body: dict[str, Any] = {}
    if base_job_template is not None:
        body["base_job_template"] = read_template_file(base_job_template)
    if concurrency_limit is not None:
        body["concurrency_limit"] = concurrency_limit
    if clear_concurrency_limit:
        body["clear_concurrency_limit"] = True
    if description is not None:
        body["description"] = description
    if not body:
        raise CliError("nothing to update", "pass --base-job-template, --concurrency-limit, "
                                            "--clear-concurrency-limit or --description")
    with client_from_env() as client:
        client.patch(_pool_path(name), json=body)
    say(f"Updated work pool {name!r}", "green")


@pool_app.command("pause")
def pool_pause(name: PoolName) -> None:
    """Pause a work pool: its runs stay scheduled until it is resumed."""
    with client_from_env() as client:
        client.post(f"{_pool_path(name)}/pause")
    say(f"Paused work pool {name!r}", "yellow")


@pool_app.command("resume")
def pool_resume(name: PoolName) -> None:
    """Resume a paused work pool."""
    with client_from_env() as client:
        client.post(f"{_pool_path(name)}/resume")
    say(f"Resumed work pool {name!r}", "green")


@pool_app.command("delete")
def pool_delete(
    name: PoolName,
    cascade: Annotated[bool, typer.Option(
        "--cascade", help="Also delete the pool's deployments with their schedules and "
                          "scheduled runs (listed before it asks). Finished runs are kept.")]
    = False,
    deprovision_infra: Annotated[bool, typer.Option(
        "--deprovision-infra", help="Also remove the cloud resources --provision-infra made "
                                    "(only those).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
    = False,
) -> None:
    """Delete a work pool with its queues; its finished runs are kept. A pool with
    deployments is refused unless --cascade."""
    path = _pool_path(name)
    with client_from_env() as client:
        held = client.get("/deployments", params={"pool": name})
        # The server deletes only if the pool still has the deployments shown here.
        confirmed = {"deployments": len(held), "cascade": str(cascade).lower()}
        if held and not cascade:
            client.request("DELETE", path, params=confirmed)  # refused: the server says why
        question = f"Delete work pool {name!r} and its queues?"
        if held:
            _show_cascade(client, name, held)
            question = f"Delete work pool {name!r}, its queues and these deployments?"
        if not yes and not typer.confirm(question):
            raise CliError(f"work pool {name!r} was not deleted", exit_code=1)
        if deprovision_infra:
            from dispatcher.cli import provision as cli_provision

            cli_provision.deprovision(name, client.get(path), yes)
        client.request("DELETE", path, params=confirmed)
    say(f"Deleted work pool {name!r}" + (f" and {len(held)} deployment(s)" if held else ""),
        "green")


def _show_cascade(client: Any, name: str, held: list[dict[str, Any]]) -> None:
    """What --cascade removes besides the pool: each deployment, schedules, scheduled runs."""
    scheduled = client.get("/runs", params={"pool": name, "state": "SCHEDULED",
                                            "limit": 1000})
    runs = f"{len(scheduled)}{'+' if len(scheduled) == 1000 else ''}"
    schedules = sum(len(d.get("schedules") or []) for d in held)
    say(f"--cascade also deletes {len(held)} deployment(s), their {schedules} schedule(s) "
        f"and {runs} scheduled run(s):", "yellow")
    for deployment in held:
        say(f"  {deployment['flow_name']}/{deployment['name']}")
    say("Finished runs are kept.")


@pool_app.command("get-default-base-job-template")
def pool_default_template(
    pool_type: Annotated[str, typer.Option("--type", "-t", help="The pool type.")],
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="Write it to this file instead of printing it.")] = None,
) -> None:
    """Print (or write) the default base job template of a pool type."""
    with client_from_env() as client:
        template = client.get(f"/pool-types/{segment(pool_type)}/base-job-template")
    if file is None:
        print_json(template)
        return
    try:
        file.write_text(json.dumps(template, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--file: cannot write {file}: {exc.strerror}", exit_code=1) from None
    say(f"Wrote the default base job template for type {pool_type!r} to {file}")


@pool_app.command("preview")
def pool_preview(
    name: PoolName,
    limit: Annotated[int, typer.Option(min=1, help="How many upcoming runs.")] = 10,
    output: OutputOption = Output.table,
) -> None:
    """Show the next runs due in a work pool."""
    with client_from_env() as client:
        runs = client.get(f"{_pool_path(name)}/preview", params={"limit": limit})
    if output is Output.json:
        print_json(runs)
        return
    if not runs:
        say(f"No runs scheduled in work pool {name!r}")
        return
    print_table(f"Upcoming runs in work pool {name!r}",
                ["Scheduled", "Run", "Deployment", "Queue", "ID"],
                [[relative_time(r.get("scheduled_time")), r.get("name"), r.get("deployment_name"),
                  r.get("queue_name"), short_id(r.get("id"))] for r in runs],
                unbroken=("Scheduled", "ID"))


# ---------------------------------------------------------------------------- work queues


def _queue_rows(queues: list[dict[str, Any]]) -> list[list[Any]]:
    return [[q["name"], q.get("pool_name"), q.get("priority"),
             limit_text(q.get("concurrency_limit")), _status(q), q.get("active_runs", 0)]
            for q in queues]


@queue_app.command("create")
def queue_create(
    name: QueueName,
    pool: PoolOption,
    priority: Annotated[int | None, typer.Option(
        min=1, help="1 is served first (default: after the pool's other queues).")] = None,
    concurrency_limit: LimitOption = None,
    description: Annotated[str | None, typer.Option(help="What the queue is for.")] = None,
) -> None:
    """Create a work queue in a pool."""
    body: dict[str, Any] = {"name": name}
    for key, value in (("priority", priority), ("concurrency_limit", concurrency_limit),
                       ("description", description)):
        if value is not None:
            body[key] = value
    with client_from_env() as client:
        queue = client.post(f"{_pool_path(pool)}/queues", json=body)
    say(f"Created work queue {queue['name']!r} in work pool {pool!r} "
        f"(priority {queue.get('priority')})", "green")


@queue_app.command("ls")
def queue_ls(
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only this pool's queues.")]
    = None,
    output: OutputOption = Output.table,
) -> None:
    """List work queues (of every pool, or of one)."""
    with client_from_env() as client:
        queues = client.get("/work-queues", params={"pool": pool})
    if output is Output.json:
        print_json(queues)
        return
    if not queues:
        say("No work queues" + (f" in work pool {pool!r}" if pool else ""))
        return
    print_table("Work Queues",
                ["Name", "Pool", "Priority", "Concurrency Limit", "Status", "Runs Active"],
                _queue_rows(queues))


@queue_app.command("inspect")
def queue_inspect(name: QueueName, pool: PoolOption, output: OutputOption = Output.table) -> None:
    """Show a work queue."""
    with client_from_env() as client:
        queue = client.get(_queue_path(pool, name))
    if output is Output.json:
        print_json(queue)
        return
    print_fields(f"Work queue {queue['name']!r}", [
        ("ID", queue.get("id")),
        ("Pool", queue.get("pool_name") or pool),
        ("Priority", queue.get("priority")),
        ("Concurrency limit", limit_text(queue.get("concurrency_limit"))),
        ("Status", _status(queue)),
        ("Runs active", queue.get("active_runs", 0)),
        ("Description", queue.get("description")),
        ("Created", format_time(queue.get("created"))),
        ("Updated", format_time(queue.get("updated"))),
    ])


def _patch_queue(pool: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    with client_from_env() as client:
        result: dict[str, Any] = client.patch(_queue_path(pool, name), json=body)
    return result


@queue_app.command("pause")
def queue_pause(name: QueueName, pool: PoolOption) -> None:
    """Pause a work queue: its runs wait until it is resumed."""
    _patch_queue(pool, name, {"paused": True})
    say(f"Paused work queue {name!r} in work pool {pool!r}", "yellow")


@queue_app.command("resume")
def queue_resume(name: QueueName, pool: PoolOption) -> None:
    """Resume a paused work queue."""
    _patch_queue(pool, name, {"paused": False})
    say(f"Resumed work queue {name!r} in work pool {pool!r}", "green")


@queue_app.command("set-concurrency-limit")
def queue_set_limit(
    name: QueueName,
    limit: Annotated[int, typer.Argument(min=1, help="Most runs active at once.")],
    pool: PoolOption,
) -> None:
    """Limit how many of a queue's runs are active at once."""
    _patch_queue(pool, name, {"concurrency_limit": limit})
    say(f"Concurrency limit of work queue {name!r} set to {limit}", "green")


@queue_app.command("clear-concurrency-limit")
def queue_clear_limit(name: QueueName, pool: PoolOption) -> None:
    """Remove a queue's concurrency limit."""
    _patch_queue(pool, name, {"clear_concurrency_limit": True})
    say(f"Concurrency limit of work queue {name!r} removed", "green")


@queue_app.command("delete")
def queue_delete(name: QueueName, pool: PoolOption) -> None:
    """Delete a work queue."""
    with client_from_env() as client:
        client.delete(_queue_path(pool, name))
    say(f"Deleted work queue {name!r} from work pool {pool!r}", "green")
