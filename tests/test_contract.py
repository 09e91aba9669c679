"""One suite over every adapter: what the core relies on, whatever the platform.

Each adapter is built as a user's configuration would build it, against its platform (the
sandbox is its own platform; the others talk HTTP to the stateful fakes in tests/fakes/).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.config import Account, SandboxOptions
from service.platforms import build_adapter
from service.platforms.base import Capability, Platform

FACTORIES: dict[str, Callable[[Path], Iterator[Platform]]] = {}


def factory(
    name: str,
) -> Callable[[Callable[[Path], Iterator[Platform]]], Callable[[Path], Iterator[Platform]]]:
    def register(
        make: Callable[[Path], Iterator[Platform]],
    ) -> Callable[[Path], Iterator[Platform]]:
        FACTORIES[name] = make
        return make

    return register


@factory("sandbox")
def _sandbox(tmp_path: Path) -> Iterator[Platform]:
    account = Account(
        platform="sandbox", handle="@contract", sandbox=SandboxOptions(size=250, seed=3)
    )
    yield build_adapter(account, tmp_path)


try:  # adapters whose fakes exist in this tree join the suite
    from fakes import contract_factories

    for _name, _make in contract_factories.FACTORIES.items():
        FACTORIES[_name] = _make
except ImportError:
    pass


@pytest.fixture(params=sorted(FACTORIES))
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    yield from FACTORIES[request.param](tmp_path)


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


def test_every_stream_pages_to_done_with_unique_ids_and_honest_coverage(adapter):
    streams = list(adapter.interaction_streams())
    assert streams
    now = datetime.now(UTC) + timedelta(minutes=1)
    for stream in streams:
        seen: dict[str, object] = {}
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
                assert page.covers.end <= now
                for exchange in page.exchanges:
                    assert exchange.occurred_at <= page.covers.end
            cursor = page.cursor
            if page.done:
                break
        else:
            pytest.fail(f"{stream} never said it was done")
        # A caught-up cursor may read a little of the past again (late-indexed items), but
        # an id always names the same exchange, so the store's deduplication makes it harmless.
        again = adapter.interactions(stream, cursor)
        for exchange in again.exchanges:
            if exchange.event_id in seen:
                assert seen[exchange.event_id] == exchange, f"{exchange.event_id} changed"


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
