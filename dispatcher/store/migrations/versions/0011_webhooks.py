"""webhooks and the deliveries they remember

``webhooks`` holds each webhook: its address (slug), the deployment it starts runs of,
how deliveries prove themselves, its templates, and its secret sealed with
dispatcher/crypto.py (with the one before the last rotation while it is still accepted).
``webhook_deliveries`` remembers what each took, so that a copy is refused.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dispatcher.store.tables

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("scheme", sa.String(length=20), nullable=False),
        sa.Column("parameters_template", sa.Text(), nullable=True),
        sa.Column("idempotency_key_template", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires", dispatcher.store.tables.UTCDateTime(),
                  nullable=True),
        sa.Column("created", dispatcher.store.tables.UTCDateTime(), nullable=False),
        sa.Column("updated", dispatcher.store.tables.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"],
                                name=op.f("fk_webhooks_deployment_id_deployments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
        sa.UniqueConstraint("name", name=op.f("uq_webhooks_name")),
        sa.UniqueConstraint("slug", name=op.f("uq_webhooks_slug")),
    )
    op.create_index(op.f("ix_webhooks_deployment_id"), "webhooks", ["deployment_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", sa.String(length=36), nullable=False),
        sa.Column("replay_key", sa.String(length=300), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("received", dispatcher.store.tables.UTCDateTime(), nullable=False),
        sa.Column("expires", dispatcher.store.tables.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhooks.id"],
                                name=op.f("fk_webhook_deliveries_webhook_id_webhooks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("webhook_id", "replay_key",
                                name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("ix_webhook_deliveries_webhook_id_expires", "webhook_deliveries",
                    ["webhook_id", "expires"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_webhook_id_expires",
                  table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index(op.f("ix_webhooks_deployment_id"), table_name="webhooks")
    op.drop_table("webhooks")
