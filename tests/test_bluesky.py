"""Bluesky end to end: the real atproto SDK, through the adapter, against a fake PDS over HTTP.

The core drives it (sync, evaluate, decide, execute, restore) on a real store; the fake in
``fakes/bluesky_server.py`` keeps the ground truth and counts every request it receives.
"""

from __future__ import annotations

import math
import random
import stat
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes.bluesky_server import (
    EXCHANGE_REASONS,
    FAULTS,
    FOLLOW,
    PLC_AUDIT,
    FakeBluesky,
    Fault,
    did_for,
)
from helpers import Clock, make_rules, reset_cursors, snapshot, states, suggestion_ids
from sqlalchemy import select

from service.config import Account as AccountConfig
from service.model import Channel, ConnectionState, Direction, Kind, SuggestionState
from service.platforms import build_adapter
from service.platforms.base import (
    AuthError,
    Blocked,
    PersonNotFound,
    Platform,
    PlatformError,
    RateLimited,
)
from service.platforms.bluesky import (
    NOTIFICATION_OVERLAP,
    SIGN_IN_PAUSE,
    STREAMS,
    BlueskyPlatform,
    login,
    tid_time,
)
from service.platforms.tokens import token_path
from service.removals import execute_account, restore
from service.store import Store
from service.store.models import Account, Connection, Coverage, Interaction
from service.suggestions import decide, evaluate_account, judge_account
from service.sync import SyncReport, sync_account

S = SuggestionState
HANDLE = "@me.test"
CREATE_SESSION = "com.atproto.server.createSession"
GET_SESSION = "com.atproto.server.getSession"
GET_PROFILE = "app.bsky.actor.getProfile"
GET_FOLLOWS = "app.bsky.graph.getFollows"
GET_FOLLOWERS = "app.bsky.graph.getFollowers"
NOTIFICATIONS = "app.bsky.notification.listNotifications"
LIST_RECORDS = "com.atproto.repo.listRecords"
DELETE = "com.atproto.repo.deleteRecord"
CREATE = "com.atproto.repo.createRecord"
MESSAGES = frozenset({Kind.MESSAGE})  # accept_unseen: [message]
STREAM_COLLECTIONS = ("app.bsky.feed.post", "app.bsky.feed.repost", "app.bsky.feed.like")


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeBluesky]:
    with FakeBluesky(handle=HANDLE.lstrip("@"), clock=clock) as server:
        yield server


def account(fake: FakeBluesky, *, password: bool = True) -> AccountConfig:
    # The fake serves the PLC directory's audit log beside the PDS.
    credentials: dict[str, Any] = {"base_url": fake.base_url, "plc_url": fake.base_url}
    if password:
        credentials["app_password"] = fake.app_password
    # accept_unseen: [message], as the evaluations below pass it (direct messages are unseen)
    return AccountConfig(
        platform="bluesky", handle=HANDLE, credentials=credentials, accept_unseen=MESSAGES
    )


def adapter(
    fake: FakeBluesky, state: Path, clock: Clock, *, password: bool = True
) -> BlueskyPlatform:
    built = build_adapter(account(fake, password=password), state, clock)
    assert isinstance(built, BlueskyPlatform)
    assert isinstance(built, Platform)
    return built


def sync(store: Store, fake: FakeBluesky, platform: BlueskyPlatform, clock: Clock) -> SyncReport:
    return sync_account(store, account(fake), platform, make_rules(), clock)


def pages(items: int) -> int:
    """Requests a listing of ``items`` needs at 100 a page (an empty one still asks once)."""
    return max(1, math.ceil(items / 100))


def record_pages(items: int) -> int:
    """The same for listRecords, whose full last page still names a next (empty) one."""
    return items // 100 + 1


def stored_exchanges(store: Store) -> Counter[tuple[str, str, str]]:
    with store.session() as session:
        rows = session.execute(
            select(Interaction.counterpart_id, Interaction.kind, Interaction.direction)
        )
        return Counter((who, kind.value, direction.value) for who, kind, direction in rows)


def stored_connections(store: Store) -> dict[str, tuple[bool, bool]]:
    with store.session() as session:
        return {
            c.platform_user_id: (c.following, c.followed_by)
            for c in session.scalars(
                select(Connection).where(Connection.state == ConnectionState.ACTIVE)
            )
        }


def one_way(truth: Counter[tuple[str, str, str]], direction: Direction) -> int:
    return sum(n for (_, _, way), n in truth.items() if way == direction.value)


