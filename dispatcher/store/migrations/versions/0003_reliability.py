"""reliability: circuit breaker, dead letters, missed-run policies

- ``work_pools.paused_by`` ("user" | "breaker") and ``breaker_retry_at``: a pool paused by
  the engine's circuit breaker resumes by itself after a successful probe; one paused by a
  user never does. Pools paused before this migration count as paused by a user.
- ``deployments.submit_deadline_seconds``, ``catchup`` and ``overlap``: per-deployment
  submit deadline and missed-run policy (defaults keep the old behaviour).
- ``runs.submit_errors``, ``dead_letter`` and ``resubmitted_from``: every failed submit
  attempt, whether the run ended without reaching its provider, and the dead letter a
  resubmitted run comes from.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import dispatcher.store.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_pools") as batch:
        batch.add_column(sa.Column("paused_by", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("breaker_retry_at", dispatcher.store.tables.UTCDateTime(),
                                   nullable=True))
    op.execute(sa.text("UPDATE work_pools SET paused_by = 'user' WHERE paused"))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("submit_deadline_seconds", sa.Float(), nullable=False,
                                   server_default=sa.text("3600")))
        batch.add_column(sa.Column("catchup", sa.String(length=10), nullable=False,
                                   server_default="all"))
        batch.add_column(sa.Column("overlap", sa.String(length=20), nullable=False,
                                   server_default="allow"))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column(
            "submit_errors",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=Text()), "postgresql"),
            nullable=True))
        batch.add_column(sa.Column("dead_letter", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("resubmitted_from", sa.String(length=36), nullable=True))
    op.create_index("ix_runs_dead_letter_created", "runs", ["created"],
                    sqlite_where=sa.text("dead_letter"),
                    postgresql_where=sa.text("dead_letter"))


def downgrade() -> None:
    op.drop_index("ix_runs_dead_letter_created", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("resubmitted_from")
        batch.drop_column("dead_letter")
        batch.drop_column("submit_errors")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("overlap")
        batch.drop_column("catchup")
        batch.drop_column("submit_deadline_seconds")
    with op.batch_alter_table("work_pools") as batch:
        batch.drop_column("breaker_retry_at")
        batch.drop_column("paused_by")
