"""X end to end: the real tweepy client talks HTTP to a fake X API v2, through the adapter,
driven by the real core (sync, costs, evaluation, confirmation, removal, undo)."""

from __future__ import annotations

import os
import random
import stat
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fakes.x_server import (
    CLIENT_ID,
    ME,
    OAUTH1,
    REFRESH,
    TOKEN,
    USERNAME,
    FakeX,
    NetworkSize,
    generate,
    minimum_pages,
)
from helpers import NOW, Clock, make_rules
from pydantic import SecretStr
from sqlalchemy import select

from service.config import Account as AccountConfig
from service.costs import month_costs, month_start
from service.model import Channel, Direction, Kind, SuggestionState
from service.platforms import build_adapter
from service.platforms.base import Platform, RateLimited
from service.platforms.tokens import load_token, save_token, token_path
from service.platforms.x import SCOPES, XPlatform, authorize, snowflake_time
from service.removals import execute_account, restore
from service.store import Store
from service.store.models import (
    Account,
    Connection,
    CostRecord,
    Coverage,
    Interaction,
    Suggestion,
    SyncCursor,
)
from service.suggestions import decide, evaluate_account
from service.sync import sync_account

HANDLE = f"@{USERNAME}"
KEY = f"x:{HANDLE}"
SMALL = NetworkSize(
    following=1200,
    followers=700,
    mutual=300,
    mentions=130,
    posts=40,
    likes=110,
    messages=30,
    reactions=80,
    older_reactions=25,
)


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeX]:
    with FakeX(clock) as server:
        yield server


def account(fake: FakeX, **options: Any) -> AccountConfig:
    return AccountConfig(
        platform="x",
        handle=HANDLE,
        x={"api_base_url": fake.url, "client_id": CLIENT_ID, **options},
    )


def accepting(fake: FakeX) -> AccountConfig:
    """The account with the blind spot every X account has (reactions to older posts) accepted."""
    return account(fake).model_copy(update={"accept_unseen": REACTIONS_UNSEEN})


def adapter_for(fake: FakeX, state: Path, clock: Clock, **options: Any) -> XPlatform:
    token = token_path(state, KEY)
    if not token.exists():
        save_token(
            state,
            KEY,
            {
                "access_token": TOKEN,
                "refresh_token": REFRESH,
                "expires_at": time.time() + 7200,
                "client_id": CLIENT_ID,
            },
        )
    adapter = build_adapter(account(fake, **options), state, clock)
    assert isinstance(adapter, XPlatform) and isinstance(adapter, Platform)
    # Generous: a loaded machine's ordinary answer must never look like a fault. The fake's
    # "timeout" fault hangs up instead of making the client wait its time out.
    adapter.session.timeout = 60.0
    return adapter


def sync(store: Store, fake: FakeX, adapter: XPlatform, clock: Clock, **options: Any) -> Any:
    return sync_account(
        store,
        account(fake, **options),
        adapter,
        make_rules(),
        clock,
        relist_after=timedelta(hours=12),
    )


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


def stored_unseen(store: Store) -> set[tuple[str, str | None]]:
    with store.session() as session:
        account = session.scalars(select(Account)).one()
        return {(str(u["kind"]), u["direction"]) for u in account.unseen or ()}


def assert_matches_ground_truth(store: Store, fake: FakeX, recent: int = 20) -> None:
    """Everything X lets lopper read is in the store, and nothing else is (both directions);
    what it cannot read (reactions to older posts) is declared unseen."""
    following, followers = set(fake.following), set(fake.followers)
    truth = {u: (u in following, u in followers) for u in following | followers}
    assert stored_connections(store) == truth
    beyond = fake.reactions_beyond(recent)
    if beyond:
        assert {(t.kind, t.direction) for t in beyond} <= stored_unseen(store)
    expected = Counter((t.counterpart, t.kind, t.direction) for t in fake.truth)
    stored = stored_exchanges(store)
    assert stored - expected == Counter()  # nothing invented or counted twice
    # Nothing missed but reactions to posts beyond the latest (those read while the post was
    # among the latest stay, of course).
    unreachable = Counter((t.counterpart, t.kind, t.direction) for t in beyond)
    assert expected - stored - unreachable == Counter()


# --- syncing -----------------------------------------------------------------------------


