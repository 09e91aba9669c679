"""The suggestion state machine: allowed moves only, one audit row per move."""

from __future__ import annotations

from datetime import timedelta

import pytest
from helpers import ACCOUNT, NOW, Clock, audit, make_rules, scripted, states, suggestion_ids
from sqlalchemy import func, select, update

from service.errors import InvalidTransition, NotFound
from service.model import Channel, SuggestionState
from service.removals import execute_account, manual_done, restore
from service.store import Store
from service.store.models import AuditEntry, Connection, Suggestion
from service.suggestions import (
    ALLOWED,
    LOPPER,
    PERSON,
    decide,
    evaluate_account,
    get_suggestion,
    transition,
)
from service.sync import sync_account

S = SuggestionState
PERSON_MOVES = (S.CONFIRMED, S.KEPT, S.SNOOZED)


@pytest.fixture
def one(store: Store, clock: Clock) -> int:
    """The id of a single pending suggestion."""
    rules = make_rules()
    sync_account(store, ACCOUNT, scripted(clock, people=1), rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    return suggestion_ids(store)["u1"]


def force_state(store: Store, suggestion_id: int, state: SuggestionState) -> None:
    with store.session() as session:
        session.execute(
            update(Suggestion).where(Suggestion.id == suggestion_id).values(state=state)
        )


def audit_count(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def test_the_machine_matches_the_design() -> None:
    assert ALLOWED[S.PENDING] == {S.CONFIRMED, S.KEPT, S.SNOOZED, S.EXPIRED}
    assert ALLOWED[S.REMOVED] == {S.RESTORED}
    for final in (S.KEPT, S.EXPIRED, S.RESTORED):
        assert ALLOWED[final] == frozenset()
    for state in S:
        assert S.REMOVED not in ALLOWED[state] or state in (S.CONFIRMED, S.FAILED, S.MANUAL)


def test_every_disallowed_transition_raises_and_writes_nothing(store: Store, one: int) -> None:
    for current in S:
        force_state(store, one, current)
        before = audit_count(store)
        for target in S:
            if target in ALLOWED[current]:
                continue
            with store.session() as session:
                suggestion = get_suggestion(session, one)
                with pytest.raises(InvalidTransition):
                    transition(session, suggestion, target, actor=PERSON, via=Channel.CLI, now=NOW)
                assert suggestion.state is current
                assert suggestion.decided_at is None
                assert not session.new and not session.dirty
        assert audit_count(store) == before


@pytest.mark.parametrize("current", list(S))
def test_a_refused_decision_changes_nothing(
    store: Store, one: int, current: SuggestionState
) -> None:
    force_state(store, one, current)
    before = audit_count(store)
    for target in PERSON_MOVES:
        if target in ALLOWED[current]:
            continue
        result = decide(
            store, [one], target, via=Channel.REVIEW, now=NOW, until=NOW + timedelta(days=1)
        )
        assert result.changed == []
        assert one in result.refused
    assert states(store) == {"u1": current.value}
    assert audit_count(store) == before
    with store.session() as session:
        assert session.get_one(Suggestion, one).decided_at is None


def test_confirming_a_removed_suggestion_is_refused(store: Store, one: int) -> None:
    force_state(store, one, S.REMOVED)

    result = decide(store, [one], S.CONFIRMED, via=Channel.CLI, now=NOW)

    assert result.refused.keys() == {one}
    assert states(store) == {"u1": "removed"}


def test_confirming_twice_is_refused_the_second_time(store: Store, one: int) -> None:
    assert decide(store, [one], S.CONFIRMED, via=Channel.CLI, now=NOW).changed == [one]
    again = decide(store, [one], S.CONFIRMED, via=Channel.CLI, now=NOW)
    assert again.refused.keys() == {one}
    assert len([a for a in audit(store, one) if a.to_state == "confirmed"]) == 1


def test_an_unknown_id_is_refused(store: Store, one: int) -> None:
    result = decide(store, [one + 1000, one], S.CONFIRMED, via=Channel.CLI, now=NOW)

    assert result.changed == [one]
    assert result.refused == {one + 1000: "no such suggestion"}
    with store.session() as session, pytest.raises(NotFound):
        get_suggestion(session, one + 1000)


def test_a_person_cannot_set_what_only_lopper_may(store: Store, one: int) -> None:
    for target in (S.REMOVED, S.EXPIRED, S.FAILED, S.MANUAL, S.PENDING, S.RESTORED):
        with pytest.raises(InvalidTransition):
            decide(store, [one], target, via=Channel.CLI, now=NOW)
    assert states(store) == {"u1": "pending"}


def test_only_a_person_can_confirm(store: Store, one: int) -> None:
    with store.session() as session:
        suggestion = get_suggestion(session, one)
        with pytest.raises(InvalidTransition):
            transition(session, suggestion, S.CONFIRMED, actor=LOPPER, via=Channel.DAEMON, now=NOW)
    assert states(store) == {"u1": "pending"}


@pytest.mark.parametrize("until", [None, NOW, NOW - timedelta(seconds=1)])
def test_a_snooze_needs_a_date_in_the_future(store: Store, one: int, until: object) -> None:
    with pytest.raises(InvalidTransition):
        decide(store, [one], S.SNOOZED, via=Channel.CLI, now=NOW, until=until)  # type: ignore[arg-type]
    assert states(store) == {"u1": "pending"}


def test_keeping_protects_the_connection(store: Store, one: int) -> None:
    decide(store, [one], S.KEPT, via=Channel.WEB, now=NOW)
    with store.session() as session:
        suggestion = session.get_one(Suggestion, one)
        assert session.get_one(Connection, suggestion.connection_id).protected


def test_every_transition_writes_one_audit_row(store: Store, one: int, clock: Clock) -> None:
    rules = make_rules()
    platform = scripted(clock, people=1)
    expected = [(None, "pending", "lopper", Channel.SYSTEM)]
    assert [(a.from_state, a.to_state, a.actor, a.via) for a in audit(store, one)] == expected

    decide(store, [one], S.SNOOZED, via=Channel.REVIEW, now=NOW, until=NOW + timedelta(days=1))
    expected.append(("pending", "snoozed", "person", Channel.REVIEW))
    clock.advance(timedelta(days=2))
    sync_account(store, ACCOUNT, platform, rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    expected.append(("snoozed", "pending", "lopper", Channel.SYSTEM))
    decide(store, [one], S.CONFIRMED, via=Channel.WEB, now=clock())
    expected.append(("pending", "confirmed", "person", Channel.WEB))
    execute_account(store, ACCOUNT, platform, rules, clock)
    expected.append(("confirmed", "removed", "lopper", Channel.SYSTEM))
    restore(store, one, platform, via=Channel.CLI, now=clock())
    expected.append(("removed", "restored", "person", Channel.CLI))

    rows = audit(store, one)
    assert [(a.from_state, a.to_state, a.actor, a.via) for a in rows] == expected
    assert all(a.entity == "suggestion" and a.account_id is not None for a in rows)
    assert all(a.at.tzinfo is not None for a in rows)


def test_manual_done_is_the_persons_word_and_only_for_manual_ones(store: Store, one: int) -> None:
    with pytest.raises(NotFound):
        manual_done(store, one, via=Channel.CLI, now=NOW)
    force_state(store, one, S.MANUAL)

    manual_done(store, one, via=Channel.CLI, now=NOW)

    last = audit(store, one)[-1]
    assert (last.from_state, last.to_state, last.actor) == ("manual", "removed", "person")
