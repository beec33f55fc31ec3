"""What a webhook is on the wire: the objects the API answers and the bodies it takes.

A webhook starts runs of one deployment when a sender (GitHub, a SaaS, a script) posts
to its address ``/hooks/{slug}``, proving itself with a secret that pushpool made and
shows once. The secret itself is never part of these models except in ``WebhookSecret``,
the answer to a create or a rotation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from dispatcher.models import (
    InputModel,
    Model,
    Name,
    Text,
    _check_name,
)

# How a delivery proves where it comes from (README, "Webhooks"):
#   pushpool: HMAC-SHA256 over the timestamp, the delivery id and the body, in a window;
#   github:   X-Hub-Signature-256, GitHub's HMAC-SHA256 over the body;
#   bearer:   the secret itself as "Authorization: Bearer <secret>".
Scheme = Literal["pushpool", "github", "bearer"]
SCHEMES: tuple[Scheme, ...] = ("pushpool", "github", "bearer")

MAX_KEY_TEMPLATE_LENGTH = 1024
DEFAULT_GRACE_SECONDS = 24 * 3600.0
MAX_GRACE_SECONDS = 30 * 24 * 3600.0

DeploymentRef = Annotated[str, Field(
    min_length=3, max_length=201,
    pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$",
    description="The deployment its deliveries start runs of: FLOW/DEPLOYMENT")]


class Webhook(Model):
    id: str
    name: str
    deployment: str = Field(description="FLOW/DEPLOYMENT")
    deployment_id: str
    path: str = Field(description="Where senders post: /hooks/{slug} on this server")
    scheme: Scheme
    enabled: bool
    description: str | None = None
    parameters_template: str | None = None
    idempotency_key_template: str | None = None
    previous_secret_expires: datetime | None = Field(
        default=None, description="Until then the secret before the last rotation is "
                                  "accepted too")
    created: datetime
    updated: datetime


class WebhookSecret(Model):
    """The answer to a create or a rotation: the only time the secret is shown."""

    webhook: Webhook
    secret: str = Field(description="The signing secret; it is not shown again")


class WebhookCreate(InputModel):
    name: Name
    deployment: DeploymentRef
    scheme: Scheme = Field(default="pushpool", description=(
        "pushpool: X-Pushpool-Signature over timestamp, delivery id and body; github: "
        "X-Hub-Signature-256; bearer: Authorization: Bearer <secret>"))
    parameters_template: Text | None = Field(default=None, description=(
        "A Jinja2 template (sandboxed) that renders the run's parameters as a JSON "
        "object from body, headers and delivery_id; without one, the body's "
        "'parameters' object"))
    idempotency_key_template: Annotated[str, Field(max_length=MAX_KEY_TEMPLATE_LENGTH)] | None \
        = Field(default=None, description=(
            "A Jinja2 template for the run's idempotency key: a delivery that renders a "
            "key seen before answers with that key's run"))
    description: Text | None = None

    _name = field_validator("name")(lambda v: _check_name(v, "webhook"))


class SecretRotation(InputModel):
    grace_seconds: float = Field(
        default=DEFAULT_GRACE_SECONDS, ge=0, le=MAX_GRACE_SECONDS,
        description="How long the secret being replaced is still accepted (0: not at all)")


class HookAccepted(BaseModel):
    """A delivery's answer: no more than the sender needs (it holds no API token)."""

    run_id: str
    created: bool = Field(description="False when the idempotency key named an earlier run")
