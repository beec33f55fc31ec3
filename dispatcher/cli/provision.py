"""`work-pool create --provision-infra` and `work-pool delete --deprovision-infra`.

Provisioning runs here, in the CLI, with the user's own cloud credentials (the console
does the same through the API with the server's identity; the logic is shared in
``dispatcher.operations.provisioning``): it shows the provider's plan in a panel,
asks before changing anything (`--yes` skips the question), applies it with a progress
bar, and hands the pool its template defaults and the record of what was made, which is
what deprovisioning later removes (and nothing else).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import typer

from dispatcher.cli.output import CliError, console, say


def provider_for(pool_type: str) -> Any:
    from providers import registry

    try:
        return registry.get_provider(pool_type)
    except registry.UnknownPoolType as exc:
        raise CliError(str(exc)) from None
    except registry.ProviderUnavailable as exc:
        raise CliError(str(exc)) from None


def options_for(pool_type: str, pairs: list[str],
                template: dict[str, Any] | None) -> dict[str, Any]:
    """The options for the adapter's ``provision``: what it declares, taken from the
    given template's variable defaults, then from ``KEY=VALUE`` pairs (exit 2 for a key
    it does not take or a bad value)."""
    from dispatcher.operations.provisioning import declared_options, template_options
    from providers.provision_options import parse_pairs

    declared = declared_options(provider_for(pool_type))
    options = template_options(declared, template)
    try:
        options.update(parse_pairs(declared, pairs, pool_type))
    except ValueError as exc:
        raise CliError(f"--infra-option {exc}",
                       f"see `pushpool work-pool infra-options --type {pool_type}`") from None
    return options


def _show_plan(plan: Any, title: str, verbs: dict[str, str]) -> None:
    from rich.panel import Panel

    lines = [f"[bold]{plan.target}[/bold]", ""]
    for step in plan.steps:
        verb = verbs.get(step.action, step.action)
        detail = f" — {step.detail}" if step.detail else ""
        lines.append(f"  {verb:<8} {step.resource}: {step.name}{detail}")
    console().print(Panel("\n".join(lines), title=title, expand=False))


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError("refusing to change cloud resources without confirmation",
                       "run it in a terminal, or add --yes")
    if not typer.confirm(question):
        raise CliError("nothing was changed", exit_code=1)


def _apply_with_progress(run: Callable[[Callable[[Any], None]], Any], total: int) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), console=console()) as progress:
        task = progress.add_task("working", total=max(total, 1))

        def on_step(step: Any) -> None:
            progress.update(task, advance=1, description=f"{step.resource}: {step.name}")

        return run(on_step)


def _failure(exc: Exception) -> CliError:
    from dispatcher.operations.provisioning import ProvisionFailed
    from providers.base import ProviderError

    if isinstance(exc, ProviderError | ProvisionFailed):
        # The provider's message says what was made and what was not.
        return CliError(str(exc), "fix the cause and run the same command again: every step "
                        "is idempotent", exit_code=1)
    raise exc


def provision(name: str, pool_type: str, options: dict[str, Any], yes: bool,
              template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Plan, confirm, apply; returns (template with the new defaults, provisioned record)."""
    from dispatcher.operations import provisioning

    provider = provider_for(pool_type)
    try:
        plan = asyncio.run(provisioning.plan(provider, name, options))
    except Exception as exc:
        raise _failure(exc) from None
    _show_plan(plan, f"Provision infrastructure for work pool {name!r}",
               {"create": "create", "exists": "exists"})
    if plan.changes == 0:
        say("Nothing to create: everything the pool needs already exists.", "green")
    else:
        _confirm(f"Create {plan.changes} resource(s)?", yes)

    def apply(on_step: Callable[[Any], None]) -> Any:
        return asyncio.run(provisioning.apply(provider, name, options, on_step=on_step))

    try:
        done = _apply_with_progress(apply, len(plan.steps))
    except Exception as exc:
        raise _failure(exc) from None
    if plan.changes:
        say(f"Provisioned {done.changes} resource(s) for work pool {name!r}.", "green")
    return (provisioning.filled_template(template, done),
            provisioning.provisioned_record(done, options))


def deprovision(name: str, pool: dict[str, Any], yes: bool) -> None:
    provisioned = pool.get("provisioned")
    if not provisioned:
        raise CliError(f"work pool {name!r} has no infrastructure made by --provision-infra",
                       "delete it without --deprovision-infra")
    provider = provider_for(pool["type"])
    try:
        plan = asyncio.run(provider.deprovision(name, provisioned, False))
    except Exception as exc:
        raise _failure(exc) from None
    _show_plan(plan, f"Remove the infrastructure of work pool {name!r}",
               {"delete": "delete", "keep": "keep", "absent": "gone"})
    deletions = sum(1 for step in plan.steps if step.action == "delete")
    if deletions:
        _confirm(f"Delete {deletions} resource(s) made by pushpool?", yes)

        def apply(on_step: Callable[[Any], None]) -> Any:
            return asyncio.run(provider.deprovision(name, provisioned, True, on_step=on_step))

        try:
            _apply_with_progress(apply, len(plan.steps))
        except Exception as exc:
            raise _failure(exc) from None
        say(f"Removed {deletions} resource(s) made for work pool {name!r}.", "green")
    else:
        say("Nothing to remove: what provisioning made is already gone.", "green")
