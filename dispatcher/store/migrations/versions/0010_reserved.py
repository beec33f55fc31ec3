"""reserved: a revision kept in the chain for a change being made alongside

It changes nothing yet; the change that takes this number renames the file and fills in
upgrade() and downgrade().

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 06:30:00
"""

from __future__ import annotations

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
