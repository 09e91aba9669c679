"""Day one: when each account's first complete listing closed, and who it held as established

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("first_listing_at", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("connections") as batch:
        batch.add_column(
            sa.Column("established", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("established")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("first_listing_at")
