"""runs outlive their pool, queue and deployment

Deleting a work pool (or a queue) removed every run it had ever held: ``runs.pool_id`` and
``runs.queue_id`` cascaded. They now become NULL instead (``ON DELETE SET NULL``), and the
names the run was made under are kept in ``runs.former_pool_name``, ``former_queue_name``
and ``former_deployment_name`` when that pool, queue or deployment is deleted, so a final
run's history stays readable. Only finished runs outlive a pool: deleting one with active
runs is refused, and its scheduled runs go with its deployments.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FORMER_NAMES = ("former_pool_name", "former_queue_name", "former_deployment_name")
PARENTS = (("pool_id", "work_pools"), ("queue_id", "work_queues"))


def _foreign_keys(batch: BatchOperations, nullable: bool, ondelete: str) -> None:
    for column, table in PARENTS:
        name = f"fk_runs_{column}_{table}"
        batch.drop_constraint(name, type_="foreignkey")
        batch.alter_column(column, existing_type=sa.String(36), nullable=nullable)
        batch.create_foreign_key(name, table, [column], ["id"], ondelete=ondelete)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for column in FORMER_NAMES:
            batch.add_column(sa.Column(column, sa.String(length=201), nullable=True))
        _foreign_keys(batch, nullable=True, ondelete="SET NULL")


def downgrade() -> None:
    # Runs that outlived their pool or queue cannot point at it again: they go, as before.
    op.execute(sa.text("DELETE FROM runs WHERE pool_id IS NULL OR queue_id IS NULL"))
    with op.batch_alter_table("runs") as batch:
        _foreign_keys(batch, nullable=False, ondelete="CASCADE")
        for column in FORMER_NAMES:
            batch.drop_column(column)
