"""The period summaries (``exchange_periods``) answer as the full aggregate does.

``exchange_stats`` reads the summaries and two periods of interactions; the reference
(``reference_exchange_stats``) reads every interaction. Whatever the history, the way it was
written (sync pages with repeats, imports and corrected re-imports), the rules, the instant
and the persons asked about, the two agree: counts and times exactly, the value to 1e-9.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

from alembic import command
from helpers import NOW
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, text

from service import people
from service.config import Rules
from service.imports.common import _begin_said, _note_parts, _replace_parts
from service.model import Direction, Kind
from service.platforms.base import Exchange
from service.rules import ExchangeStats
from service.store import Store
from service.store.db import alembic_config
from service.store.models import Account, Connection, ExchangePeriod, PersonLink
from service.store.periods import PERIOD_HALF_LIFE, PERIOD_SECONDS
from service.store.queries import exchange_stats, reference_exchange_stats
from service.sync import save_exchanges

WHO = ["a", "b", "c", "d", "e"]
DAY = 86400

# (person, kind, direction, seconds from NOW, thread): the thread makes it an imported
# message of that thread (a replaceable part), None a synced exchange.
event = st.tuples(
    st.sampled_from(WHO),
    st.sampled_from(list(Kind)),
    st.sampled_from(list(Direction)),
    # Most near period boundaries and the window's edges would be luck: a spread over two
    # years, and some exactly on a period's first or last second.
    st.integers(min_value=-700 * DAY, max_value=20 * DAY)
    | st.builds(
        lambda p, s: (
            (int(NOW.timestamp()) // PERIOD_SECONDS + p) * PERIOD_SECONDS + s - int(NOW.timestamp())
        ),
        st.integers(min_value=-25, max_value=2),
        st.sampled_from([-1, 0, 1]),
    ),
    st.none() | st.sampled_from(["t1", "t2"]),
)


weights = st.just(0.0) | st.floats(min_value=1e-3, max_value=10)
rules_strategy = st.builds(
    Rules,
    window=st.integers(min_value=1, max_value=400).map(lambda d: timedelta(days=d))
    | st.integers(min_value=DAY, max_value=400 * DAY).map(lambda s: timedelta(seconds=s))
    | st.just(timedelta(days=180)),
    half_life=st.just(PERIOD_HALF_LIFE)
    | st.integers(min_value=1, max_value=400).map(lambda d: timedelta(days=d)),
    count_kinds=st.frozensets(st.sampled_from(list(Kind)), min_size=1) | st.just(frozenset(Kind)),
    count_directions=st.frozensets(st.sampled_from(list(Direction)), min_size=1),
    weights=st.dictionaries(st.sampled_from(list(Kind)), weights),
    inbound_weight=weights,
    outbound_weight=weights,
)
nows = st.integers(min_value=-400 * DAY, max_value=30 * DAY).map(
    lambda s: NOW + timedelta(seconds=s)
) | st.just(NOW)


def _accounts(store: Store) -> list[int]:
    """Two accounts of the same person, each following a, b, c, d and e."""
    with store.session() as session:
        session.execute(delete(Account))
        session.execute(delete(PersonLink))
        ids = []
        for platform, handle in (("x", "@harry"), ("mastodon", "@harry@example.social")):
            account = Account(
                key=f"{platform}:{handle}",
                platform=platform,
                handle=handle,
                streams=[],
                created_at=NOW,
            )
            session.add(account)
            session.flush()
            ids.append(account.id)
            for who in WHO:
                session.add(
                    Connection(
                        account_id=account.id,
                        platform_user_id=who,
                        handle=f"@{who}",
                        first_seen_at=NOW,
                        last_seen_at=NOW,
                    )
                )
        return ids


def _exchange(n: int, item: tuple[str, Kind, Direction, float, str | None]) -> Exchange:
    who, kind, direction, offset, thread = item
    event_id = f"e{n}" if thread is None else f"fbm:{thread}:{n}"
    return Exchange(event_id, who, kind, direction, NOW + timedelta(seconds=int(offset)))


def _sync(store: Store, account_id: int, exchanges: list[Exchange], pages: int) -> None:
    """In ``pages`` pages, each also carrying again the first exchange of the one before."""
    size = max(1, math.ceil(len(exchanges) / pages))
    for start in range(0, len(exchanges), size):
        page = exchanges[start : start + size]
        if start:
            page = [exchanges[start - size], *page, page[0]]  # repeats: stored once
        with store.session() as session:
            save_exchanges(session, account_id, page)


def _import(store: Store, account_id: int, exchanges: list[Exchange]) -> None:
    """What ``run_import`` does with an export's exchanges: the parts it gives replace what
    an earlier import of them wrote in the span they hold."""
    with store.session() as session:
        _begin_said(session)
        parts: dict[str, tuple[datetime, datetime]] = {}
        _note_parts(session, parts, exchanges)
        save_exchanges(session, account_id, exchanges)
        _replace_parts(session, account_id, parts)


def assert_same(got: dict[str, ExchangeStats], want: dict[str, ExchangeStats]) -> None:
    assert got.keys() == want.keys()
    for who, expected in want.items():
        actual = got[who]
        assert (actual.inbound, actual.outbound) == (expected.inbound, expected.outbound), who
        assert (actual.last_inbound, actual.last_outbound) == (
            expected.last_inbound,
            expected.last_outbound,
        ), who
        assert math.isclose(actual.value, expected.value, rel_tol=1e-9, abs_tol=1e-300), who


def _linked(store: Store, rules: Rules, now: datetime, account_id: int, read: Any) -> Any:
    with mock.patch.object(people, "exchange_stats", read), store.session() as session:
        return people.with_linked(
            session, account_id, read(session, account_id, rules, now), rules, now
        )


@settings(max_examples=150)
@given(
    synced=st.lists(event, max_size=40),
    imported=st.lists(event, max_size=20),
    again=st.lists(st.booleans(), max_size=20),
    pages=st.integers(min_value=1, max_value=5),
    rules=rules_strategy,
    now=nows,
    asked=st.none() | st.lists(st.sampled_from([*WHO, "nobody"]), unique=True),
    link=st.booleans(),
    edges=st.lists(st.tuples(st.sampled_from(list(Kind)), st.integers(-1, 1)), max_size=4),
)
def test_exchange_stats_equal_the_full_aggregate(
    store: Store,
    synced: list[Any],
    imported: list[Any],
    again: list[bool],
    pages: int,
    rules: Rules,
    now: datetime,
    asked: list[str] | None,
    link: bool,
    edges: list[tuple[Kind, int]],
) -> None:
    first, second = _accounts(store)
    exchanges = [_exchange(n, item) for n, item in enumerate(synced)]
    # Exchanges on the second the window starts and the second of ``now``, or next to them.
    for n, (kind, step) in enumerate(edges):
        at = (now - rules.window if n % 2 else now) + timedelta(seconds=step)
        exchanges.append(Exchange(f"edge{n}", "e", kind, list(Direction)[n // 2 % 2], at))
    # Split over the two accounts; the threads' messages come by import instead.
    _sync(store, first, [e for n, e in enumerate(exchanges) if n % 3], pages)
    _sync(store, second, [e for n, e in enumerate(exchanges) if not n % 3], pages)
    export = [_exchange(1000 + n, (*item[:4], item[4] or "t1")) for n, item in enumerate(imported)]
    _import(store, first, export)
    # A corrected export: some of the messages again, some not (replaced), some new.
    kept = [e for e, keep in zip(export, again, strict=False) if keep]
    _import(
        store,
        first,
        kept + [_exchange(2000 + n, (*i[:4], "t2")) for n, i in enumerate(imported[:3])],
    )
    if link:
        people.link(store, ["x:@a", "mastodon:@a"], now=NOW)

    for account_id in (first, second):
        with store.session() as session:
            got = exchange_stats(session, account_id, rules, now, asked)
            want = reference_exchange_stats(session, account_id, rules, now, asked)
        assert_same(got, want)
    assert_same(
        _linked(store, rules, now, first, exchange_stats),
        _linked(store, rules, now, first, reference_exchange_stats),
    )


def test_a_repeated_page_and_a_replaced_import_leave_the_summaries_as_written_afresh(
    store: Store,
) -> None:
    first, _ = _accounts(store)
    old = NOW - timedelta(days=200)
    message = [
        Exchange(f"fbm:t1:{n}", "a", Kind.MESSAGE, Direction.INBOUND, old + timedelta(hours=n))
        for n in range(4)
    ]
    liked = [Exchange("like1", "b", Kind.LIKE, Direction.OUTBOUND, old)]
    _sync(store, first, liked, 1)
    _sync(store, first, liked, 1)
    _import(store, first, message)
    _import(store, first, [message[0], message[3]])  # no longer holds the two between

    got = _summaries(store)
    with store.session() as session:
        session.execute(delete(ExchangePeriod))
        from service.store.periods import recompute

        recompute(session, first, WHO)
    assert got == _summaries(store)
    assert [(row[2], row[4], row[5]) for row in got] == [("a", 2, 0), ("b", 0, 1)]


def _summaries(store: Store) -> list[tuple[Any, ...]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(ExchangePeriod.__table__).order_by(
                ExchangePeriod.account_id,
                ExchangePeriod.period,
                ExchangePeriod.counterpart_id,
                ExchangePeriod.kind,
            )
        ).all()
    return [(*row[:8], round(row[8], 12), round(row[9], 12)) for row in rows]


def test_the_migration_fills_the_summaries_as_the_sync_writes_them(
    store: Store,
) -> None:
    first, second = _accounts(store)
    exchanges = [
        Exchange(
            f"e{n}",
            WHO[n % 5],
            list(Kind)[n % 8],
            list(Direction)[n % 3 % 2],
            NOW - timedelta(seconds=n * 7919 * 13),
        )
        for n in range(400)
    ]
    _sync(store, first, exchanges[:300], 4)
    _sync(store, second, exchanges[300:], 2)
    written = _summaries(store)
    assert len(written) > 50

    config = alembic_config(store.engine.url.render_as_string(hide_password=False))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0008")
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    assert _summaries(store) == written


def test_a_deleted_account_takes_its_summaries_along(store: Store) -> None:
    first, second = _accounts(store)
    _sync(store, first, [Exchange("e1", "a", Kind.LIKE, Direction.INBOUND, NOW)], 1)
    _sync(store, second, [Exchange("e1", "a", Kind.LIKE, Direction.INBOUND, NOW)], 1)
    with store.session() as session:
        session.execute(delete(Account).where(Account.id == first))
    with store.engine.connect() as connection:
        left = connection.execute(text("SELECT account_id FROM exchange_periods")).all()
    assert left == [(second,)]
