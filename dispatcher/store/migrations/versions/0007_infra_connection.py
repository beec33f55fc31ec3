"""how to reach a run's infrastructure

``runs.infra_connection`` keeps what an adapter's ``submit`` returned besides the infra id
(region, endpoint, cluster, identity references, the submit's time): the adapter contract
is stateless, so status, cancel, logs and cleanup get it back from the store in any
process instead of from an earlier call in the same one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    kind = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("infra_connection", kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("infra_connection")