def account_row(store: Store) -> Account:
    with store.session() as session:
        return session.scalars(select(Account)).one()


# --- sync: requests, ground truth, faults ---------------------------------------------------


def test_first_and_incremental_sync_read_each_page_once(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(
        follows=250,
        followers=180,
        mutual=120,
        notifications=1234,
        posts=150,
        reposts=40,
        likes=330,
        quiet=30,
    )
    follows, followers = len(fake.follows), len(fake.followers)
    notifications = fake.exchange_notifications()
    posts, reposts, likes = (len(fake.repo[c]) for c in STREAM_COLLECTIONS)
    platform = adapter(fake, tmp_path, clock)

    first = sync(store, fake, platform, clock)

    assert first.outcome == "ok", first.problems
    listing = pages(follows) + pages(followers)
    records = record_pages(posts) + record_pages(reposts) + record_pages(likes)
    assert records == pages(posts) + pages(reposts) + pages(likes)  # no count ends a page
    assert dict(fake.requests) == {
        CREATE_SESSION: 1,
        GET_SESSION: 1,
        PLC_AUDIT: 1,  # the account's creation, asked once: where its own records start
        GET_FOLLOWS: pages(follows),
        GET_FOLLOWERS: pages(followers),
        NOTIFICATIONS: pages(notifications),
        # its own follow records (for the followed accounts the appview no longer lists),
        # then its posts, reposts and likes
        LIST_RECORDS: record_pages(follows) + records,
    }
    assert sum(fake.requests.values()) == (
        3 + listing + pages(notifications) + record_pages(follows) + records
    )
    assert stored_connections(store) == fake.connections()
    assert stored_exchanges(store) == fake.truth
    assert one_way(fake.truth, Direction.INBOUND) == notifications
    assert one_way(fake.truth, Direction.OUTBOUND) > 0

    # A day later: new exchanges both ways, a new follow, a new follower, one unfollowed.
    now = clock.advance(timedelta(days=1))
    talkers = [did_for(f"f{i}") for i in range(40, 60)]
    for index in range(130):
        reason = ("like", "reply", "quote", "mention", "repost", "follow")[index % 6]
        fake.notify(talkers[index % 20], reason, now - timedelta(minutes=index * 7))
    for index in range(3):
        fake.post(now - timedelta(hours=index + 1), reply_to=talkers[index])
    for index in range(5):
        fake.like(talkers[index], now - timedelta(hours=index + 1))
    fake.follow(fake.add_actor("newcomer").did)
    fake.add_follower(fake.add_actor("admirer").did)
    fake.unfollow(did_for("f200"))  # outside lopper
    new_notifications = sum(1 for i in range(130) if i % 6 != 5)
    fake.reset_counts()

    second = sync(store, fake, platform, clock)

    assert second.outcome == "ok", second.problems
    assert dict(fake.requests) == {
        GET_SESSION: 1,
        GET_FOLLOWS: pages(len(fake.follows)),
        GET_FOLLOWERS: pages(len(fake.followers)),
        NOTIFICATIONS: pages(new_notifications),  # only what is new: it stops at the mark
        # the follow records again, then one page after the last key per collection
        LIST_RECORDS: record_pages(len(fake.follows)) + 3,
    }
    assert second.interactions_new == new_notifications + 3 + 5
    assert stored_connections(store) == fake.connections()
    assert stored_exchanges(store) == fake.truth
    with store.session() as session:
        spans = {
            c.stream: (c.covered_from, c.covered_to) for c in session.scalars(select(Coverage))
        }
    assert set(spans) == set(STREAMS)
    oldest = min(n.sort_ms for n in fake.notifications if n.reason in EXCHANGE_REASONS)
    for stream, (start, end) in spans.items():
        assert end == now
        if stream == "notifications":
            # The appview may have deleted older ones: complete from the oldest one read.
            assert start == datetime.fromtimestamp(oldest // 1000, tz=UTC)
        else:  # the repository holds every record: back to the account's beginning
            assert start <= datetime.fromtimestamp(fake.me.created_us / 1e6, tz=UTC)


def test_a_resync_from_scratch_changes_no_count(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=60, followers=40, mutual=25, notifications=250, posts=30, likes=70)
    platform = adapter(fake, tmp_path, clock)
    sync(store, fake, platform, clock)
    before = snapshot(store)

    again = sync(store, fake, platform, clock)
    reset_cursors(store)
    scratch = sync(store, fake, platform, clock)

    assert again.interactions_new == scratch.interactions_new == 0
    assert snapshot(store) == before


@pytest.mark.parametrize("seed", [3, 17])
def test_random_faults_change_no_final_count(
    make_store: Any, clock: Clock, fake: FakeBluesky, tmp_path: Path, seed: int
) -> None:
    fake.populate(
        follows=130, followers=90, mutual=60, notifications=420, posts=60, reposts=20, likes=150
    )
    clean, faulty = make_store(), make_store()
    assert sync(clean, fake, adapter(fake, tmp_path / "clean", clock), clock).outcome == "ok"

    fake.at_random(0.2, FAULTS, random.Random(seed))
    platform = adapter(fake, tmp_path / "faulty", clock)
    outcomes = []
    for _ in range(60):
        report = sync(faulty, fake, platform, clock)
        outcomes.append(report.outcome)
        if report.outcome == "ok":
            break
    fake.calm()
    final = sync(faulty, fake, platform, clock)

    assert set(outcomes) - {"ok"}, "the faults should have interrupted some syncs"
    assert final.outcome == "ok"
    assert snapshot(faulty) == snapshot(clean)
    assert stored_exchanges(faulty) == fake.truth
    assert stored_connections(faulty) == fake.connections()


def test_each_fault_becomes_the_contract_error(
    clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=5, followers=3, mutual=2, notifications=10)
    platform = adapter(fake, tmp_path, clock)
    platform.whoami()

    fake.inject("429", GET_FOLLOWS)
    with pytest.raises(RateLimited) as limited:
        platform.connections(None)
    assert limited.value.reset_at == clock() + timedelta(seconds=300)  # ratelimit-reset
    kinds: tuple[Fault, ...] = ("500", "502", "malformed", "drop")
    for kind in kinds:
        fake.inject(kind, GET_FOLLOWS)
        with pytest.raises(PlatformError) as failed:
            platform.connections(None)
        assert type(failed.value) is PlatformError, kind
    # An expired session is renewed with the app password (an hour after the last sign-in at
    # the soonest), and the call goes through.
    clock.advance(SIGN_IN_PAUSE)
    fake.inject("expired", GET_FOLLOWS)
    assert platform.connections(None).people
    assert fake.logins == 2
    fake.inject("takedown", GET_FOLLOWS)
    with pytest.raises(AuthError, match="lopper auth bluesky"):
        platform.connections(None)
    assert fake.logins == 2  # a suspended account is not signed in again


# --- sessions -------------------------------------------------------------------------------


def test_a_session_is_reused_and_refreshed_never_signed_in_twice(
    clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=5, followers=3, mutual=2, notifications=10)
    path = token_path(tmp_path, account(fake).key)
    # Tokens that expire within the SDK's 15-minute margin: it refreshes before each request.
    fake.access_ttl = 60
    adapter(fake, tmp_path, clock).whoami()
    assert (fake.logins, fake.refreshes) == (1, 1)
    first = path.read_text(encoding="utf-8")

    fake.access_ttl = 7200
    second = adapter(fake, tmp_path, clock)
    assert second.whoami().user_id == fake.me.did
    second.connections(None)
    assert (fake.logins, fake.refreshes) == (1, 2)
    refreshed = path.read_text(encoding="utf-8")

    third = adapter(fake, tmp_path, clock)
    third.whoami()
    third.connections(None)

    assert (fake.logins, fake.refreshes) == (1, 2)  # the saved, refreshed session just works
    assert first != refreshed == path.read_text(encoding="utf-8")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert fake.app_password not in refreshed


def test_login_saves_a_session_the_daemon_uses_without_a_password(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=5, followers=3, mutual=2, notifications=10)
    config = account(fake, password=False)

    who = login(HANDLE, fake.app_password, tmp_path, config.key, base_url=fake.base_url)
    platform = adapter(fake, tmp_path, clock, password=False)
    report = sync_account(store, config, platform, make_rules(), clock)

    assert who.user_id == fake.me.did and who.handle == HANDLE
    assert report.outcome == "ok"
    assert fake.logins == 1
    assert fake.requests[GET_PROFILE] == 1  # asked at login, kept with the session


def test_auth_errors_pause_the_account_until_it_signs_in_again(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=8, followers=5, mutual=3, notifications=20, quiet=8)
    config = account(fake, password=False)
    login(HANDLE, fake.app_password, tmp_path, config.key, base_url=fake.base_url)
    platform = adapter(fake, tmp_path, clock, password=False)
    rules = make_rules()
    assert sync_account(store, config, platform, rules, clock).outcome == "ok"
    evaluate_account(store, config.key, rules, clock(), accepted=MESSAGES)
    ids = suggestion_ids(store)
    decide(store, [ids[did_for("f0")]], S.CONFIRMED, via=Channel.CLI, now=clock())

    fake.revoke_sessions()
    paused = sync_account(store, config, platform, rules, clock)
    executed = execute_account(store, config, platform, rules, clock)

    assert paused.outcome == "paused"
    reason = account_row(store).paused_reason or ""
    assert "lopper auth bluesky" in reason
    assert fake.requests[CREATE_SESSION] == 1  # no password to try: nothing more was asked
    assert executed.stopped is not None and executed.stopped.startswith("account paused")
    assert fake.requests[DELETE] == 0

    # The person runs `lopper auth bluesky`; the same (daemon) adapter picks the session up.
    login(HANDLE, fake.app_password, tmp_path, config.key, base_url=fake.base_url)
    resumed = sync_account(store, config, platform, rules, clock)
    assert resumed.outcome == "ok"
    assert account_row(store).paused_reason is None


def test_a_refused_password_pauses_without_retrying(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=3, followers=2, mutual=1, notifications=5)
    platform = adapter(fake, tmp_path, clock)
    assert sync(store, fake, platform, clock).outcome == "ok"
    fake.revoke_sessions()
    fake.app_password = "changed-elsewhere"
    clock.advance(SIGN_IN_PAUSE)

    report = sync(store, fake, platform, clock)
    soon = sync(store, fake, platform, clock)
    assert fake.requests[CREATE_SESSION] == 2  # one attempt, then an hour's pause
    clock.advance(SIGN_IN_PAUSE)
    later = sync(store, fake, platform, clock)

    assert report.outcome == soon.outcome == later.outcome == "paused"
    assert "lopper auth bluesky" in report.problems[0]
    assert fake.app_password not in report.problems[0]
    assert fake.requests[CREATE_SESSION] == 3


# --- removals -------------------------------------------------------------------------------


def prepared(
    store: Store, fake: FakeBluesky, platform: BlueskyPlatform, clock: Clock, quiet: int = 6
) -> dict[str, int]:
    fake.populate(
        follows=40, followers=30, mutual=20, notifications=300, posts=30, likes=60, quiet=quiet
    )
    assert sync(store, fake, platform, clock).outcome == "ok"
    evaluate_account(store, account(fake).key, make_rules(), clock(), accepted=MESSAGES)
    return suggestion_ids(store)


def test_unfollows_only_a_confirmed_suggestion_and_undo_follows_again(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    platform = adapter(fake, tmp_path, clock)
    ids = prepared(store, fake, platform, clock)
    quiet = [did_for(f"f{i}") for i in range(6)]
    assert set(quiet) <= set(ids)
    config, rules = account(fake), make_rules()

    nothing = execute_account(store, config, platform, rules, clock)
    assert nothing.removed == [] and fake.requests[DELETE] == 0

    target = quiet[0]
    record = fake.follow_uri(target)
    assert record is not None
    decide(store, [ids[target]], S.CONFIRMED, via=Channel.CLI, now=clock())
    report = execute_account(store, config, platform, rules, clock)

    assert report.removed == [ids[target]]
    assert fake.write_log == [("delete", FOLLOW, record.rsplit("/", 1)[1])]
    assert target not in fake.follows
    assert all(other in fake.follows for other in quiet[1:])
    assert states(store)[target] == "removed"

    restore(store, ids[target], platform, via=Channel.CLI, now=clock())
    assert target in fake.follows
    assert [action for action, _, _ in fake.write_log] == ["delete", "create"]
    assert states(store)[target] == "restored"
    assert sync(store, fake, platform, clock).outcome == "ok"
    assert stored_connections(store)[target] == (True, True)


def test_removal_reads_the_platform_just_before_acting(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    platform = adapter(fake, tmp_path, clock)
    ids = prepared(store, fake, platform, clock)
    gone_elsewhere, vanished = did_for("f1"), did_for("f2")
    decide(store, [ids[gone_elsewhere]], S.CONFIRMED, via=Channel.CLI, now=clock())
    fake.unfollow(gone_elsewhere)  # the person unfollowed them in the app meanwhile

    report = execute_account(store, account(fake), platform, make_rules(), clock)

    assert report.dropped == {ids[gone_elsewhere]: "no longer connected"}
    assert fake.requests[DELETE] == 0
    assert platform.remove(gone_elsewhere).already_done
    with pytest.raises(PersonNotFound):
        platform.remove("did:plc:nobodyhere000000000000000")
    platform.restore(vanished)  # already following: no duplicate follow record
    assert fake.requests[CREATE] == 0
    # The account's own suspension, met while asking about someone, is not their absence.
    fake.inject("takedown", "app.bsky.graph.getRelationships")
    with pytest.raises(AuthError):
        platform.remove(vanished)
    assert vanished in fake.follows


def test_the_write_budget_defers_removals(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    config, rules = account(fake), make_rules()
    platform = BlueskyPlatform(
        config.key,
        HANDLE,
        tmp_path,
        app_password=fake.app_password,
        base_url=fake.base_url,
        clock=clock,
        write_limits=(2, 35000),
    )
    ids = prepared(store, fake, platform, clock)
    quiet = [did_for(f"f{i}") for i in range(3)]
    decide(store, [ids[d] for d in quiet], S.CONFIRMED, via=Channel.CLI, now=clock())
    start = clock()

    first = execute_account(store, config, platform, rules, clock)

    assert len(first.removed) == 2
    assert first.stopped is not None and first.stopped.startswith("rate limited")
    assert fake.requests[DELETE] == 2
    minute = start.replace(second=0, microsecond=0)
    assert account_row(store).next_removal_at == minute + timedelta(minutes=1, hours=1)
    # The points are kept on disk: another run (the CLI, a restart) sees them too.
    other = BlueskyPlatform(
        config.key, HANDLE, tmp_path, base_url=fake.base_url, clock=clock, write_limits=(2, 9)
    )
    with pytest.raises(RateLimited):
        other.remove(next(d for d in quiet if d in fake.follows))
    assert fake.requests[DELETE] == 2

    clock.advance(timedelta(hours=1, minutes=1))
    second = execute_account(store, config, platform, rules, clock)
    assert second.removed == [i for i in (ids[d] for d in quiet) if i not in first.removed]
    assert fake.requests[DELETE] == 3
    assert not any(d in fake.follows for d in quiet)


def test_the_platform_refusing_writes_defers_or_stops_removals(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    config, rules = account(fake), make_rules()
    platform = adapter(fake, tmp_path, clock)
    ids = prepared(store, fake, platform, clock)
    quiet = [did_for(f"f{i}") for i in range(2)]
    decide(store, [ids[d] for d in quiet], S.CONFIRMED, via=Channel.CLI, now=clock())

    fake.inject("429", DELETE)
    deferred = execute_account(store, config, platform, rules, clock)
    assert deferred.removed == []
    assert account_row(store).next_removal_at == clock() + timedelta(seconds=300)

    clock.advance(timedelta(minutes=6))
    fake.inject("takedown", DELETE)
    stopped = execute_account(store, config, platform, rules, clock)
    assert stopped.stopped is not None and stopped.stopped.startswith("removals stopped")
    assert "AccountTakedown" in (account_row(store).removals_blocked_reason or "")
    assert fake.logins == 1
    assert all(d in fake.follows for d in quiet)
    with pytest.raises(Blocked):
        fake.inject("takedown", DELETE)
        platform.remove(quiet[0])


# --- small pieces ---------------------------------------------------------------------------


def test_connections_carry_the_follow_times_and_both_directions(
    clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=3, followers=3, mutual=2, notifications=0)
    platform = adapter(fake, tmp_path, clock)
    people = []
    cursor = None
    while True:
        page = platform.connections(cursor)
        people.extend(page.people)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    last = {p.user_id: p for p in people}  # what the store keeps: the last page wins

    assert {d: (p.following, p.followed_by) for d, p in last.items()} == fake.connections()
    mutual = last[did_for("f0")]
    assert mutual.handle == "@f0.test"
    assert mutual.profile_url == "https://bsky.app/profile/f0.test"
    assert mutual.connected_since is not None
    assert mutual.connected_since < clock() - timedelta(days=600)


def test_record_keys_tell_when_they_were_made() -> None:
    assert str(tid_time("3jueqtsliw22n")) == "2023-04-27 18:41:14.800000+00:00"
    assert tid_time("self") is None
    assert tid_time("zzzzzzzzzzzzz") is None  # the top bit is set: not a TID


def test_notifications_that_arrive_late_are_still_read(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=5, followers=3, mutual=2, notifications=50)
    platform = adapter(fake, tmp_path, clock)
    sync(store, fake, platform, clock)
    late = clock() - NOTIFICATION_OVERLAP / 2
    now = clock.advance(timedelta(hours=2))
    # made before the last sync, indexed after it: it sorts before that sync's start
    fake.notify(did_for("f3"), "reply", late, indexed_at=now)

    report = sync(store, fake, platform, clock)

    assert report.interactions_new == 1
    assert stored_exchanges(store)[(did_for("f3"), Kind.REPLY.value, "inbound")] >= 1


# What the recorded answers in samples/api/bluesky look like (keys and quirks, no people).
RECORDED_PROFILE_KEYS = {
    "did",
    "handle",
    "displayName",
    "associated",
    "viewer",
    "labels",
    "createdAt",
    "indexedAt",
}
RECORDED_VIEWER_KEYS = {"muted", "blockedBy", "following", "followedBy"}


def test_the_fake_answers_in_the_recorded_shapes(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=3, followers=2, mutual=1, notifications=0)
    platform = adapter(fake, tmp_path, clock)
    body = fake.answer(GET_FOLLOWS, actor=fake.me.did, limit="100")
    entry = body["follows"][-1]

    assert set(entry) >= RECORDED_PROFILE_KEYS
    assert set(entry["viewer"]) <= RECORDED_VIEWER_KEYS and "following" in entry["viewer"]
    assert "cursor" not in body  # as in the recording: the last page names no next one
    # The recorded like record's createdAt has no zone: it is read as UTC.
    subject = f"at://{did_for('f1')}/app.bsky.feed.post/3k5u7c7eis72y"
    uri = fake.put_record(
        "app.bsky.feed.like",
        "3k5u7c7j7a52v",
        {
            "$type": "app.bsky.feed.like",
            "subject": {
                "cid": "bafyreiftg3snotlhlko2t7k4f6ic63slwwlrhva4mfm2ws2op2snsgyula",
                "uri": subject,
            },
            "createdAt": "2023-08-26T12:56:31.044240",
        },
    )
    assert sync(store, fake, platform, clock).outcome == "ok"
    with store.session() as session:
        like = session.scalars(select(Interaction).where(Interaction.event_id == uri)).one()
    assert (like.counterpart_id, like.kind, like.direction) == (
        did_for("f1"),
        Kind.LIKE,
        Direction.OUTBOUND,
    )
    assert like.occurred_at == datetime(2023, 8, 26, 12, 56, 31, tzinfo=UTC)


# --- what the adapter claims (issue: every claim of coverage earned) ----------------------


def judged(store: Store, clock: Clock, accepted: frozenset[Kind] = MESSAGES) -> dict[str, Any]:
    """user id -> (verdict, why) of every connection, judged now."""
    with store.session() as session:
        evaluation = judge_account(
            session, account_row_in(session), make_rules(), clock(), accepted=accepted
        )
    return {
        item.facts.user_id: (item.judgement.verdict.value, item.judgement.why)
        for item in evaluation.items
    }


def account_row_in(session: Any) -> Account:
    return session.scalars(select(Account)).one()


def coverage_spans(store: Store, stream: str) -> list[tuple[datetime, datetime]]:
    with store.session() as session:
        rows = session.scalars(select(Coverage).where(Coverage.stream == stream))
        return sorted((c.covered_from, c.covered_to) for c in rows)


def test_a_follow_is_dated_by_the_accounts_own_follow_record(
    clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    now = clock()
    old_friend = fake.add_actor("oldfriend").did  # followed the account long ago
    fake.add_follower(old_friend, now - timedelta(days=400))
    fake.follow(old_friend, now - timedelta(days=2))  # followed back only now
    again = fake.add_actor("again").did
    fake.follow(again, now - timedelta(days=300))
    fake.unfollow(again)
    fake.follow(again, now - timedelta(days=1))  # followed a second time
    admirer = fake.add_actor("admirer").did
    fake.add_follower(admirer, now - timedelta(days=50))
    platform = adapter(fake, tmp_path, clock)

    people = {}
    cursor = None
    while True:
        page = platform.connections(cursor)
        people.update({p.user_id: p for p in page.people})
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    def day(person: str) -> datetime | None:
        since = people[person].connected_since
        return since.replace(microsecond=0) if since else None

    assert day(old_friend) == (now - timedelta(days=2)).replace(microsecond=0)
    assert day(again) == (now - timedelta(days=1)).replace(microsecond=0)
    assert day(admirer) == (now - timedelta(days=50)).replace(microsecond=0)


def test_notification_coverage_starts_at_the_oldest_notification_read(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=20, followers=10, mutual=5, notifications=400, likes=20)
    now = clock()
    fake.see_notifications(now)  # the appview drops what sorts 30 days before this
    kept = [n for n in fake.notifications if n.reason in EXCHANGE_REASONS]
    assert kept and min(n.sort_ms for n in kept) >= (now - timedelta(days=30)).timestamp() * 1000
    platform = adapter(fake, tmp_path, clock)

    assert sync(store, fake, platform, clock).outcome == "ok"

    oldest = datetime.fromtimestamp(min(n.sort_ms for n in kept) // 1000, tz=UTC)
    assert coverage_spans(store, "notifications") == [(oldest, now)]
    # The account's own records are all in its repository: they cover its whole life.
    (likes,) = coverage_spans(store, "likes")
    assert likes[0] <= datetime.fromtimestamp(fake.me.created_us / 1e6, tz=UTC)

    # Forty days without a sync; the person read their notifications in the app meanwhile,
    # and everything the last pass read is gone from the listing.
    later = clock.advance(timedelta(days=40))
    fake.notify(did_for("f7"), "reply", later - timedelta(days=3))
    fake.see_notifications(later)
    assert sync(store, fake, platform, clock).outcome == "ok"

    # The pass did not meet the previous one: it vouches only for what it read.
    newest = (later - timedelta(days=3)).replace(microsecond=0)
    assert coverage_spans(store, "notifications") == [(oldest, now), (newest, later)]
    assert stored_exchanges(store)[(did_for("f7"), Kind.REPLY.value, "inbound")] >= 1


def test_a_quiet_day_between_passes_keeps_notification_coverage_whole(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    start = clock()
    fake.notify(fake.add_actor("f1").did, "like", start - timedelta(days=3))
    platform = adapter(fake, tmp_path, clock)
    assert sync(store, fake, platform, clock).outcome == "ok"
    end = clock.advance(timedelta(days=1))
    assert sync(store, fake, platform, clock).outcome == "ok"  # nothing new at all

    # the second pass reads back to the first one's oldest item, less the overlap
    reach = start - timedelta(days=3) - NOTIFICATION_OVERLAP
    assert coverage_spans(store, "notifications") == [(reach.replace(microsecond=0), end)]


def test_a_notification_not_indexed_yet_is_read_by_the_next_pass(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=5, followers=3, mutual=2, notifications=40)
    platform = adapter(fake, tmp_path, clock)
    start = clock()
    late = fake.add_actor("late").did
    # written before the sync, indexed by the appview only after it
    fake.notify(
        late,
        "quote",
        start - NOTIFICATION_OVERLAP / 3,
        indexed_at=start + timedelta(minutes=10),
    )
    sync(store, fake, platform, clock)
    assert stored_exchanges(store)[(late, Kind.QUOTE.value, "inbound")] == 0

    clock.advance(timedelta(hours=6))
    assert sync(store, fake, platform, clock).outcome == "ok"
    assert stored_exchanges(store)[(late, Kind.QUOTE.value, "inbound")] == 1


def test_direct_messages_are_reported_unseen_and_keep_everyone(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=8, followers=4, mutual=2, notifications=60, quiet=3)
    platform = adapter(fake, tmp_path, clock)

    report = sync(store, fake, platform, clock)

    (unseen,) = report.unseen
    assert unseen.kind is Kind.MESSAGE and unseen.direction is None
    assert "direct messages" in unseen.reason
    assert unseen.remedy is not None and "accept_unseen: [message]" in unseen.remedy
    quiet = did_for("f0")
    verdict, why = judged(store, clock, accepted=frozenset())[quiet]
    assert verdict == "too-early" and "message" in why
    assert judged(store, clock)[quiet][0] == "flag"  # once the person accepts it


def test_the_account_is_dated_by_the_plc_directory_not_its_profile(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    genesis = clock() - timedelta(days=100)
    fake.me.created_us = int(genesis.timestamp() * 1_000_000)
    # A profile record whose client wrote a date years before the account existed.
    fake.me.profile_created_us = int((clock() - timedelta(days=2000)).timestamp() * 1_000_000)
    fake.post(clock() - timedelta(days=20), reply_to=fake.add_actor("pal").did)
    platform = adapter(fake, tmp_path, clock)

    assert sync(store, fake, platform, clock).outcome == "ok"

    assert coverage_spans(store, "posts") == [(genesis.replace(microsecond=0), clock())]
    assert fake.requests[PLC_AUDIT] == 1

    # Without a profile record at all, the account is dated just the same (and only once).
    fake.me.profile_created_us = None
    reset_cursors(store)
    assert sync(store, fake, platform, clock).outcome == "ok"
    assert coverage_spans(store, "posts") == [(genesis.replace(microsecond=0), clock())]
    assert fake.requests[PLC_AUDIT] == 1


def test_a_deleted_followed_account_is_offered_in_the_gone_lane(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    platform = adapter(fake, tmp_path, clock)
    ids = prepared(store, fake, platform, clock)
    # someone the account follows and talks to: kept until now
    deleted = next(did for did in fake.follows if did not in ids)
    record = fake.follow_uri(deleted)
    assert record is not None
    fake.delete_actor(deleted)
    # A brand-new account the appview has not indexed yet is not taken for a gone one.
    fake.follow("did:plc:notindexedyet0000000000a")
    config, rules = account(fake), make_rules()

    report = sync(store, fake, platform, clock)
    evaluate_account(store, config.key, rules, clock(), accepted=MESSAGES)

    assert report.outcome == "ok"
    verdicts = judged(store, clock)
    assert verdicts[deleted][0] == "gone"
    with store.session() as session:
        gone = session.scalars(
            select(Connection).where(Connection.platform_user_id == deleted)
        ).one()
    assert gone.handle == f"@{fake.actors[deleted].handle}"  # from the PLC directory
    assert "did:plc:notindexedyet0000000000a" not in verdicts
    ids = suggestion_ids(store)
    decide(store, [ids[deleted]], S.CONFIRMED, via=Channel.CLI, now=clock())
    executed = execute_account(store, config, platform, rules, clock)

    assert executed.removed == [ids[deleted]]
    assert record.rsplit("/", 1)[1] not in fake.repo[FOLLOW]
    assert fake.write_log == [("delete", FOLLOW, record.rsplit("/", 1)[1])]


def test_the_first_sync_counts_each_connection_once(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    fake.populate(follows=12, followers=9, mutual=7, notifications=10)
    report = sync(store, fake, adapter(fake, tmp_path, clock), clock)

    assert report.connections_seen == report.connections_new == len(fake.connections()) == 14


def test_a_second_follow_of_the_same_account_replaces_the_first(
    clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    pal = fake.add_actor("pal").did
    record = fake.follow(pal, clock() - timedelta(days=40))
    platform = adapter(fake, tmp_path, clock)
    fake.unfollow(pal)
    fake.repo[FOLLOW][record.rsplit("/", 1)[1]] = {"$type": FOLLOW, "subject": pal}
    platform.restore(pal)  # the appview names no follow: a new record is made

    assert [v["subject"] for v in fake.repo[FOLLOW].values()] == [pal]


def test_a_follow_the_appview_has_not_indexed_is_not_taken_for_a_dangling_one(
    clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    pal = fake.add_actor("pal").did
    # in the repository, not yet in the appview (a follow made in the app a moment ago)
    fake.put_record(FOLLOW, "3kabcdefghij2", {"$type": FOLLOW, "subject": pal})
    platform = adapter(fake, tmp_path, clock)

    assert platform.relationship(pal).connected is False
    assert platform.remove(pal).already_done
    assert fake.requests[DELETE] == 0
    assert "3kabcdefghij2" in fake.repo[FOLLOW]


def test_without_the_plc_directory_a_first_pass_claims_only_from_its_oldest_record(
    store: Store, clock: Clock, fake: FakeBluesky, tmp_path: Path
) -> None:
    first_reply = clock() - timedelta(days=20)
    fake.post(first_reply, reply_to=fake.add_actor("pal").did)
    fake.inject("500", PLC_AUDIT, times=2)  # once per repository stream (posts, likes)
    platform = adapter(fake, tmp_path, clock)

    assert sync(store, fake, platform, clock).outcome == "ok"

    assert coverage_spans(store, "posts") == [(first_reply.replace(microsecond=0), clock())]
    reset_cursors(store)
    assert sync(store, fake, platform, clock).outcome == "ok"  # asked again, and kept
    genesis = datetime.fromtimestamp(fake.me.created_us / 1e6, tz=UTC).replace(microsecond=0)
    assert coverage_spans(store, "posts") == [(genesis, clock())]
    assert fake.requests[PLC_AUDIT] == 3
