"""``pushpool webhook ...``: create, list, inspect, rotate, disable, enable, delete webhooks.

A webhook's secret is printed by ``create`` and ``rotate-secret`` only, once; the other
commands never see it.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from dispatcher.cli.args import parse_duration
from dispatcher.cli.output import (
    CliError,
    Output,
    OutputOption,
    format_time,
    print_fields,
    print_json,
    print_table,
    say,
)
from dispatcher.client import api_url_from_env, client_from_env, segment

webhook_app = typer.Typer(
    help="Webhooks: addresses that start runs of a deployment when a sender that holds "
         "their secret posts to them.", no_args_is_help=True, rich_markup_mode=None)

WebhookName = Annotated[str, typer.Argument(metavar="NAME", help="The webhook's name.")]
SCHEMES = ("pushpool", "github", "bearer")


def _path(name: str) -> str:
    return f"/webhooks/{segment(name)}"


def _url(hook: dict[str, Any]) -> str:
    return api_url_from_env() + str(hook.get("path"))


def _read_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--parameters-template: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"--parameters-template: {path} is not UTF-8 text") from None


def _print_secret(answer: dict[str, Any], verb: str) -> None:
    hook = answer.get("webhook") or {}
    say(f"{verb} webhook {hook.get('name')!r} for deployment {hook.get('deployment')!r}.",
        "green")
    say(f"└── URL: {_url(hook)}")
    say(f"└── Scheme: {hook.get('scheme')}")
    say(f"└── Secret: {answer.get('secret')}")
    say("Keep the secret now: it is stored encrypted and not shown again.", "yellow")


@webhook_app.command("create")
def webhook_create(
    name: WebhookName,
    deployment: Annotated[str, typer.Option(
        "--deployment", "-d", metavar="FLOW/DEPLOYMENT",
        help="The deployment its deliveries start runs of.")],
    scheme: Annotated[str, typer.Option(
        "--scheme", help="How deliveries prove themselves: pushpool (X-Pushpool-Signature), "
                         "github (X-Hub-Signature-256) or bearer (Authorization).")]
    = "pushpool",
    parameters_template: Annotated[Path | None, typer.Option(
        "--parameters-template", metavar="FILE",
        help="A Jinja2 file that renders the run's parameters as a JSON object from body, "
             "headers and delivery_id (default: the body's 'parameters').")] = None,
    idempotency_key_template: Annotated[str | None, typer.Option(
        "--idempotency-key-template", metavar="T",
        help="A Jinja2 template for the run's idempotency key, e.g. '{{ body.after }}': "
             "a delivery with a key seen before gets that key's run.")] = None,
    description: Annotated[str | None, typer.Option(help="What the webhook is for.")]
    = None,
    output: OutputOption = Output.table,
) -> None:
    """Create a webhook: prints its URL and its secret (shown once)."""
    if scheme not in SCHEMES:
        raise CliError(f"--scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    body: dict[str, Any] = {"name": name, "deployment": deployment, "scheme": scheme}
    if parameters_template is not None:
        body["parameters_template"] = _read_template(parameters_template)
    if idempotency_key_template is not None:
        body["idempotency_key_template"] = idempotency_key_template
    if description is not None:
        body["description"] = description
    with client_from_env() as client:
        answer = client.post("/webhooks", json=body)
    if output is Output.json:
        print_json(answer)
        return
    _print_secret(answer, "Created")


@webhook_app.command("ls")
def webhook_ls(output: OutputOption = Output.table) -> None:
    """List webhooks."""
    with client_from_env() as client:
        hooks = client.get("/webhooks")
    if output is Output.json:
        print_json(hooks)
        return
    if not hooks:
        say("No webhooks yet; create one with `pushpool webhook create NAME "
            "--deployment FLOW/DEPLOYMENT`")
        return
    print_table("Webhooks", ["Name", "Deployment", "Scheme", "Status", "Path"],
                [[h.get("name"), h.get("deployment"), h.get("scheme"),
                  "enabled" if h.get("enabled") else "disabled", h.get("path")]
                 for h in hooks])


@webhook_app.command("inspect")
def webhook_inspect(name: WebhookName, output: OutputOption = Output.table) -> None:
    """Show a webhook (never its secret)."""
    with client_from_env() as client:
        hook = client.get(_path(name))
    if output is Output.json:
        print_json(hook)
        return
    print_fields(f"Webhook {hook.get('name')!r}", [
        ("ID", hook.get("id")),
        ("URL", _url(hook)),
        ("Deployment", hook.get("deployment")),
        ("Scheme", hook.get("scheme")),
        ("Status", "enabled" if hook.get("enabled") else "disabled"),
        ("Previous secret accepted until", format_time(hook.get("previous_secret_expires"))),
        ("Idempotency key template", hook.get("idempotency_key_template")),
        ("Parameters template", hook.get("parameters_template")),
        ("Description", hook.get("description")),
        ("Created", format_time(hook.get("created"))),
        ("Updated", format_time(hook.get("updated"))),
    ])


@webhook_app.command("rotate-secret")
def webhook_rotate_secret(
    name: WebhookName,
    grace: Annotated[str, typer.Option(
        "--grace", metavar="DURATION",
        help="How long the old secret still works: 0s, 30m, 24h, 7d (at most 30d).")]
    = "24h",
    output: OutputOption = Output.table,
) -> None:
    """Give a webhook a new secret (shown once); the old one works for --grace more."""
    seconds = parse_duration(grace, "--grace").total_seconds()
    with client_from_env() as client:
        answer = client.post(f"{_path(name)}/rotate-secret", json={"grace_seconds": seconds})
    if output is Output.json:
        print_json(answer)
        return
    _print_secret(answer, "Rotated the secret of")
    until = format_time((answer.get("webhook") or {}).get("previous_secret_expires"))
    say(f"The old secret is accepted until {until} UTC." if until else
        "The old secret is no longer accepted.")


@webhook_app.command("disable")
def webhook_disable(name: WebhookName) -> None:
    """Refuse a webhook's deliveries (they get 404) until it is enabled again."""
    with client_from_env() as client:
        client.post(f"{_path(name)}/disable")
    say(f"Disabled webhook {name!r}", "yellow")


@webhook_app.command("enable")
def webhook_enable(name: WebhookName) -> None:
    """Take a disabled webhook's deliveries again."""
    with client_from_env() as client:
        client.post(f"{_path(name)}/enable")
    say(f"Enabled webhook {name!r}", "green")


@webhook_app.command("delete")
def webhook_delete(name: WebhookName) -> None:
    """Delete a webhook: its URL answers 404 from now on."""
    with client_from_env() as client:
        client.delete(_path(name))
    say(f"Deleted webhook {name!r}", "green")
