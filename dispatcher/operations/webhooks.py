"""Webhook rules: a new webhook gets a random address and secret (shown once, stored
sealed) and its templates must compile; a delivery must prove it holds the secret, its
body must map to parameters that fit the deployment, and it is taken once.

A delivery is checked in this order, so that a stranger learns nothing past the first
refusal: the address (404 for a webhook that does not exist or is disabled), the
signature and its time (401), a copy of a delivery already taken (409), the body as JSON
(400), the templates and the deployment's parameters (422). Nothing is stored unless
every check passes; then the run and the delivery are stored in one transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from dispatcher.crypto import SecretBox
from dispatcher.errors import InvalidInput, Unauthorized
from dispatcher.models import Run, RunCreate
from dispatcher.operations.runs import run_preparer
from dispatcher.store import Database
from dispatcher.store import webhooks as hook_store
from dispatcher.store.common import utcnow
from dispatcher.webhooks import signatures, templating
from dispatcher.webhooks.models import SecretRotation, Webhook, WebhookCreate, WebhookSecret

SECRET_BYTES = 32  # token_urlsafe: 43 characters
SLUG_BYTES = 18  # 24 characters: the address is not guessable either
MAX_IDEMPOTENCY_KEY_LENGTH = 200  # as for the Idempotency-Key header


def _check_templates(data: WebhookCreate) -> None:
    for field in ("parameters_template", "idempotency_key_template"):
        source = getattr(data, field)
        if source is None:
            continue
        try:
            templating.compile_template(source, field)
        except templating.TemplateProblem as exc:
            raise InvalidInput(exc.field, exc.message,
                               "fix the Jinja2 syntax (README, 'Webhooks')") from None


async def create_webhook(db: Database, box: SecretBox, data: WebhookCreate) -> WebhookSecret:
    """The webhook and its secret, the one time the secret is shown."""
    _check_templates(data)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    hook = await hook_store.create_webhook(db, hook_store.NewWebhook(
        name=data.name, slug=secrets.token_urlsafe(SLUG_BYTES), deployment=data.deployment,
        scheme=data.scheme, sealed_secret=box.seal(secret),
        parameters_template=data.parameters_template,
        idempotency_key_template=data.idempotency_key_template,
        description=data.description))
    return WebhookSecret(webhook=hook, secret=secret)


async def rotate_secret(db: Database, box: SecretBox, name: str,
                        rotation: SecretRotation) -> WebhookSecret:
    """A new secret; the one it replaces keeps working for the grace period."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    grace = timedelta(seconds=rotation.grace_seconds)
    hook = await hook_store.rotate_webhook_secret(
        db, name, box.seal(secret), utcnow() + grace if grace else None)
    return WebhookSecret(webhook=hook, secret=secret)


async def set_enabled(db: Database, name: str, enabled: bool) -> Webhook:
    return await hook_store.set_webhook_enabled(db, name, enabled)


async def deliver(db: Database, box: SecretBox, slug: str, headers: Mapping[str, str],
                  body: bytes, decode: Callable[[bytes], Any],
                  now: datetime | None = None) -> tuple[Run, bool]:
    """The run a delivery to ``/hooks/{slug}`` starts (or finds again by its idempotency
    key: then False). ``decode`` parses the body as JSON, raising the caller's 400."""
    now = now or utcnow()
    hook = await hook_store.hook_for_delivery(db, slug, now)
    try:
        verified = signatures.verify(hook.scheme, headers, body,
                                     [box.open(sealed) for sealed in hook.sealed_secrets], now)
    except signatures.SignatureRefused as exc:
        raise Unauthorized(str(exc)) from None
    context = templating.DeliveryContext(decode(body), headers, verified.delivery_id)
    try:
        parameters = templating.render_parameters(hook.parameters_template, context)
        key = templating.render_key(hook.idempotency_key_template, context,
                                    MAX_IDEMPOTENCY_KEY_LENGTH)
    except templating.TemplateProblem as exc:
        raise InvalidInput(exc.field, exc.message,
                           "the webhook's owner can fix its template (`pushpool webhook "
                           "inspect`)") from None
    try:
        data = RunCreate(parameters=parameters)
    except ValidationError as exc:
        raise InvalidInput("parameters", exc.errors()[0]["msg"].removeprefix("Value error, "),
                           "send less data") from None
    record = None if verified.replay_key is None or verified.remember_until is None else \
        hook_store.DeliveryRecord(verified.replay_key, verified.remember_until)
    return await hook_store.record_delivery(db, hook, record, data, key,
                                            prepare=run_preparer(db.secrets))
