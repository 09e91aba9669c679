"""The exchanges summed per person, kind and period of 30 days (``exchange_periods``).

The evaluation needs, per person: the counted exchanges of the window, the last exchange each
way, and the decayed value. Read from every interaction the account ever had, that is one pass
over its whole history. Here it is read from the summaries, and from the interactions of two
periods only:

- a summary none of whose exchanges is later than ``now`` (every one of a period before
  ``now``'s; normally those of ``now``'s own period too) gives its last times and its value
  (its decayed sums, stored rebased to the period's start, times
  ``exp((period_start - now) * K)``), and its counts when its period lies wholly inside the
  window;
- the period the window starts in gives its counts from the interactions at or after the
  window's start;
- a summary of ``now``'s period with a later exchange gives everything from its interactions
  at or before ``now`` (and a window that starts in ``now``'s period reads that period so).

The raw reads seek the (account, person, time) index once per person that has exchanges in
that period (the persons come from the summaries), so no index on time alone is needed, which
would slow every insert. The result equals ``queries.exchange_statement`` (the reference,
kept): counts and times exactly, the value to rounding. The sums are stored for one
half-life (``PERIOD_HALF_LIFE``, the default of ``Rules.half_life``); rules with another one
are read by the reference.

The summaries are written in the same transaction as the interactions: by
``service.sync.save_exchanges`` (``INSERT``, ``UPSERT``, ``each``, ``summarize``) with what a
page inserted, and by ``recompute`` from the interactions after a delete."""

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

    A summary is complete at ``now`` when none of its exchanges is later: every one of a
    period before ``now``'s, and in ``now``'s own period normally every one as well. One
    statement:

    - ``summed``: the complete summaries grouped by person: their counts (of the periods the
      window holds, its first one included), last times and value; and whether the person
      has exchanges in the period the window starts in (``edge``);
    - for the ``edge`` persons, the interactions of that period on its shorter side, one row
      per person: subtracted from the period's start up to the window's, or added from the
      window's start on;
    - for each summary of ``now``'s period that is not complete (found by the primary key),
      its interactions up to ``now``. Both raw reads are one seek of the (account, person,
      time) index per person;
    - a UNION ALL of these, grouped by person again (one row or a few per person).

    A window that starts in ``now``'s own period reads that whole period from the
    interactions.
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
        "since_start": since_p * PERIOD_SECONDS,
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
    splits = since_p < now_p  # the window starts in a period before now's
    if splits:
        # Complete: every one of its exchanges at or before now.
        closed = (
            "(period < :now_p OR ((last_inbound_at IS NULL OR last_inbound_at <= :now) "
            "AND (last_outbound_at IS NULL OR last_outbound_at <= :now)))"
        )
    else:
        closed = "period < :now_p"

    weight = f"(CASE kind {weights} ELSE :w_other END)" if weights else ":w_other"
    # The period the window starts in is read from the interactions on its shorter side: from
    # the window's start to the period's end, counted; or, when the window starts in the
    # period's first half, from the period's start to the window's, subtracted from the
    # period's summed counts (integers: exact). At most half a period is read, a quarter on
    # average.
    subtract = splits and since - params["since_start"] < params["since_end"] - since
    counted = f"{closed} AND period {'>=' if subtract else '>'} :since_p"
    if not all_kinds:
        counted += f" AND kind IN ({kinds})"
    start = "(period * CAST(:span AS BIGINT) - :now) * :k"
    if counterparts is None:
        source = "exchange_periods WHERE account_id = :account"
        periods = ""
    else:
        # A few persons: one seek of the key per period and person.
        source = (
            "periods JOIN exchange_periods ON account_id = :account AND period = periods.p"
            " AND counterpart_id IN :counterparts WHERE 1 = 1"
        )
        periods = """RECURSIVE periods (p) AS (
            SELECT (SELECT MIN(period) FROM exchange_periods WHERE account_id = :account)
            UNION ALL
            SELECT p + 1 FROM periods WHERE p < :now_p
        ), """
    # The complete summaries, grouped by person, with whether the person has exchanges in
    # the period the window starts in (``edge``). The others (normally none: a summary of
    # now's period with an exchange later than now) are left out by the WHERE, which tests
    # each summary once, and read below from their interactions, found by the key
    # (account, period, ...) of now's period.
    edge = (
        ",\n               MAX(CASE WHEN period = :since_p THEN 1 ELSE 0 END) AS edge"
        if splits
        else ""
    )
    summed = f"""summed AS (
        SELECT counterpart_id AS cp,
               {f"SUM(CASE WHEN {counted} THEN inbound ELSE 0 END)" if count_in else "0"} AS n_in,
               {f"SUM(CASE WHEN {counted} THEN outbound ELSE 0 END)" if count_out else "0"} AS n_out,
               MAX(last_inbound_at) AS last_in,
               MAX(last_outbound_at) AS last_out,
               SUM(CASE WHEN {start} >= :underflow
                        THEN {weight} * (:w_in * inbound_decayed + :w_out * outbound_decayed)
                             * EXP({start})
                        ELSE :zero END) AS v{edge}
          FROM {source} AND period <= :now_p AND {closed}
         GROUP BY counterpart_id
    )"""

    def chosen(column: str) -> str:
        """Only the persons asked for, if some were."""
        return "" if counterparts is None else f" AND {column} IN :counterparts"

    inbound = f"i.direction = '{_INBOUND}'"
    raw_counted = "i.occurred_at >= :since"
    if not all_kinds:
        raw_counted += f" AND i.kind IN ({kinds})"
    raw_in = f"CASE WHEN {raw_counted} AND {inbound} THEN 1 ELSE 0 END" if count_in else "0"
    raw_out = f"CASE WHEN {raw_counted} AND NOT {inbound} THEN 1 ELSE 0 END" if count_out else "0"
    raw_weight = f"(CASE i.kind {weights} ELSE :w_other END)" if weights else ":w_other"
    exponent = "(i.occurred_at - :now) * :k"
    everything = f"""
        SELECT i.counterpart_id, {raw_in}, {raw_out},
               CASE WHEN {inbound} THEN i.occurred_at END,
               CASE WHEN NOT {inbound} THEN i.occurred_at END,
               {raw_weight} * (CASE WHEN {inbound} THEN :w_in ELSE :w_out END)
                 * CASE WHEN {exponent} < :underflow THEN :zero ELSE EXP({exponent}) END"""
    now_range = "i.occurred_at >= :now_start AND i.occurred_at <= :now"
    parts = ["SELECT cp, n_in, n_out, last_in, last_out, v FROM summed"]
    if splits:
        if subtract:
            edge_range = "i.occurred_at >= :since_start AND i.occurred_at < :since"
            sign = "-1"
        else:
            edge_range = "i.occurred_at >= :since AND i.occurred_at < :since_end"
            sign = "1"
        edge_kinds = "" if all_kinds else f" AND i.kind IN ({kinds})"
        edge_in = f"SUM(CASE WHEN {inbound} THEN {sign} ELSE 0 END)" if count_in else "0"
        edge_out = f"SUM(CASE WHEN NOT {inbound} THEN {sign} ELSE 0 END)" if count_out else "0"
        # One row per person: the outer grouping then meets a few rows per person, not one
        # per exchange.
        parts.append(f"""
        SELECT i.counterpart_id, {edge_in}, {edge_out}, NULL, NULL, :zero
          FROM summed
          JOIN interactions AS i ON i.account_id = :account AND i.counterpart_id = summed.cp
               AND {edge_range}{edge_kinds}
         WHERE summed.edge = 1
         GROUP BY i.counterpart_id""")
        # The summaries of now's period that are not complete (normally none), by kind.
        parts.append(f"""{everything}
          FROM exchange_periods AS e
          JOIN interactions AS i ON i.account_id = :account
               AND i.counterpart_id = e.counterpart_id AND i.kind = e.kind AND {now_range}
         WHERE e.account_id = :account AND e.period = :now_p{chosen("e.counterpart_id")}
           AND ((e.last_inbound_at IS NOT NULL AND e.last_inbound_at > :now)
                OR (e.last_outbound_at IS NOT NULL AND e.last_outbound_at > :now))""")
    else:
        # The persons with a summary in now's period (a range of the primary key).
        parts.append(f"""{everything}
          FROM (SELECT DISTINCT counterpart_id AS cp FROM exchange_periods
                 WHERE account_id = :account AND period = :now_p{chosen("counterpart_id")}) AS p
          JOIN interactions AS i ON i.account_id = :account AND i.counterpart_id = p.cp
               AND {now_range}""")
    sql = f"""WITH {periods}{summed}
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
