"""Reads the rules need, shaped as the plain values ``service.rules`` takes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    select,
    type_coerce,
)
from sqlalchemy.orm import Session

from service.config import Rules
from service.model import ConnectionState, Direction, Kind, Span, Unseen
from service.rules import ConnectionFacts, ExchangeStats
from service.store import periods
from service.store.models import Account, Connection, Coverage, Interaction
from service.store.types import to_epoch


def _aware(value: int | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(int(value), tz=UTC)


def exchange_statement(  # type: ignore[no-untyped-def]
    account_id: int, rules: Rules, now: datetime, counterparts: Sequence[str] | None = None
):
    """One aggregate over the account's interactions, grouped by the other person.

    The reference: ``exchange_stats`` reads the same figures from the period summaries
    (``service.store.periods``) when the rules' half-life is the one they are stored for.
    """
    now_s = to_epoch(now)
    since = to_epoch(now - rules.window)
    i = Interaction.__table__.c
    at = type_coerce(i.occurred_at, BigInteger)  # raw epoch seconds, for arithmetic
    # Filters that every row passes (all kinds, both directions: the defaults) are left out.
    conditions = [at >= since]
    if rules.count_kinds != frozenset(Kind):
        conditions.append(i.kind.in_([k.value for k in rules.count_kinds]))
    if rules.count_directions != frozenset(Direction):
        conditions.append(i.direction.in_([d.value for d in rules.count_directions]))
    counted = and_(*conditions)
    inbound = i.direction == Direction.INBOUND.value
    # CASE kind WHEN ...: the kind is read once per row, not compared once per weight.
    weight = case(
        {kind.value: literal(w) for kind, w in rules.weights.items()},
        value=i.kind,
        else_=literal(1.0),
    )
    direction_weight = case(
        (inbound, literal(rules.inbound_weight)), else_=literal(rules.outbound_weight)
    )
    k = math.log(2) / rules.half_life.total_seconds()
    exponent = type_coerce(at - now_s, Float) * k
    # PostgreSQL raises on a float underflow instead of returning 0: below e**-600 an
    # exchange is worth nothing anyway, so it is counted as exactly that.
    decayed = case((exponent < -600, literal(0.0)), else_=func.exp(exponent))
    value = func.sum(weight * direction_weight * decayed, type_=Float)
    statement = (
        select(
            i.counterpart_id,
            func.sum(case((and_(counted, inbound), 1), else_=0)),
            func.sum(case((and_(counted, ~inbound), 1), else_=0)),
            func.max(case((inbound, at))),
            func.max(case((~inbound, at))),
            value,
        )
        .where(i.account_id == account_id, at <= now_s)
        .group_by(i.counterpart_id)
    )
    if counterparts is not None:
        statement = statement.where(i.counterpart_id.in_(list(counterparts)))
    return statement


def exchange_stats(
    session: Session,
    account_id: int,
    rules: Rules,
    now: datetime,
    counterparts: Sequence[str] | None = None,
) -> dict[str, ExchangeStats]:
    """Per person: counted exchanges in the window, last exchange each way, decayed value.

    From the period summaries when they serve the rules; else (another half-life) from the
    whole history, as ``reference_exchange_stats``: the same figures, slower.
    """
    if not periods.serves(rules):
        return reference_exchange_stats(session, account_id, rules, now, counterparts)
    return _stats(periods.read(session, account_id, rules, now, counterparts))


def reference_exchange_stats(
    session: Session,
    account_id: int,
    rules: Rules,
    now: datetime,
    counterparts: Sequence[str] | None = None,
) -> dict[str, ExchangeStats]:
    """``exchange_stats`` read by one aggregate over every interaction of the account."""
    return _stats(session.execute(exchange_statement(account_id, rules, now, counterparts)))


def _stats(result: Iterable[Any]) -> dict[str, ExchangeStats]:
    return {
        row[0]: ExchangeStats(
            int(row[1] or 0), int(row[2] or 0), _aware(row[3]), _aware(row[4]), float(row[5] or 0.0)
        )
        for row in result
    }


def account_coverage(
    session: Session, account: Account, accepted: frozenset[Kind] = frozenset()
) -> Span | None:
    """The span every stream of the account covers without a gap, ending at the latest data.

    A stream that reads some kinds only in part (an ``Unseen`` naming it) stops holding the
    account back once the person accepted every kind it leaves unseen (``accepted``).
    """
    rows = session.execute(
        select(Coverage.stream, Coverage.covered_from, Coverage.covered_to).where(
            Coverage.account_id == account.id
        )
    ).all()
    if not account.streams:
        return None
    partial: dict[str, set[Kind]] = {}
    for item in account_unseen(account):
        if item.stream is not None:
            partial.setdefault(item.stream, set()).add(item.kind)
    waived = {stream for stream, kinds in partial.items() if kinds <= accepted}
    streams = [s for s in account.streams if s not in waived]
    latest: dict[str, tuple[datetime, datetime]] = {}
    for stream, start, end in rows:
        if stream not in latest or end > latest[stream][1]:
            latest[stream] = (start, end)
    if any(stream not in latest for stream in account.streams):
        return None
    if not streams:
        return None
    start = max(latest[s][0] for s in streams)
    end = min(latest[s][1] for s in account.streams)
    return Span(start, end) if start <= end else None


def account_unseen(account: Account) -> list[Unseen]:
    """What the account's adapter reported it cannot see at the last sync."""
    return [Unseen.from_json(item) for item in account.unseen or ()]


def connection_facts(
    session: Session, account_id: int, connection_ids: Sequence[int] | None = None
) -> list[ConnectionFacts]:
    """The active connections of the account (only those of ``connection_ids`` if given)."""
    c = Connection.__table__.c

    def epoch(column: Any) -> Any:  # whole seconds as stored: converted once, below
        return type_coerce(column, BigInteger)

    # Most connections are on no list: their "[]" is not parsed as JSON one row at a time.
    lists = case((cast(c.lists, String).in_(["[]", "null"]), null()), else_=c.lists)
    # In the order of ConnectionFacts' fields: the rows are built positionally, below.
    statement = select(
        c.id,
        c.platform_user_id,
        c.handle,
        c.display_name,
        c.profile_url,
        c.following,
        c.followed_by,
        epoch(c.connected_since),
        epoch(c.first_seen_at),
        c.gone,
        c.moved_to,
        lists,
        c.protected,
        epoch(c.last_active_at),
        c.established,
    ).where(c.account_id == account_id, c.state == ConnectionState.ACTIVE.value)
    if connection_ids is not None:
        statement = statement.where(c.id.in_(list(connection_ids)))
    rows = session.execute(statement).all()  # one fetchall: row by row took three times as long
    # Many connections share a time (the sync that first saw them): each is converted once.
    times: dict[int | None, datetime | None] = {None: None}

    def aware(value: int | None) -> datetime | None:
        try:
            return times[value]
        except KeyError:
            found = times[value] = _aware(value)
            return found

    epoch = datetime.fromtimestamp(0, tz=UTC)
    return [
        ConnectionFacts(
            id_,
            user_id,
            handle,
            name,
            url,
            bool(following),
            bool(followed_by),
            aware(since),
            aware(first_seen) or epoch,
            bool(gone),
            moved_to,
            tuple(lists) if lists else (),
            bool(kept),
            aware(last_active),
            bool(established),
        )
        for (
            id_,
            user_id,
            handle,
            name,
            url,
            following,
            followed_by,
            since,
            first_seen,
            gone,
            moved_to,
            lists,
            kept,
            last_active,
            established,
        ) in rows
    ]
