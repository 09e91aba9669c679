"""The executor: caps, re-checks, the platform's pushback (invariant 5), crash resume (6)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import pytest
from fakes.scripted import ScriptedPlatform
from helpers import ACCOUNT, NOW, Clock, audit, make_rules, scripted, states, suggestion_ids
from sqlalchemy import select

from service.config import Account as AccountConfig
from service.config import Rules
from service.errors import InvalidTransition
from service.model import Channel, ConnectionState, Kind, RemovalState, SuggestionState, Unseen
from service.people import link
from service.platforms.base import (
    AuthError,
    Blocked,
    Capability,
    PersonNotFound,
    PlatformError,
    RateLimited,
)
from service.removals import ExecutionReport, RestoreError, execute_account, manual_done, restore
from service.store import Store
from service.store.models import Account, AuditEntry, Connection, Removal, Suggestion
from service.suggestions import decide, evaluate_account, judge_account, queue_plan
from service.sync import sync_account

S = SuggestionState
NO_RELATIONSHIP = frozenset({Capability.REMOVE, Capability.RESTORE})


def prepare(
    store: Store,
    clock: Clock,
    people: int = 3,
    confirm: int | None = None,
    rules: Rules | None = None,
    **platform_options: object,
) -> ScriptedPlatform:
    """Sync and evaluate a quiet network, then confirm the first ``confirm`` suggestions."""
    rules = rules or make_rules()
    platform = scripted(clock, people=people, **platform_options)  # type: ignore[arg-type]
    sync_account(store, ACCOUNT, platform, rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    ids = suggestion_ids(store)
    chosen = [ids[f"u{i}"] for i in range(1, (people if confirm is None else confirm) + 1)]
    decide(store, chosen, S.CONFIRMED, via=Channel.CLI, now=clock())
    platform.reset_calls()
    return platform


def execute(
    store: Store, platform: ScriptedPlatform, clock: Clock, rules: Rules | None = None
) -> ExecutionReport:
    return execute_account(store, ACCOUNT, platform, rules or make_rules(), clock)


def removal_rows(store: Store) -> list[tuple[int, str, int]]:
    with store.session() as session:
        return [
            (r.suggestion_id, r.state.value, r.attempt)
            for r in session.scalars(select(Removal).order_by(Removal.id))
        ]


def account_row(store: Store) -> Account:
    with store.session() as session:
        return session.scalars(select(Account)).one()


def test_only_confirmed_suggestions_reach_the_platform(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=4, confirm=1)
    ids = suggestion_ids(store)
    decide(store, [ids["u2"]], S.KEPT, via=Channel.CLI, now=NOW)
    decide(store, [ids["u3"]], S.SNOOZED, via=Channel.CLI, now=NOW, until=NOW + timedelta(days=9))

    report = execute(store, platform, clock)

    assert report.removed == [ids["u1"]]
    assert platform.removed == ["u1"]
    assert states(store) == {"u1": "removed", "u2": "kept", "u3": "snoozed", "u4": "pending"}


def test_a_removal_updates_the_connection(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=1)
    platform.add_person("u2", since=NOW - timedelta(days=365), followed_by=True)
    sync_account(store, ACCOUNT, platform, make_rules(), clock)
    evaluate_account(store, ACCOUNT.key, make_rules(), clock())
    decide(store, [suggestion_ids(store)["u2"]], S.CONFIRMED, via=Channel.CLI, now=NOW)

    execute(store, platform, clock)

    with store.session() as session:
        rows = {c.platform_user_id: c for c in session.scalars(select(Connection))}
    assert (rows["u1"].state, rows["u1"].following) == (ConnectionState.REMOVED, False)
    # A mutual stays as a follower: only the account's side of the link is gone.
    assert (rows["u2"].state, rows["u2"].following) == (ConnectionState.ACTIVE, False)


# --- the daily cap and the spacing -------------------------------------------------------


def test_daily_cap_holds_across_runs(store: Store, clock: Clock) -> None:
    rules = make_rules(daily_removal_cap=2)
    platform = prepare(store, clock, people=5, rules=rules)

    first = execute(store, platform, clock, rules)
    clock.advance(timedelta(hours=23))
    second = execute(store, platform, clock, rules)

    assert len(first.removed) == 2
    assert first.stopped is not None and "daily cap" in first.stopped
    assert second.removed == []
    assert len(platform.removed) == 2
    clock.advance(timedelta(hours=1))
    assert len(execute(store, platform, clock, rules).removed) == 2
    assert len(platform.removed) == 4


def test_a_cap_of_zero_removes_nobody(store: Store, clock: Clock) -> None:
    rules = make_rules(daily_removal_cap=0)
    platform = prepare(store, clock, people=2, rules=rules)

    report = execute(store, platform, clock, rules)

    assert report.removed == []
    assert platform.called("remove") == []
    assert set(states(store).values()) == {"confirmed"}


def test_removals_are_spaced_with_jitter(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=4)
    pauses: list[float] = []

    execute_account(
        store,
        ACCOUNT,
        platform,
        make_rules(),
        clock,
        sleep=pauses.append,
        rng=random.Random(1),
        spacing=(20.0, 90.0),
    )

    assert len(platform.removed) == 4
    assert len(pauses) == 3
    assert all(20.0 <= p <= 90.0 for p in pauses)
    assert len(set(pauses)) == 3


# --- the re-check just before acting -----------------------------------------------------


def test_recheck_drops_a_person_no_longer_connected(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=2)
    platform.drop_person("u1")

    report = execute(store, platform, clock)

    ids = suggestion_ids(store)
    assert report.dropped.keys() == {ids["u1"]}
    assert platform.called("remove") == [("u2",)]
    assert states(store) == {"u1": "expired", "u2": "removed"}
    assert (ids["u1"], "dropped", 1) in removal_rows(store)


def test_recheck_drops_after_an_exchange_since_the_suggestion(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=2)
    clock.advance(timedelta(hours=2))
    platform.add_exchange("u1", clock.now - timedelta(hours=1))
    sync_account(store, ACCOUNT, platform, make_rules(), clock)
    platform.reset_calls()

    report = execute(store, platform, clock)

    assert report.dropped.keys() == {suggestion_ids(store)["u1"]}
    assert platform.called("remove") == [("u2",)]
    assert states(store) == {"u1": "expired", "u2": "removed"}


def test_an_old_exchange_does_not_stop_the_removal(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=1)
    platform.add_exchange("u1", NOW - timedelta(days=300))

    assert len(execute(store, platform, clock).removed) == 1


# --- judged again at execution, as evaluation judges -------------------------------------


def test_an_exchange_dated_before_the_suggestion_but_read_later_drops_it(
    store: Store, clock: Clock
) -> None:
    platform = prepare(store, clock, people=2)
    clock.advance(timedelta(hours=2))
    # A late notification, a stream that was behind: dated ten days before the suggestion.
    platform.add_exchange("u1", NOW - timedelta(days=10))
    sync_account(store, ACCOUNT, platform, make_rules(), clock)
    platform.reset_calls()

    report = execute(store, platform, clock)

    sid = suggestion_ids(store)["u1"]
    assert report.dropped == {sid: "no longer flagged: 1 exchanges in the last 180 days"}
    assert platform.called("remove") == [("u2",)]
    assert states(store) == {"u1": "expired", "u2": "removed"}
    last = audit(store, sid)[-1]
    assert (last.actor, last.from_state, last.to_state) == ("lopper", "confirmed", "expired")
    assert last.detail == f"removal dropped: {report.dropped[sid]}"
    assert (sid, "dropped", 1) in removal_rows(store)


def test_a_handle_protected_after_the_confirmation_is_not_removed(
    store: Store, clock: Clock
) -> None:
    platform = prepare(store, clock, people=2)

    report = execute(store, platform, clock, make_rules(protected=frozenset({"@pu1"})))

    assert report.dropped == {suggestion_ids(store)["u1"]: "no longer flagged: protected by handle"}
    assert platform.called("remove") == [("u2",)]


def test_a_list_protected_after_the_confirmation_is_not_removed(store: Store, clock: Clock) -> None:
    rules = make_rules(protected_lists=frozenset({"Family"}))
    platform = prepare(store, clock, people=2, rules=rules)
    platform.people["u2"] = replace(platform.people["u2"], lists=("Family",))
    sync_account(store, ACCOUNT, platform, rules, clock)
    platform.reset_calls()

    report = execute(store, platform, clock, rules)

    assert report.dropped == {
        suggestion_ids(store)["u2"]: "no longer flagged: on your protected list 'Family'"
    }
    assert platform.called("remove") == [("u1",)]


def test_an_exchange_on_a_linked_account_after_the_confirmation_drops_it(
    store: Store, clock: Clock
) -> None:
    platform = prepare(store, clock, people=2)
    mastodon_account = AccountConfig(platform="mastodon", handle="@me@example.social")
    mastodon = scripted(clock)
    mastodon.add_person("m1", handle="@ana@example.social", since=NOW - timedelta(days=365))
    sync_account(store, mastodon_account, mastodon, make_rules(), clock)
    link(store, ["x:@pu1", "mastodon:@ana@example.social"], now=clock())
    clock.advance(timedelta(hours=3))
    mastodon.add_exchange("m1", clock.now - timedelta(hours=1))
    sync_account(store, mastodon_account, mastodon, make_rules(), clock)

    report = execute(store, platform, clock, make_rules(count_linked=True))

    assert report.dropped.keys() == {suggestion_ids(store)["u1"]}
    assert platform.called("remove") == [("u2",)]


def test_a_kind_unseen_since_the_confirmation_holds_the_removal(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=1)
    platform.blind = [Unseen(Kind.MESSAGE, "messages endpoint refused", remedy="grant dm.read")]
    sync_account(store, ACCOUNT, platform, make_rules(), clock)
    platform.reset_calls()

    held = execute(store, platform, clock)

    assert platform.called("remove") == []
    assert states(store) == {"u1": "confirmed"}
    assert list(held.held.values()) == [
        "not enough history yet: message cannot be seen (messages endpoint refused); "
        "accept it with accept_unseen: [message] under the account"
    ]
    accepting = ACCOUNT.model_copy(update={"accept_unseen": frozenset({Kind.MESSAGE})})
    done = execute_account(store, accepting, platform, make_rules(), clock)
    assert (done.removed, platform.removed) == ([suggestion_ids(store)["u1"]], ["u1"])


def test_a_removal_waits_while_the_data_is_older_than_stale_after(
    store: Store, clock: Clock
) -> None:
    rules = make_rules(stale_after=timedelta(days=2))
    platform = prepare(store, clock, people=1, rules=rules)
    clock.advance(timedelta(days=3))

    held = execute(store, platform, clock, rules)

    assert platform.called("remove") == []
    assert states(store) == {"u1": "confirmed"}
    assert list(held.held.values()) == ["not enough history yet: no complete sync since 2025-06-01"]
    sync_account(store, ACCOUNT, platform, rules, clock)
    assert len(execute(store, platform, clock, rules).removed) == 1


def test_a_connection_gone_from_the_latest_listing_is_dropped_not_asked_for(
    store: Store, clock: Clock
) -> None:
    platform = prepare(store, clock, people=2, capabilities=NO_RELATIONSHIP)
    platform.drop_person("u1")  # unfollowed outside lopper; the next sync's listing says so
    sync_account(store, ACCOUNT, platform, make_rules(), clock)
    platform.reset_calls()

    report = execute(store, platform, clock)

    assert report.dropped == {
        suggestion_ids(store)["u1"]: "no longer connected in the latest listing"
    }
    assert platform.called("remove") == [("u2",)]
    assert states(store) == {"u1": "expired", "u2": "removed"}


def test_a_checklist_item_is_judged_again_too(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=2, capabilities=frozenset())

    report = execute(store, platform, clock, make_rules(protected=frozenset({"@pu2"})))

    assert report.manual == [suggestion_ids(store)["u1"]]
    assert report.dropped.keys() == {suggestion_ids(store)["u2"]}


def test_a_plan_s_choice_is_removed_unless_something_new_happened(
    store: Store, clock: Clock
) -> None:
    rules = make_rules()
    platform = scripted(clock, people=2)
    for person in ("u1", "u2"):  # both talk: only a reduction plan would choose them
        platform.add_exchange(person, NOW - timedelta(days=20))
    sync_account(store, ACCOUNT, platform, rules, clock)
    with store.session() as session:
        account = session.scalars(select(Account)).one()
        items = judge_account(session, account, rules, clock()).items
    assert {i.judgement.verdict.value for i in items} == {"keep"}
    assert queue_plan(store, ACCOUNT.key, items, clock()) == 2
    ids = suggestion_ids(store)
    decide(store, list(ids.values()), S.CONFIRMED, via=Channel.CLI, now=clock())
    clock.advance(timedelta(hours=2))
    platform.add_exchange("u2", clock.now - timedelta(hours=1))
    sync_account(store, ACCOUNT, platform, rules, clock)

    report = execute(store, platform, clock, rules)

    assert report.removed == [ids["u1"]]
    assert report.dropped == {ids["u2"]: "an exchange on 2025-06-01 the plan did not show"}


# --- the platform's answers --------------------------------------------------------------


def test_blocked_stops_removals_for_the_account_and_is_not_retried(
    store: Store, clock: Clock
) -> None:
    platform = prepare(store, clock, people=3)
    platform.inject("remove", Blocked("temporarily blocked: automated behaviour"))

    report = execute(store, platform, clock)

    assert report.stopped is not None and "temporarily blocked" in report.stopped
    assert len(report.failed) == 1
    assert "temporarily blocked" in (account_row(store).removals_blocked_reason or "")
    for _ in range(3):
        clock.advance(timedelta(days=1))
        later = execute(store, platform, clock)
        assert later.stopped is not None and later.stopped.startswith("removals stopped")
    assert platform.called("remove") == [("u1",)]
    assert platform.called("relationship") == [("u1",)]
    assert platform.removed == []
    assert set(states(store).values()) == {"confirmed"}


def test_rate_limits_defer_without_counting_as_failures(store: Store, clock: Clock) -> None:
    rules = make_rules(max_attempts=2)
    platform = prepare(store, clock, people=1, rules=rules)

    for _ in range(3):
        platform.inject("remove", RateLimited(clock.now + timedelta(hours=1)))
        report = execute(store, platform, clock, rules)
        assert report.stopped is not None and report.stopped.startswith("rate limited")
        assert states(store) == {"u1": "confirmed"}
        calls = len(platform.calls)
        clock.advance(timedelta(minutes=30))
        assert execute(store, platform, clock, rules).stopped is not None
        assert len(platform.calls) == calls, "nothing is asked before the window resets"
        clock.advance(timedelta(minutes=30))
    # Both allowed attempts are still there for real failures.
    platform.inject("remove", PlatformError("503"))
    execute(store, platform, clock, rules)
    clock.advance(timedelta(hours=1))

    report = execute(store, platform, clock, rules)

    assert len(report.removed) == 1
    assert states(store) == {"u1": "removed"}
    assert len(platform.called("remove")) == 5


def test_rate_limited_removals_do_not_use_up_the_daily_cap(store: Store, clock: Clock) -> None:
    rules = make_rules(daily_removal_cap=1)
    platform = prepare(store, clock, people=1, rules=rules)
    platform.inject("remove", RateLimited(clock.now + timedelta(minutes=5)))
    execute(store, platform, clock, rules)
    clock.advance(timedelta(minutes=5))

    assert len(execute(store, platform, clock, rules).removed) == 1


def test_transient_errors_back_off_and_give_up_after_max_attempts(
    store: Store, clock: Clock
) -> None:
    rules = make_rules(max_attempts=3)
    platform = prepare(store, clock, people=1, rules=rules)
    platform.inject("remove", PlatformError("503 service unavailable"), times=99)
    sid = suggestion_ids(store)["u1"]

    execute(store, platform, clock, rules)
    assert states(store) == {"u1": "failed"}
    execute(store, platform, clock, rules)
    assert len(platform.called("remove")) == 1, "a failure waits for its back-off"
    for _ in range(10):
        clock.advance(timedelta(hours=6))
        execute(store, platform, clock, rules)

    assert len(platform.called("remove")) == 3
    # A 503 may come after the platform acted: each attempt is recorded as unanswered.
    assert [r for r in removal_rows(store) if r[0] == sid] == [
        (sid, "unanswered", 1),
        (sid, "unanswered", 2),
        (sid, "unanswered", 3),
    ]
    assert states(store) == {"u1": "failed"}
    note = audit(store, sid)[-1].detail or ""
    assert "gave up after 3 attempts" in note


def test_a_transient_error_is_retried_after_the_back_off(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=1)
    platform.inject("remove", PlatformError("timeout"))
    execute(store, platform, clock)
    clock.advance(timedelta(minutes=9))
    execute(store, platform, clock)
    assert states(store) == {"u1": "failed"}

    clock.advance(timedelta(minutes=1))
    execute(store, platform, clock)

    assert states(store) == {"u1": "removed"}
    assert platform.removed == ["u1"]


def test_refused_credentials_pause_the_account(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=2)
    platform.inject("remove", AuthError("token revoked"))

    report = execute(store, platform, clock)

    assert report.stopped is not None and report.stopped.startswith("account paused")
    assert account_row(store).paused_reason is not None
    assert len(platform.called("remove")) == 1
    assert execute(store, platform, clock).removed == []
    assert len(platform.called("remove")) == 1


def test_a_person_the_platform_no_longer_knows_counts_as_removed(
    store: Store, clock: Clock
) -> None:
    platform = prepare(store, clock, people=1)
    # Gone by the time the platform answered: the listing no longer holds them either.
    platform.inject("remove", PersonNotFound("no such user"), after=True)

    report = execute(store, platform, clock)

    assert len(report.removed) == 1
    assert states(store) == {"u1": "removed"}


def test_not_following_any_more_counts_as_done(store: Store, clock: Clock) -> None:
    # Without a relationship check the platform's own answer is all the executor learns.
    platform = prepare(store, clock, people=1, capabilities=NO_RELATIONSHIP)
    person = platform.people["u1"]
    platform.people["u1"] = replace(person, following=False)

    report = execute(store, platform, clock)

    assert len(report.removed) == 1
    assert platform.called("remove") == [("u1",)]
    assert platform.removed == []
    assert states(store) == {"u1": "removed"}
    assert audit(store, report.removed[0])[-1].detail == "not following any more"


def test_without_a_removal_api_the_person_gets_a_checklist(store: Store, clock: Clock) -> None:
    rules = make_rules(daily_removal_cap=1)
    platform = prepare(store, clock, people=3, rules=rules, capabilities=frozenset())

    report = execute(store, platform, clock, rules)

    assert len(report.manual) == 3
    assert platform.called("remove") == []
    assert set(states(store).values()) == {"manual"}
    sid = suggestion_ids(store)["u1"]
    manual_done(store, sid, via=Channel.REVIEW, now=NOW)
    assert states(store)["u1"] == "removed"
    assert execute(store, platform, clock, rules).manual == []


# --- undo --------------------------------------------------------------------------------


def test_undo_follows_again_and_protects_from_then_on(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = prepare(store, clock, people=1)
    execute(store, platform, clock)
    sid = suggestion_ids(store)["u1"]

    restore(store, sid, platform, via=Channel.CLI, now=NOW)

    assert platform.restored == ["u1"]
    assert states(store) == {"u1": "restored"}
    with store.session() as session:
        connection = session.scalars(select(Connection)).one()
        assert (connection.state, connection.following, connection.protected) == (
            ConnectionState.ACTIVE,
            True,
            True,
        )
    clock.advance(timedelta(days=1))
    sync_account(store, ACCOUNT, platform, rules, clock)
    assert evaluate_account(store, ACCOUNT.key, rules, clock()).verdicts == {"protected": 1}
    with pytest.raises(InvalidTransition):
        restore(store, sid, platform, via=Channel.CLI, now=NOW)


def test_undo_without_the_capability_changes_nothing(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=1, capabilities=frozenset({Capability.REMOVE}))
    execute(store, platform, clock)

    with pytest.raises(RestoreError):
        restore(store, suggestion_ids(store)["u1"], platform, via=Channel.CLI, now=NOW)

    assert states(store) == {"u1": "removed"}
    assert platform.called("restore") == []


# --- invariant 6: a crash between asking the platform and recording the answer -----------


@pytest.mark.parametrize("capabilities", [frozenset(Capability), NO_RELATIONSHIP])
@pytest.mark.parametrize("platform_acted", [True, False])
def test_a_started_removal_is_resumed_and_done_once(
    store: Store, clock: Clock, capabilities: frozenset[Capability], platform_acted: bool
) -> None:
    platform = prepare(store, clock, people=1, capabilities=capabilities)
    platform.inject("remove", KeyboardInterrupt(), after=platform_acted)
    sid = suggestion_ids(store)["u1"]

    with pytest.raises(KeyboardInterrupt):
        execute(store, platform, clock)

    assert removal_rows(store) == [(sid, "started", 1)]
    assert states(store) == {"u1": "confirmed"}
    clock.advance(timedelta(minutes=5))

    report = execute(store, platform, clock)

    assert report.removed == [sid]
    assert len(platform.called("remove")) <= 2
    assert platform.removed == ["u1"]
    assert states(store) == {"u1": "removed"}
    assert [a.to_state for a in audit(store, sid)].count("removed") == 1
    assert removal_rows(store) == [(sid, "done", 1)]
    assert execute(store, platform, clock).removed == []
    assert len(platform.called("remove")) <= 2


def test_a_started_removal_still_counts_against_the_cap(store: Store, clock: Clock) -> None:
    rules = make_rules(daily_removal_cap=1)
    platform = prepare(store, clock, people=2, rules=rules)
    platform.inject("remove", RuntimeError("crash"), after=True)
    with pytest.raises(RuntimeError):
        execute(store, platform, clock, rules)

    execute(store, platform, clock, rules)

    assert platform.removed == ["u1"]
    with store.session() as session:
        assert session.scalars(select(Suggestion.state).order_by(Suggestion.id)).all() == [
            S.REMOVED,
            S.CONFIRMED,
        ]


def test_a_rate_limit_during_a_retry_leaves_the_retry_due(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=1)
    platform.inject("remove", PlatformError("timeout"))
    execute(store, platform, clock)
    assert states(store) == {"u1": "failed"}
    clock.advance(timedelta(minutes=10))
    platform.inject("remove", RateLimited(clock.now + timedelta(minutes=15)))
    execute(store, platform, clock)
    assert states(store) == {"u1": "failed"}

    clock.advance(timedelta(minutes=15))
    execute(store, platform, clock)

    assert states(store) == {"u1": "removed"}
    assert len(platform.called("remove")) == 3


def test_refused_credentials_during_a_retry_leave_the_retry_due(store: Store, clock: Clock) -> None:
    platform = prepare(store, clock, people=1)
    platform.inject("remove", PlatformError("timeout"))
    execute(store, platform, clock)
    clock.advance(timedelta(minutes=10))
    platform.inject("remove", AuthError("token expired"))
    execute(store, platform, clock)
    assert account_row(store).paused_reason is not None
    clock.advance(timedelta(hours=1))
    sync_account(store, ACCOUNT, platform, make_rules(), clock)

    execute(store, platform, clock)

    assert states(store) == {"u1": "removed"}


def test_a_connection_removed_by_hand_is_not_suggested_again(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = prepare(store, clock, people=1, capabilities=frozenset())
    execute(store, platform, clock, rules)
    manual_done(store, suggestion_ids(store)["u1"], via=Channel.REVIEW, now=NOW)

    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    assert report.queued == 0
    assert states(store) == {"u1": "removed"}


def test_rules_retry_after_sets_the_pause_after_a_failed_removal(
    store: Store, clock: Clock
) -> None:
    rules = make_rules(retry_after=timedelta(minutes=1))
    platform = prepare(store, clock, people=1, rules=rules)
    platform.inject("remove", PlatformError("timeout"))
    execute(store, platform, clock, rules)
    platform.inject("remove", PlatformError("timeout"))
    clock.advance(timedelta(seconds=59))
    execute(store, platform, clock, rules)
    assert len(platform.called("remove")) == 1  # not yet
    clock.advance(timedelta(seconds=1))
    execute(store, platform, clock, rules)
    assert len(platform.called("remove")) == 2 and states(store) == {"u1": "failed"}
    clock.advance(timedelta(seconds=119))  # the second pause is twice the first
    execute(store, platform, clock, rules)
    assert len(platform.called("remove")) == 2
    clock.advance(timedelta(seconds=1))
    execute(store, platform, clock, rules)
    assert states(store) == {"u1": "removed"}


def test_a_removal_that_got_no_answer_is_asked_again_and_recorded_as_lopper_s(
    store: Store, clock: Clock
) -> None:
    """The platform acted but its answer was lost (a timeout, a 5xx): the retry must not
    re-check first and find "no longer connected", which would record lopper's own removal
    as the person's doing; it asks again, and the removal is recorded once, as done."""
    platform = prepare(store, clock, people=1)
    platform.inject("remove", PlatformError("read timed out"), after=True)
    execute(store, platform, clock)
    assert states(store) == {"u1": "failed"}
    assert not platform.relationship("u1").connected  # it did happen

    clock.advance(timedelta(minutes=10))
    execute(store, platform, clock)

    assert states(store) == {"u1": "removed"}
    assert len(platform.called("remove")) == 2
    with store.session() as session:
        rows = session.scalars(select(Removal).order_by(Removal.id)).all()
        assert [(r.state, r.attempt) for r in rows] == [
            (RemovalState.UNANSWERED, 1),
            (RemovalState.DONE, 2),
        ]
        removed = session.scalars(
            select(AuditEntry).where(AuditEntry.to_state == S.REMOVED.value)
        ).all()
        assert len(removed) == 1


