"""X cost records: the estimated cost of each sync of a pay-per-use platform

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cost_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("sync_run_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reads", sa.JSON(), nullable=False),
        sa.Column("writes", sa.JSON(), nullable=False),
        sa.Column("micros", sa.BigInteger(), nullable=False),
        sa.Column("listing_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_cost_records_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sync_run_id"],
            ["sync_runs.id"],
            name=op.f("fk_cost_records_sync_run_id_sync_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_records")),
    )
    op.create_index("ix_cost_records_account_at", "cost_records", ["account_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_cost_records_account_at", table_name="cost_records")
    op.drop_table("cost_records")
