"""Mastodon end to end: the real Mastodon.py client talks HTTP to a fake server, through the
adapter, driven by the real core (sync, evaluation, confirmation, removal, undo)."""

from __future__ import annotations

import os
import random
import stat
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fakes.mastodon_server import (
    TOKEN,
    FakeMastodon,
    NetworkSize,
    expected_pages,
    generate,
)
from helpers import NOW, Clock, make_rules, reset_cursors, snapshot
from pydantic import SecretStr
from sqlalchemy import select

from service.config import Account as AccountConfig
from service.model import Channel, Direction, Kind, Reason, SuggestionState
from service.platforms import build_adapter
from service.platforms.base import AuthError, Platform, PlatformError
from service.platforms.mastodon import (
    CONVERSATIONS,
    SCOPES,
    MastodonPlatform,
    authorize,
    build,
    last_active,
    server_family,
)
from service.platforms.tokens import save_token, token_path
from service.removals import execute_account, restore
from service.store import Store
from service.store.models import (
    Account,
    AuditEntry,
    Connection,
    Interaction,
    Suggestion,
    SyncCursor,
)
from service.store.queries import account_coverage, account_unseen
from service.suggestions import decide, evaluate_account
from service.sync import sync_account

HANDLE = "@me@example.social"
KEY = f"mastodon:{HANDLE}"
SMALL = NetworkSize(
    following=170, followers=80, mutual=40, notifications=100, statuses=30, favourites=40
)


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeMastodon]:
    with FakeMastodon(clock) as server:
        yield server


def account(fake: FakeMastodon, token: str = TOKEN) -> AccountConfig:
    return AccountConfig(
        platform="mastodon",
        handle=HANDLE,
        credentials={"access_token": SecretStr(token), "api_base_url": SecretStr(fake.url)},
    )


def adapter_for(fake: FakeMastodon, tmp_path: Path, clock: Clock) -> MastodonPlatform:
    adapter = build_adapter(account(fake), tmp_path, clock)
    assert isinstance(adapter, MastodonPlatform)
    assert isinstance(adapter, Platform)
    return adapter


def sync(store: Store, fake: FakeMastodon, adapter: MastodonPlatform, clock: Clock) -> Any:
    return sync_account(store, account(fake), adapter, make_rules(), clock)


def stored_connections(store: Store) -> dict[str, tuple[bool, bool]]:
    with store.session() as session:
        return {
            c.platform_user_id: (c.following, c.followed_by)
            for c in session.scalars(select(Connection))
            if c.state.value == "active"
        }


def stored_exchanges(store: Store) -> Counter[tuple[str, str, str]]:
    with store.session() as session:
        return Counter(
            (i.counterpart_id, str(i.kind), str(i.direction))
            for i in session.scalars(select(Interaction))
        )


def assert_matches_ground_truth(store: Store, fake: FakeMastodon) -> None:
    """Everything on the server is in the store, and nothing else is (both directions)."""
    following, followers = fake.following_ids(), fake.follower_ids()
    truth = {a: (a in following, a in followers) for a in following | followers}
    assert stored_connections(store) == truth
    expected = Counter((t.counterpart, t.kind, t.direction) for t in fake.truth)
    stored = stored_exchanges(store)
    assert stored - expected == Counter()  # nothing invented or counted twice
    assert expected - stored == Counter()  # nothing missed


def exchange_notifications(fake: FakeMastodon) -> int:
    kinds = {"mention", "favourite", "reblog", "quote"}
    return sum(1 for n in fake.notifications.values.values() if n.type in kinds)


def first_sync_requests(fake: FakeMastodon) -> dict[str, int]:
    """Requests a first sync needs by Mastodon's paging rules (see expected_pages)."""
    return {
        "verify_credentials": 1,
        "instance": 1,  # the server's software, once a sync
        "following": expected_pages(len(fake.following), 80),
        "followers": expected_pages(len(fake.followers), 80),
        "notifications": expected_pages(exchange_notifications(fake), 80, next_unless_empty=True),
        "statuses": expected_pages(len(fake.own), 40),
        "favourites": expected_pages(len(fake.favourites), 40),
        "conversations": expected_pages(len(fake.conversations()), 40),
    }


# --- syncing -----------------------------------------------------------------------------


