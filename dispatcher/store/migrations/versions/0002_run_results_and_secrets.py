"""run results and server secrets

The runtime (`pushpool execute`) reports the flow's return value: ``runs.result`` keeps it.
``server_secrets`` holds secrets every replica must share, such as the key that signs run
tokens when PUSHPOOL_SECRET_KEY is not set.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 03:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import dispatcher.store.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column(
        "result", sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
        nullable=True))
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created", dispatcher.store.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_secrets")),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("result")
