"""Facebook end to end: the real facebook-sdk talks HTTP to a fake Graph API, through the
adapter, driven by the real core (sync, evaluation, confirmation, the manual checklist)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import facebook
import pytest
from fakes.facebook_server import ME, TOKEN, FakeGraph
from helpers import NOW, Clock, make_rules, states, suggestion_ids
from pydantic import SecretStr
from sqlalchemy import select
from test_imports import OLD, facebook_files, write_export

from service.config import Account as AccountConfig
from service.config import FacebookOptions
from service.imports.common import run_import
from service.imports.facebook import FacebookReader
from service.imports.names import ANONYMOUS, name_key
from service.model import Channel, Kind, SuggestionState
from service.platforms import build_adapter
from service.platforms.base import AuthError, Capability, Platform, RateLimited
from service.platforms.facebook import FacebookPlatform
from service.removals import execute_account, manual_done
from service.store import Store
from service.store.models import Account, Connection, Interaction, Suggestion, SyncCursor
from service.suggestions import decide, evaluate_account
from service.sync import sync_account

HANDLE = "harriet.vane"


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeGraph]:
    with FakeGraph(clock) as server:
        yield server


def account(fake: FakeGraph, token: str = TOKEN, version: str = "v25.0") -> AccountConfig:
    return AccountConfig(
        platform="facebook",
        handle=HANDLE,
        credentials={"access_token": SecretStr(token)},
        facebook=FacebookOptions(graph_url=fake.url, graph_version=version),
    )


def adapter_for(fake: FakeGraph, clock: Clock, tmp_path: Path, **kw: str) -> FacebookPlatform:
    adapter = build_adapter(account(fake, **kw), tmp_path, clock)
    assert isinstance(adapter, FacebookPlatform)
    assert isinstance(adapter, Platform)
    return adapter


def interactions(store: Store) -> list[tuple[str, str, str, str]]:
    with store.session() as session:
        rows = session.execute(
            select(
                Interaction.event_id,
                Interaction.counterpart_id,
                Interaction.kind,
                Interaction.direction,
            ).order_by(Interaction.event_id)
        ).all()
    return [(e, c, k.value, d.value) for e, c, k, d in rows]


# --- the version quirk -----------------------------------------------------------------------


def test_the_sdk_refuses_a_current_version_so_the_adapter_sets_it_after(
    fake: FakeGraph, clock: Clock, tmp_path: Path
) -> None:
    with pytest.raises(facebook.GraphAPIError):
        facebook.GraphAPI(access_token=TOKEN, version="25.0")

    adapter = adapter_for(fake, clock, tmp_path, version="v26.0")
    assert adapter.whoami().user_id == ME
    adapter.connections(None)

    assert set(fake.versions) == {"v26.0"}
    assert fake.versions["v26.0"] == 2


# --- friends ------------------------------------------------------------------------------


def test_friends_reachable_through_the_api_page_by_cursor_and_the_total_is_read(
    fake: FakeGraph, clock: Clock, tmp_path: Path
) -> None:
    for n in range(230):
        fake.add_user(f"Friend {n}", uses_app=n % 2 == 0)
    adapter = adapter_for(fake, clock, tmp_path)

    people, cursor, pages = [], None, 0
    while True:
        page = adapter.connections(cursor)
        people += page.people
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert pages == 2  # 115 app users, 100 a page
    assert len(people) == 115
    assert people[0].user_id == name_key("Friend 0")
    assert people[0].profile_url and "app_scoped_user_id" in people[0].profile_url
    assert adapter.friends_total == 230
    assert fake.requests["me/friends"] == 2


def test_a_sync_of_the_partial_friend_list_marks_nobody_gone(
    store: Store, fake: FakeGraph, clock: Clock, tmp_path: Path
) -> None:
    fake.add_user("Ana Lima")
    dropped = fake.add_user("Bo Chen")
    adapter = adapter_for(fake, clock, tmp_path)
    rules = make_rules()
    assert sync_account(store, account(fake), adapter, rules, clock).outcome == "ok"

    dropped.uses_app = False  # no longer reachable, yet still a friend
    clock.advance(timedelta(days=1))
    report = sync_account(store, account(fake), adapter, rules, clock)

    assert report.connections_vanished == 0
    with store.session() as session:
        states = dict(session.execute(select(Connection.handle, Connection.state)).all())
    assert {k: v.value for k, v in states.items()} == {"Ana Lima": "active", "Bo Chen": "active"}


# --- comments and reactions ---------------------------------------------------------------


def test_comments_and_reactions_are_attributed_where_facebook_names_the_person(
    store: Store, fake: FakeGraph, clock: Clock, tmp_path: Path
) -> None:
    ana = fake.add_user("Ana Lima")
    stranger = fake.add_user("Not An App User", uses_app=False)
    post = fake.post(NOW - timedelta(days=3))
    fake.comment(post, ana, NOW - timedelta(days=2))
    fake.comment(post, stranger, NOW - timedelta(days=2, hours=1))
    fake.comment(post, ME, NOW - timedelta(days=1))  # my own reply is no exchange
    fake.react(post, ana, "LOVE")
    fake.react(post, stranger)
    fake.react(post, fake.add_user("Also Hidden", uses_app=False, friend=False), "HAHA")
    old = fake.post(NOW - timedelta(days=500))  # before the lookback: not read
    fake.comment(old, ana, NOW - timedelta(days=499))
    adapter = adapter_for(fake, clock, tmp_path)

    report = sync_account(store, account(fake), adapter, make_rules(), clock)

    assert report.outcome == "ok"
    rows = interactions(store)
    ana_key = name_key("Ana Lima")
    assert [r[1:] for r in rows if r[1] == ana_key] == [
        (ana_key, "comment", "inbound"),
        (ana_key, "reaction", "inbound"),
    ]
    anonymous = [r for r in rows if r[1] == ANONYMOUS]
    assert sorted(r[2] for r in anonymous) == ["comment", "reaction", "reaction"]
    assert len(rows) == 5
    with store.session() as session:
        reaction_at = session.scalar(
            select(Interaction.occurred_at).where(Interaction.event_id.like("reaction:%"))
        )
    assert reaction_at == NOW  # no time given: the latest it can have happened

    clock.advance(timedelta(hours=6))
    again = sync_account(store, account(fake), adapter, make_rules(), clock)
    assert again.interactions_new == 0


def test_nested_comments_and_posts_follow_their_next_links(
    store: Store, fake: FakeGraph, clock: Clock, tmp_path: Path
) -> None:
    people = [fake.add_user(f"Person {n}") for n in range(5)]
    busy = fake.post(NOW - timedelta(days=1))
    for n in range(250):
        fake.comment(busy, people[n % 5], NOW - timedelta(hours=20, minutes=n))
    for n in range(60):
        fake.post(NOW - timedelta(days=2 + n))

    sync_account(store, account(fake), adapter_for(fake, clock, tmp_path), make_rules(), clock)

    assert fake.requests["me/posts"] == 3  # 61 posts, 25 a page
    assert fake.requests["{post}/comments"] == 2  # 250 comments: 100 nested, then two pages
    assert len(interactions(store)) == 250
    with store.session() as session:
        cursor = session.get(SyncCursor, (session.scalars(select(Account.id)).one(), "posts"))
        assert cursor is not None and cursor.cursor is None


# --- errors -------------------------------------------------------------------------------


def test_an_expired_token_pauses_the_account_and_says_how_to_renew(
    store: Store, fake: FakeGraph, clock: Clock, tmp_path: Path
) -> None:
    fake.add_user("Ana Lima")
    fake.expire_token(NOW + timedelta(hours=1))
    adapter = adapter_for(fake, clock, tmp_path)
    assert sync_account(store, account(fake), adapter, make_rules(), clock).outcome == "ok"

    clock.advance(timedelta(hours=2))
    with pytest.raises(AuthError) as caught:
        adapter_for(fake, clock, tmp_path).whoami()
    report = sync_account(
        store, account(fake), adapter_for(fake, clock, tmp_path), make_rules(), clock
    )

    assert report.outcome == "paused"
    assert "Session has expired" in str(caught.value)
    assert "renew" in str(caught.value) and TOKEN not in str(caught.value)
    with store.session() as session:
        paused = session.scalars(select(Account.paused_reason)).one()
    assert paused is not None and "lopper resume facebook:harriet.vane" in paused
    assert TOKEN not in paused


@pytest.mark.parametrize("code", [4, 17, 32, 613])
def test_rate_limits_defer_the_stream_and_keep_its_cursor(
    store: Store, fake: FakeGraph, clock: Clock, tmp_path: Path, code: int
) -> None:
    for n in range(30):
        fake.post(NOW - timedelta(days=n + 1))
    adapter = adapter_for(fake, clock, tmp_path)
    adapter.whoami()
    first = adapter.interactions("posts", None)
    assert first.cursor is not None and not first.done
    fake.faults.append(code)

    with pytest.raises(RateLimited) as caught:
        adapter.interactions("posts", first.cursor)

    assert f"code {code}" in str(caught.value)
    rest = adapter.interactions("posts", first.cursor)  # the same cursor resumes
    assert rest.done and rest.covers is not None
    assert rest.covers.end == NOW


def test_facebook_has_no_removal_api_so_a_confirmed_removal_becomes_manual(
    fake: FakeGraph, clock: Clock, tmp_path: Path
) -> None:
    adapter = adapter_for(fake, clock, tmp_path)
    assert Capability.REMOVE not in adapter.capabilities
    assert adapter.profile_link("Ana Lima", name_key("Ana Lima")) == (
        "https://www.facebook.com/search/people/?q=Ana%20Lima"
    )


def test_without_an_export_the_api_alone_gives_no_verdict(
    store: Store, fake: FakeGraph, clock: Clock, tmp_path: Path
) -> None:
    fake.add_user("Rita Rare")
    fake.post(NOW - timedelta(days=300))
    rules = make_rules(grace=timedelta(0))
    sync_account(store, account(fake), adapter_for(fake, clock, tmp_path), rules, clock)

    report = evaluate_account(store, account(fake).key, rules, NOW)

    # The posts are covered for the whole lookback, but messages live in the export only.
    assert report.verdicts == {"too-early": 1}


def test_a_friend_removed_by_hand_and_still_listed_by_the_api_waits_then_is_asked_again(
    store: Store, fake: FakeGraph, clock: Clock, tmp_path: Path
) -> None:
    rita = fake.add_user("Rita Rare")
    fake.add_user("Ana Lima")
    config = account(fake)
    rules = make_rules()
    files = facebook_files(friends=[("Ana Lima", OLD), ("Rita Rare", OLD)])
    run_import(
        store, config, FacebookReader(), write_export(tmp_path / "fb", files, True), rules, NOW
    )
    adapter = adapter_for(fake, clock, tmp_path)
    sync_account(store, config, adapter, rules, clock)
    assert evaluate_account(store, config.key, rules, NOW).queued == 1
    sid = suggestion_ids(store)[name_key(rita.name)]
    decide(store, [sid], SuggestionState.CONFIRMED, via=Channel.CLI, now=NOW)
    assert execute_account(store, config, adapter, rules, clock).manual == [sid]
    manual_done(store, sid, via=Channel.CLI, now=NOW)

    clock.advance(timedelta(days=1))
    sync_account(store, config, adapter, rules, clock)  # the API still lists her
    assert evaluate_account(store, config.key, rules, clock()).queued == 0
    assert states(store)[name_key(rita.name)] == "removed"

    clock.advance(rules.manual_recheck_after)
    sync_account(store, config, adapter, rules, clock)
    with store.session() as session:
        mine = session.scalars(
            select(Suggestion.state)
            .join(Connection, Suggestion.connection_id == Connection.id)
            .where(Connection.platform_user_id == name_key(rita.name))
            .order_by(Suggestion.id)
        ).all()
    assert mine == [SuggestionState.REMOVED, SuggestionState.PENDING]


def test_comments_and_reactions_of_friends_facebook_does_not_name_are_unseen(
    store: Store, fake: FakeGraph, clock: Clock, tmp_path: Path
) -> None:
    # Faithful to the Graph API: a friend who does not use the app comments without "from"
    # and reacts only in the summary's count.
    rita = fake.add_user("Rita Rare", uses_app=False)
    fake.add_user("Ana Lima")
    for week in range(10):
        post = fake.post(NOW - timedelta(days=7 * week + 1))
        fake.comment(post, rita, NOW - timedelta(days=7 * week))
        fake.react(post, rita)
    config = account(fake)
    rules = make_rules()
    files = facebook_files(friends=[("Ana Lima", OLD), ("Rita Rare", OLD)])
    run_import(
        store, config, FacebookReader(), write_export(tmp_path / "fb", files, True), rules, NOW
    )

    report = sync_account(store, config, adapter_for(fake, clock, tmp_path), rules, clock)

    assert {(u.kind.value, u.direction) for u in report.unseen} == {
        ("comment", "inbound"),
        ("reaction", "inbound"),
    }
    assert "1 of your 2 friends" in report.unseen[0].reason
    # Rita comments every week, though nobody could tell it was her: she is not flagged.
    held = evaluate_account(store, config.key, rules, NOW)
    assert held.queued == 0
    with store.session() as session:
        assert session.scalar(select(Account.unseen))
    # Accepting the gap lets verdicts rest on messages and the account's own comments and
    # reactions: the person was told that Rita's comments would then go unseen.
    accepted = evaluate_account(
        store, config.key, rules, NOW, accepted=frozenset({Kind.COMMENT, Kind.REACTION})
    )
    assert accepted.queued == 1
    assert set(suggestion_ids(store)) == {name_key(rita.name)}
