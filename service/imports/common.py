"""The import runner shared by the exports of Facebook, LinkedIn and Instagram.

A reader turns an export into plain values (people as the export lists them, exchanges naming
the other person by name, link or user name); the runner matches those to connections and
writes everything through the same paths a sync uses (``save_people``, ``save_exchanges``,
``extend_coverage``), in **one transaction**: an export that turns out to be damaged halfway
through leaves the store exactly as it was.

Matching (``Resolver``): the strongest key wins — a profile link or user name where the
export has one, else the name. Two friends with the same name stay two connections (their
keys carry the day the friendship began, and their handles say they share the name), and an
exchange that names only that name counts for both: the doubt falls on keeping them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Account as AccountConfig
from service.config import Rules
from service.imports.export import Export, ExportError, open_export
from service.imports.names import clean_name, homonym_key, name_key
from service.model import Direction, Kind
from service.platforms.base import Exchange, Person, Span
from service.removals import settle_manual_removals
from service.store import Store
from service.store.models import Account, Connection, SyncRun
from service.sync import (
    IMPORT_STREAM,
    SyncReport,
    close_listing,
    ensure_account,
    extend_coverage,
    save_exchanges,
    save_people,
)

log = structlog.get_logger("lopper.imports")
Tick = Callable[[int], None]  # bytes of the export read since the last call
BATCH = 5000


@dataclass(frozen=True)
class ListedPerson:
    """A connection as the export lists it."""

    name: str
    key: str | None = None  # a profile link or user name: stronger than the name
    following: bool = False
    followed_by: bool = False
    since: datetime | None = None
    profile_url: str | None = None


class Named(NamedTuple):
    """An exchange whose other person the export names (by key where it can, else by name).

    A tuple rather than a dataclass: a large export makes hundreds of thousands of them.
    """

    event_id: str
    name: str
    kind: Kind
    direction: Direction
    at: datetime
    key: str | None = None


@dataclass
class Listing:
    people: list[ListedPerson]
    complete: bool  # the export's full list: whoever is not in it is no longer connected


class Reader(Protocol):
    platform: str
    handle: str | None  # the account's handle, set by the runner: a hint to who "you" are

    def members(self, export: Export) -> list[str]:
        """Every member this reader will read (for the progress bar); ExportError if none."""
        ...

    def listing(self, export: Export, tick: Tick) -> Listing | None: ...

    def exchanges(self, export: Export, tick: Tick) -> Iterator[Sequence[Named]]: ...


@dataclass
class ImportReport:
    account: str
    path: str
    connections_seen: int = 0
    connections_new: int = 0
    connections_vanished: int = 0
    exchanges_read: int = 0
    exchanges_new: int = 0
    shared_names: int = 0  # connections that share their name with another
    unmatched: int = 0  # exchanges with someone who is not a connection
    coverage: Span | None = None
    manual_closed: int = 0
    asked_again: int = 0
    brake: str | None = None
    notes: list[str] = field(default_factory=list)


# --- matching ------------------------------------------------------------------------------


class Resolver:
    """Who an export means, as connection keys of the account."""

    def __init__(self, session: Session, account_id: int) -> None:
        self.by_name: dict[str, list[str]] = {}
        self.keys: set[str] = set()
        self._resolved: dict[str, list[str]] = {}
        self._stored_since: dict[tuple[str, int | None], str] = {}
        self._stored_by_name: dict[str, list[str]] = {}
        for user_id, handle, display, since in session.execute(
            select(
                Connection.platform_user_id,
                Connection.handle,
                Connection.display_name,
                Connection.connected_since,
            ).where(Connection.account_id == account_id)
        ):
            name = name_key(display or handle)
            self._stored_by_name.setdefault(name, []).append(user_id)
            self._stored_since[(name, _epoch(since))] = user_id
            self.keys.add(user_id)

    def assign(self, listed: Sequence[ListedPerson]) -> list[Person]:
        """Keys for the people of a listing; those sharing a name are kept apart."""
        # Names shared by friends (people known by name who are connected both ways); someone
        # you only follow under a friend's name is that friend, already listed.
        counts: dict[str, int] = {}
        for person in listed:
            if person.key is None and person.followed_by:
                counts[name_key(person.name)] = counts.get(name_key(person.name), 0) + 1
        people: dict[str, Person] = {}
        ordinal: dict[str, int] = {}
        self.shared = 0
        for person in listed:
            name = clean_name(person.name)
            base = name_key(name)
            handle = name
            if person.key is not None:
                key = person.key
            elif not person.followed_by and counts.get(base):
                continue
            else:
                epoch = _epoch(person.since)
                stored = self._stored_since.get((base, epoch))
                if counts.get(base, 0) > 1:
                    self.shared += 1
                    n = ordinal[base] = ordinal.get(base, 0) + 1
                    key = stored or homonym_key(name, epoch if epoch is not None else n)
                    when = f"friends since {person.since:%Y-%m-%d}" if person.since else f"#{n}"
                    handle = f"{name} ({counts[base]} share this name; {when})"
                else:
                    stored_ids = self._stored_by_name.get(base, [])
                    key = stored or (stored_ids[0] if len(stored_ids) == 1 else base)
            if key in people:
                # Listed twice (a friend you also follow): one connection, both flags.
                first = people[key]
                people[key] = Person(
                    user_id=key,
                    handle=first.handle,
                    display_name=first.display_name,
                    profile_url=first.profile_url or person.profile_url,
                    following=first.following or person.following,
                    followed_by=first.followed_by or person.followed_by,
                    connected_since=first.connected_since or person.since,
                )
                continue
            people[key] = Person(
                user_id=key,
                handle=handle,
                display_name=name,
                profile_url=person.profile_url,
                following=person.following,
                followed_by=person.followed_by,
                connected_since=person.since,
            )
            self.by_name.setdefault(base, []).append(key)
        for key in people:
            self.keys.add(key)
        for name, ids in self._stored_by_name.items():
            if name not in self.by_name:
                self.by_name[name] = ids
        return list(people.values())

    def resolve(self, item: Named) -> list[str]:
        if item.key is not None and item.key in self.keys:
            return [item.key]
        cached = self._resolved.get(item.name)
        if cached is None:
            found = self.by_name.get(name_key(item.name))
            cached = self._resolved[item.name] = found or [item.key or name_key(item.name)]
        return cached


def _epoch(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


# --- the runner -----------------------------------------------------------------------------


def record_import_run(
    session: Session,
    account_id: int,
    now: datetime,
    path: str | Path,
    note: str | None,
    **counts: int,
) -> None:
    """An import is recorded as a run, as a sync is: `lopper status` shows it, and the daemon
    evaluates the account after it."""
    session.add(
        SyncRun(
            account_id=account_id,
            run_id=uuid.uuid4().hex[:12],
            started_at=now,
            finished_at=now,
            outcome="ok",
            detail=f"import of {Path(path).name}" + (f"; {note}" if note else ""),
            **counts,
        )
    )


def run_import(
    store: Store,
    config: AccountConfig,
    reader: Reader,
    path: Path,
    rules: Rules,
    now: datetime,
    *,
    start: Callable[[int], None] | None = None,
    tick: Tick | None = None,
) -> ImportReport:
    """Read one export into the store, all of it or nothing.

    ``start`` is told the number of bytes the import will read, ``tick`` each step of it.
    """
    if config.platform != reader.platform:
        raise ExportError(
            f"{config.key} is a {config.platform} account; this is the {reader.platform} import"
        )
    report = ImportReport(config.key, str(path))
    reader.handle = config.handle
    advance: Tick = tick or (lambda _n: None)
    with open_export(path) as export:
        members = reader.members(export)
        if start is not None:
            start(export.total_size(members))
        with store.session() as session:
            account = ensure_account(session, config, now)
            account_id = account.id
            resolver = Resolver(session, account_id)
            newest: datetime | None = None
            listing = reader.listing(export, advance)
            if listing is not None:
                people = resolver.assign(listing.people)
                report.shared_names = resolver.shared
                report.connections_seen = len(people)
                label = uuid.uuid4().hex[:12]
                for chunk in _chunks(people, BATCH):
                    report.connections_new += save_people(session, account_id, chunk, label, now)
                times = [p.connected_since for p in people if p.connected_since]
                newest = max(times, default=None)
                if listing.complete:
                    sync = SyncReport(config.key, label)
                    close_listing(session, account_id, label, rules, now, sync)
                    report.connections_vanished = sync.connections_vanished
                    report.brake = sync.brake
                    if sync.brake is None:
                        report.manual_closed, report.asked_again = settle_manual_removals(
                            session, account_id, rules, now, "import"
                        )
            else:
                resolver.assign([])
            earliest: datetime | None = None
            for batch in reader.exchanges(export, advance):
                exchanges: list[Exchange] = []
                append, resolve, known = exchanges.append, resolver.resolve, resolver.keys
                for item in batch:
                    keys = resolve(item)
                    if len(keys) == 1:
                        if keys[0] not in known:
                            report.unmatched += 1
                        append(Exchange(item.event_id, keys[0], item.kind, item.direction, item.at))
                        continue
                    for key in keys:  # a name several connections share: it counts for each
                        event = f"{item.event_id}>{key}"
                        append(Exchange(event, key, item.kind, item.direction, item.at))
                if batch:
                    first, last = min(i.at for i in batch), max(i.at for i in batch)
                    earliest = first if earliest is None else min(earliest, first)
                    newest = last if newest is None else max(newest, last)
                report.exchanges_read += len(batch)
                report.exchanges_new += save_exchanges(session, account_id, exchanges)
            if earliest is not None and newest is not None and earliest <= now:
                # The export holds every exchange it knows of up to its newest item.
                report.coverage = Span(earliest, min(newest, now))
                extend_coverage(session, account_id, IMPORT_STREAM, "import", report.coverage)
                row = session.get_one(Account, account_id)
                if IMPORT_STREAM not in (row.streams or []):
                    row.streams = [*(row.streams or []), IMPORT_STREAM]
            elif earliest is None:
                report.notes.append("no exchanges in this export: verdicts wait for some history")
            else:
                report.notes.append("every exchange in this export is dated in the future")
            report.notes.extend(getattr(reader, "notes", ()))
            # Recorded as a run, like a sync: `lopper status` shows it, and the daemon
            # evaluates the account after it (an export-only account has no other runs).
            session.get_one(Account, account_id).last_sync_at = now
            record_import_run(
                session,
                account_id,
                now,
                path,
                report.brake,
                connections_seen=report.connections_seen,
                connections_new=report.connections_new,
                connections_vanished=report.connections_vanished,
                interactions_new=report.exchanges_new,
            )
    log.info(
        "export imported",
        account=config.key,
        connections=report.connections_seen,
        vanished=report.connections_vanished,
        exchanges=report.exchanges_read,
        new=report.exchanges_new,
    )
    return report


def _chunks(items: Sequence[Person], size: int) -> Iterable[Sequence[Person]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def load_json(export: Export, member: str, tick: Tick) -> object:
    """One member parsed as JSON; damage or a cut-off file is an error naming the member."""
    with export.open(member) as stream, export.reading(member):
        data = stream.read()
    tick(export.size(member))
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        raise ExportError(f"{export.describe(member)}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ExportError(
            f"{export.describe(member)}: not valid JSON at line {exc.lineno}, column {exc.colno} "
            f"({exc.msg}); the file may be cut short: download the export again"
        ) from None


def records(data: object, member: str, export: Export, *keys: str) -> list[dict[str, Any]]:
    """The list of records of a member: the value of the first of ``keys`` it has, or the
    member itself when it is a plain list (newer exports dropped the wrapping object)."""
    found: object = data
    if isinstance(data, dict):
        found = next((data[k] for k in keys if k in data), None)
        if found is None:
            # Key names gain a suffix with each format generation (friends, friends_v2...).
            found = next(
                (v for k, v in data.items() if isinstance(v, list) and k.startswith(keys)), None
            )
    if not isinstance(found, list):
        wanted = " or ".join(keys)
        raise ExportError(f"{export.describe(member)}: expected a list under {wanted}")
    return [r for r in found if isinstance(r, dict)]
