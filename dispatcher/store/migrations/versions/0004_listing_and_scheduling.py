"""listing and scheduling at scale

- ``schedules.materialised_until``: the last slot the scheduler stored a run for, so a
  pass only makes the slots after it instead of re-inserting the whole horizon.
- ``runs`` indexes ending in ``(created, id)``: `run ls` pages newest first (optionally
  by state, pool or deployment) by walking an index instead of sorting every run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dispatcher.store.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_LISTING_INDEXES = {
    "ix_runs_created_id": ["created", "id"],
    "ix_runs_state_created_id": ["state", "created", "id"],
    "ix_runs_pool_created_id": ["pool_id", "created", "id"],
    "ix_runs_deployment_created_id": ["deployment_id", "created", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("materialised_until", dispatcher.store.tables.UTCDateTime(),
                                   nullable=True))
    op.drop_index("ix_runs_created", table_name="runs")
    for name, columns in _LISTING_INDEXES.items():
        op.create_index(name, "runs", columns)


def downgrade() -> None:
    for name in _LISTING_INDEXES:
        op.drop_index(name, table_name="runs")
    op.create_index("ix_runs_created", "runs", ["created"])
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("materialised_until")