def test_first_and_incremental_sync_make_the_expected_requests(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    generate(fake, SMALL, now=NOW - timedelta(minutes=1))
    adapter = adapter_for(fake, tmp_path, clock)

    report = sync(store, fake, adapter, clock)

    assert report.outcome == "ok", report
    expected = first_sync_requests(fake)
    assert dict(fake.requests) == expected
    # Against the least a client could do (ceil(n/limit) a listing): one request more where
    # Mastodon's Link header cannot tell a last page from a full one.
    minimum = {
        "verify_credentials": 1,
        "instance": 1,
        "following": -(-len(fake.following) // 80),
        "followers": -(-len(fake.followers) // 80),
        "notifications": -(-exchange_notifications(fake) // 80),
        "statuses": -(-len(fake.own) // 40),
        "favourites": -(-len(fake.favourites) // 40),
        "conversations": -(-len(fake.conversations()) // 40),
    }
    assert all(0 <= expected[k] - minimum[k] <= 1 for k in minimum)
    assert_matches_ground_truth(store, fake)

    # Six hours on: 85 new notifications (two pages forwards), a reply, a favourite, a new
    # direct conversation and a new follower.
    clock.advance(timedelta(hours=6))
    newcomer = fake.add_account("newcomer", "elsewhere.example")
    fake.add_follower(newcomer)
    people = sorted(fake.following_ids())
    base = clock.now - timedelta(hours=5)
    post = fake.post(base - timedelta(minutes=1))
    for i in range(85):
        fake.favourite_mine(people[i], base + timedelta(minutes=i), post)
    fake.write(clock.now - timedelta(hours=1), reply_to=people[0])
    fake.favourite(people[1], clock.now - timedelta(days=3))
    fake.write(clock.now - timedelta(minutes=30), mentions=[newcomer], direct=True)
    fake.requests.clear()

    report = sync(store, fake, adapter, clock)

    assert report.outcome == "ok", report
    assert dict(fake.requests) == {
        "verify_credentials": 1,
        "instance": 1,
        "following": expected_pages(len(fake.following), 80),
        "followers": expected_pages(len(fake.followers), 80),
        "notifications": 2 + 1,  # 80 + 5 new, then an empty page says that was all
        "statuses": 1 + 1,  # a post, a reply and a direct message, then an empty page
        "favourites": 1 + 1,
        "conversations": 1 + 1,
    }
    assert_matches_ground_truth(store, fake)
    with store.session() as session:
        coverage = account_coverage(
            session, session.scalar(select(Account).where(Account.key == KEY))
        )
    assert coverage is not None and coverage.end == clock.now
    assert coverage.start <= NOW - make_rules().window


def test_fetching_every_page_again_changes_no_count(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(90, 50, 20, 40, 10, 15), now=NOW - timedelta(minutes=1))
    adapter = adapter_for(fake, tmp_path, clock)
    sync(store, fake, adapter, clock)
    before = snapshot(store)

    clock.advance(timedelta(hours=1))
    reset_cursors(store)
    again = sync(store, fake, adapter, clock)

    after = snapshot(store)
    assert again.interactions_new == 0
    assert after["event_ids"] == before["event_ids"]
    assert after["connection_states"] == before["connection_states"]


@pytest.mark.parametrize("seed", [3, 11])
def test_faults_at_random_change_no_final_count(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path, seed: int
) -> None:
    generate(fake, NetworkSize(90, 50, 20, 60, 12, 12), now=NOW - timedelta(minutes=1))
    rng = random.Random(seed)
    reads = ["following", "followers", "notifications", "statuses", "favourites", "conversations"]
    kinds = ["429", "500", "503", "malformed", "drop", "401", "bearer400"]
    faults = [*kinds, rng.choice(kinds)]  # every kind at least once, at random places
    rng.shuffle(faults)
    for kind in faults:
        fake.inject(kind, rng.choice(reads), skip=rng.randint(0, 2))
    adapter = adapter_for(fake, tmp_path, clock)

    outcomes = []
    for _ in range(12):
        outcomes.append(sync(store, fake, adapter, clock).outcome)
        clock.advance(timedelta(minutes=7))  # past any rate-limit window
        if outcomes[-1] == "ok" and not fake.faults:
            break

    assert sum(fake.faulted.values()) == 8
    assert outcomes[-1] == "ok" and len(outcomes) > 1
    assert_matches_ground_truth(store, fake)
    with store.session() as session:
        assert session.scalar(select(Account.paused_reason)) is None


def test_a_listing_split_by_the_rate_limit_never_shows_a_mutual_as_one_way(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(170, 90, 60, 10), now=NOW - timedelta(minutes=1))
    adapter = adapter_for(fake, tmp_path, clock)
    sync(store, fake, adapter, clock)
    mutuals = sorted(fake.following_ids() & fake.follower_ids())
    gone_back = mutuals[0]
    fake.remove_follower(gone_back)  # stopped following the account back
    new_back = sorted(fake.following_ids() - fake.follower_ids())[0]
    fake.add_follower(new_back)

    clock.advance(timedelta(hours=6))
    fake.rate_limit = 3  # whoami and the two pages of followers, then the window is spent
    partial = sync(store, fake, adapter, clock)

    assert partial.outcome == "partial"
    middle = stored_connections(store)
    # Until the following list is read, a mutual may read as a follower only (nobody is
    # suggested for removal on that), never as someone who does not follow back.
    assert all(middle[m][1] for m in mutuals if m != gone_back)
    fake.rate_limit = 300
    clock.advance(timedelta(minutes=6))
    restarted = adapter_for(fake, tmp_path, clock)  # a new process resumes the listing
    assert sync(store, fake, restarted, clock).outcome == "ok"
    assert stored_connections(store)[gone_back] == (True, False)
    assert stored_connections(store)[new_back] == (True, True)
    assert_matches_ground_truth(store, fake)


def test_the_rate_limit_defers_keeps_the_cursor_and_never_sleeps(
    store: Store,
    clock: Clock,
    fake: FakeMastodon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}s inside a job")

    monkeypatch.setattr(time, "sleep", no_sleep)
    generate(fake, NetworkSize(170, 80, 40, 100, 10, 10), now=NOW - timedelta(minutes=1))
    needed = first_sync_requests(fake)
    assert needed["notifications"] == 3
    # whoami, 2 + 3 pages of connections, then 2 of the 3 notification pages: spent.
    fake.rate_limit = 8
    adapter = adapter_for(fake, tmp_path, clock)

    first = sync(store, fake, adapter, clock)

    assert first.outcome == "partial"
    assert first.streams["connections"] == "complete"
    deferred = "deferred: Mastodon rate limit spent until 2025-06-01T12:05:00+00:00"
    assert {first.streams[s] for s in ("notifications", "statuses", "favourites")} == {deferred}
    # The window was used to the last request and not one more: no 429 was ever earned.
    # (The server's software is read without the account's token counting it.)
    assert sum(fake.requests.values()) - fake.requests["instance"] == 8
    assert fake.answered[429] == 0
    with store.session() as session:
        cursor = session.scalar(select(SyncCursor).where(SyncCursor.stream == "notifications"))
        assert cursor is not None and '"phase": "back"' in (cursor.cursor or "")

    clock.advance(timedelta(minutes=5))
    fake.rate_limit = 300
    second = sync(store, fake, adapter, clock)

    assert second.outcome == "ok", second
    assert fake.answered[429] == 0
    # The backfill went on from its cursor: three pages in all, none read twice.
    assert fake.requests["notifications"] == needed["notifications"]
    assert fake.requests["following"] == 2 * needed["following"]  # one listing a run
    assert_matches_ground_truth(store, fake)


def test_a_429_carries_its_reset_time_to_the_report(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(10, 10, 5, 30), now=NOW - timedelta(minutes=1))
    fake.inject("429", "notifications")
    adapter = adapter_for(fake, tmp_path, clock)

    report = sync(store, fake, adapter, clock)

    assert report.outcome == "partial"
    assert report.streams["notifications"].startswith("deferred: Mastodon rate limit reached")
    assert "2025-06-01T12:05:00+00:00" in report.streams["notifications"]
    assert report.streams["connections"] == "complete"


@pytest.mark.parametrize("style", ["401", "plain 400"])
def test_refused_credentials_pause_the_account_with_the_way_out(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path, style: str
) -> None:
    generate(fake, NetworkSize(10, 10, 5, 10), now=NOW - timedelta(minutes=1))
    adapter = adapter_for(fake, tmp_path, clock)
    fake.revoke()
    fake.plain_400_for_bad_tokens = style == "plain 400"

    report = sync(store, fake, adapter, clock)

    assert report.outcome == "paused"
    with store.session() as session:
        reason = session.scalar(select(Account.paused_reason))
    assert reason is not None
    # The token is the configured credential, which `lopper auth` would not replace.
    assert "the access_token credential of this account" in reason
    assert f"run `lopper auth mastodon --instance {fake.url}`" in reason
    assert TOKEN not in reason
    # Once the token is good again the next sync resumes the account.
    fake.tokens.add(TOKEN)
    assert sync(store, fake, adapter, clock).outcome == "ok"
    with store.session() as session:
        assert session.scalar(select(Account.paused_reason)) is None


def test_without_a_token_nothing_is_asked_and_the_account_is_paused(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    config = AccountConfig(
        platform="mastodon", handle=HANDLE, credentials={"api_base_url": SecretStr(fake.url)}
    )
    adapter = build(config, tmp_path, clock)

    report = sync_account(store, config, adapter, make_rules(), clock)

    assert report.outcome == "paused"
    assert "lopper auth mastodon --instance" in report.problems[0]
    assert sum(fake.requests.values()) == 0


def test_direct_messages_both_ways_are_read_from_conversations_and_counted_once(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    fake.hide_direct_in_statuses = True  # as some servers do
    alice = fake.add_account("alice")
    fake.follow(alice)
    fake.mention_me(alice, NOW - timedelta(days=3), direct=True)
    fake.write(NOW - timedelta(days=2), mentions=[alice], direct=True)  # the last word
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)

    assert stored_exchanges(store) == Counter(
        {(alice, "message", "inbound"): 1, (alice, "message", "outbound"): 1}
    )


def test_every_kind_of_exchange_is_told_apart(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    who = {name: fake.add_account(name) for name in "abcdefgh"}
    for person in who.values():
        fake.follow(person)
    t = NOW - timedelta(days=20)
    fake.mention_me(who["a"], t)
    fake.mention_me(who["b"], t + timedelta(hours=1), reply=True)
    fake.mention_me(who["c"], t + timedelta(hours=2), quote=True, also_mention=True)
    fake.favourite_mine(who["d"], t + timedelta(hours=3))
    fake.reblog_mine(who["e"], t + timedelta(hours=4))
    fake.followed_me(who["f"], t + timedelta(hours=5))  # not an exchange
    fake.write(t, reply_to=who["f"], mentions=[who["g"]])
    fake.write(t + timedelta(hours=1), quote_of=who["g"])
    fake.reblog(who["h"], t + timedelta(hours=2))
    fake.favourite(who["a"], t - timedelta(days=100))
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)

    assert stored_exchanges(store) == Counter(
        {
            (who["a"], "mention", "inbound"): 1,
            (who["b"], "reply", "inbound"): 1,
            (who["c"], "quote", "inbound"): 1,  # a quote that mentions too: one exchange
            (who["d"], "like", "inbound"): 1,
            (who["e"], "repost", "inbound"): 1,
            (who["f"], "reply", "outbound"): 1,
            (who["g"], "mention", "outbound"): 1,
            (who["g"], "quote", "outbound"): 1,
            (who["h"], "repost", "outbound"): 1,
            (who["a"], "like", "outbound"): 1,
        }
    )
    with store.session() as session:
        favourite = session.scalar(select(Interaction).where(Interaction.event_id.like("fav:%")))
    # The post is 120 days old, but when it was favourited is never told: the latest it can
    # have happened is when lopper first saw it.
    assert favourite is not None and favourite.occurred_at == clock.now


def test_an_endpoint_the_server_lacks_makes_its_kinds_unseen_and_is_asked_again_each_sync(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(10, 10, 5, 20, 5, 5), now=NOW - timedelta(minutes=1))
    fake.missing.add("conversations")  # with and without the trailing slash
    adapter = adapter_for(fake, tmp_path, clock)

    first = sync(store, fake, adapter, clock)
    clock.advance(timedelta(hours=6))
    second = sync(store, fake, adapter, clock)

    assert first.streams[CONVERSATIONS].startswith("unavailable")
    # Asked again (with the slash, then without), still missing: left out of the coverage,
    # and what it would have shown is unseen at every sync, not only the first.
    assert CONVERSATIONS not in second.streams and second.outcome == "ok"
    assert fake.requests["conversations"] == 4
    for report in (first, second):
        assert [(u.kind, u.direction) for u in report.unseen] == [(Kind.MESSAGE, None)]
        assert "/api/v1/conversations" in report.unseen[0].reason
    with store.session() as session:
        row = session.scalar(select(Account))
        assert row is not None and account_coverage(session, row) is not None
        assert [u.kind for u in account_unseen(row)] == [Kind.MESSAGE]

    fake.missing.clear()  # the admin enabled it
    clock.advance(timedelta(hours=6))
    third = sync(store, fake, adapter, clock)
    assert third.streams[CONVERSATIONS] == "complete" and third.unseen == []


def test_conversations_are_asked_without_the_slash_where_only_that_is_routed(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    fake.conversations_slash_404 = True
    alice = fake.add_account("alice")
    fake.follow(alice)
    fake.hide_direct_in_statuses = True
    fake.write(NOW - timedelta(days=2), mentions=[alice], direct=True)
    adapter = adapter_for(fake, tmp_path, clock)

    first = sync(store, fake, adapter, clock)
    clock.advance(timedelta(hours=1))
    second = sync(store, fake, adapter, clock)

    assert first.streams[CONVERSATIONS] == "complete"
    assert second.streams[CONVERSATIONS] == "complete"
    assert fake.requests["conversations"] == 1 + 1 + 1  # 404, then plain; plain from then on
    assert stored_exchanges(store)[(alice, "message", "outbound")] == 1


def _network_with_a_message(fake: FakeMastodon) -> dict[str, str]:
    """Three followed people with a history older than the window: ``dm`` got a direct
    message 14 days ago, ``talker`` replied, ``quiet`` never exchanged anything."""
    who = {name: fake.add_account(name) for name in ("dm", "talker", "quiet")}
    for person in who.values():
        fake.follow(person)
    old = NOW - timedelta(days=300)
    fake.post(old)
    fake.favourite_mine(who["talker"], old + timedelta(days=1))
    fake.reblog(who["talker"], NOW - timedelta(days=40))  # boosts are listed
    fake.mention_me(who["talker"], NOW - timedelta(days=20), reply=True)
    fake.write(NOW - timedelta(days=14), mentions=[who["dm"]], direct=True)
    return who


def _suggested(store: Store) -> dict[str, dict[str, Any]]:
    with store.session() as session:
        rows = session.execute(
            select(Connection.platform_user_id, Suggestion.evidence).join(
                Suggestion, Suggestion.connection_id == Connection.id
            )
        ).all()
    return {user_id: evidence for user_id, evidence in rows}


def test_a_server_hiding_direct_messages_flags_nobody_until_the_person_accepts_it(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    # A server of unknown software that hides the owner's direct messages from their own
    # statuses and answers conversations with an empty list: only the count gives it away.
    fake.version = "1.0.0 (compatible; Unknown 0.1)"
    fake.hide_direct_in_statuses = True
    fake.conversations_hollow = True
    who = _network_with_a_message(fake)
    adapter = adapter_for(fake, tmp_path, clock)
    rules = make_rules(window=timedelta(days=84))
    sync(store, fake, adapter, clock)
    clock.advance(timedelta(days=31))
    report = sync(store, fake, adapter, clock)

    assert [(u.kind, u.direction) for u in report.unseen] == [(Kind.MESSAGE, Direction.OUTBOUND)]
    assert "lists 4 of the account's 5 statuses" in report.unseen[0].reason
    evaluate_account(store, KEY, rules, clock.now)
    assert _suggested(store) == {}  # without it, "dm" would be suggested: 0 exchanges seen

    evaluate_account(store, KEY, rules, clock.now, accepted=frozenset({Kind.MESSAGE}))
    suggested = _suggested(store)
    assert set(suggested) == {who["dm"], who["quiet"]}
    for evidence in suggested.values():
        assert evidence["unseen"] == [report.unseen[0].reason]


def test_takahe_is_known_to_leave_messages_and_boosts_unseen(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    fake.behave_as_takahe()
    _network_with_a_message(fake)
    adapter = adapter_for(fake, tmp_path, clock)

    report = sync(store, fake, adapter, clock)

    assert adapter.family is not None and adapter.family.name == "Takahē"
    assert {(u.kind, u.direction) for u in report.unseen} == {
        (Kind.MESSAGE, None),
        (Kind.MESSAGE, Direction.OUTBOUND),  # and the count says so too
        (Kind.REPOST, Direction.OUTBOUND),
    }
    assert report.streams[CONVERSATIONS] == "complete"  # asked without the slash


@pytest.mark.parametrize(
    ("version", "family"),
    [
        ("4.3.2", "mastodon"),
        ("4.4.0-beta.1+glitch", "mastodon"),
        ("3.5.3 (compatible; GoToSocial 0.17.3 git-1c9a8f2)", "gotosocial"),
        ("2.7.2 (compatible; Pleroma 2.6.2)", "pleroma"),
        ("2.7.2 (compatible; Akkoma 3.13.2)", "akkoma"),
        ("3.0.0 (compatible; Sharkey 2024.9.1)", "misskey"),
        ("takahe/0.11.0", "takahe"),
        ("", None),
    ],
)
def test_the_server_family_is_read_from_its_version(version: str, family: str | None) -> None:
    assert server_family(version) == family


# --- connections as the person sees them ---------------------------------------------------


def test_last_status_at_counts_as_the_end_of_that_day(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    dated = fake.add_account("dated", last_status_at=date(2025, 1, 10))
    unknown = fake.add_account("unknown", last_status_at=None)
    fake.follow(dated)
    fake.follow(unknown)
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)

    with store.session() as session:
        rows = session.execute(select(Connection.platform_user_id, Connection.last_active_at))
        active = {user_id: at for user_id, at in rows}
    assert active[dated] == datetime(2025, 1, 10, 23, 59, 59, tzinfo=UTC)
    assert active[unknown] is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2025, 1, 10), datetime(2025, 1, 10, 23, 59, 59, 999999, tzinfo=UTC)),
        (date(2025, 1, 10), datetime(2025, 1, 10, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2025-01-10", datetime(2025, 1, 10, 23, 59, 59, 999999, tzinfo=UTC)),
        (datetime(2025, 1, 10, 8, tzinfo=UTC), datetime(2025, 1, 10, 8, tzinfo=UTC)),
        (None, None),
    ],
)
def test_last_active_is_never_naive(value: Any, expected: datetime | None) -> None:
    assert last_active(value) == expected


def test_handles_are_unique_across_servers(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    local = fake.add_account("bob", None)
    remote = fake.add_account("bob", "other.example")
    fake.follow(local)
    fake.follow(remote)
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)

    with store.session() as session:
        rows = session.execute(select(Connection.platform_user_id, Connection.handle))
        handles = {user_id: handle for user_id, handle in rows}
    assert handles == {local: "@bob@example.social", remote: "@bob@other.example"}


def test_moved_and_suspended_accounts_land_in_the_gone_lane(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    new_home = fake.add_account("carol", "new.example")
    moved = fake.add_account("carol", "old.example", moved_to=new_home)
    suspended = fake.add_account("spam", "bad.example", suspended=True)
    fine = fake.add_account("fine", "good.example")
    for person in (moved, suspended, fine):
        fake.follow(person)
    adapter = adapter_for(fake, tmp_path, clock)
    sync(store, fake, adapter, clock)

    evaluate_account(store, KEY, make_rules(), clock.now)

    with store.session() as session:
        rows = session.execute(
            select(Connection.platform_user_id, Suggestion.reason, Connection.moved_to).join(
                Suggestion, Suggestion.connection_id == Connection.id
            )
        ).all()
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (moved, Reason.GONE, "@carol@new.example"),
        (suspended, Reason.GONE, None),
    }
    # Unfollowing a suspended account answers 404 while the follow stays listed: the person
    # removes it by hand.
    with store.session() as session:
        sid = session.scalar(
            select(Suggestion.id).join(Connection).where(Connection.platform_user_id == suspended)
        )
    assert sid is not None
    decide(store, [sid], SuggestionState.CONFIRMED, via=Channel.CLI, now=clock.now)
    report = execute_account(store, account(fake), adapter, make_rules(), clock)
    assert report.manual == [sid] and report.removed == []
    assert fake.requests["unfollow"] == 1


# --- removal and undo -------------------------------------------------------------------


def _quiet_network(fake: FakeMastodon) -> dict[str, str]:
    """Two people in touch, two silent for a year, history old enough to judge."""
    who = {name: fake.add_account(name, "remote.example") for name in ("ann", "ben", "cy", "di")}
    for person in who.values():
        fake.follow(person)
    fake.add_follower(who["ann"])
    long_ago = NOW - timedelta(days=300)
    fake.mention_me(who["ben"], long_ago)
    fake.write(long_ago, mentions=[who["ben"]])
    fake.favourite_mine(who["ann"], NOW - timedelta(days=10))
    fake.write(NOW - timedelta(days=5), reply_to=who["ben"])
    return who


def test_an_unfollow_happens_only_once_confirmed_and_undo_follows_again(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    who = _quiet_network(fake)
    adapter = adapter_for(fake, tmp_path, clock)
    rules = make_rules()
    sync(store, fake, adapter, clock)
    clock.advance(timedelta(days=31))  # Mastodon never says since when: out of grace by now
    sync(store, fake, adapter, clock)

    evaluate_account(store, KEY, rules, clock.now)
    with store.session() as session:
        pending = dict(
            session.execute(
                select(Connection.platform_user_id, Suggestion.id).join(
                    Suggestion, Suggestion.connection_id == Connection.id
                )
            ).all()
        )
    assert set(pending) == {who["cy"], who["di"]}

    unconfirmed = execute_account(store, account(fake), adapter, rules, clock)
    assert unconfirmed.removed == []
    assert fake.requests["unfollow"] == fake.requests["relationships"] == 0

    decide(store, [pending[who["cy"]]], SuggestionState.CONFIRMED, via=Channel.CLI, now=clock.now)
    done = execute_account(store, account(fake), adapter, rules, clock)

    assert done.removed == [pending[who["cy"]]]
    assert fake.requests["relationships"] == 1  # checked on the platform just before acting
    assert fake.requests["unfollow"] == 1
    assert who["cy"] not in fake.following_ids()
    assert who["di"] in fake.following_ids()

    restore(store, pending[who["cy"]], adapter, via=Channel.CLI, now=clock.now)

    assert fake.requests["follow"] == 1
    assert who["cy"] in fake.following_ids()
    with store.session() as session:
        suggestion = session.get_one(Suggestion, pending[who["cy"]])
        assert suggestion.state is SuggestionState.RESTORED


def test_unfollowing_someone_not_followed_counts_as_done(
    clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    someone = fake.add_account("someone")
    fake.follow(someone)
    adapter = adapter_for(fake, tmp_path, clock)

    first = adapter.remove(someone)
    second = adapter.remove(someone)

    assert not first.already_done and second.already_done
    assert fake.requests["unfollow"] == 1  # the second one only looked
    assert someone not in fake.following_ids()


def test_a_follow_can_read_as_not_yet_settled_for_a_moment(
    clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    someone = fake.add_account("someone")
    adapter = adapter_for(fake, tmp_path, clock)

    adapter.restore(someone)
    fake.lagging_follows.add(someone)  # as a server whose follow settles asynchronously

    assert adapter.relationship(someone).connected is False  # the safe way round
    assert adapter.relationship(someone).connected is True


def test_a_403_on_unfollow_stops_removals_for_the_account(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    who = _quiet_network(fake)
    adapter = adapter_for(fake, tmp_path, clock)
    rules = make_rules()
    sync(store, fake, adapter, clock)
    clock.advance(timedelta(days=31))
    sync(store, fake, adapter, clock)
    evaluate_account(store, KEY, rules, clock.now)
    with store.session() as session:
        ids = list(session.scalars(select(Suggestion.id)))
    decide(store, ids, SuggestionState.CONFIRMED, via=Channel.CLI, now=clock.now)
    fake.inject("403", "unfollow")

    report = execute_account(store, account(fake), adapter, rules, clock)

    assert report.stopped is not None and "removals stopped" in report.stopped
    assert fake.requests["unfollow"] == 1
    assert {who["cy"], who["di"]} <= fake.following_ids()
    again = execute_account(store, account(fake), adapter, rules, clock)
    assert fake.requests["unfollow"] == 1 and again.stopped is not None


# --- setting up -------------------------------------------------------------------------


def test_build_takes_the_instance_from_the_handle_and_asks_nothing(tmp_path: Path) -> None:
    config = AccountConfig(
        platform="mastodon", handle=HANDLE, credentials={"access_token": SecretStr("t0ken")}
    )

    adapter = build(config, tmp_path)

    assert adapter.base_url == "https://example.social"
    assert adapter.profile_link("@bob@other.example", "1") == (
        "https://example.social/@bob@other.example"
    )


def test_authorize_stores_a_private_token_that_build_then_uses(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    fake.approved_codes["code-from-the-page"] = "fresh-token-1234"
    shown: list[str] = []

    def ask(url: str) -> str:
        shown.append(url)
        return "code-from-the-page\n"

    result = authorize(fake.url, tmp_path, KEY, ask)

    assert result.handle == HANDLE
    assert shown[0].startswith(f"{fake.url}/oauth/authorize?")
    assert "urn%3Aietf%3Awg%3Aoauth%3A2.0%3Aoob" in shown[0]
    assert fake.app_scopes == " ".join(SCOPES)
    path = token_path(tmp_path, KEY)
    assert result.token_file == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # No credentials in the config: the token file says where and how.
    config = AccountConfig(platform="mastodon", handle=HANDLE)
    adapter = build(config, tmp_path, clock)
    assert adapter.base_url == fake.url
    assert sync_account(store, config, adapter, make_rules(), clock).outcome == "ok"


def test_authorizing_another_account_stores_nothing(fake: FakeMastodon, tmp_path: Path) -> None:
    fake.approved_codes["code"] = "someone-elses-token"

    with pytest.raises(AuthError, match=r"belongs to @me@example\.social"):
        authorize(fake.url, tmp_path, "mastodon:@other@example.social", lambda _url: "code")

    assert not token_path(tmp_path, "mastodon:@other@example.social").exists()


def test_request_timeout_bounds_the_wait_for_a_silent_server(
    fake: FakeMastodon, tmp_path: Path, clock: Clock
) -> None:
    """A server that acts but answers late: the adapter gives up after the account's
    ``request_timeout`` with a transient error, and waits it out without one."""
    generate(fake, SMALL, now=clock())
    fake.stall = 1.5
    patient = adapter_for(fake, tmp_path / "patient", clock)
    fake.inject("stall", "relationships")
    assert patient.relationship(next(iter(fake.following_ids()))).connected
    assert fake.faulted["stall"] == 1

    config = account(fake).model_copy(update={"request_timeout": timedelta(seconds=0.3)})
    hasty = build_adapter(config, tmp_path / "hasty", clock)
    fake.inject("stall", "relationships")
    with pytest.raises(PlatformError) as caught:
        hasty.relationship(next(iter(fake.following_ids())))
    assert not isinstance(caught.value, AuthError)
    assert fake.faulted["stall"] == 2


@pytest.mark.parametrize("refusal", ["suspended", "422"])
def test_a_refused_unfollow_of_a_listed_follow_goes_to_the_manual_lane_once(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path, refusal: str
) -> None:
    who = _quiet_network(fake)
    if refusal == "suspended":
        # A suspended account: its unfollow answers 404 while the follow stays listed.
        fake.accounts[who["cy"]].suspended = True
    adapter = adapter_for(fake, tmp_path, clock)
    rules = make_rules(daily_removal_cap=1)
    sync(store, fake, adapter, clock)
    clock.advance(timedelta(days=31))
    sync(store, fake, adapter, clock)
    evaluate_account(store, KEY, rules, clock.now)
    with store.session() as session:
        pending = dict(
            session.execute(
                select(Connection.platform_user_id, Suggestion.id).join(
                    Suggestion, Suggestion.connection_id == Connection.id
                )
            ).all()
        )
    assert set(pending) == {who["cy"], who["di"]}
    decide(store, [pending[who["cy"]]], SuggestionState.CONFIRMED, via=Channel.CLI, now=clock.now)
    clock.advance(timedelta(minutes=1))  # carried out in the order confirmed: cy first
    decide(store, [pending[who["di"]]], SuggestionState.CONFIRMED, via=Channel.CLI, now=clock.now)
    if refusal == "422":
        fake.inject("422", "unfollow")

    report = execute_account(store, account(fake), adapter, rules, clock)

    # The refused one waits for the person's own click; it did not use up the day's single
    # removal, so the other one was carried out.
    assert report.manual == [pending[who["cy"]]] and report.removed == [pending[who["di"]]]
    assert who["cy"] in fake.following_ids() and who["di"] not in fake.following_ids()
    with store.session() as session:
        refused = session.get_one(Suggestion, pending[who["cy"]])
        assert refused.state is SuggestionState.MANUAL
        detail = session.scalar(
            select(AuditEntry.detail).where(
                AuditEntry.entity_id == refused.id, AuditEntry.to_state == "manual"
            )
        )
    assert detail is not None and "cannot be removed through the API" in detail
    assert f"{fake.url}/@cy@remote.example" in detail

    # A full listing later the follow is still there: nobody is suggested again.
    clock.advance(timedelta(hours=1))
    sync_account(store, account(fake), adapter, rules, clock)
    evaluate_account(store, KEY, rules, clock.now)
    with store.session() as session:
        states = list(
            session.scalars(
                select(Suggestion.state)
                .join(Connection, Suggestion.connection_id == Connection.id)
                .where(Connection.platform_user_id == who["cy"])
            )
        )
    assert states == [SuggestionState.MANUAL]
    assert fake.requests["unfollow"] == 2


def test_a_token_from_lopper_auth_is_renewed_with_lopper_auth(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    save_token(tmp_path, KEY, {"access_token": TOKEN, "meta": {"api_base_url": fake.url}})
    config = AccountConfig(platform="mastodon", handle=HANDLE)
    adapter = build(config, tmp_path, clock)
    fake.revoke()

    report = sync_account(store, config, adapter, make_rules(), clock)

    assert report.outcome == "paused"
    assert f"run `lopper auth mastodon --instance {fake.url}` again" in report.problems[0]
    assert "access_token credential" not in report.problems[0]


def test_profile_links_keep_http_for_a_server_reached_over_http(
    store: Store, clock: Clock, fake: FakeMastodon, tmp_path: Path
) -> None:
    # The server writes https:// into its own accounts' addresses while it is reached over
    # plain HTTP (as a server behind no TLS does).
    fake.domain = urlsplit(fake.url).netloc
    local = fake.add_account("local", None)
    remote = fake.add_account("far", "remote.example")
    fake.follow(local)
    fake.follow(remote)
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)

    with store.session() as session:
        rows = session.execute(select(Connection.platform_user_id, Connection.profile_url))
        urls = {user_id: url for user_id, url in rows}
    assert urls[local] == f"{fake.url}/@local"
    assert urls[remote] == "https://remote.example/@far"
