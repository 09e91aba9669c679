"""The exchanges summed per person, kind and period of 30 days (``exchange_periods``).

The evaluation needs, per person: the counted exchanges of the window, the last exchange each
way, and the decayed value. Read from every interaction the account ever had, that is one pass
over its whole history. Here it is read from the summaries of the periods that have closed,
and from the interactions of two periods only:

- a period wholly before ``now`` gives its last times and its value (its decayed sums, stored
  rebased to the period's start, times ``exp((period_start - now) * K)``), and its counts when
  it lies wholly inside the window;
- the period the window starts in gives its counts from the interactions at or after the
  window's start;
- the period holding ``now`` gives everything, from its interactions at or before ``now``.

The raw reads seek the (account, person, time) index once per person with exchanges in that
period (the persons come from the summaries), so no index on time alone is needed, which
would slow every insert. The result equals ``queries.exchange_statement`` (the reference,
kept): counts and times exactly, the value to rounding. The sums are stored for one
half-life (``PERIOD_HALF_LIFE``, the default of ``Rules.half_life``); rules with another one
are read by the reference.

The summaries are written in the same transaction as the interactions: ``add`` with what a
sync inserted, ``recompute`` from the interactions after a delete.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, delete, text
from sqlalchemy.engine import Result
from sqlalchemy.orm import Session

from service.config import Rules
from service.model import Direction, Kind
from service.store.models import ExchangePeriod
from service.store.types import to_epoch

PERIOD_SECONDS = 30 * 86400
PERIOD_HALF_LIFE = timedelta(days=90)
K = math.log(2) / PERIOD_HALF_LIFE.total_seconds()
# Below e**-600 an exchange is worth nothing (PostgreSQL raises on the underflow); a closed
# period is judged by its start, which is at most 30 days (0.23 in the exponent) before its
# last exchange.
UNDERFLOW = -600.0

_INBOUND = Direction.INBOUND.value
_COLUMNS = (
    "account_id",
    "period",
    "counterpart_id",
    "kind",
    "inbound",
    "outbound",
    "last_inbound_at",
    "last_outbound_at",
    "inbound_decayed",
    "outbound_decayed",
)


def serves(rules: Rules) -> bool:
    """Whether the summaries can answer for these rules (their half-life is the stored one)."""
    return rules.half_life == PERIOD_HALF_LIFE


# --- writing -------------------------------------------------------------------------------

# floor(occurred_at / PERIOD_SECONDS), negative times included (% and / truncate towards zero
# in both databases).
_P = PERIOD_SECONDS
_PERIOD = f"(occurred_at - (((occurred_at % {_P}) + {_P}) % {_P})) / {_P}"


def summarize(source: str, account: str = ":account") -> str:
    """A SELECT of the summaries of the interactions in ``source`` (a table or a subquery
    with counterpart_id, kind, direction and occurred_at), in the table's column order."""
    inbound = f"direction = '{_INBOUND}'"
    return f"""
    SELECT {account}, period, counterpart_id, kind,
           SUM(CASE WHEN {inbound} THEN 1 ELSE 0 END),
           SUM(CASE WHEN {inbound} THEN 0 ELSE 1 END),
           MAX(CASE WHEN {inbound} THEN occurred_at END),
           MAX(CASE WHEN {inbound} THEN NULL ELSE occurred_at END),
           SUM(CASE WHEN {inbound} THEN decayed ELSE :zero END),
           SUM(CASE WHEN {inbound} THEN :zero ELSE decayed END)
      FROM (SELECT counterpart_id, kind, direction, occurred_at, period,
                   EXP((occurred_at - period * {_P}) * :k) AS decayed
              FROM (SELECT counterpart_id, kind, direction, occurred_at, {_PERIOD} AS period
                      FROM {source}) AS raw
           ) AS rows
     WHERE 1 = 1
     GROUP BY period, counterpart_id, kind"""


def each(source: str, account: str = ":account") -> str:
    """A SELECT of one summary per interaction of ``source``, for an INSERT ... ON CONFLICT
    DO UPDATE (``UPSERT``) that adds them up row after row. SQLite only: PostgreSQL refuses
    to update a row twice in one statement (``summarize`` groups them first there). In
    SQLite this is a third faster than grouping first: no sort."""
    inbound = f"direction = '{_INBOUND}'"
    decayed = f"EXP((occurred_at - period * {_P}) * :k)"
    return f"""
    SELECT {account}, period, counterpart_id, kind,
           CASE WHEN {inbound} THEN 1 ELSE 0 END,
           CASE WHEN {inbound} THEN 0 ELSE 1 END,
           CASE WHEN {inbound} THEN occurred_at END,
           CASE WHEN {inbound} THEN NULL ELSE occurred_at END,
           CASE WHEN {inbound} THEN {decayed} ELSE :zero END,
           CASE WHEN {inbound} THEN :zero ELSE {decayed} END
      FROM (SELECT counterpart_id, kind, direction, occurred_at, {_PERIOD} AS period
              FROM {source}) AS raw
     WHERE 1 = 1"""


