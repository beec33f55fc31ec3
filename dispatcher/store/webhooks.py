"""Webhooks and their deliveries: what the store keeps and how a delivery becomes a run.

Secrets arrive sealed (dispatcher/operations/webhooks.py seals them with the server's
box) and leave sealed: nothing here sees one in clear. A delivery is recorded in the
transaction that creates (or finds) its run, so an error leaves neither behind and a
copy of a delivery that made a run is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from dispatcher.errors import Conflict, InvalidInput, NotFound
from dispatcher.models import Run, RunCreate
from dispatcher.store.common import new_id, utcnow
from dispatcher.store.db import Database
from dispatcher.store.runs import RunPreparer, create_run_in
from dispatcher.store.tables import deployments, webhook_deliveries, webhooks
from dispatcher.webhooks.models import Scheme, Webhook

HOOK_PATH = "/hooks/{slug}"
# The same answer for a hook that never existed, was deleted or is disabled: a stranger
# probing addresses learns nothing.
NO_HOOK = "no webhook at this address (it may have been deleted or disabled)"


@dataclass(frozen=True)
class NewWebhook:
    """A webhook as operations hands it to the store: checked, its secret sealed."""

    name: str
    slug: str
    deployment: str  # FLOW/DEPLOYMENT
    scheme: Scheme
    sealed_secret: str
    parameters_template: str | None
    idempotency_key_template: str | None
    description: str | None


@dataclass(frozen=True)
class HookForDelivery:
    """What checking and mapping a delivery needs: the sealed secrets it may be signed
    with (the current one first, then the previous one while it is accepted)."""

    id: str
    deployment_id: str
    scheme: Scheme
    sealed_secrets: tuple[str, ...]
    parameters_template: str | None
    idempotency_key_template: str | None


@dataclass(frozen=True)
class DeliveryRecord:
    replay_key: str
    expires: datetime


def _select() -> Any:
    return (select(webhooks, deployments.c.flow_name, deployments.c.name.label("dep_name"))
            .join(deployments, deployments.c.id == webhooks.c.deployment_id))


def _to_webhook(row: Row[Any]) -> Webhook:
    values = row._mapping
    return Webhook(
        id=values["id"], name=values["name"], deployment_id=values["deployment_id"],
        deployment=f"{values['flow_name']}/{values['dep_name']}",
        path=HOOK_PATH.format(slug=values["slug"]), scheme=values["scheme"],
        enabled=values["enabled"], description=values["description"],
        parameters_template=values["parameters_template"],
        idempotency_key_template=values["idempotency_key_template"],
        previous_secret_expires=values["previous_secret_expires"],
        created=values["created"], updated=values["updated"])


def _read(conn: Connection, name: str) -> Webhook:
    row = conn.execute(_select().where(webhooks.c.name == name)).first()
    if row is None:
        raise NotFound(f"webhook {name!r} not found; list webhooks with `pushpool webhook ls`")
    return _to_webhook(row)


async def create_webhook(db: Database, new: NewWebhook) -> Webhook:
    def create(conn: Connection) -> Webhook:
        flow_name, _, name = new.deployment.partition("/")
        deployment_id = conn.execute(select(deployments.c.id).where(
            deployments.c.flow_name == flow_name, deployments.c.name == name)).scalar()
        if deployment_id is None:
            raise InvalidInput("deployment", f"deployment {new.deployment!r} does not exist",
                               "name one from `pushpool deployment ls` as FLOW/DEPLOYMENT")
        now = utcnow()
        conn.execute(insert(webhooks).values(
            id=new_id(), name=new.name, slug=new.slug, deployment_id=deployment_id,
            scheme=new.scheme, parameters_template=new.parameters_template,
            idempotency_key_template=new.idempotency_key_template,
            description=new.description, enabled=True, secret=new.sealed_secret,
            created=now, updated=now))
        return _read(conn, new.name)

    try:
        return await db.run(create, write=True)
    except IntegrityError as exc:
        raise Conflict(f"a webhook named {new.name!r} already exists; pick another name or "
                       "rotate its secret with `pushpool webhook rotate-secret`",
                       [{"field": "name", "message": "already exists"}]) from exc


async def list_webhooks(db: Database) -> list[Webhook]:
    return await db.run(lambda conn: [_to_webhook(row) for row in conn.execute(
        _select().order_by(webhooks.c.name))])


async def get_webhook(db: Database, name: str) -> Webhook:
    return await db.run(lambda conn: _read(conn, name))


async def delete_webhook(db: Database, name: str) -> None:
    def remove(conn: Connection) -> None:
        hook = _read(conn, name)
        conn.execute(delete(webhooks).where(webhooks.c.id == hook.id))

    await db.run(remove, write=True)


async def set_webhook_enabled(db: Database, name: str, enabled: bool) -> Webhook:
    def change(conn: Connection) -> Webhook:
        _read(conn, name)
        conn.execute(update(webhooks).where(webhooks.c.name == name)
                     .values(enabled=enabled, updated=utcnow()))
        return _read(conn, name)

    return await db.run(change, write=True)


async def rotate_webhook_secret(db: Database, name: str, sealed_secret: str,
                                previous_until: datetime | None) -> Webhook:
    """The new secret becomes current; the one it replaces is accepted until
    ``previous_until`` (None: not at all). A secret older than that one stops now."""
    def rotate(conn: Connection) -> Webhook:
        current = conn.execute(select(webhooks.c.secret).where(
            webhooks.c.name == name)).scalar()
        if current is None:
            _read(conn, name)  # raises NotFound
        conn.execute(update(webhooks).where(webhooks.c.name == name).values(
            secret=sealed_secret,
            previous_secret=None if previous_until is None else current,
            previous_secret_expires=previous_until, updated=utcnow()))
        return _read(conn, name)

    return await db.run(rotate, write=True)


async def hook_for_delivery(db: Database, slug: str, now: datetime) -> HookForDelivery:
    """The enabled webhook at ``/hooks/{slug}``, or NotFound (the same for every reason)."""
    def read(conn: Connection) -> HookForDelivery:
        row = conn.execute(select(webhooks).where(webhooks.c.slug == slug)).first()
        if row is None or not row.enabled:
            raise NotFound(NO_HOOK)
        previous_valid = row.previous_secret is not None and \
            row.previous_secret_expires is not None and row.previous_secret_expires > now
        sealed = (row.secret, row.previous_secret) if previous_valid else (row.secret,)
        return HookForDelivery(row.id, row.deployment_id, row.scheme, sealed,
                               row.parameters_template, row.idempotency_key_template)

    return await db.run(read)


async def record_delivery(db: Database, hook: HookForDelivery, record: DeliveryRecord | None,
                          data: RunCreate, idempotency_key: str | None, *,
                          prepare: RunPreparer) -> tuple[Run, bool]:
    """The delivery's run (made, or found again by its idempotency key) and the delivery
    remembered, in one transaction. Conflict for a copy of a delivery already taken;
    NotFound if the webhook was disabled or deleted since it was read."""
    def deliver(conn: Connection) -> tuple[Run, bool]:
        enabled = conn.execute(select(webhooks.c.enabled).where(
            webhooks.c.id == hook.id)).scalar()
        if not enabled:
            raise NotFound(NO_HOOK)
        if record is not None:
            _refuse_copy(conn, hook.id, record.replay_key)
        run, created = create_run_in(conn, hook.deployment_id, data, prepare=prepare,
                                     idempotency_key=idempotency_key)
        if record is not None:
            conn.execute(insert(webhook_deliveries).values(
                webhook_id=hook.id, replay_key=record.replay_key, run_id=run.id,
                received=utcnow(), expires=record.expires))
        return run, created

    try:
        return await db.run(deliver, write=True)
    except IntegrityError:
        # A concurrent transaction took the same delivery or idempotency key first: once
        # more, which now sees its rows (a copy is refused, a key finds its run).
        return await db.run(deliver, write=True)


def _refuse_copy(conn: Connection, hook_id: str, replay_key: str) -> None:
    now = utcnow()
    # What has expired could not be accepted again anyway: forgotten here, a webhook at
    # a time, through the (webhook_id, expires) index.
    conn.execute(delete(webhook_deliveries).where(
        webhook_deliveries.c.webhook_id == hook_id, webhook_deliveries.c.expires <= now))
    seen = conn.execute(select(webhook_deliveries.c.received).where(
        webhook_deliveries.c.webhook_id == hook_id,
        webhook_deliveries.c.replay_key == replay_key)).scalar()
    if seen is not None:
        raise Conflict(f"this delivery was already received at {seen.isoformat()}; a copy "
                       "of a delivery is not taken twice")

