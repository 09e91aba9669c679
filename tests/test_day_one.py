"""Day one: a first sync gives verdicts for the connections it finds established.

Neither Mastodon nor X tells when a follow was made, but both list follows newest first.
Follows listed at the account's first complete listing count as made before it, except the
newest of them (``rules.newest_in_grace``), which stay in grace. Every such verdict's
evidence says the follow date is unknown. The real SDKs talk to the fakes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes.mastodon_server import TOKEN as MASTODON_TOKEN
from fakes.mastodon_server import FakeMastodon
from fakes.x_server import CLIENT_ID, REFRESH, FakeX
from fakes.x_server import TOKEN as X_TOKEN
from helpers import NOW, Clock, make_rules
from pydantic import SecretStr
from sqlalchemy import select

from service.config import Account as AccountConfig
from service.model import Kind
from service.platforms import build_adapter
from service.platforms.tokens import save_token
from service.rules import newest_in_grace
from service.store import Store
from service.store.models import Connection, Suggestion
from service.suggestions import evaluate_account
from service.sync import sync_account

PEOPLE = 40
TALKERS = 15  # the oldest follows; the ones in touch within the window


@pytest.fixture
def mastodon(clock: Clock) -> Iterator[FakeMastodon]:
    with FakeMastodon(clock) as server:
        yield server


@pytest.fixture
def x(clock: Clock) -> Iterator[FakeX]:
    with FakeX(clock) as server:
        yield server


def _suggested(store: Store) -> dict[str, dict[str, Any]]:
    with store.session() as session:
        rows = session.execute(
            select(Connection.platform_user_id, Suggestion.evidence).join(
                Suggestion, Suggestion.connection_id == Connection.id
            )
        ).all()
    return {user_id: evidence for user_id, evidence in rows}


def _expected(people: list[str]) -> tuple[set[str], set[str]]:
    """(silent and established, newest): people are in the order they were followed."""
    newest = set(people[PEOPLE - newest_in_grace(PEOPLE) :])
    silent = set(people[TALKERS:]) - newest
    return silent, newest


def test_a_first_mastodon_sync_judges_established_follows_and_keeps_the_newest_in_grace(
    store: Store, clock: Clock, mastodon: FakeMastodon, tmp_path: Path
) -> None:
    people = [mastodon.add_account(f"p{i}") for i in range(PEOPLE)]
    for person in people:
        mastodon.follow(person)  # p0 the oldest follow, p39 the newest
    old = NOW - timedelta(days=400)
    mastodon.post(old)
    mastodon.favourite_mine(people[0], old + timedelta(days=1))  # history older than the window
    for index, person in enumerate(people[:TALKERS]):
        mastodon.mention_me(person, NOW - timedelta(days=30 - index))
    config = AccountConfig(
        platform="mastodon",
        handle="@me@example.social",
        credentials={
            "access_token": SecretStr(MASTODON_TOKEN),
            "api_base_url": SecretStr(mastodon.url),
        },
    )
    adapter = build_adapter(config, tmp_path, clock)
    rules = make_rules()

    sync_account(store, config, adapter, rules, clock)
    report = evaluate_account(store, config.key, rules, clock.now)

    silent, newest = _expected(people)
    assert report.verdicts == {"keep": TALKERS, "flag": len(silent), "new": len(newest)}
    suggested = _suggested(store)
    assert set(suggested) == silent
    for evidence in suggested.values():
        assert evidence["follow_date_unknown"] is True and evidence["connected_since"] is None


def _first_x_sync(
    store: Store, clock: Clock, x: FakeX, tmp_path: Path, *, posts: list[timedelta]
) -> tuple[AccountConfig, Any, list[str]]:
    people = [x.add_user(f"p{i}", created_at=NOW - timedelta(days=2000)) for i in range(PEOPLE)]
    for person in people:
        x.follow(person)
    for age in posts:
        x.post(NOW - age)
    for index, person in enumerate(people[:TALKERS]):
        x.mention_me(person, NOW - timedelta(days=15 - index / 2))
    # The mentions timeline vouches only from the oldest mention it returned: a stranger's
    # old mention makes it reach past the window.
    x.mention_me(
        x.add_user("stranger", created_at=NOW - timedelta(days=2000)), NOW - timedelta(days=300)
    )
    key = "x:@me"
    save_token(
        tmp_path,
        key,
        {
            "access_token": X_TOKEN,
            "refresh_token": REFRESH,
            "expires_at": time.time() + 7200,
            "client_id": CLIENT_ID,
        },
    )
    config = AccountConfig(
        platform="x", handle="@me", x={"api_base_url": x.url, "client_id": CLIENT_ID}
    )
    adapter = build_adapter(config, tmp_path, clock)
    # X keeps 30 days of messages: a window within it.
    rules = make_rules(window=timedelta(days=20), per_digest_cap=100)
    sync_account(store, config, adapter, rules, clock)
    return config, rules, people


# Likes, reposts and quotes of older posts are out of the X API's reach: the person accepts
# that blind spot, as the sync's report asks.
X_ACCEPTED = frozenset({Kind.LIKE, Kind.REPOST, Kind.QUOTE})


def test_a_first_x_sync_judges_established_follows_and_keeps_the_newest_in_grace(
    store: Store, clock: Clock, x: FakeX, tmp_path: Path
) -> None:
    config, rules, people = _first_x_sync(store, clock, x, tmp_path, posts=[timedelta(days=400)])
    report = evaluate_account(store, config.key, rules, clock.now, accepted=X_ACCEPTED)

    silent, newest = _expected(people)
    assert report.verdicts == {"keep": TALKERS, "flag": len(silent), "new": len(newest)}
    suggested = _suggested(store)
    assert set(suggested) == silent
    assert all(e["follow_date_unknown"] for e in suggested.values())


def test_an_active_poster_on_x_gets_verdicts_once_the_reaction_blind_spot_is_accepted(
    store: Store, clock: Clock, x: FakeX, tmp_path: Path
) -> None:
    # Thirty posts in three days: the reactions stream reads the latest 20, which reach back
    # less than two days, and vouches for no more.
    posts = [timedelta(hours=2 + 2.4 * i) for i in range(30)]
    config, rules, people = _first_x_sync(store, clock, x, tmp_path, posts=posts)

    blind = evaluate_account(store, config.key, rules, clock.now)
    _, newest = _expected(people)
    assert blind.verdicts == {"too-early": PEOPLE - len(newest), "new": len(newest)}

    # Accepted, reactions to older posts are a declared blind spot, not a hole in the history:
    # the stream that reads only the latest posts no longer holds the account back.
    report = evaluate_account(store, config.key, rules, clock.now, accepted=X_ACCEPTED)
    silent, newest = _expected(people)
    assert report.verdicts == {"keep": TALKERS, "flag": len(silent), "new": len(newest)}


def test_a_first_listing_split_across_runs_keeps_everyone_in_grace(
    store: Store, clock: Clock, mastodon: FakeMastodon, tmp_path: Path
) -> None:
    # Its order was seen only in part: nobody is taken for established (the safe way).
    people = [mastodon.add_account(f"p{i}") for i in range(100)]
    for person in people:
        mastodon.follow(person)
    mastodon.post(NOW - timedelta(days=400))
    config = AccountConfig(
        platform="mastodon",
        handle="@me@example.social",
        credentials={
            "access_token": SecretStr(MASTODON_TOKEN),
            "api_base_url": SecretStr(mastodon.url),
        },
    )
    adapter = build_adapter(config, tmp_path, clock)
    rules = make_rules()
    mastodon.inject("500", "following", skip=1)  # the second page of follows fails

    first = sync_account(store, config, adapter, rules, clock)
    second = sync_account(store, config, adapter, rules, clock)
    report = evaluate_account(store, config.key, rules, clock.now)

    assert first.streams["connections"].startswith("failed")
    assert second.streams["connections"] == "complete"
    assert report.verdicts == {"new": 100}
