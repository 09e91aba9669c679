"""Evaluation end to end: no verdict on missing data (invariant 3), expiry, the digest cap."""

from __future__ import annotations

import gc
import threading
from datetime import timedelta
from typing import Any

import pytest
from fakes.scripted import ScriptedPlatform
from helpers import (
    ACCOUNT,
    NOW,
    Clock,
    audit,
    make_rules,
    scripted,
    states,
    suggestion_ids,
)
from sqlalchemy import event, select

from service.config import Rules
from service.errors import NotFound
from service.model import Channel, Direction, Kind, SuggestionState, Unseen
from service.platforms.base import PlatformError
from service.store import Store
from service.store.models import Account, Suggestion
from service.suggestions import (
    collector_paused,
    decide,
    evaluate_account,
    judge_account,
    pending_ids,
)
from service.sync import sync_account

YEAR_AGO = NOW - timedelta(days=365)


def verdicts(store: Store, rules: Rules, clock: Clock) -> dict[str, str]:
    with store.session() as session:
        account = session.scalars(select(Account)).one()
        return {
            item.facts.user_id: item.judgement.verdict.value
            for item in judge_account(session, account, rules, clock()).items
        }


def mixed_network(clock: Clock) -> ScriptedPlatform:
    platform = scripted(clock)
    add = platform.add_person
    add("talks", since=YEAR_AGO)  # replied ten days ago
    add("silent", since=YEAR_AGO)  # never a word
    add("long-ago", since=YEAR_AGO)  # last word before the window
    add("outbound", since=YEAR_AGO)  # only the account speaks to them
    add("newcomer", since=NOW - timedelta(days=10))
    add("vip", handle="@VIP", since=YEAR_AGO)
    add("friend", since=YEAR_AGO, lists=("Close friends",))
    add("mutual", since=YEAR_AGO, followed_by=True)
    add("fan", since=YEAR_AGO, following=False, followed_by=True)
    add("deleted", since=YEAR_AGO, gone=True)
    platform.add_exchange("talks", NOW - timedelta(days=10))
    platform.add_exchange("long-ago", NOW - timedelta(days=181))
    platform.add_exchange("outbound", NOW - timedelta(days=5), direction=Direction.OUTBOUND)
    return platform


def protective_rules(**overrides: object) -> Rules:
    return make_rules(
        protected=frozenset({"@vip"}),
        protected_lists=frozenset({"Close friends"}),
        protect_mutuals=True,
        **overrides,
    )


def test_only_quiet_unprotected_followed_people_are_flagged(store: Store, clock: Clock) -> None:
    rules = protective_rules()
    sync_account(store, ACCOUNT, mixed_network(clock), rules, clock)

    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    assert verdicts(store, rules, clock) == {
        "talks": "keep",
        "silent": "flag",
        "long-ago": "flag",
        "outbound": "keep",
        "newcomer": "new",
        "vip": "protected",
        "friend": "protected",
        "mutual": "protected",
        "fan": "not-following",
        "deleted": "gone",
    }
    assert report.queued == 3
    assert states(store) == {"silent": "pending", "long-ago": "pending", "deleted": "pending"}


def test_sums_read_apart_are_the_sums_read_in_the_session(store: Store, clock: Clock) -> None:
    """On PostgreSQL ``read_apart`` sums the exchanges on a connection and thread of their own
    while the connections are read; the judgement is the same as read in one session."""
    rules = protective_rules()
    sync_account(store, ACCOUNT, mixed_network(clock), rules, clock)
    sums: list[tuple[Any, bool]] = []  # (the DBAPI connection, on the caller's thread)

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM exchange_periods" in statement:
            on_main = threading.current_thread() is threading.main_thread()
            sums.append((conn.connection.dbapi_connection, on_main))

    def judged(apart: bool) -> tuple[list[tuple[str, str, object]], Any]:
        with store.session() as session:
            account = session.scalars(select(Account)).one()
            own = session.connection().connection.dbapi_connection
            items = judge_account(session, account, rules, clock(), read_apart=apart).items
            return [(i.facts.user_id, i.judgement.verdict.value, i.stats) for i in items], own

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        in_session, first = judged(False)
        apart, second = judged(True)
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)

    assert apart == in_session
    assert {user: verdict for user, verdict, _ in apart}["talks"] == "keep"
    assert sums[0] == (first, True)
    if store.dialect == "sqlite":
        assert sums[1] == (second, True)
    else:
        assert sums[1][0] is not second and sums[1][1] is False


