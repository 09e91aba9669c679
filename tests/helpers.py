"""Plain helpers for the tests: a clock you move by hand, a scripted network, store counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fakes.scripted import ScriptedPlatform
from sqlalchemy import delete, func, select

from service.config import Account as AccountConfig
from service.config import Rules
from service.store import Store
from service.store.models import (
    AuditEntry,
    Base,
    Connection,
    Coverage,
    Interaction,
    Suggestion,
    SyncCursor,
)

# Whole seconds: the store keeps seconds, so comparisons after a round trip stay exact.
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta = DAY) -> datetime:
        self.now += delta
        return self.now


ACCOUNT = AccountConfig(platform="x", handle="@harry")


def make_rules(**overrides: Any) -> Rules:
    values: dict[str, Any] = {
        "window": timedelta(days=180),
        "grace": timedelta(days=30),
        "stale_after": timedelta(days=7),
        "brake_min": 3,
        "brake_share": 0.3,
        "per_digest_cap": 50,
        "daily_removal_cap": 25,
    }
    values.update(overrides)
    return Rules(**values)


def scripted(clock: Clock, people: int = 0, **kwargs: Any) -> ScriptedPlatform:
    """A network connected long before the window, with a year and more of history."""
    platform = ScriptedPlatform(clock=clock, history_start=NOW - timedelta(days=400), **kwargs)
    for index in range(1, people + 1):
        platform.add_person(f"u{index}", since=NOW - timedelta(days=365))
    return platform


def wipe(store: Store) -> None:
    """Empty every table, for property tests that reuse one store across examples."""
    with store.session() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))


def snapshot(store: Store) -> dict[str, Any]:
    """Every count a repeated sync must leave alone, and the coverage spans themselves."""
    with store.session() as session:

        def count(model: Any) -> int:
            return session.scalar(select(func.count()).select_from(model)) or 0

        return {
            "connections": count(Connection),
            "connection_states": sorted(
                (c.platform_user_id, c.state.value, c.following, c.followed_by)
                for c in session.scalars(select(Connection))
            ),
            "interactions": count(Interaction),
            "event_ids": sorted(session.scalars(select(Interaction.event_id))),
            "coverage": sorted(
                (c.stream, c.covered_from, c.covered_to) for c in session.scalars(select(Coverage))
            ),
        }


def reset_cursors(store: Store) -> None:
    with store.session() as session:
        session.execute(delete(SyncCursor))


def states(store: Store) -> dict[str, str]:
    """Suggestion state by the connection's platform id."""
    with store.session() as session:
        rows = session.execute(
            select(Connection.platform_user_id, Suggestion.state).join(
                Connection, Suggestion.connection_id == Connection.id
            )
        )
        return {user_id: state.value for user_id, state in rows}


def suggestion_ids(store: Store) -> dict[str, int]:
    with store.session() as session:
        rows = session.execute(
            select(Connection.platform_user_id, Suggestion.id).join(
                Connection, Suggestion.connection_id == Connection.id
            )
        )
        return {user_id: suggestion_id for user_id, suggestion_id in rows}


def audit(store: Store, suggestion_id: int | None = None) -> list[AuditEntry]:
    with store.session() as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if suggestion_id is not None:
            query = query.where(
                AuditEntry.entity == "suggestion", AuditEntry.entity_id == suggestion_id
            )
        return list(session.scalars(query))
