"""The sandbox: a simulated network, deterministic from a seed, behind the full contract.

Nobody in it is real. It exists so that the whole flow (sync, evaluate, review, remove,
undo) runs without any account: most people never interact (as in real networks), the rest
follow a power law, some go quiet, new follows keep arriving as days pass, a few accounts
are deleted or moved. The network is a function of the seed and of the day; the only state
kept is the day the network was created and what was removed or restored through it, in a
small JSON file next to the database.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from service.config import SandboxOptions
from service.model import Direction, Kind, Span, Unseen
from service.platforms.base import (
    Capability,
    ConnectionPage,
    Exchange,
    Identity,
    InteractionPage,
    Person,
    Relationship,
    RemovalOutcome,
    Traits,
)

DAY = 86400
STREAM = "activity"
PAGE_SIZE = 1000
PAGE_EVENTS = 5000
LABEL = "simulated sandbox network"
_INBOUND, _OUTBOUND = Direction.INBOUND, Direction.OUTBOUND

_KINDS = (
    (Kind.LIKE, 40),
    (Kind.REPLY, 18),
    (Kind.MENTION, 10),
    (Kind.REPOST, 12),
    (Kind.QUOTE, 4),
    (Kind.REACTION, 6),
    (Kind.COMMENT, 4),
    (Kind.MESSAGE, 6),
)
_SYLLABLES = ("ka", "lo", "mi", "ra", "ne", "to", "su", "vi", "da", "pe", "zo", "li", "an", "or")


@dataclass(frozen=True, slots=True)
class _Member:
    user_id: str
    handle: str
    name: str
    connected_day: int
    following: bool
    followed_by: bool
    weight: float  # 0 for people who never interact
    quiet_day: int | None  # last day they interact
    gone: bool
    moved_to: str | None
    close_friend: bool


def _name(rng: random.Random, index: int) -> tuple[str, str]:
    first = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    last = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    return f"{first} {last} (simulated)", f"@{first.lower()}{last.lower()}{index}"


class SandboxNetwork:
    """The simulated people and their exchanges with the account, day by day."""

    def __init__(self, options: SandboxOptions, anchor_day: int) -> None:
        self.options = options
        self.anchor_day = anchor_day  # first day of recorded history
        self.members = self._people()
        self.by_id = {m.user_id: i for i, m in enumerate(self.members)}
        weights = [m.weight for m in self.members]
        self._cum = list(_accumulate(weights))
        active = sum(1 for w in weights if w > 0)
        self._daily = active * options.events_per_active_person / 365.0
        self._kinds = [k for k, _ in _KINDS]
        self._kind_cum = list(_accumulate([float(w) for _, w in _KINDS]))

    def _people(self) -> list[_Member]:
        o = self.options
        rng = random.Random(o.seed)
        today = self.anchor_day + o.history_days
        members = []
        for i in range(o.size):
            name, handle = _name(rng, i)
            roll = rng.random()
            if roll < o.new_share:
                connected = today - rng.randint(0, 29)
            elif roll < o.new_share + 0.04:
                connected = today + rng.randint(1, 365)  # follows yet to come, as days pass
            else:
                connected = today - 30 - int(rng.random() ** 0.7 * (o.history_days + 900))
            follower_only = rng.random() < 0.12
            following = not follower_only
            followed_by = follower_only or rng.random() < o.mutual_share
            silent = rng.random() < o.silent_share
            weight = 0.0 if silent else min(rng.paretovariate(1.3), 60.0)
            quiet_day = None
            if not silent and rng.random() < o.quiet_share:
                start = max(connected, self.anchor_day)
                quiet_day = start + int(rng.random() * max(1, today - start))
            gone = rng.random() < o.gone_share
            moved_to = None
            if gone and rng.random() < 0.5:
                moved_to = f"{handle}@elsewhere.example"
                gone = False
            members.append(
                _Member(
                    user_id=str(1_000_000 + i),
                    handle=handle,
                    name=name,
                    connected_day=connected,
                    following=following,
                    followed_by=followed_by,
                    weight=weight,
                    quiet_day=quiet_day,
                    gone=gone or moved_to is not None,
                    moved_to=moved_to,
                    close_friend=weight > 8 and rng.random() < 0.3,
                )
            )
        return members

    def events_on(self, day: int) -> Iterator[Exchange]:
        """Every exchange of one day, always the same for the same seed and day."""
        if day < self.anchor_day or self._daily <= 0:
            return
        rng = random.Random(self.options.seed * 1_000_003 + day)
        count = max(0, int(self._daily + math.sqrt(self._daily) * rng.gauss(0.0, 1.0)))
        picks = rng.choices(range(len(self.members)), cum_weights=self._cum, k=count)
        # Large networks draw millions of exchanges here: look the names up once.
        members, kinds, kind_cum, draw = self.members, self._kinds, self._kind_cum, rng.random
        kind_total = kind_cum[-1]
        base = day * DAY
        for j, index in enumerate(picks):
            member = members[index]
            kind_roll = draw() * kind_total
            inbound = draw() < 0.55
            second = int(draw() * DAY)
            if member.connected_day > day or (
                member.quiet_day is not None and day > member.quiet_day
            ):
                continue
            yield Exchange(
                f"sb-{day}-{j}",
                member.user_id,
                kinds[bisect.bisect_right(kind_cum, kind_roll)],
                _INBOUND if inbound else _OUTBOUND,
                datetime.fromtimestamp(base + second, tz=UTC),
            )


def _accumulate(values: Sequence[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


class SandboxPlatform:
    """``platform: sandbox`` — the full contract over a SandboxNetwork."""

    name: ClassVar[str] = "sandbox"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    simulated: ClassVar[bool] = True
    traits: Traits = Traits(removal_spacing=(0.0, 0.0))

    def __init__(
        self,
        handle: str,
        options: SandboxOptions,
        state_file: Path,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.handle = handle
        self.options = options
        self.state_file = state_file
        self.clock = clock or (lambda: datetime.now(UTC))
        self._state = self._load_state()
        self.network = SandboxNetwork(options, int(str(self._state["anchor_day"])))

    # -- state kept between runs ---------------------------------------------------------

    def _load_state(self) -> dict[str, object]:
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
            if state.get("seed") == self.options.seed and state.get("size") == self.options.size:
                return dict(state)
        except (OSError, ValueError):
            pass
        today = int(self.clock().timestamp()) // DAY
        state = {
            "seed": self.options.seed,
            "size": self.options.size,
            "anchor_day": today - self.options.history_days,
            "removed": {},
        }
        self._save(state)
        return state

    def _save(self, state: dict[str, object]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
        os.replace(tmp, self.state_file)

    @property
    def _removed(self) -> dict[str, str]:
        removed = self._state["removed"]
        assert isinstance(removed, dict)
        return removed

    def _today(self) -> int:
        return int(self.clock().timestamp()) // DAY

    def _following(self, member: _Member) -> bool:
        return member.following and member.user_id not in self._removed

    def _listed(self, member: _Member, today: int) -> bool:
        # After an unfollow a mutual stays listed, as a follower.
        return member.connected_day <= today and (self._following(member) or member.followed_by)

    # -- the contract --------------------------------------------------------------------

    def whoami(self) -> Identity:
        return Identity(user_id="1", handle=self.handle, display_name=f"{self.handle} ({LABEL})")

    def connections(self, cursor: str | None) -> ConnectionPage:
        start = int(cursor) if cursor else 0
        today = self._today()
        members = self.network.members
        people = []
        for member in members[start : start + PAGE_SIZE]:
            if not self._listed(member, today):
                continue
            people.append(
                Person(
                    user_id=member.user_id,
                    handle=member.handle,
                    display_name=member.name,
                    profile_url=self.profile_link(member.handle, member.user_id),
                    following=self._following(member),
                    followed_by=member.followed_by,
                    connected_since=datetime.fromtimestamp(member.connected_day * DAY, tz=UTC),
                    gone=member.gone,
                    moved_to=member.moved_to,
                    lists=("Close friends",) if member.close_friend else (),
                )
            )
        end = start + PAGE_SIZE
        return ConnectionPage(people, str(end) if end < len(members) else None)

    def interaction_streams(self) -> Sequence[str]:
        return (STREAM,)

    def interactions(self, stream: str, cursor: str | None) -> InteractionPage:
        if stream != STREAM:
            raise ValueError(f"the sandbox has no stream {stream!r}")
        now = int(self.clock().timestamp())
        since = int(cursor) if cursor else self.network.anchor_day * DAY
        exchanges: list[Exchange] = []
        day = since // DAY
        bound = since
        while bound < now and len(exchanges) < PAGE_EVENTS:
            day_end = min((day + 1) * DAY, now)
            events = self.network.events_on(day)
            if since < day * DAY and day_end == (day + 1) * DAY:
                exchanges.extend(events)  # the whole day lies within (since, day_end]
            else:
                for exchange in events:
                    t = int(exchange.occurred_at.timestamp())
                    if since < t <= day_end:
                        exchanges.append(exchange)
            bound = day_end
            day += 1
        bound = max(bound, since)
        covers = Span(datetime.fromtimestamp(since, tz=UTC), datetime.fromtimestamp(bound, tz=UTC))
        return InteractionPage(exchanges, str(bound), covers, done=bound >= now)

    def relationship(self, user_id: str) -> Relationship:
        index = self.network.by_id.get(user_id)
        if index is None:
            return Relationship(connected=False)
        member = self.network.members[index]
        return Relationship(
            connected=self._listed(member, self._today()) and self._following(member)
        )

    def remove(self, user_id: str) -> RemovalOutcome:
        if not self.relationship(user_id).connected:
            return RemovalOutcome(already_done=True, detail="not following any more")
        self._removed[user_id] = self.clock().isoformat()
        self._save(self._state)
        return RemovalOutcome()

    def restore(self, user_id: str) -> None:
        self._removed.pop(user_id, None)
        self._save(self._state)

    def unseen(self) -> Sequence[Unseen]:
        return ()

    def profile_link(self, handle: str, user_id: str) -> str | None:
        return f"https://sandbox.invalid/{handle.lstrip('@')}"
