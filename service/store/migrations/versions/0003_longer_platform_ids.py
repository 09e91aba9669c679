"""longer platform ids: a Bluesky did:web can exceed 64 characters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("accounts", "platform_user_id", True),
    ("connections", "platform_user_id", False),
    ("interactions", "counterpart_id", False),
)


def upgrade() -> None:
    for table, column, nullable in _COLUMNS:
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.String(length=64),
                type_=sa.String(length=255),
                existing_nullable=nullable,
            )


def downgrade() -> None:
    for table, column, nullable in _COLUMNS:
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.String(length=255),
                type_=sa.String(length=64),
                existing_nullable=nullable,
            )
