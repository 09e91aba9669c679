"""daemon job runs (its work queue and leases) and its named facts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ACTIVE = "state IN ('queued', 'running')"
_RUNNING = "state = 'running' AND account <> ''"


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job", sa.String(length=32), nullable=False),
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "queued",
                "running",
                "done",
                "failed",
                "interrupted",
                name="job_state",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("instance", sa.String(length=200), nullable=True),
        sa.Column("queued_at", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
    )
    op.create_index(
        "uq_job_runs_active",
        "job_runs",
        ["job", "account"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE),
        postgresql_where=sa.text(_ACTIVE),
    )
    op.create_index(
        "uq_job_runs_account_running",
        "job_runs",
        ["account"],
        unique=True,
        sqlite_where=sa.text(_RUNNING),
        postgresql_where=sa.text(_RUNNING),
    )
    op.create_index("ix_job_runs_job_account", "job_runs", ["job", "account", "id"])
    op.create_index("ix_job_runs_state", "job_runs", ["state"])
    op.create_table(
        "daemon_facts",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_daemon_facts")),
    )


def downgrade() -> None:
    op.drop_table("daemon_facts")
    op.drop_index("ix_job_runs_state", table_name="job_runs")
    op.drop_index("ix_job_runs_job_account", table_name="job_runs")
    op.drop_index("uq_job_runs_account_running", table_name="job_runs")
    op.drop_index("uq_job_runs_active", table_name="job_runs")
    op.drop_table("job_runs")