def _later(column: str) -> str:
    """The later of the stored time and the added one; NULL (none yet) loses to any time."""
    new, old = f"excluded.{column}", f"exchange_periods.{column}"
    return f"CASE WHEN {new} IS NULL OR {old} >= {new} THEN {old} ELSE {new} END"


INSERT = f"INSERT INTO exchange_periods ({', '.join(_COLUMNS)})"
# Added to what is stored: counts and sums add up, the later time wins.
UPSERT = (
    "ON CONFLICT (account_id, period, counterpart_id, kind) DO UPDATE SET "
    "inbound = exchange_periods.inbound + excluded.inbound, "
    "outbound = exchange_periods.outbound + excluded.outbound, "
    f"last_inbound_at = {_later('last_inbound_at')}, "
    f"last_outbound_at = {_later('last_outbound_at')}, "
    "inbound_decayed = exchange_periods.inbound_decayed + excluded.inbound_decayed, "
    "outbound_decayed = exchange_periods.outbound_decayed + excluded.outbound_decayed"
)
WRITE_PARAMS = {"k": K, "zero": 0.0}


def recompute(session: Session, account_id: int, counterparts: Iterable[str]) -> None:
    """Write the summaries of these persons again from their interactions (after a delete:
    exact, where subtracting the deleted exchanges' floats would not be)."""
    people = sorted(set(counterparts))
    source = (
        "(SELECT counterpart_id, kind, direction, occurred_at FROM interactions "
        "WHERE account_id = :account AND counterpart_id IN :counterparts) AS chosen"
    )
    statement = text(INSERT + summarize(source)).bindparams(
        bindparam("counterparts", expanding=True, type_=String)
    )
    for i in range(0, len(people), 500):
        chunk = people[i : i + 500]
        session.execute(
            delete(ExchangePeriod).where(
                ExchangePeriod.account_id == account_id, ExchangePeriod.counterpart_id.in_(chunk)
            )
        )
        session.execute(statement, {"account": account_id, "counterparts": chunk, **WRITE_PARAMS})


# --- reading -------------------------------------------------------------------------------


