"""One suite over every adapter: what the core relies on, whatever the platform.

Each adapter is built as a user's configuration would build it, against its platform (the
sandbox is its own platform; the others talk HTTP to the stateful fakes in tests/fakes/).

Coverage is checked against the platform's ground truth where the platform can give it
(``Served``, or ``TRUTHS`` for suites with their own ``adapter`` fixture): every exchange it
holds inside a span the adapter claims must have been read. An adapter without one gets the
weaker checks only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes.scripted import ScriptedPlatform

from service.config import Account, SandboxOptions
from service.model import Direction, Kind, Span, Unseen
from service.platforms import build_adapter
from service.platforms.base import Capability, Exchange, Platform
from service.platforms.sandbox import DAY, SandboxPlatform


@dataclass
class Served:
    """An adapter with its platform's ground truth: ``truth(stream)`` is every exchange the
    platform holds that the stream is meant to read (at the moment it is asked)."""

    adapter: Platform
    truth: Callable[[str], Iterable[Exchange]]


Made = Platform | Served
FACTORIES: dict[str, Callable[[Path], Iterator[Made]]] = {}


def factory(
    name: str,
) -> Callable[[Callable[[Path], Iterator[Made]]], Callable[[Path], Iterator[Made]]]:
    def register(make: Callable[[Path], Iterator[Made]]) -> Callable[[Path], Iterator[Made]]:
        FACTORIES[name] = make
        return make

    return register


def _sandbox_truth(adapter: SandboxPlatform) -> Callable[[str], Iterable[Exchange]]:
    def truth(stream: str) -> Iterator[Exchange]:
        network = adapter.network
        today = int(datetime.now(UTC).timestamp()) // DAY
        for day in range(network.anchor_day, today + 1):
            yield from network.events_on(day)

    return truth


@factory("sandbox")
def _sandbox(tmp_path: Path) -> Iterator[Made]:
    account = Account(
        platform="sandbox", handle="@contract", sandbox=SandboxOptions(size=250, seed=3)
    )
    adapter = build_adapter(account, tmp_path)
    assert isinstance(adapter, SandboxPlatform)
    yield Served(adapter, _sandbox_truth(adapter))


def _scripted_network(**options: object) -> ScriptedPlatform:
    now = datetime.now(UTC).replace(microsecond=0)
    platform = ScriptedPlatform(
        clock=lambda: datetime.now(UTC),
        history_start=now - timedelta(days=400),
        streams=("activity", "messages"),
        **options,  # type: ignore[arg-type]
    )
    for index in range(1, 8):
        platform.add_person(f"u{index}", since=now - timedelta(days=365))
    for day in range(0, 390, 9):
        platform.add_exchange(f"u{day % 7 + 1}", now - timedelta(days=day, hours=1))
        platform.add_exchange(
            f"u{day % 5 + 1}",
            now - timedelta(days=day, hours=5),
            kind=Kind.MESSAGE,
            direction=Direction.OUTBOUND,
            stream="messages",
        )
    return platform


@factory("scripted")
def _scripted(tmp_path: Path) -> Iterator[Made]:
    platform = _scripted_network()
    yield Served(platform, lambda stream: list(platform.exchanges[stream]))


try:  # adapters whose fakes exist in this tree join the suite
    from fakes import contract_factories

    def _served(
        make: Callable[[Path], Iterator[contract_factories.Made]],
    ) -> Callable[[Path], Iterator[Made]]:
        def served(tmp_path: Path) -> Iterator[Made]:
            for adapter, truth in make(tmp_path):
                yield Served(adapter, truth)

        return served

    for _name, _make in contract_factories.FACTORIES.items():
        FACTORIES[_name] = _served(_make)
except ImportError:
    pass


@pytest.fixture(params=sorted(FACTORIES))
def made(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Made]:
    yield from FACTORIES[request.param](tmp_path)


# The ground truth of the adapters under test, by id(adapter): suites that reuse these test
# functions with their own ``adapter`` fixture (test_x_contract.py) may register theirs.
TRUTHS: dict[int, Callable[[str], Iterable[Exchange]]] = {}


@pytest.fixture
def adapter(made: Made) -> Iterator[Platform]:
    if not isinstance(made, Served):
        yield made
        return
    TRUTHS[id(made.adapter)] = made.truth
    try:
        yield made.adapter
    finally:
        TRUTHS.pop(id(made.adapter), None)


def _aware(value: datetime | None) -> bool:
    return value is None or (value.tzinfo is not None and value.utcoffset() == timedelta(0))


def _listing(adapter: Platform) -> list:
    people, cursor, pages = [], None, 0
    while True:
        page = adapter.connections(cursor)
        people.extend(page.people)
        pages += 1
        assert pages < 10_000, "the listing never ends"
        if page.next_cursor is None:
            return people
        assert page.next_cursor != cursor, "a cursor that does not move would loop forever"
        cursor = page.next_cursor


def test_identity(adapter):
    me = adapter.whoami()
    assert me.user_id and isinstance(me.user_id, str)
    assert me.handle


def test_declares_what_it_can_do(adapter):
    assert isinstance(adapter.capabilities, frozenset)
    assert all(isinstance(c, Capability) for c in adapter.capabilities)
    assert isinstance(adapter.name, str) and adapter.name
    assert isinstance(adapter.simulated, bool)


def test_connections_page_to_the_end_with_string_ids_and_aware_times(adapter):
    people = _listing(adapter)
    assert people
    for person in people:
        assert isinstance(person.user_id, str) and person.user_id
        assert person.handle
        assert person.following or person.followed_by
        assert _aware(person.connected_since) and _aware(person.last_active_at)


@dataclass
class StreamRead:
    exchanges: dict[str, Exchange]
    claimed: list[Span]  # every span a page claimed, as the store merges them
    cursor: str | None


def _read_stream(adapter: Platform, stream: str, now: datetime) -> StreamRead:
    seen: dict[str, Exchange] = {}
    claimed: list[Span] = []
    cursor = None
    for _ in range(10_000):
        page = adapter.interactions(stream, cursor)
        for exchange in page.exchanges:
            assert exchange.event_id not in seen, f"{stream}: {exchange.event_id} twice"
            seen[exchange.event_id] = exchange
            assert isinstance(exchange.counterpart_id, str) and exchange.counterpart_id
            assert _aware(exchange.occurred_at) and exchange.occurred_at <= now
        if page.covers is not None:
            assert _aware(page.covers.start) and _aware(page.covers.end)
            assert page.covers.start <= page.covers.end <= now
            for exchange in page.exchanges:
                assert exchange.occurred_at <= page.covers.end
            claimed.append(page.covers)
        cursor = page.cursor
        if page.done:
            return StreamRead(seen, claimed, cursor)
    pytest.fail(f"{stream} never said it was done")


def unread_in_claimed_spans(
    truth: Iterable[Exchange], read: Iterable[Exchange], claimed: Sequence[Span]
) -> list[Exchange]:
    """What the platform holds inside a claimed span and the adapter never returned.

    A span vouches for ``start < t <= end`` (a read from a cursor onwards does not include
    the cursor's own moment). An exchange counts as read by its id, or, where an adapter
    names events its own way, by who, what, which way and when.
    """
    ids = {e.event_id for e in read}
    facts = {(e.counterpart_id, e.kind, e.direction, e.occurred_at) for e in read}
    return [
        e
        for e in truth
        if any(span.start < e.occurred_at <= span.end for span in claimed)
        and e.event_id not in ids
        and (e.counterpart_id, e.kind, e.direction, e.occurred_at) not in facts
    ]


def declared_blind(unseen: Iterable[Unseen], stream: str, exchange: Exchange) -> bool:
    """Whether the adapter reports this exchange's kind as unseen on this stream: a blind
    spot it declares (the core holds its verdicts back for it), not a span it over-claims."""
    return any(
        u.kind == exchange.kind
        and (u.direction is None or u.direction == exchange.direction)
        and (u.stream is None or u.stream == stream)
        for u in unseen
    )


def test_every_stream_pages_to_done_with_unique_ids_and_honest_coverage(adapter):
    truth = TRUTHS.get(id(adapter))
    if truth is not None:
        _listing(adapter)  # as a sync does first: what an adapter reports unseen may rest on it
    streams = list(adapter.interaction_streams())
    assert streams
    now = datetime.now(UTC) + timedelta(minutes=1)
    for stream in streams:
        read = _read_stream(adapter, stream, now)
        if truth is not None:
            # Coverage is a promise that nothing in the span was missed: hold it to that.
            unseen = list(adapter.unseen())
            held = [e for e in truth(stream) if not declared_blind(unseen, stream, e)]
            missed = unread_in_claimed_spans(held, read.exchanges.values(), read.claimed)
            assert not missed, f"{stream} claims spans holding {len(missed)} unread: {missed[:3]}"
        # A caught-up cursor may read a little of the past again (late-indexed items), but
        # an id always names the same exchange, so the store's deduplication makes it harmless.
        again = adapter.interactions(stream, read.cursor)
        for exchange in again.exchanges:
            if exchange.event_id in read.exchanges:
                assert read.exchanges[exchange.event_id] == exchange, f"{exchange.event_id} changed"


def test_the_coverage_check_catches_a_span_claimed_beyond_what_was_served():
    # A server that no longer serves what is older than 30 days (as an AppView that drops
    # old notifications), read by an adapter that still vouches for the whole history.
    platform = _scripted_network(
        served_since=datetime.now(UTC) - timedelta(days=30),
        events_page_size=50,
    )
    now = datetime.now(UTC) + timedelta(minutes=1)
    read = _read_stream(platform, "activity", now)  # the old checks: all pass

    missed = unread_in_claimed_spans(
        platform.exchanges["activity"], read.exchanges.values(), read.claimed
    )

    assert missed and all(e.occurred_at < now - timedelta(days=30) for e in missed)
    assert len(missed) + len(read.exchanges) == len(platform.exchanges["activity"])


def test_remove_is_idempotent_and_restore_undoes_it(adapter):
    if Capability.REMOVE not in adapter.capabilities:
        pytest.skip(f"{adapter.name} cannot remove through its API")
    followed = [p for p in _listing(adapter) if p.following]
    target = followed[0].user_id
    adapter.remove(target)
    if Capability.RELATIONSHIP in adapter.capabilities:
        assert not adapter.relationship(target).connected
    assert adapter.remove(target).already_done, "not following any more counts as done"
    if Capability.RESTORE in adapter.capabilities:
        adapter.restore(target)
        if Capability.RELATIONSHIP in adapter.capabilities:
            assert adapter.relationship(target).connected