def test_an_exchange_exactly_at_the_window_edge_still_counts(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = scripted(clock, people=2)
    platform.add_exchange("u1", NOW - rules.window)
    platform.add_exchange("u2", NOW - rules.window - timedelta(seconds=1))
    sync_account(store, ACCOUNT, platform, rules, clock)

    assert verdicts(store, rules, clock) == {"u1": "keep", "u2": "flag"}


def test_counted_kinds_and_directions_are_honoured(store: Store, clock: Clock) -> None:
    rules = make_rules(
        count_kinds=frozenset({Kind.REPLY, Kind.MESSAGE}),
        count_directions=frozenset({Direction.INBOUND}),
    )
    platform = scripted(clock, people=3)
    platform.add_exchange("u1", NOW - timedelta(days=1), kind=Kind.LIKE)
    platform.add_exchange("u2", NOW - timedelta(days=1), direction=Direction.OUTBOUND)
    platform.add_exchange("u3", NOW - timedelta(days=1), kind=Kind.MESSAGE)
    sync_account(store, ACCOUNT, platform, rules, clock)

    assert verdicts(store, rules, clock) == {"u1": "flag", "u2": "flag", "u3": "keep"}


def test_grace_ends_after_the_configured_time(store: Store, clock: Clock) -> None:
    rules = make_rules(grace=timedelta(days=30))
    platform = scripted(clock)
    platform.add_person("fresh", since=NOW - timedelta(days=29))
    platform.add_person("settled", since=NOW - timedelta(days=31))
    sync_account(store, ACCOUNT, platform, rules, clock)

    assert verdicts(store, rules, clock) == {"fresh": "new", "settled": "flag"}


def test_coverage_shorter_than_the_window_flags_nobody(store: Store, clock: Clock) -> None:
    rules = make_rules(window=timedelta(days=180))
    platform = scripted(clock, people=5)
    platform.history_start = NOW - timedelta(days=179)
    sync_account(store, ACCOUNT, platform, rules, clock)

    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    assert report.verdicts == {"too-early": 5}
    assert report.queued == 0
    assert states(store) == {}


def test_no_interaction_history_at_all_flags_nobody(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = scripted(clock, people=3)
    platform.inject("interactions", RuntimeError("crash before any page"))
    with pytest.raises(RuntimeError):
        sync_account(store, ACCOUNT, platform, rules, clock)

    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    assert report.coverage is None
    assert report.verdicts == {"too-early": 3}
    assert report.queued == 0


def test_an_unseen_counted_kind_flags_nobody_until_the_person_accepts_it(
    store: Store, clock: Clock
) -> None:
    rules = make_rules()
    platform = scripted(clock, people=2)
    platform.add_exchange("u1", NOW - timedelta(days=3))
    hidden = "direct messages are not visible on this server"
    platform.blind = [Unseen(Kind.MESSAGE, hidden, "accept it, or import an export")]
    report = sync_account(store, ACCOUNT, platform, rules, clock)
    assert [u.kind for u in report.unseen] == [Kind.MESSAGE]

    blind = evaluate_account(store, ACCOUNT.key, rules, clock())
    assert blind.verdicts == {"too-early": 2}
    assert blind.queued == 0
    with store.session() as session:
        account = session.scalars(select(Account)).one()
        item = next(
            i
            for i in judge_account(session, account, rules, clock()).items
            if i.facts.user_id == "u2"
        )
    assert "message cannot be seen" in item.judgement.why
    assert "accept_unseen: [message]" in item.judgement.why

    accepted = evaluate_account(
        store, ACCOUNT.key, rules, clock(), accepted=frozenset({Kind.MESSAGE})
    )
    assert accepted.verdicts == {"keep": 1, "flag": 1}
    with store.session() as session:
        account = session.scalars(select(Account)).one()
        item = next(
            i
            for i in judge_account(
                session, account, rules, clock(), accepted=frozenset({Kind.MESSAGE})
            ).items
            if i.facts.user_id == "u2"
        )
    assert item.judgement.evidence["unseen"] == [hidden]


def test_an_unseen_kind_the_rules_do_not_count_changes_nothing(store: Store, clock: Clock) -> None:
    rules = make_rules(count_kinds=frozenset({Kind.REPLY}))
    platform = scripted(clock, people=1)
    platform.blind = [Unseen(Kind.MESSAGE, "not served")]
    sync_account(store, ACCOUNT, platform, rules, clock)

    assert verdicts(store, rules, clock) == {"u1": "flag"}


def test_a_later_sync_that_sees_the_kind_again_lifts_the_doubt(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = scripted(clock, people=1)
    platform.blind = [Unseen(Kind.LIKE, "not served", direction=Direction.INBOUND)]
    sync_account(store, ACCOUNT, platform, rules, clock)
    assert verdicts(store, rules, clock) == {"u1": "too-early"}

    platform.blind = []
    sync_account(store, ACCOUNT, platform, rules, clock)
    assert verdicts(store, rules, clock) == {"u1": "flag"}


def test_every_stream_must_cover_the_window(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = scripted(clock, people=2, streams=("activity", "messages"))
    platform.inject("interactions", RuntimeError("crash on the second stream"), skip=1)
    with pytest.raises(RuntimeError):
        sync_account(store, ACCOUNT, platform, rules, clock)

    assert evaluate_account(store, ACCOUNT.key, rules, clock()).verdicts == {"too-early": 2}


@pytest.mark.parametrize("days_since_sync", [0, 1, 6, 7])
def test_a_verdict_speaks_of_the_window_that_ends_with_the_data(
    store: Store, clock: Clock, days_since_sync: int
) -> None:
    rules = make_rules(stale_after=timedelta(days=7))
    clock.now = NOW - timedelta(days=days_since_sync)
    platform = scripted(clock, people=2)
    # u1's last exchange: inside the 180 days up to the sync, outside the 180 days up to now.
    platform.add_exchange("u1", clock.now - timedelta(days=177))
    sync_account(store, ACCOUNT, platform, rules, clock)
    clock.now = NOW

    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    # The days since the sync were read by nobody: they cannot make anyone "silent".
    assert states(store) == {"u2": "pending"}
    assert report.verdicts == {"keep": 1, "flag": 1}
    with store.session() as session:
        evidence = session.scalars(select(Suggestion)).one().evidence
    assert evidence["coverage"][1] == (NOW - timedelta(days=days_since_sync)).isoformat()


@pytest.mark.parametrize("days_since_sync", [8, 30, 90])
def test_data_older_than_stale_after_flags_nobody(
    store: Store, clock: Clock, days_since_sync: int
) -> None:
    rules = make_rules(stale_after=timedelta(days=7))
    clock.now = NOW - timedelta(days=days_since_sync)
    platform = scripted(clock, people=3)
    platform.add_person("gone", since=NOW - timedelta(days=800), gone=True)
    sync_account(store, ACCOUNT, platform, rules, clock)
    clock.now = NOW

    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    # Gone is known from the listing, not from the exchanges: it stays in its lane.
    assert report.verdicts == {"too-early": 3, "gone": 1}
    assert states(store) == {"gone": "pending"}
    day = clock.now - timedelta(days=days_since_sync)
    assert verdicts(store, rules, clock)["u1"] == "too-early"
    with store.session() as session:
        account = session.scalars(select(Account)).one()
        why = {
            i.facts.user_id: i.judgement.why
            for i in judge_account(session, account, rules, NOW).items
        }
    assert why["u1"] == f"not enough history yet: no complete sync since {day:%Y-%m-%d}"


def test_a_stream_that_fell_behind_moves_every_verdict_back(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = scripted(clock, people=2, streams=("activity", "messages"))
    platform.add_exchange("u1", NOW - timedelta(days=183), stream="messages")
    clock.now = NOW - timedelta(days=5)
    sync_account(store, ACCOUNT, platform, rules, clock)
    clock.now = NOW
    platform.inject("interactions", PlatformError("messages: 503"), skip=1)
    sync_account(store, ACCOUNT, platform, rules, clock)

    evaluate_account(store, ACCOUNT.key, rules, clock())

    # Activity is read to now, messages only to five days ago: the window ends there.
    assert states(store) == {"u2": "pending"}


def test_people_the_person_kept_are_never_flagged_again(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = scripted(clock, people=2)
    sync_account(store, ACCOUNT, platform, rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    decide(store, [suggestion_ids(store)["u1"]], SuggestionState.KEPT, via=Channel.CLI, now=NOW)
    clock.advance(timedelta(days=200))
    sync_account(store, ACCOUNT, platform, rules, clock)

    evaluate_account(store, ACCOUNT.key, rules, clock())

    assert verdicts(store, rules, clock)["u1"] == "protected"
    assert states(store) == {"u1": "kept", "u2": "pending"}


def test_a_pending_suggestion_expires_when_the_person_comes_back_to_life(
    store: Store, clock: Clock
) -> None:
    rules = make_rules()
    platform = scripted(clock, people=2)
    sync_account(store, ACCOUNT, platform, rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    assert states(store) == {"u1": "pending", "u2": "pending"}
    clock.advance()
    platform.add_exchange("u1", clock.now - timedelta(hours=2), kind=Kind.LIKE)
    sync_account(store, ACCOUNT, platform, rules, clock)

    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    assert report.expired == 1
    assert states(store) == {"u1": "expired", "u2": "pending"}
    last = audit(store, suggestion_ids(store)["u1"])[-1]
    assert (last.actor, last.via, last.from_state, last.to_state) == (
        "lopper",
        Channel.SYSTEM,
        "pending",
        "expired",
    )


def test_a_snoozed_suggestion_expires_too_and_a_due_one_wakes(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = scripted(clock, people=2)
    sync_account(store, ACCOUNT, platform, rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    ids = suggestion_ids(store)
    decide(
        store,
        list(ids.values()),
        SuggestionState.SNOOZED,
        via=Channel.CLI,
        now=NOW,
        until=NOW + timedelta(days=3),
    )
    clock.advance(timedelta(days=2))
    platform.add_exchange("u1", clock.now - timedelta(hours=1))
    sync_account(store, ACCOUNT, platform, rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    assert states(store) == {"u1": "expired", "u2": "snoozed"}

    clock.advance(timedelta(days=2))
    sync_account(store, ACCOUNT, platform, rules, clock)
    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    assert report.woke == 1
    assert states(store) == {"u1": "expired", "u2": "pending"}


def test_at_most_the_digest_cap_is_pending(store: Store, clock: Clock) -> None:
    rules = make_rules(per_digest_cap=3)
    sync_account(store, ACCOUNT, scripted(clock, people=8), rules, clock)

    first = evaluate_account(store, ACCOUNT.key, rules, clock())
    again = evaluate_account(store, ACCOUNT.key, rules, clock())

    assert (first.queued, first.capped) == (3, 5)
    assert again.queued == 0
    assert len(pending_ids(store)) == 3
    decide(store, pending_ids(store)[:2], SuggestionState.CONFIRMED, via=Channel.CLI, now=NOW)
    assert evaluate_account(store, ACCOUNT.key, rules, clock()).queued == 2
    assert len(pending_ids(store)) == 3
    assert len(states(store)) == 5


def test_one_open_suggestion_per_connection(store: Store, clock: Clock) -> None:
    rules = make_rules()
    sync_account(store, ACCOUNT, scripted(clock, people=4), rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    decide(store, pending_ids(store)[:2], SuggestionState.CONFIRMED, via=Channel.CLI, now=NOW)

    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    assert report.queued == 0
    assert len(states(store)) == 4


def test_evaluating_an_account_never_synced_is_refused(store: Store, clock: Clock) -> None:
    with pytest.raises(NotFound):
        evaluate_account(store, "x:@nobody", make_rules(), clock())


def test_stale_data_leaves_the_queue_as_it_is(store: Store, clock: Clock) -> None:
    rules = make_rules(stale_after=timedelta(days=7))
    platform = scripted(clock, people=2)
    sync_account(store, ACCOUNT, platform, rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    ids = suggestion_ids(store)
    until = NOW + timedelta(days=30)
    decide(store, [ids["u2"]], SuggestionState.SNOOZED, via=Channel.CLI, now=NOW, until=until)
    clock.advance(timedelta(days=8))

    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    # Not knowing is not the same as the person coming back: nothing expires, nothing is new.
    assert report.verdicts == {"too-early": 2}
    assert (report.expired, report.queued) == (0, 0)
    assert states(store) == {"u1": "pending", "u2": "snoozed"}


def test_the_collector_is_paused_while_judging_and_on_again_after() -> None:
    """Judgements pause Python's cyclic collector; the last one to end turns it back on, and
    one that found it off leaves it off."""
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # another judgement, in another thread
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first is still judging
    assert gc.isenabled()

    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_judging_an_account_leaves_the_collector_on(store: Store, clock: Clock) -> None:
    rules = protective_rules()
    sync_account(store, ACCOUNT, mixed_network(clock), rules, clock)
    assert verdicts(store, rules, clock)["silent"] == "flag"
    assert gc.isenabled()
