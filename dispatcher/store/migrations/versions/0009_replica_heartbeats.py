"""replica heartbeats: which dispatcher replicas are alive, so their claims come back fast

``replicas`` has a row per running server (its lease-owner name), with the replica id it
keeps across restarts and its last heartbeat. A restarted replica frees the claims of its
earlier runs at once; any replica frees the claims of one whose heartbeat stopped.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dispatcher.store.tables

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("replica_id", sa.String(length=100), nullable=False),
        sa.Column("started", dispatcher.store.tables.UTCDateTime(), nullable=False),
        sa.Column("heartbeat", dispatcher.store.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_replicas"),
    )
    op.create_index("ix_replicas_replica_id", "replicas", ["replica_id"])


def downgrade() -> None:
    op.drop_index("ix_replicas_replica_id", table_name="replicas")
    op.drop_table("replicas")
