"""Exchange periods: each account's exchanges summed per person, kind and 30 days

Filled here from the interactions already stored, as the sync would have written it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PERIOD = 30 * 86400
_KINDS = ("like", "reply", "mention", "repost", "quote", "comment", "reaction", "message")
K = math.log(2) / (90 * 86400)  # the stored half-life: 90 days

# floor(occurred_at / PERIOD), negative times included (% and / truncate towards zero).
_PERIOD = f"(occurred_at - (((occurred_at % {PERIOD}) + {PERIOD}) % {PERIOD})) / {PERIOD}"
FILL = f"""
    INSERT INTO exchange_periods (account_id, period, counterpart_id, kind, inbound, outbound,
                                  last_inbound_at, last_outbound_at,
                                  inbound_decayed, outbound_decayed)
    SELECT account_id, period, counterpart_id, kind,
           SUM(CASE WHEN direction = 'inbound' THEN 1 ELSE 0 END),
           SUM(CASE WHEN direction = 'inbound' THEN 0 ELSE 1 END),
           MAX(CASE WHEN direction = 'inbound' THEN occurred_at END),
           MAX(CASE WHEN direction = 'inbound' THEN NULL ELSE occurred_at END),
           SUM(CASE WHEN direction = 'inbound' THEN decayed ELSE :zero END),
           SUM(CASE WHEN direction = 'inbound' THEN :zero ELSE decayed END)
      FROM (SELECT account_id, counterpart_id, kind, direction, occurred_at, period,
                   EXP((occurred_at - period * {PERIOD}) * :k) AS decayed
              FROM (SELECT account_id, counterpart_id, kind, direction, occurred_at,
                           {_PERIOD} AS period
                      FROM interactions) AS raw
           ) AS rows
     GROUP BY account_id, period, counterpart_id, kind
"""


def upgrade() -> None:
    op.create_table(
        "exchange_periods",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("counterpart_id", sa.String(length=255), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(*_KINDS, name="interaction_kind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("inbound", sa.Integer(), nullable=False),
        sa.Column("outbound", sa.Integer(), nullable=False),
        sa.Column("last_inbound_at", sa.BigInteger(), nullable=True),
        sa.Column("last_outbound_at", sa.BigInteger(), nullable=True),
        sa.Column("inbound_decayed", sa.Float(), nullable=False),
        sa.Column("outbound_decayed", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_exchange_periods_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "period", "counterpart_id", "kind", name=op.f("pk_exchange_periods")
        ),
        sqlite_with_rowid=False,
    )
    op.get_bind().execute(sa.text(FILL), {"k": K, "zero": 0.0})


def downgrade() -> None:
    op.drop_table("exchange_periods")
