"""The contract suite (tests/test_contract.py) run over the X adapter against the fake X."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import test_contract as contract
from fakes.x_server import (
    CLIENT_ID,
    ME,
    REFRESH,
    TOKEN,
    USERNAME,
    FakeTweet,
    FakeX,
    NetworkSize,
    generate,
)

from service.config import Account
from service.model import Direction, Kind
from service.platforms import build_adapter
from service.platforms.base import Exchange, Platform
from service.platforms.tokens import save_token

SIZES = {
    "a large network": NetworkSize(
        1300, 900, 400, mentions=150, posts=30, likes=25, messages=20, reactions=60
    ),
    # More mentions than X keeps (the latest 800): the older ones are out of reach, and no
    # span may vouch for them; reactions to older posts are declared unseen.
    "a long history": NetworkSize(
        200, 150, 50, mentions=850, posts=30, messages=5, reactions=20, older_reactions=20
    ),
}


@pytest.fixture(params=sorted(SIZES))
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    def clock() -> datetime:
        return datetime.now(UTC)

    with FakeX(clock) as fake:
        generate(fake, SIZES[request.param], now=clock())
        config = Account(
            platform="x",
            handle=f"@{USERNAME}",
            x={"api_base_url": fake.url, "client_id": CLIENT_ID},
        )
        save_token(
            tmp_path,
            config.key,
            {"access_token": TOKEN, "refresh_token": REFRESH, "expires_at": time.time() + 3600},
        )
        made = build_adapter(config, tmp_path, clock)
        contract.TRUTHS[id(made)] = _truth(fake)
        try:
            yield made
        finally:
            contract.TRUTHS.pop(id(made), None)


def _ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)  # X dates to the ms


def _truth(fake: FakeX) -> Callable[[str], Iterator[Exchange]]:
    """What the fake X holds, stream by stream, from its own posts and messages. Likes and
    reactions are never dated by X (read, they are dated when seen): no span vouches for them,
    so only their quotes, which are posts with a time, join."""

    def outbound(tweet: FakeTweet) -> dict[str, Kind]:
        retweeted = [fake.tweets[i].author for k, i in tweet.refs if k == "retweeted"]
        if retweeted:
            return {retweeted[0]: Kind.REPOST}
        kinds = dict.fromkeys(tweet.mentions, Kind.MENTION)
        for k, i in tweet.refs:
            if k == "quoted":
                kinds[fake.tweets[i].author] = Kind.QUOTE
        if tweet.reply_to:
            kinds[tweet.reply_to] = Kind.REPLY
        kinds.pop(ME, None)
        return kinds

    def truth(stream: str) -> Iterator[Exchange]:
        if stream == "mentions":
            for i in list(fake.mentioning):
                if i in fake.hidden:
                    continue  # deleted or withheld since: X serves it no more
                t = fake.tweets[i]
                quoted = any(k == "quoted" for k, _ in t.refs)
                kind = Kind.REPLY if t.reply_to == ME else Kind.QUOTE if quoted else Kind.MENTION
                yield Exchange(f"mention:{i}", t.author, kind, Direction.INBOUND, _ms(t.created_at))
        elif stream == "posts":
            for i in list(fake.own):
                if i in fake.hidden:
                    continue
                t = fake.tweets[i]
                for who, kind in outbound(t).items():
                    yield Exchange(f"{i}:{who}", who, kind, Direction.OUTBOUND, _ms(t.created_at))
        elif stream == "messages":
            for e in list(fake.dms):
                at = _ms(e.created_at)
                if e.sender != ME:
                    yield Exchange(e.id, e.sender, Kind.MESSAGE, Direction.INBOUND, at)
                    continue
                members = fake.groups.get(e.conversation) or [
                    p for p in e.conversation.split("-") if p != ME
                ]
                for who in members:
                    yield Exchange(f"{e.id}:{who}", who, Kind.MESSAGE, Direction.OUTBOUND, at)
        elif stream == "reactions":
            for i in list(fake.own):
                for q in fake.tweets[i].quotes:
                    t = fake.tweets[q]
                    yield Exchange(q, t.author, Kind.QUOTE, Direction.INBOUND, _ms(t.created_at))

    return truth


test_identity = contract.test_identity
test_declares_what_it_can_do = contract.test_declares_what_it_can_do
test_connections_page_to_the_end_with_string_ids_and_aware_times = (
    contract.test_connections_page_to_the_end_with_string_ids_and_aware_times
)
test_every_stream_pages_to_done_with_unique_ids_and_honest_coverage = (
    contract.test_every_stream_pages_to_done_with_unique_ids_and_honest_coverage
)
test_remove_is_idempotent_and_restore_undoes_it = (
    contract.test_remove_is_idempotent_and_restore_undoes_it
)
