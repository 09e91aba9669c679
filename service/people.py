"""One person, several accounts: links between connections on different platforms.

When rules count exchanges, an exchange with the same person on any linked account counts
too (``rules.count_linked``), so talking to someone on Mastodon keeps them on X. Links are
made by the person (``lopper link``); lopper only *suggests* them, from identical handles.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.config import Rules
from service.errors import LopperError, NotFound
from service.model import Channel, ConnectionState
from service.rules import NO_EXCHANGES, ExchangeStats, combine
from service.store import Store
from service.store.models import Account, AuditEntry, Connection, PersonLink
from service.store.queries import exchange_stats


class LinkError(LopperError):
    exit_code = 65


def parse_ref(ref: str) -> tuple[str, str]:
    """``x:@ana`` -> ("x", "@ana"); the handle may itself hold colons or an instance."""
    platform, sep, handle = ref.partition(":")
    if not sep or not platform or not handle:
        raise LinkError(f"{ref!r}: expected PLATFORM:HANDLE, e.g. mastodon:@ana@example.social")
    return platform, handle


def _find(session: Session, ref: str) -> Connection:
    platform, handle = parse_ref(ref)
    # The handle as written, whatever its case: `_` and `%` are letters, not patterns.
    found = list(
        session.scalars(
            select(Connection)
            .join(Connection.account)
            .where(
                Account.platform == platform,
                func.lower(Connection.handle) == func.lower(handle),
            )
        )
    )
    if not found:
        raise NotFound(f"no connection {handle} on {platform} (has that account been synced?)")
    if len({c.account_id for c in found}) > 1:
        accounts = ", ".join(sorted({c.account.key for c in found}))
        raise LinkError(f"{ref} is a connection of several accounts ({accounts}); all are linked")
    return found[0]


def link(store: Store, refs: list[str], *, now: datetime, via: str = "person") -> int:
    """Link connections as one person; returns the person's id. Existing links merge."""
    if len(refs) < 2:
        raise LinkError(
            "give at least two connections to link, e.g. x:@ana mastodon:@ana@example.social"
        )
    with store.session() as session:
        connections = [_find(session, ref) for ref in refs]
        existing = sorted({c.person_id for c in connections if c.person_id is not None})
        if existing:
            person_id = existing[0]
            if len(existing) > 1:
                session.execute(
                    update(Connection)
                    .where(Connection.person_id.in_(existing[1:]))
                    .values(person_id=person_id)
                )
        else:
            person = PersonLink(
                label=connections[0].display_name or connections[0].handle, created_at=now, via=via
            )
            session.add(person)
            session.flush()
            person_id = person.id
        for connection in connections:
            connection.person_id = person_id
        session.add(
            AuditEntry(
                at=now,
                actor="person" if via == "person" else "lopper",
                via=Channel.CLI,
                entity="person",
                entity_id=person_id,
                account_id=None,
                from_state=None,
                to_state="linked",
                detail=", ".join(refs),
            )
        )
        return person_id


def unlink(store: Store, ref: str, *, now: datetime) -> None:
    with store.session() as session:
        connection = _find(session, ref)
        if connection.person_id is None:
            raise LinkError(f"{ref} is not linked to anyone")
        person_id = connection.person_id
        connection.person_id = None
        session.add(
            AuditEntry(
                at=now,
                actor="person",
                via=Channel.CLI,
                entity="person",
                entity_id=person_id,
                account_id=None,
                from_state="linked",
                to_state="unlinked",
                detail=ref,
            )
        )


@dataclass(frozen=True)
class LinkSuggestion:
    name: str
    refs: tuple[str, ...]


def _bare(handle: str) -> str:
    """The user name alone: ``@ana@example.social`` and ``@ana`` both give ``ana``."""
    name = handle.strip().lstrip("@").split("@")[0]
    return name.lower()


def suggest_links(store: Store) -> list[LinkSuggestion]:
    """Connections on different platforms with the same user name, not linked yet."""
    with store.session() as session:
        rows = session.execute(
            select(Account.platform, Connection.handle, Connection.person_id)
            .join(Connection.account)
            .where(Connection.state == ConnectionState.ACTIVE)
        ).all()
    groups: dict[str, dict[str, tuple[str, int | None]]] = defaultdict(dict)
    for platform, handle, person_id in rows:
        bare = _bare(handle)
        if len(bare) >= 3:
            groups[bare].setdefault(platform, (handle, person_id))
    found = []
    for bare, by_platform in sorted(groups.items()):
        if len(by_platform) < 2:
            continue
        people = {person for _handle, person in by_platform.values()}
        if len(people) == 1 and None not in people:
            continue  # already one person
        refs = tuple(f"{p}:{h}" for p, (h, _) in sorted(by_platform.items()))
        found.append(LinkSuggestion(bare, refs))
    return found


def linked_counterparts(session: Session, account_id: int) -> dict[str, list[tuple[int, str]]]:
    """For each linked connection of the account: the same person on the other accounts."""
    mine = session.execute(
        select(Connection.platform_user_id, Connection.person_id).where(
            Connection.account_id == account_id, Connection.person_id.is_not(None)
        )
    ).all()
    if not mine:
        return {}
    by_person: dict[int, list[str]] = defaultdict(list)
    for user_id, person_id in mine:
        if person_id is not None:
            by_person[person_id].append(user_id)
    others = session.execute(
        select(Connection.person_id, Connection.account_id, Connection.platform_user_id).where(
            Connection.person_id.in_(list(by_person)), Connection.account_id != account_id
        )
    ).all()
    result: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for person_id, other_account, other_user in others:
        for user_id in by_person.get(person_id or 0, ()):
            result[user_id].append((other_account, other_user))
    return dict(result)


def with_linked(
    session: Session,
    account_id: int,
    stats: dict[str, ExchangeStats],
    rules: Rules,
    now: datetime,
) -> dict[str, ExchangeStats]:
    """Add to each linked connection's stats the exchanges with the same person elsewhere."""
    links = linked_counterparts(session, account_id)
    if not links:
        return stats
    wanted: dict[int, set[str]] = defaultdict(set)
    for pairs in links.values():
        for other_account, other_user in pairs:
            wanted[other_account].add(other_user)
    elsewhere = {
        other_account: exchange_stats(session, other_account, rules, now, sorted(users))
        for other_account, users in wanted.items()
    }
    merged = dict(stats)
    for user_id, pairs in links.items():
        total = merged.get(user_id, NO_EXCHANGES)
        for other_account, other_user in pairs:
            seen = elsewhere[other_account].get(other_user)
            if seen is not None:
                total = combine(total, seen)
        merged[user_id] = total
    return merged
