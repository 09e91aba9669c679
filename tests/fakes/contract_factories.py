"""Adapters built against their fake platforms, for the contract suite (tests/test_contract.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fakes.bluesky_server import EXCHANGE_REASONS, LIKE, POST, REPOST, FakeBluesky
from fakes.mastodon_server import TOKEN, FakeMastodon, NetworkSize, generate
from service.config import Account
from service.model import Direction, Kind
from service.platforms import build_adapter
from service.platforms.base import Exchange, Platform

# An adapter with its platform's ground truth: ``truth(stream)`` is every exchange the fake
# holds that the stream is meant to read, built from the fake's own records.
Truth = Callable[[str], Iterable[Exchange]]
Made = tuple[Platform, Truth]
FACTORIES: dict[str, Callable[[Path], Iterator[Made]]] = {}


def _bluesky(tmp_path: Path) -> Iterator[Made]:
    with FakeBluesky(handle="contract.test", clock=lambda: datetime.now(UTC)) as fake:
        fake.populate(follows=120, followers=90, mutual=40, notifications=150, posts=30, likes=25)
        account = Account(
            platform="bluesky",
            handle="@contract.test",
            credentials={"base_url": fake.base_url, "app_password": fake.app_password},
        )
        yield build_adapter(account, tmp_path), _bluesky_truth(fake)


def _bluesky_truth(fake: FakeBluesky) -> Truth:
    """What the fake holds: notifications of exchanges in, and the account's own records out
    (a post is one exchange with each person it answers, quotes or mentions)."""

    def moment(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    def truth(stream: str) -> Iterator[Exchange]:
        me = fake.me.did
        if stream == "notifications":
            for n in list(fake.notifications):
                if n.reason in EXCHANGE_REASONS:
                    # Dated by the later of the record's own time and its indexing, to the ms.
                    at = moment(max(n.created_us // 1000, n.sort_ms))
                    kind = Kind(EXCHANGE_REASONS[n.reason])
                    yield Exchange(f"{n.author}/{n.rkey}", n.author, kind, Direction.INBOUND, at)
            return
        collections = {"posts": (POST, REPOST), "likes": (LIKE,)}[stream]
        for collection in collections:
            for rkey, value in list(fake.repo.get(collection, {}).items()):
                at = datetime.fromisoformat(value["createdAt"])
                out: list[tuple[str, Kind]] = []
                if collection != POST:
                    kind = Kind.LIKE if collection == LIKE else Kind.REPOST
                    out.append((value["subject"]["uri"].split("/")[2], kind))
                else:
                    parent = value.get("reply", {}).get("parent", {}).get("uri")
                    if parent:
                        out.append((parent.split("/")[2], Kind.REPLY))
                    quoted = value.get("embed", {}).get("record", {}).get("uri")
                    if quoted:
                        out.append((quoted.split("/")[2], Kind.QUOTE))
                    for facet in value.get("facets", ()):
                        out += [(f["did"], Kind.MENTION) for f in facet["features"]]
                named = {me}
                for who, kind in out:
                    if who not in named:
                        named.add(who)
                        yield Exchange(f"{rkey}/{who}", who, kind, Direction.OUTBOUND, at)

    return truth


FACTORIES["bluesky"] = _bluesky


def _mastodon(tmp_path: Path, *, takahe: bool = False) -> Iterator[Made]:
    def clock() -> datetime:
        return datetime.now(UTC)

    with FakeMastodon(clock) as fake:
        if takahe:
            fake.behave_as_takahe()
        generate(fake, NetworkSize(120, 90, 40, 150, 30, 25), now=clock() - timedelta(minutes=1))
        account = Account(
            platform="mastodon",
            handle="@me@example.social",
            credentials={"access_token": TOKEN, "api_base_url": fake.url},
        )
        yield build_adapter(account, tmp_path), _mastodon_truth(fake)


# Which stream reads which exchanges on Mastodon: notifications everything that comes in,
# the account's own statuses what goes out (conversations also list the direct ones).
_MASTODON_STREAMS: dict[str, Callable[[Kind, Direction], bool]] = {
    "notifications": lambda kind, direction: direction is Direction.INBOUND,
    "statuses": lambda kind, direction: direction is Direction.OUTBOUND and kind is not Kind.LIKE,
    "favourites": lambda kind, direction: direction is Direction.OUTBOUND and kind is Kind.LIKE,
    "conversations": lambda kind, direction: kind is Kind.MESSAGE,
}


def _mastodon_truth(fake: FakeMastodon) -> Truth:
    def truth(stream: str) -> Iterator[Exchange]:
        reads = _MASTODON_STREAMS[stream]
        for index, t in enumerate(fake.truth):
            kind, direction = Kind(t.kind), Direction(t.direction)
            if t.at is None or not reads(kind, direction):
                continue  # a favourite is never dated: no span can vouch for it
            at = t.at.replace(microsecond=t.at.microsecond // 1000 * 1000)  # served to the ms
            yield Exchange(f"truth-{index}", t.counterpart, kind, direction, at)

    return truth


FACTORIES["mastodon"] = _mastodon
# A server that leaves direct messages out of the owner's statuses and answers conversations
# empty: the adapter must report them unseen rather than vouch for spans it could not read.
FACTORIES["mastodon-takahe"] = lambda tmp_path: _mastodon(tmp_path, takahe=True)
