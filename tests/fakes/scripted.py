"""An in-memory platform behind the contract of ``service.platforms.base``, scripted by tests.

The core has no SDK to talk HTTP to, so this stands in for one adapter: a mutable list of
people, a list of exchanges per stream, a record of every call, and faults injected on
demand (the contract's errors, or anything else to play a crash).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import ClassVar

from service.model import Direction, Kind, Unseen
from service.platforms.base import (
    Capability,
    ConnectionPage,
    Exchange,
    Identity,
    InteractionPage,
    Person,
    Relationship,
    RemovalOutcome,
    Span,
    Traits,
)


@dataclass
class _Fault:
    error: BaseException
    skip: int  # calls of the method that still succeed first
    times: int
    after: bool  # raise after the call took effect (the platform acted, the answer is lost)


@dataclass
class Call:
    method: str
    args: tuple[object, ...]


@dataclass
class ScriptedPlatform:
    """One account's network. ``people`` keeps its order, which is the listing order."""

    name: ClassVar[str] = "scripted"
    simulated: ClassVar[bool] = True

    clock: Callable[[], datetime]
    history_start: datetime
    user_id: str = "1"
    handle: str = "@me"
    page_size: int = 3
    events_page_size: int = 4
    streams: tuple[str, ...] = ("activity",)
    capabilities: frozenset[Capability] = frozenset(Capability)
    traits: Traits = field(default_factory=lambda: Traits(removal_spacing=(0.0, 0.0)))
    people: dict[str, Person] = field(default_factory=dict)
    exchanges: dict[str, list[Exchange]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    on_remove: Callable[[str], None] | None = None
    # Kinds the adapter reports as unseen on the account (a stream the server does not serve).
    blind: list[Unseen] = field(default_factory=list)
    # Exchanges older than this are not served any more, while the coverage still claims
    # the whole history: an adapter over-claiming, for the contract suite to catch.
    served_since: datetime | None = None
    # Pages by cursor, for listings the list of people cannot express (one person in two
    # lists, a listing split across runs); None pages through ``people``.
    listing: Callable[[str | None], ConnectionPage] | None = None
    _faults: dict[str, list[_Fault]] = field(default_factory=dict)
    _glitches: int = 0
    _unfollowed: dict[str, Person] = field(default_factory=dict)
    _events: int = 0

    def __post_init__(self) -> None:
        for stream in self.streams:
            self.exchanges.setdefault(stream, [])

    # -- scripting --------------------------------------------------------------------------

    def add_person(
        self,
        user_id: str,
        *,
        handle: str | None = None,
        following: bool = True,
        followed_by: bool = False,
        since: datetime | None = None,
        gone: bool = False,
        moved_to: str | None = None,
        lists: Iterable[str] = (),
    ) -> Person:
        person = Person(
            user_id=user_id,
            handle=handle or f"@p{user_id}",
            display_name=f"Person {user_id}",
            following=following,
            followed_by=followed_by,
            connected_since=since or self.history_start,
            gone=gone,
            moved_to=moved_to,
            lists=tuple(lists),
        )
        self.people[user_id] = person
        return person

    def drop_person(self, user_id: str) -> None:
        """They unfollowed or deleted their account, outside lopper."""
        self.people.pop(user_id, None)

    def add_exchange(
        self,
        counterpart_id: str,
        at: datetime,
        *,
        kind: Kind = Kind.REPLY,
        direction: Direction = Direction.INBOUND,
        stream: str | None = None,
        event_id: str | None = None,
    ) -> Exchange:
        self._events += 1
        exchange = Exchange(
            event_id=event_id or f"ev-{self._events}",
            counterpart_id=counterpart_id,
            kind=kind,
            direction=direction,
            occurred_at=at,
        )
        self.exchanges[stream or self.streams[0]].append(exchange)
        return exchange

    def inject(
        self,
        method: str,
        error: BaseException,
        *,
        skip: int = 0,
        times: int = 1,
        after: bool = False,
    ) -> None:
        """Make ``method`` raise ``error`` once ``skip`` more calls have succeeded."""
        self._faults.setdefault(method, []).append(_Fault(error, skip, times, after))

    def glitch_listing(self, times: int = 1) -> None:
        """The next ``times`` listings come back complete and empty, as an API glitch does."""
        self._glitches += times

    def called(self, method: str) -> list[tuple[object, ...]]:
        return [c.args for c in self.calls if c.method == method]

    def reset_calls(self) -> None:
        self.calls.clear()

    def _enter(self, method: str, *args: object) -> _Fault | None:
        self.calls.append(Call(method, args))
        faults = self._faults.get(method, [])
        if not faults:
            return None
        fault = faults[0]
        if fault.skip > 0:
            fault.skip -= 1
            return None
        fault.times -= 1
        if fault.times <= 0:
            faults.pop(0)
        if fault.after:
            return fault
        raise fault.error

    # -- the contract -----------------------------------------------------------------------

    def whoami(self) -> Identity:
        self._enter("whoami")
        return Identity(self.user_id, self.handle)

    def connections(self, cursor: str | None) -> ConnectionPage:
        self._enter("connections", cursor)
        if self.listing is not None:
            return self.listing(cursor)
        if self._glitches and cursor is None:
            self._glitches -= 1
            return ConnectionPage([], None)
        start = int(cursor) if cursor else 0
        people = list(self.people.values())
        end = start + self.page_size
        return ConnectionPage(people[start:end], str(end) if end < len(people) else None)

    def interaction_streams(self) -> Sequence[str]:
        self._enter("interaction_streams")
        return self.streams

    def interactions(self, stream: str, cursor: str | None) -> InteractionPage:
        self._enter("interactions", stream, cursor)
        events = [
            e
            for e in self.exchanges[stream]
            if self.served_since is None or e.occurred_at >= self.served_since
        ]
        start = int(cursor) if cursor else 0
        end = min(start + self.events_page_size, len(events))
        done = end >= len(events)
        # Only the last page completes the stream, up to the moment it was asked for.
        covers = Span(self.history_start, self.clock()) if done else None
        return InteractionPage(events[start:end], str(end), covers, done)

    def relationship(self, user_id: str) -> Relationship:
        self._enter("relationship", user_id)
        person = self.people.get(user_id)
        connected = person is not None and person.following
        return Relationship(connected=connected)

    def remove(self, user_id: str) -> RemovalOutcome:
        fault = self._enter("remove", user_id)
        if self.on_remove is not None:
            self.on_remove(user_id)
        person = self.people.get(user_id)
        if person is None or not person.following:
            outcome = RemovalOutcome(already_done=True, detail="not following any more")
        else:
            self.removed.append(user_id)
            self._unfollowed[user_id] = person
            if person.followed_by:
                self.people[user_id] = replace(person, following=False)
            else:
                del self.people[user_id]
            outcome = RemovalOutcome()
        if fault is not None:
            raise fault.error
        return outcome

    def restore(self, user_id: str) -> None:
        fault = self._enter("restore", user_id)
        person = self._unfollowed.pop(user_id, None)
        if person is not None:
            self.people[user_id] = replace(person, following=True)
            self.restored.append(user_id)
        if fault is not None:
            raise fault.error

    def unseen(self) -> Sequence[Unseen]:
        return tuple(self.blind)

    def profile_link(self, handle: str, user_id: str) -> str | None:
        return f"https://scripted.invalid/{handle.lstrip('@')}"