def statement(
    rules: Rules, now: datetime, counterparts: Sequence[str] | None
) -> tuple[Any, dict[str, Any]]:
    """The evaluation's aggregate over the summaries and the interactions of two periods.

    One statement: a UNION ALL of the summaries and of the raw interactions that the
    summaries cannot answer for, grouped by person. A summary is complete at ``now`` when
    none of its exchanges is later (every one of a period before ``now``'s; in ``now``'s own
    period, normally every one as well). From the summaries: the last times and the value of
    the complete ones, and the counts of those wholly inside the window. From the
    interactions: the counts in the period the window starts in, from the window's start on;
    everything of a summary of ``now``'s period that is not complete; and, for a window that
    starts in ``now``'s period, everything of that period.
    """
    now_s = to_epoch(now)
    since = to_epoch(now - rules.window)
    now_p = now_s // PERIOD_SECONDS
    since_p = since // PERIOD_SECONDS
    params: dict[str, Any] = {
        "now": now_s,
        "since": since,
        "now_p": now_p,
        "since_p": since_p,
        "now_start": now_p * PERIOD_SECONDS,
        "since_end": (since_p + 1) * PERIOD_SECONDS,
        "span": PERIOD_SECONDS,
        "k": K,
        "underflow": UNDERFLOW,
        "w_in": float(rules.inbound_weight),
        "w_out": float(rules.outbound_weight),
        "w_other": 1.0,
        "zero": 0.0,
        **{f"w_{kind.value}": float(w) for kind, w in rules.weights.items()},
    }
    all_kinds = rules.count_kinds == frozenset(Kind)
    kinds = ", ".join(f"'{kind.value}'" for kind in sorted(rules.count_kinds))
    count_in = Direction.INBOUND in rules.count_directions
    count_out = Direction.OUTBOUND in rules.count_directions
    weights = " ".join(f"WHEN '{kind.value}' THEN :w_{kind.value}" for kind in rules.weights)
    only = " AND counterpart_id IN :counterparts" if counterparts is not None else ""
    splits = since_p < now_p  # the window starts in a period before now's
    complete = (
        "(last_inbound_at IS NULL OR last_inbound_at <= :now) "
        "AND (last_outbound_at IS NULL OR last_outbound_at <= :now)"
    )

    # The summaries: counts inside the window past its first period, last times, value.
    weight = f"(CASE kind {weights} ELSE :w_other END)" if weights else ":w_other"
    kind_counted = "" if all_kinds else f" AND kind IN ({kinds})"
    summary_in = f"CASE WHEN period > :since_p{kind_counted} THEN inbound ELSE 0 END"
    summary_out = f"CASE WHEN period > :since_p{kind_counted} THEN outbound ELSE 0 END"
    start = "(period * CAST(:span AS BIGINT) - :now) * :k"
    closed = f"period < :now_p OR (period = :now_p AND {complete})" if splits else "period < :now_p"
    if counterparts is None:
        source = "exchange_periods WHERE account_id = :account"
    else:
        # A few persons: one seek of the key per period and person.
        source = (
            "periods JOIN exchange_periods ON account_id = :account AND period = periods.p"
            " AND counterpart_id IN :counterparts WHERE 1 = 1"
        )
    summary = f"""
        SELECT counterpart_id AS cp,
               {summary_in if count_in else "0"} AS n_in,
               {summary_out if count_out else "0"} AS n_out,
               last_inbound_at AS last_in,
               last_outbound_at AS last_out,
               {weight} * (:w_in * inbound_decayed + :w_out * outbound_decayed)
                 * CASE WHEN {start} < :underflow THEN :zero ELSE EXP({start}) END AS v
          FROM {source} AND ({closed})"""

    # The interactions: one seek of the (account, person, time) index per person (and kind)
    # with exchanges in the period, the persons read from the summaries.
    inbound = f"i.direction = '{_INBOUND}'"
    counted = "i.occurred_at >= :since"
    if not all_kinds:
        counted += f" AND i.kind IN ({kinds})"
    raw_in = f"CASE WHEN {counted} AND {inbound} THEN 1 ELSE 0 END" if count_in else "0"
    raw_out = f"CASE WHEN {counted} AND NOT {inbound} THEN 1 ELSE 0 END" if count_out else "0"
    raw_weight = f"(CASE i.kind {weights} ELSE :w_other END)" if weights else ":w_other"
    exponent = "(i.occurred_at - :now) * :k"
    join = (
        "JOIN interactions AS i ON i.account_id = :account AND i.counterpart_id = d.counterpart_id"
    )
    everything = f"""
        SELECT i.counterpart_id, {raw_in}, {raw_out},
               CASE WHEN {inbound} THEN i.occurred_at END,
               CASE WHEN NOT {inbound} THEN i.occurred_at END,
               {raw_weight} * (CASE WHEN {inbound} THEN :w_in ELSE :w_out END)
                 * CASE WHEN {exponent} < :underflow THEN :zero ELSE EXP({exponent}) END"""
    now_range = "i.occurred_at >= :now_start AND i.occurred_at <= :now"
    parts = [summary]
    if splits:
        parts.append(f"""
        SELECT i.counterpart_id, {raw_in}, {raw_out}, NULL, NULL, :zero
          FROM (SELECT DISTINCT counterpart_id FROM exchange_periods
                 WHERE account_id = :account AND period = :since_p{only}) AS d
          {join} AND i.occurred_at >= :since AND i.occurred_at < :since_end""")
        parts.append(f"""{everything}
          FROM (SELECT counterpart_id, kind FROM exchange_periods
                 WHERE account_id = :account AND period = :now_p{only} AND NOT ({complete})) AS d
          {join} AND i.kind = d.kind AND {now_range}""")
    else:
        parts.append(f"""{everything}
          FROM (SELECT DISTINCT counterpart_id FROM exchange_periods
                 WHERE account_id = :account AND period = :now_p{only}) AS d
          {join} AND {now_range}""")
    periods = ""
    if counterparts is not None:
        periods = """WITH RECURSIVE periods (p) AS (
            SELECT (SELECT MIN(period) FROM exchange_periods WHERE account_id = :account)
            UNION ALL
            SELECT p + 1 FROM periods WHERE p < :now_p
        ) """
    sql = f"""{periods}
        SELECT cp, SUM(n_in), SUM(n_out), MAX(last_in), MAX(last_out), SUM(v)
          FROM ({" UNION ALL ".join(parts)}) AS parts
         GROUP BY cp"""
    query = text(sql)
    if counterparts is not None:
        query = query.bindparams(bindparam("counterparts", expanding=True, type_=String))
        params["counterparts"] = list(counterparts)
    return query, params


def read(
    session: Session,
    account_id: int,
    rules: Rules,
    now: datetime,
    counterparts: Sequence[str] | None = None,
) -> Result[Any]:
    """Rows (person, inbound, outbound, last inbound, last outbound, value), as the reference
    aggregate gives them. Only for rules the summaries serve (``serves``)."""
    query, params = statement(rules, now, counterparts)
    return session.execute(query, {**params, "account": account_id})