def test_a_first_sync_of_5000_and_5000_makes_the_fewest_requests(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(
        fake,
        NetworkSize(
            5000,
            5000,
            1500,
            mentions=250,
            posts=150,
            likes=120,
            messages=60,
            reactions=90,
            older_reactions=30,
        ),
        now=NOW,
    )
    adapter = adapter_for(fake, tmp_path, clock)

    report = sync(store, fake, adapter, clock)

    assert report.outcome == "ok", report
    assert fake.requests["following"] == minimum_pages(5000, 1000) == 5
    assert fake.requests["followers"] == minimum_pages(5000, 1000) == 5
    scanned = [t for t in fake.own if not fake.tweets[t].refs][-20:]
    reacted = sum(
        (1 if fake.tweets[t].likers else 0)
        + (1 if fake.tweets[t].retweeters else 0)
        + (1 if fake.tweets[t].quotes else 0)
        for t in scanned
    )
    assert dict(fake.requests) == {
        "me": 1,
        "followers": 5,
        "following": 5,
        "mentions": minimum_pages(250, 100),
        "tweets": minimum_pages(len(fake.own), 100) + 1,  # the timeline, then the latest posts
        "liked_tweets": minimum_pages(120, 100),
        "dm_events": 1,
        "liking_users": sum(1 for t in scanned if fake.tweets[t].likers),
        "retweeted_by": sum(1 for t in scanned if fake.tweets[t].retweeters),
        "quote_tweets": sum(1 for t in scanned if fake.tweets[t].quotes),
    }
    assert reacted == sum(
        fake.requests[r] for r in ("liking_users", "retweeted_by", "quote_tweets")
    )
    assert fake.answered[429] == 0
    assert_matches_ground_truth(store, fake)


def test_a_second_sync_with_nothing_new_makes_only_the_incremental_calls(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, SMALL, now=NOW)
    adapter = adapter_for(fake, tmp_path, clock)
    sync(store, fake, adapter, clock)
    fake.requests.clear()

    clock.advance(timedelta(hours=2))
    report = sync(store, fake, adapter, clock)

    assert report.outcome == "ok", report
    # The listing is fresh, likes, messages and reactions were read today: only what can
    # have changed since is asked for, with since_id.
    assert dict(fake.requests) == {"me": 1, "mentions": 1, "tweets": 1}
    assert_matches_ground_truth(store, fake)


def test_the_next_day_reads_what_is_new_and_no_more(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    ids = generate(fake, SMALL, now=NOW)
    adapter = adapter_for(fake, tmp_path, clock, relist_every="1d")
    sync(store, fake, adapter, clock)
    fake.requests.clear()

    clock.advance(timedelta(days=1))
    newcomer = fake.add_user("newcomer")
    fake.add_follower(newcomer)
    fake.unfollow(ids[0])
    fake.mention_me(ids[5], clock.now - timedelta(hours=3))
    fake.write(clock.now - timedelta(hours=2), reply_to=ids[6])
    fake.like(ids[7], clock.now - timedelta(days=3))
    fake.dm(newcomer, clock.now - timedelta(hours=1), inbound=True)
    report = sync(store, fake, adapter, clock)

    assert report.outcome == "ok", report
    assert fake.requests["mentions"] == 1 and fake.requests["liked_tweets"] == 1
    assert fake.requests["dm_events"] == 1
    assert fake.requests["followers"] == minimum_pages(len(fake.followers), 1000)
    # Reactions are read again only for a post whose counts changed: none did.
    assert fake.requests["liking_users"] == fake.requests["retweeted_by"] == 0
    assert_matches_ground_truth(store, fake)


@pytest.mark.parametrize("seed", [5, 17])
def test_faults_at_random_end_with_the_counts_of_a_fault_free_run(
    make_store: Any, clock: Clock, fake: FakeX, tmp_path: Path, seed: int
) -> None:
    generate(
        fake,
        NetworkSize(2100, 1500, 600, 150, 40, 120, 30, reactions=60, older_reactions=20),
        now=NOW,
    )
    clean, faulty = make_store(), make_store()
    assert sync(clean, fake, adapter_for(fake, tmp_path / "a", clock), clock).outcome == "ok"

    clock.advance(timedelta(minutes=16))
    rng = random.Random(seed)
    reads = [
        "me",
        "following",
        "followers",
        "mentions",
        "tweets",
        "liked_tweets",
        "dm_events",
        "liking_users",
    ]
    kinds = ["429", "429-noreset", "500", "503", "timeout", "malformed", "401", "403"]
    faults = [*kinds, rng.choice(kinds), rng.choice(kinds)]
    rng.shuffle(faults)
    for kind in faults:
        fake.inject(kind, rng.choice(reads), skip=rng.randint(0, 1))
    adapter = adapter_for(fake, tmp_path / "b", clock)
    outcomes = []
    for _ in range(15):
        outcomes.append(sync(faulty, fake, adapter, clock).outcome)
        clock.advance(timedelta(minutes=16))  # past any 15-minute window
        if outcomes[-1] == "ok":
            break

    # A fault meant for a read that is done for the day stays unsent; most are sent.
    assert sum(fake.faulted.values()) >= 6, fake.faulted
    assert outcomes[-1] == "ok" and len(outcomes) > 1, outcomes
    assert stored_connections(faulty) == stored_connections(clean)
    assert stored_exchanges(faulty) == stored_exchanges(clean)
    assert_matches_ground_truth(faulty, fake)
    with faulty.session() as session:
        assert session.scalar(select(Account.paused_reason)) is None


def test_a_spent_window_defers_keeps_the_cursor_and_never_sleeps(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}s inside a job")

    generate(fake, NetworkSize(3500, 200, 100, mentions=20), now=NOW)
    fake.limits["following"] = 2  # the listing needs 4 pages
    adapter = adapter_for(fake, tmp_path, clock)
    monkeypatch.setattr(time, "sleep", no_sleep)

    first = sync(store, fake, adapter, clock)

    assert first.outcome == "partial"
    assert first.streams["connections"].startswith(
        "deferred: X rate limit for following spent until"
    )
    assert first.streams["mentions"] == "complete"  # the other streams ran
    assert fake.requests["following"] == 2 and fake.answered[429] == 0  # no 429 was earned
    with store.session() as session:
        cursor = session.get(SyncCursor, (1, "connections"))
        assert (
            cursor is not None
            and cursor.listing is not None
            and '"following"' in (cursor.cursor or "")
        )

    clock.advance(timedelta(minutes=15))
    second = sync(store, fake, adapter, clock)

    assert second.outcome == "ok", second
    assert fake.requests["following"] == 4 and fake.requests["followers"] == 1  # none read twice
    assert fake.answered[429] == 0
    assert_matches_ground_truth(store, fake)


def test_a_429_without_a_reset_waits_a_whole_window_instead_of_asking_again(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(10, 10, 5, mentions=30), now=NOW)
    fake.inject("429-noreset", "mentions")
    adapter = adapter_for(fake, tmp_path, clock)

    report = sync(store, fake, adapter, clock)
    again = sync(store, fake, adapter, clock)

    assert (
        report.streams["mentions"]
        == "deferred: X rate limit reached for mentions until 2025-06-01T12:15:00+00:00"
    )
    assert again.streams["mentions"].startswith("deferred: X rate limit for mentions spent")
    assert fake.requests["mentions"] == 1  # not one more request inside the window
    clock.advance(timedelta(minutes=15))
    assert sync(store, fake, adapter, clock).outcome == "ok"
    assert_matches_ground_truth(store, fake)


def test_an_app_without_access_to_an_endpoint_gets_a_clear_message_and_the_rest_runs(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(20, 20, 5, mentions=10, messages=5), now=NOW)
    fake.inject("403", "dm_events")
    adapter = adapter_for(fake, tmp_path, clock)

    report = sync(store, fake, adapter, clock)

    assert report.outcome == "partial"
    assert report.streams["messages"].startswith(
        "unavailable: the X app's access level does not include messages (403 client-not-enrolled)"
    )
    assert all(
        report.streams[s] == "complete"
        for s in ("connections", "mentions", "posts", "likes", "reactions")
    )
    with store.session() as session:
        assert session.scalar(select(Account.paused_reason)) is None


def test_refused_credentials_pause_the_account_and_say_how_to_fix_it(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(10, 10, 5), now=NOW)
    adapter = adapter_for(fake, tmp_path, clock)
    fake.revoke()
    fake.refresh_tokens.clear()  # the refresh token was revoked as well

    report = sync(store, fake, adapter, clock)

    assert report.outcome == "paused"
    with store.session() as session:
        reason = session.scalar(select(Account.paused_reason))
    assert reason is not None and "run `lopper auth x` again" in reason
    assert TOKEN not in reason


def test_an_expired_token_is_renewed_and_the_rotated_pair_saved_privately(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(10, 10, 5, mentions=3), now=NOW)
    save_token(
        tmp_path,
        KEY,
        {
            "access_token": "expired",
            "refresh_token": REFRESH,
            "expires_at": time.time() - 5,
            "client_id": CLIENT_ID,
        },
    )
    adapter = adapter_for(fake, tmp_path, clock)

    assert sync(store, fake, adapter, clock).outcome == "ok"

    stored = load_token(tmp_path, KEY)
    assert stored is not None and stored["access_token"] != "expired"
    assert stored["refresh_token"] != REFRESH and REFRESH not in fake.refresh_tokens  # rotated
    path = token_path(tmp_path, KEY)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert fake.requests["token"] == 1
    # A second process holding the old pair takes the renewed one from the file instead of
    # spending the used refresh token (which X would refuse).
    stale = XPlatform(
        handle=HANDLE,
        options=account(fake).x,
        credentials={},
        state_dir=tmp_path,
        account_key=KEY,
        clock=clock,
    )  # type: ignore[arg-type]
    stale._token = {
        "access_token": "expired",
        "refresh_token": REFRESH,
        "expires_at": 1,
        "client_id": CLIENT_ID,
    }
    assert stale.whoami().user_id == ME
    assert fake.requests["token"] == 1


def test_a_revoked_access_token_is_renewed_once_then_the_call_repeated(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(10, 10, 5), now=NOW)
    adapter = adapter_for(fake, tmp_path, clock)
    fake.tokens.pop(TOKEN)  # X revoked it early; the refresh token still works

    assert sync(store, fake, adapter, clock).outcome == "ok"
    assert fake.requests["token"] == 1 and fake.answered[401] == 1


def test_oauth1_keys_sign_every_call_as_the_user(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(30, 20, 10, mentions=10, likes=5, messages=4), now=NOW)
    config = AccountConfig(
        platform="x",
        handle=HANDLE,
        credentials={k: SecretStr(v) for k, v in OAUTH1.items()},
        x={"api_base_url": fake.url},
    )
    adapter = build_adapter(config, tmp_path, clock)
    assert isinstance(adapter, XPlatform) and adapter.user_auth is True

    report = sync_account(store, config, adapter, make_rules(), clock)

    assert report.outcome == "ok", report
    assert fake.answered[401] == 0
    assert_matches_ground_truth(store, fake)


def test_every_kind_of_exchange_is_told_apart(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    who = {n: fake.add_user(n) for n in "abcdefghij"}
    for person in who.values():
        fake.follow(person)
    t = NOW - timedelta(days=20)
    mine = fake.post(t - timedelta(days=1))
    fake.mention_me(who["a"], t)
    fake.mention_me(who["b"], t, reply_to=mine)
    fake.mention_me(who["c"], t, quote_of=mine)  # a quote that mentions: once, as a quote
    fake.quote_mine(who["d"], mine, t)
    fake.like_mine(who["e"], mine)
    fake.retweet_mine(who["f"], mine)
    fake.write(t, reply_to=who["g"], mentions=[who["h"]])
    fake.write(t, quote_of=who["h"])
    fake.retweet(who["i"], t)
    fake.like(who["j"], t - timedelta(days=100))
    fake.dm(who["a"], t, inbound=True)
    fake.dm(who["b"], t, inbound=False)
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)

    assert stored_exchanges(store) == Counter(
        {
            (who["a"], "mention", "inbound"): 1,
            (who["b"], "reply", "inbound"): 1,
            (who["c"], "quote", "inbound"): 1,
            (who["d"], "quote", "inbound"): 1,
            (who["e"], "like", "inbound"): 1,
            (who["f"], "repost", "inbound"): 1,
            (who["g"], "reply", "outbound"): 1,
            (who["h"], "mention", "outbound"): 1,
            (who["h"], "quote", "outbound"): 1,
            (who["i"], "repost", "outbound"): 1,
            (who["j"], "like", "outbound"): 1,
            (who["a"], "message", "inbound"): 1,
            (who["b"], "message", "outbound"): 1,
        }
    )
    with store.session() as session:
        liked = session.scalar(select(Interaction).where(Interaction.event_id.like("liked:%")))
    # The post is 120 days old, but when it was liked X never says: the latest it can have
    # happened is when lopper first saw it.
    assert liked is not None and liked.occurred_at == clock.now


def test_last_activity_comes_from_the_most_recent_post_id(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    someone = fake.add_user("someone")
    fake.follow(someone)
    fake.mention_me(someone, NOW - timedelta(days=40))
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)

    with store.session() as session:
        active = session.scalar(
            select(Connection.last_active_at).where(Connection.platform_user_id == someone)
        )
    assert active == NOW - timedelta(days=40)
    assert snowflake_time(fake.users[someone].last_post or "") == NOW - timedelta(days=40)


# --- costs -----------------------------------------------------------------------------


def test_every_sync_records_its_estimated_cost_and_a_repeat_read_is_not_charged_twice(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(300, 200, 100, mentions=50, posts=20, likes=10, messages=5), now=NOW)
    adapter = adapter_for(fake, tmp_path, clock)
    sync(store, fake, adapter, clock)
    with store.session() as session:
        first = session.scalars(select(CostRecord)).one()
        reads = dict(first.reads)
    assert reads["follows_read"] == 400  # 300 + 200 listed, 100 of them twice: charged once
    assert reads["dm_event_read"] == 5
    assert first.listing_micros == 400 * 10_000
    assert first.micros == sum(n * adapter.meter.price(k) for k, n in reads.items())

    clock.advance(timedelta(hours=1))
    sync(
        store,
        fake,
        adapter,
        clock,
    )
    with store.session() as session:
        records = session.scalars(select(CostRecord).order_by(CostRecord.id)).all()
        costs = month_costs(session, clock.now)
    # Nothing new: the second sync read only the account itself again, free the same day.
    assert len(records) == 1
    assert costs == {KEY: pytest.approx(first.micros / 1_000_000)}


def test_the_budget_stops_the_next_sync_that_would_pass_it_and_says_so(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(300, 200, 100, mentions=20), now=NOW)
    options = {"monthly_budget": 6.0, "relist_every": "1d"}
    adapter = adapter_for(fake, tmp_path, clock, **options)
    first = sync(store, fake, adapter, clock, **options)
    assert first.outcome == "ok"  # about $4.1: the listing, 20 mentions, the account
    fake.requests.clear()

    clock.advance(timedelta(days=1))  # a new listing is due: another $4 would pass $6
    second = sync(store, fake, adapter, clock, **options)

    assert second.outcome == "skipped"
    assert second.problems[0].startswith("X budget: $4.") and "not run" in second.problems[0]
    assert dict(fake.requests) == {"me": 1}  # nothing billed beyond who the account is
    with store.session() as session:
        assert session.scalar(select(Account.last_sync_at)) == NOW


# --- removal and undo -------------------------------------------------------------------


RULES: dict[str, Any] = {
    "window": timedelta(days=20),
    "per_digest_cap": 100,
}  # X keeps 30 days of messages: history enough for it


# Reactions to older posts are unseen on X: the person accepts that to get verdicts.
REACTIONS_UNSEEN = frozenset({Kind.LIKE, Kind.REPOST, Kind.QUOTE})


def _quiet_network(fake: FakeX) -> dict[str, str]:
    """Four followed; two of them get in touch during the month, two stay silent."""
    who = {
        n: fake.add_user(n, created_at=NOW - timedelta(days=2000))
        for n in ("ann", "ben", "cy", "di")
    }
    for person in who.values():
        fake.follow(person)
    fake.add_follower(who["ann"])
    return who


def _suggested(
    store: Store, fake: FakeX, tmp_path: Path, clock: Clock
) -> tuple[XPlatform, dict[str, int]]:
    adapter = adapter_for(fake, tmp_path, clock)
    fake.post(NOW - timedelta(days=400))
    sync(store, fake, adapter, clock)
    clock.advance(timedelta(days=31))  # X never says since when: out of grace by now
    names = {fake.users[u].username: u for u in fake.following}
    if "ben" in names:
        fake.mention_me(names["ben"], clock.now - timedelta(days=2))
        fake.like_mine(names["ann"], fake.post(clock.now - timedelta(days=3)))
    sync(store, fake, adapter, clock)
    evaluate_account(store, KEY, make_rules(**RULES), clock.now, accepted=REACTIONS_UNSEEN)
    with store.session() as session:
        pending = dict(
            session.execute(
                select(Connection.platform_user_id, Suggestion.id).join(
                    Suggestion, Suggestion.connection_id == Connection.id
                )
            ).all()
        )
    return adapter, pending


def test_an_unfollow_confirmed_in_the_queue_removes_that_follow_and_nothing_else(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    who = _quiet_network(fake)
    adapter, pending = _suggested(store, fake, tmp_path, clock)
    assert set(pending) == {who["cy"], who["di"]}
    rules = make_rules(**RULES)

    unconfirmed = execute_account(store, accepting(fake), adapter, rules, clock)
    assert unconfirmed.removed == [] and fake.requests["unfollow"] == 0

    decide(store, [pending[who["cy"]]], SuggestionState.CONFIRMED, via=Channel.CLI, now=clock.now)
    done = execute_account(store, accepting(fake), adapter, rules, clock)

    assert done.removed == [pending[who["cy"]]]
    assert fake.requests["user"] == 1  # checked on X just before acting
    assert fake.requests["unfollow"] == 1
    assert set(fake.following) == {who["ann"], who["ben"], who["di"]}
    assert set(fake.followers) == {who["ann"]}

    restore(store, pending[who["cy"]], adapter, via=Channel.CLI, now=clock.now)
    assert fake.requests["follow"] == 1 and who["cy"] in fake.following
    with store.session() as session:
        assert session.get_one(Suggestion, pending[who["cy"]]).state is SuggestionState.RESTORED
        costs = month_costs(session, clock.now)
    # The unfollow (with its check) and the follow back are in the month's estimate.
    with store.session() as session:
        this_month = CostRecord.at >= month_start(clock.now)
        synced = sum(r.micros for r in session.scalars(select(CostRecord).where(this_month)))
    assert costs[KEY] == pytest.approx((synced + 10_000 + 10_000 + 15_000) / 1_000_000)


def test_not_following_any_more_counts_as_done(clock: Clock, fake: FakeX, tmp_path: Path) -> None:
    someone = fake.add_user("someone")
    fake.follow(someone)
    adapter = adapter_for(fake, tmp_path, clock)

    first = adapter.remove(someone)
    clock.advance(timedelta(minutes=5))
    second = adapter.remove(someone)

    assert not first.already_done and second.already_done
    assert fake.requests["unfollow"] == 1  # the second one only looked
    assert someone not in fake.following


@pytest.mark.parametrize(("cap", "expected"), [(100, 50), (10, 10)])
def test_the_write_limit_and_the_daily_cap_both_hold(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path, cap: int, expected: int
) -> None:
    people = [fake.add_user(f"q{i}", created_at=NOW - timedelta(days=2000)) for i in range(60)]
    for person in people:
        fake.follow(person)
    adapter, pending = _suggested(store, fake, tmp_path, clock)
    assert len(pending) == 60
    decide(store, list(pending.values()), SuggestionState.CONFIRMED, via=Channel.CLI, now=clock.now)

    report = execute_account(
        store, accepting(fake), adapter, make_rules(daily_removal_cap=cap, **RULES), clock
    )

    assert fake.requests["unfollow"] == expected == len(report.removed)
    assert len(fake.following) == 60 - expected
    assert report.stopped is not None
    if cap == 100:
        assert report.stopped.startswith("rate limited: X rate limit for unfollow spent")
        # Another process knows of those writes too: none before the window has passed.
        fresh = adapter_for(fake, tmp_path, clock)
        with pytest.raises(RateLimited, match="50 follows and unfollows per 15 minutes"):
            fresh.remove(next(iter(fake.following)))
        assert fake.requests["unfollow"] == 50
    else:
        assert "daily cap" in report.stopped


def test_a_403_on_unfollow_stops_removals_for_the_account(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    who = _quiet_network(fake)
    adapter, pending = _suggested(store, fake, tmp_path, clock)
    decide(store, list(pending.values()), SuggestionState.CONFIRMED, via=Channel.CLI, now=clock.now)
    fake.limits["unfollow"] = 50
    fake.faults.clear()
    original = fake._do_unfollow

    def refuse(*_args: Any) -> Any:
        from fakes.x_server import _Answer, _problem

        return _Answer(
            403, _problem(403, "Forbidden", "You are unable to follow more people at this time.")
        )

    fake._do_unfollow = refuse  # type: ignore[method-assign]
    report = execute_account(store, accepting(fake), adapter, make_rules(**RULES), clock)
    fake._do_unfollow = original  # type: ignore[method-assign]

    assert report.stopped is not None and "removals stopped" in report.stopped
    assert fake.requests["unfollow"] == 1
    assert {who["cy"], who["di"]} <= set(fake.following)


# --- signing in -------------------------------------------------------------------------


def test_authorize_runs_pkce_and_keeps_a_private_token_that_build_uses(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    fake.approved_codes["code-from-x"] = "unused"
    shown: list[str] = []

    def ask(url: str) -> str:
        shown.append(url)
        state = parse_qs(urlsplit(url).query)["state"][0]
        return f"http://127.0.0.1:8910/callback?state={state}&code=code-from-x"

    result = authorize(account(fake), tmp_path, ask, clock=clock)

    query = parse_qs(urlsplit(shown[0]).query)
    assert shown[0].startswith("https://twitter.com/i/oauth2/authorize?")
    assert query["code_challenge_method"] == ["S256"] and query["client_id"] == [CLIENT_ID]
    assert set(query["scope"][0].split()) == set(SCOPES)
    assert result.handle == HANDLE
    assert stat.S_IMODE(os.stat(result.token_file).st_mode) == 0o600
    stored = load_token(tmp_path, KEY)
    assert stored is not None and stored["refresh_token"] in fake.refresh_tokens
    adapter = build_adapter(account(fake), tmp_path, clock)
    assert sync_account(store, account(fake), adapter, make_rules(), clock).outcome == "ok"


def test_without_a_token_nothing_is_asked_and_the_account_is_paused(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    adapter = build_adapter(account(fake), tmp_path, clock)

    report = sync_account(store, account(fake), adapter, make_rules(), clock)

    assert report.outcome == "paused" and "lopper auth x" in report.problems[0]
    assert sum(fake.requests.values()) == 0


def test_auth_x_without_a_client_id_names_the_key_to_set(home: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    config = home / "config.yaml"
    config.write_text(
        f"version: 1\naccounts:\n  - {{platform: x, handle: '{HANDLE}'}}\n"
        f"storage: {{url: 'sqlite:///{home}/db.sqlite3'}}\n"
    )

    result = CliRunner().invoke(app, ["--config", str(config), "auth", "x"])

    assert result.exit_code != 0
    assert "accounts[x:@TweepyDev].x.client_id" in str(result.exception)
    assert not list(home.rglob("*.json"))  # nothing stored


def test_tokens_never_reach_the_database_or_the_logs(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.logs import configure_logging

    configure_logging(json=True, level="DEBUG")
    generate(fake, NetworkSize(10, 10, 5, mentions=3), now=NOW)
    save_token(
        tmp_path,
        KEY,
        {
            "access_token": "expired",
            "refresh_token": REFRESH,
            "expires_at": 1,
            "client_id": CLIENT_ID,
        },
    )
    adapter = adapter_for(fake, tmp_path, clock)
    fake.inject("401", "mentions")  # renewed twice: on expiry, then after a 401

    sync(store, fake, adapter, clock)

    stored = load_token(tmp_path, KEY)
    assert stored is not None
    secrets = {REFRESH, TOKEN, stored["access_token"], stored["refresh_token"]}
    with store.session() as session:
        from service.store.models import Base

        dumped = "".join(
            repr(row)
            for table in Base.metadata.sorted_tables
            for row in session.execute(table.select())
        ).encode()
    if store.engine.url.get_backend_name() == "sqlite":  # the file, with what was deleted
        database = Path(str(store.engine.url.database))
        dumped += b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    captured = capsys.readouterr()
    for secret in secrets:
        assert secret.encode() not in dumped
        assert secret not in captured.out + captured.err


def test_lopper_auth_x_takes_the_address_back_and_the_next_sync_uses_the_token(
    home: Path, fake: FakeX, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests_oauthlib.oauth2_session
    from typer.testing import CliRunner

    from service.cli import app

    # The authorization request's state is random: fixed here so the test can answer it.
    monkeypatch.setattr(requests_oauthlib.oauth2_session, "generate_token", lambda: "st4te")
    fake.approved_codes["code-from-x"] = "unused"
    generate(fake, NetworkSize(10, 10, 5, mentions=3), now=NOW)
    config = home / "config.yaml"
    config.write_text(
        "version: 1\naccounts:\n"
        f"  - {{platform: x, handle: '{HANDLE}', x: {{api_base_url: '{fake.url}', client_id: {CLIENT_ID}}}}}\n"
        f"storage: {{url: 'sqlite:///{home}/db.sqlite3'}}\n"
    )
    runner = CliRunner()
    answer = "http://127.0.0.1:8910/callback?state=st4te&code=code-from-x\n"

    result = runner.invoke(app, ["--config", str(config), "auth", "x"], input=answer)

    assert result.exit_code == 0, result.output
    assert "https://twitter.com/i/oauth2/authorize?" in result.output
    assert f"authorized as {HANDLE}" in result.output
    tokens = list((home / "state" / "lopper" / "tokens").glob("*.json"))
    assert len(tokens) == 1 and stat.S_IMODE(os.stat(tokens[0]).st_mode) == 0o600
    synced = runner.invoke(app, ["--config", str(config), "sync"])
    assert synced.exit_code == 0, synced.output
    assert "x:@TweepyDev: ok" in synced.output


# --- what a pass may claim, and what it cannot see ----------------------------------------


def _covered_from(store: Store, stream: str) -> Any:
    with store.session() as session:
        return session.scalar(
            select(Coverage.covered_from)
            .where(Coverage.stream == stream)
            .order_by(Coverage.covered_to.desc())
        )


def test_reactions_to_older_posts_are_unseen_and_keep_everyone_until_accepted(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    fan = fake.add_user("fan", created_at=NOW - timedelta(days=2000))
    fake.follow(fan)
    old = fake.post(NOW - timedelta(days=100))
    for day in range(20):
        fake.post(NOW - timedelta(days=day, hours=1))  # the latest 20: none older than 20 days
    adapter = adapter_for(fake, tmp_path, clock)
    sync(store, fake, adapter, clock)
    clock.advance(timedelta(days=40))
    fake.like_mine(fan, old)  # every week, say: only ever on that older post
    report = sync(store, fake, adapter, clock)

    assert {(u.kind, u.direction) for u in report.unseen} == {
        (Kind.LIKE, Direction.INBOUND),
        (Kind.REPOST, Direction.INBOUND),
        (Kind.QUOTE, Direction.INBOUND),
    }
    assert "older than your latest 20" in report.unseen[0].reason
    assert fake.reactions_beyond(20) and stored_exchanges(store)[(fan, "like", "inbound")] == 0
    rules = make_rules(window=timedelta(days=30), grace=timedelta(days=10))
    # The reactions pass vouches for the span of the posts it read, no older.
    assert _covered_from(store, "reactions") >= NOW - timedelta(days=20)

    held = evaluate_account(store, KEY, rules, clock.now)
    assert held.queued == 0
    accepted = evaluate_account(store, KEY, rules, clock.now, accepted=REACTIONS_UNSEEN)
    assert accepted.queued == 1  # the person chose to do without reactions to older posts
    with store.session() as session:
        evidence = session.scalars(select(Suggestion)).one().evidence
    assert any("older than your latest 20" in why for why in evidence["unseen"])


def test_a_like_taken_back_does_not_make_the_next_pass_read_every_like_again(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(30, 20, 10, likes=450), now=NOW)
    adapter = adapter_for(fake, tmp_path, clock)
    sync(store, fake, adapter, clock)
    assert fake.requests["liked_tweets"] == minimum_pages(450, 100)
    fake.requests.clear()

    clock.advance(timedelta(days=1))
    fake.unlike(fake.liked[-1])  # the newest like, the one the last pass began with
    fake.like(fake.add_user("new"), clock.now - timedelta(days=2))
    report = sync(store, fake, adapter, clock)

    assert report.streams["likes"] == "complete"
    assert fake.requests["liked_tweets"] == 1  # the first look of ten, as any other day
    assert _covered_from(store, "likes") <= NOW


def test_messages_to_a_group_count_for_its_members_both_ways(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    ann, ben, cy = (fake.add_user(n) for n in ("ann", "ben", "cy"))
    group = fake.group([ann, ben], NOW - timedelta(days=9))
    fake.group_dm(group, ME, NOW - timedelta(days=8))
    fake.group_dm(group, ann, NOW - timedelta(days=7))
    fake.group_dm(group, ben, NOW - timedelta(days=6))
    fake.dm(cy, NOW - timedelta(days=5), inbound=False)
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)
    clock.advance(timedelta(days=1))
    fake.group_dm(group, ME, clock.now - timedelta(hours=1))  # the members are remembered
    sync(store, fake, adapter, clock)

    assert stored_exchanges(store) == Counter(
        {
            (ann, "message", "outbound"): 2,
            (ben, "message", "outbound"): 2,
            (ann, "message", "inbound"): 1,
            (ben, "message", "inbound"): 1,
            (cy, "message", "outbound"): 1,
        }
    )
    assert_matches_ground_truth(store, fake)


def test_a_first_pass_vouches_only_for_the_history_it_read(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    someone = fake.add_user("someone")
    for day in (3, 9, 15):
        fake.mention_me(someone, NOW - timedelta(days=day))
    for day in (4, 10):
        fake.write(NOW - timedelta(days=day), mentions=[someone])
    fake.like(someone, NOW - timedelta(days=30))
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)

    # Three mentions, far fewer than the 800 X keeps, and yet older ones may have been hidden
    # or deleted: the pass vouches from the oldest it read.
    assert _covered_from(store, "mentions") == NOW - timedelta(days=15) + timedelta(seconds=1)
    # Posts and likes: as many as the account's own counts say it has: all of them.
    assert _covered_from(store, "posts") == adapter._created_at()
    assert _covered_from(store, "likes") == adapter._created_at()


def test_a_like_listing_short_of_the_accounts_like_count_vouches_for_no_history(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    someone = fake.add_user("someone")
    fake.like(someone, NOW - timedelta(days=30))
    fake.hidden_likes = 3  # likes of posts since deleted or protected: counted, never listed
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)

    # A like carries no time: with likes missing from the list, no earlier moment is vouched.
    assert _covered_from(store, "likes") == NOW
    assert stored_exchanges(store)[(someone, "like", "outbound")] == 1


# --- money and the client's state -----------------------------------------------------


def test_the_budget_is_a_hard_cap_checked_before_every_billed_page(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    generate(fake, NetworkSize(400, 150, 50, mentions=400, posts=200, likes=300), now=NOW)
    options = {"monthly_budget": 6.0}
    adapter = adapter_for(fake, tmp_path, clock, **options)

    # The listing is estimated at $5.50 and fits; the first run's streams have no estimate
    # yet, and would bring the run to about $12.
    first = sync(store, fake, adapter, clock, **options)

    with store.session() as session:
        spent = month_costs(session, clock.now)[KEY]
    assert 5.9 <= spent <= 6.0
    assert first.outcome == "partial"
    stopped = [v for v in first.streams.values() if v.startswith("deferred: X budget: $")]
    assert stopped and all("stopped before it" in v for v in stopped)
    assert all("until 2025-07-01" in v for v in stopped)
    asked = sum(fake.requests.values())

    clock.advance(timedelta(hours=2))
    again = sync(store, fake, adapter, clock, **options)
    with store.session() as session:
        assert month_costs(session, clock.now)[KEY] <= 6.0
    assert again.outcome in ("skipped", "partial")
    assert sum(fake.requests.values()) == asked + 1  # who the account is, and nothing billed


def test_follow_and_unfollow_make_no_hidden_call_and_a_refused_one_breaks_nothing(
    clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    someone = fake.add_user("someone")
    fake.follow(someone)
    adapter = adapter_for(fake, tmp_path, clock)
    fake.inject("429", "me")  # the look-up of the signed-in account is refused once

    with pytest.raises(RateLimited):
        adapter.remove(someone)
    clock.advance(timedelta(minutes=16))
    done = adapter.remove(someone)
    adapter.restore(someone)

    assert not done.already_done and someone in fake.following
    assert fake.requests["unfollow"] == 1 and fake.requests["follow"] == 1
    # The adapter's own look-up, billed and guarded: tweepy made none of its own.
    assert fake.requests["me"] == 2
    assert adapter.meter.usage.reads["user_read"] >= 1


def test_the_liking_users_of_a_post_do_not_spend_the_liked_posts_rate_limit(
    clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    fan = fake.add_user("fan")
    fake.like_mine(fan, fake.post(NOW - timedelta(hours=5)))
    fake.like(fan, NOW - timedelta(days=2))
    adapter = adapter_for(fake, tmp_path, clock)
    fake.inject("429", "liking_users")

    cursor = None
    with pytest.raises(RateLimited, match="liking users"):
        for _ in range(3):
            cursor = adapter.interactions("reactions", cursor).cursor

    page = adapter.interactions("likes", None)  # another endpoint, another window
    assert page.done and [e.counterpart_id for e in page.exchanges] == [fan]


def test_mentions_fewer_than_x_keeps_still_vouch_only_for_what_came_back(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    someone = fake.add_user("someone")
    mentions = [fake.mention_me(someone, NOW - timedelta(hours=2 * i + 1)) for i in range(820)]
    mentions.reverse()  # oldest first
    fake.mentioning.sort(key=int)  # as X orders them: by time
    fake.hidden.update(m.id for m in mentions[-30:])  # deleted since, among the latest 800
    adapter = adapter_for(fake, tmp_path, clock)

    sync(store, fake, adapter, clock)

    # 770 came back, fewer than 800, yet the 20 oldest mentions are beyond what X keeps: the
    # pass vouches from the oldest that came back, not from the account's creation.
    assert stored_exchanges(store)[(someone, "mention", "inbound")] == 770
    assert _covered_from(store, "mentions") > mentions[20].created_at > mentions[19].created_at
