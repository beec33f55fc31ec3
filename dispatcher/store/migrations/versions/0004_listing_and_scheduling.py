"""listing and scheduling at scale

- ``schedules.materialised_until``: the last slot the scheduler stored a run for, so a
  pass only makes the slots after it instead of re-inserting the whole horizon.
- ``runs`` indexes ending in ``(created, id)``: `run ls` pages newest first (optionally
  by state, pool or deployment) by walking an index instead of sorting every run.
- Partial indexes for the claim transaction, so each claim costs what is due and what has
  a limit or a missed-run policy, not what is stored: ``runs`` that are SCHEDULED (by queue
  and time) or claimed but unsubmitted (by lease), ``deployments`` with a concurrency
  limit or a non-default missed-run policy.

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


# (name, table, columns, predicate): the same predicates as in tables.py, as of this revision.
_CLAIM_INDEXES = [
    ("ix_runs_scheduled_queue_time", "runs", ["queue_id", "scheduled_time"],
     "state = 'SCHEDULED'"),
    ("ix_runs_unsubmitted_lease", "runs", ["lease_expires"],
     "state = 'PENDING' AND infra_id IS NULL"),
    ("ix_deployments_limited", "deployments", ["id", "concurrency_limit"],
     "concurrency_limit IS NOT NULL"),
    ("ix_deployments_missed_run_policy", "deployments", ["id", "catchup", "overlap"],
     "catchup <> 'all' OR overlap <> 'allow'"),
]


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("materialised_until", dispatcher.store.tables.UTCDateTime(),
                                   nullable=True))
    op.drop_index("ix_runs_created", table_name="runs")
    for name, columns in _LISTING_INDEXES.items():
        op.create_index(name, "runs", columns)

    # --- claim indexes
    for name, table, columns, where in _CLAIM_INDEXES:
        op.create_index(name, table, columns, sqlite_where=sa.text(where),
                        postgresql_where=sa.text(where))


def downgrade() -> None:
    # --- claim indexes
    for name, table, _, _ in _CLAIM_INDEXES:
        op.drop_index(name, table_name=table)

    for name in _LISTING_INDEXES:
        op.drop_index(name, table_name="runs")
    op.create_index("ix_runs_created", "runs", ["created"])
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("materialised_until")
