"""Invariant 1: nothing is removed unless the person confirmed that very suggestion.

Random sequences of everything that can happen to an account (syncs, evaluations, the
person's decisions, lopper's own moves, executor runs, undo, platform trouble, people
coming back to life or leaving) are played against the scripted platform. Every remove()
it receives is checked, at the moment it arrives, against the store's audit trail.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from fakes.scripted import ScriptedPlatform
from helpers import ACCOUNT, NOW, Clock, make_rules, scripted, wipe
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from service.errors import InvalidTransition
from service.model import Channel, SuggestionState
from service.platforms.base import AuthError, Blocked, PlatformError, RateLimited
from service.removals import RestoreError, execute_account, restore
from service.store import Store
from service.store.models import AuditEntry, Connection, Suggestion
from service.suggestions import LOPPER, decide, evaluate_account, get_suggestion, transition
from service.sync import sync_account

S = SuggestionState
PEOPLE = 6
index = st.integers(min_value=0, max_value=3)
person = st.integers(min_value=1, max_value=PEOPLE)
confirm = st.tuples(
    st.just("confirm"),
    st.lists(index, min_size=1, max_size=4),
    st.sampled_from([Channel.CLI, Channel.REVIEW, Channel.WEB]),
)
lopper = st.tuples(
    st.just("lopper"),
    index,
    st.sampled_from([S.CONFIRMED, S.CONFIRMED, *S]),
    st.sampled_from([Channel.DAEMON, Channel.SYSTEM]),
)
snooze = st.tuples(st.just("snooze"), index, st.integers(min_value=1, max_value=96))
execute = st.tuples(st.just("execute"))
# The moves that lead towards (or away from) a removal come up more often than the rest.
actions = st.lists(
    st.one_of(
        confirm,
        confirm,
        lopper,
        lopper,
        snooze,
        execute,
        execute,
        st.tuples(st.just("sync")),
        st.tuples(st.just("evaluate")),
        st.tuples(st.just("advance"), st.integers(min_value=1, max_value=72)),
        st.tuples(st.just("keep"), index),
        st.tuples(st.just("undo"), index),
        st.tuples(st.just("fault"), st.sampled_from(["blocked", "rate", "transient", "auth"])),
        st.tuples(st.just("exchange"), person),
        st.tuples(st.just("unfollow"), person),
    ),
    min_size=2,
    max_size=20,
)


def person_confirmed(store: Store, user_id: str) -> list[int]:
    """Suggestions for this person that the person confirmed, and no one else."""
    with store.session() as session:
        ids = session.scalars(
            select(Suggestion.id)
            .join(Connection, Suggestion.connection_id == Connection.id)
            .where(Connection.platform_user_id == user_id)
        ).all()
        confirmed = []
        for sid in ids:
            rows = session.scalars(
                select(AuditEntry).where(
                    AuditEntry.entity == "suggestion",
                    AuditEntry.entity_id == sid,
                    AuditEntry.to_state == S.CONFIRMED.value,
                )
            ).all()
            assert all(r.actor == "person" for r in rows), "only a person may confirm"
            if rows:
                confirmed.append(sid)
        return confirmed


def live_confirmation(store: Store, user_id: str) -> None:
    """At the moment of a remove(): one open, person-confirmed suggestion for them."""
    confirmed = person_confirmed(store, user_id)
    with store.session() as session:
        live = [
            sid
            for sid in confirmed
            if session.get_one(Suggestion, sid).state in (S.CONFIRMED, S.FAILED)
        ]
    assert len(live) == 1, f"remove({user_id}) without a live confirmation"


def only_person_confirmed_await_removal(store: Store) -> None:
    """What the executor may pick up next was confirmed by the person, and only by them."""
    with store.session() as session:
        confirmations = session.execute(
            select(AuditEntry.entity_id, AuditEntry.actor).where(
                AuditEntry.entity == "suggestion", AuditEntry.to_state == S.CONFIRMED.value
            )
        ).all()
        waiting = session.scalars(
            select(Suggestion.id).where(Suggestion.state.in_([S.CONFIRMED, S.FAILED]))
        ).all()
    assert {actor for _, actor in confirmations} <= {"person"}
    assert set(waiting) <= {sid for sid, _ in confirmations}


def pick(store: Store, position: int) -> int | None:
    with store.session() as session:
        ids = session.scalars(select(Suggestion.id).order_by(Suggestion.id)).all()
    return ids[position % len(ids)] if ids else None


def play(store: Store, platform: ScriptedPlatform, clock: Clock, action: tuple[Any, ...]) -> None:
    rules = make_rules(per_digest_cap=4, daily_removal_cap=3, max_attempts=2)
    match action:
        case ("sync",):
            sync_account(store, ACCOUNT, platform, rules, clock)
        case ("evaluate",):
            evaluate_account(store, ACCOUNT.key, rules, clock())
        case ("execute",):
            execute_account(store, ACCOUNT, platform, rules, clock)
        case ("advance", hours):
            clock.advance(timedelta(hours=hours))
        case ("confirm", positions, via):
            ids = [i for i in (pick(store, p) for p in positions) if i is not None]
            decide(store, ids, S.CONFIRMED, via=via, now=clock())
        case ("keep", position):
            if (sid := pick(store, position)) is not None:
                decide(store, [sid], S.KEPT, via=Channel.CLI, now=clock())
        case ("snooze", position, hours):
            if (sid := pick(store, position)) is not None:
                until = clock() + timedelta(hours=hours)
                decide(store, [sid], S.SNOOZED, via=Channel.CLI, now=clock(), until=until)
        case ("lopper", position, to, via):
            if (sid := pick(store, position)) is not None:
                with contextlib.suppress(InvalidTransition), store.session() as session:
                    suggestion = get_suggestion(session, sid)
                    transition(session, suggestion, to, actor=LOPPER, via=via, now=clock())
        case ("undo", position):
            if (sid := pick(store, position)) is not None:
                with contextlib.suppress(InvalidTransition, RestoreError):
                    restore(store, sid, platform, via=Channel.CLI, now=clock())
        case ("fault", kind):
            error = {
                "blocked": Blocked("temporarily blocked"),
                "rate": RateLimited(clock() + timedelta(hours=1)),
                "transient": PlatformError("503"),
                "auth": AuthError("token revoked"),
            }[kind]
            platform.inject("remove", error)
        case ("exchange", who):
            platform.add_exchange(f"u{who}", clock() - timedelta(minutes=1))
        case ("unfollow", who):
            platform.drop_person(f"u{who}")


@settings(max_examples=30)
@given(steps=actions)
def test_only_person_confirmed_suggestions_are_removed(
    store: Store, steps: list[tuple[Any, ...]]
) -> None:
    wipe(store)
    clock = Clock(NOW)
    platform = scripted(clock, people=PEOPLE)
    platform.add_exchange("u1", NOW - timedelta(days=3))
    platform.on_remove = lambda user_id: live_confirmation(store, user_id)
    # Start from a queue, so that short sequences reach the executor too.
    play(store, platform, clock, ("sync",))
    play(store, platform, clock, ("evaluate",))

    for step in [*steps, ("advance", 24), ("execute",)]:
        play(store, platform, clock, step)
        only_person_confirmed_await_removal(store)

    asked = {args[0] for args in platform.called("remove")}
    event(f"remove() calls: {min(len(platform.called('remove')), 3)}")
    for user_id in asked:
        assert person_confirmed(store, str(user_id))
    with store.session() as session:
        removed = session.scalars(select(Suggestion).where(Suggestion.state == S.REMOVED)).all()
        for suggestion in removed:
            user_id = suggestion.connection.platform_user_id
            assert suggestion.id in person_confirmed(store, user_id)


def test_without_any_confirmation_nothing_is_ever_removed(store: Store, clock: Clock) -> None:
    platform = scripted(clock, people=PEOPLE)
    for step in [("sync",), ("evaluate",), ("execute",), ("advance", 48), ("execute",)]:
        play(store, platform, clock, step)
    for position in range(PEOPLE):
        play(store, platform, clock, ("lopper", position, S.CONFIRMED, Channel.DAEMON))
    play(store, platform, clock, ("execute",))

    assert platform.called("remove") == []
    assert len(platform.called("relationship")) == 0
