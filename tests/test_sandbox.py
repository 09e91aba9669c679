"""The core against the real sandbox platform: the whole flow, repeatable from a seed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from helpers import Clock, make_rules, reset_cursors, snapshot, states, suggestion_ids
from sqlalchemy import select

from service.config import Account as AccountConfig
from service.config import SandboxOptions
from service.model import Channel, ConnectionState, SuggestionState
from service.platforms import build_adapter
from service.platforms.base import Platform
from service.platforms.sandbox import SandboxPlatform
from service.removals import execute_account, restore
from service.store import Store
from service.store.models import Connection, Suggestion
from service.suggestions import decide, evaluate_account, pending_ids
from service.sync import sync_account

SANDBOX = AccountConfig(
    platform="sandbox", handle="@demo", sandbox=SandboxOptions(size=200, seed=11)
)


def sandbox(tmp_path: Path, clock: Clock) -> SandboxPlatform:
    adapter = build_adapter(SANDBOX, tmp_path, clock=clock)
    assert isinstance(adapter, SandboxPlatform)
    assert isinstance(adapter, Platform)
    return adapter


def test_sandbox_sync_is_idempotent(store: Store, clock: Clock, tmp_path: Path) -> None:
    rules = make_rules()
    platform = sandbox(tmp_path, clock)
    first = sync_account(store, SANDBOX, platform, rules, clock)
    before = snapshot(store)
    assert first.outcome == "ok"
    assert first.interactions_new == before["interactions"] > 0

    again = sync_account(store, SANDBOX, platform, rules, clock)
    reset_cursors(store)
    from_scratch = sync_account(store, SANDBOX, platform, rules, clock)

    assert again.interactions_new == from_scratch.interactions_new == 0
    assert snapshot(store) == before


def test_sandbox_is_the_same_network_from_the_same_seed(
    make_store: Callable[[], Store], clock: Clock, tmp_path: Path
) -> None:
    one, two = make_store(), make_store()
    rules = make_rules()
    sync_account(one, SANDBOX, sandbox(tmp_path / "a", clock), rules, clock)
    sync_account(two, SANDBOX, sandbox(tmp_path / "b", clock), rules, clock)

    assert snapshot(one) == snapshot(two)


def test_sandbox_days_pass_without_double_counting(
    make_store: Callable[[], Store], clock: Clock, tmp_path: Path
) -> None:
    daily, once = make_store(), make_store()
    rules = make_rules()
    platform = sandbox(tmp_path, clock)
    start = clock.now
    for _ in range(3):
        sync_account(daily, SANDBOX, platform, rules, clock)
        clock.advance(timedelta(hours=17))
    sync_account(daily, SANDBOX, platform, rules, clock)
    sync_account(once, SANDBOX, platform, rules, clock)

    assert snapshot(daily)["event_ids"] == snapshot(once)["event_ids"]
    assert [span[1:] for span in snapshot(daily)["coverage"]] == [
        (start - timedelta(days=400) - timedelta(hours=12), clock.now)
    ]


def test_sandbox_flow_from_sync_to_removal_and_undo(
    store: Store, clock: Clock, tmp_path: Path
) -> None:
    rules = make_rules(per_digest_cap=10)
    platform = sandbox(tmp_path, clock)
    sync_account(store, SANDBOX, platform, rules, clock)
    report = evaluate_account(store, SANDBOX.key, rules, clock())
    assert report.queued == 10
    assert report.verdicts.get("flag", 0) > 10
    chosen = pending_ids(store)[:3]

    decide(store, chosen, SuggestionState.CONFIRMED, via=Channel.CLI, now=clock())
    executed = execute_account(store, SANDBOX, platform, rules, clock)

    assert sorted(executed.removed) == sorted(chosen)
    removed_users = {u for u, sid in suggestion_ids(store).items() if sid in chosen}
    clock.advance(timedelta(hours=6))
    sync_account(store, SANDBOX, platform, rules, clock)
    with store.session() as session:
        rows = session.scalars(
            select(Connection).where(Connection.platform_user_id.in_(removed_users))
        ).all()
    assert all(not c.following for c in rows)
    assert all(c.state is not ConnectionState.ACTIVE or c.followed_by for c in rows)

    restore(store, chosen[0], platform, via=Channel.CLI, now=clock())
    clock.advance(timedelta(hours=6))
    sync_account(store, SANDBOX, platform, rules, clock)
    with store.session() as session:
        back = session.scalars(
            select(Connection).where(Connection.id == _connection_of(store, chosen[0]))
        ).one()
    assert (back.state, back.following, back.protected) == (ConnectionState.ACTIVE, True, True)
    assert list(states(store).values()).count("removed") == 2


def _connection_of(store: Store, suggestion_id: int) -> int:
    with store.session() as session:
        return session.get_one(Suggestion, suggestion_id).connection_id


def test_sandbox_remembers_removals_across_restarts(
    store: Store, clock: Clock, tmp_path: Path
) -> None:
    rules = make_rules()
    platform = sandbox(tmp_path, clock)
    sync_account(store, SANDBOX, platform, rules, clock)
    evaluate_account(store, SANDBOX.key, rules, clock())
    chosen = pending_ids(store)[0]
    decide(store, [chosen], SuggestionState.CONFIRMED, via=Channel.CLI, now=clock())
    execute_account(store, SANDBOX, platform, rules, clock)
    user_id = {sid: u for u, sid in suggestion_ids(store).items()}[chosen]
    assert not platform.relationship(user_id).connected

    restarted = sandbox(tmp_path, clock)

    assert not restarted.relationship(user_id).connected
    assert restarted.remove(user_id).already_done