def test_a_retry_interrupted_between_asking_and_recording_is_resumed(
    store: Store, clock: Clock
) -> None:
    """A failed removal's retry that dies after the platform acted must not be left out of
    every later run (it was: the suggestion stayed failed with no next attempt)."""
    platform = prepare(store, clock, people=1)
    platform.inject("remove", PlatformError("503"))
    execute(store, platform, clock)
    clock.advance(timedelta(minutes=10))
    platform.inject("remove", RuntimeError("killed"), after=True)
    with pytest.raises(RuntimeError):
        execute(store, platform, clock)
    assert states(store) == {"u1": "failed"}

    execute(store, platform, clock)  # the next run, at once

    assert states(store) == {"u1": "removed"}
    assert platform.removed == ["u1"]


def test_a_resumed_removal_stopped_by_a_rate_limit_is_still_lopper_s_after_the_reset(
    store: Store, clock: Clock
) -> None:
    """Killed after the platform acted, then rate limited when resumed: after the reset the
    removal is asked again and recorded as done, not dropped as "no longer connected"."""
    platform = prepare(store, clock, people=1)
    platform.inject("remove", RuntimeError("killed"), after=True)
    with pytest.raises(RuntimeError):
        execute(store, platform, clock)
    platform.inject("remove", RateLimited(clock.now + timedelta(minutes=15)))
    execute(store, platform, clock)
    assert states(store) == {"u1": "confirmed"}

    clock.advance(timedelta(minutes=15))
    execute(store, platform, clock)

    assert states(store) == {"u1": "removed"}
    with store.session() as session:
        assert [r.state for r in session.scalars(select(Removal).order_by(Removal.id))] == [
            RemovalState.UNANSWERED,
            RemovalState.DONE,
        ]
