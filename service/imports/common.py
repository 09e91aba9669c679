"""The import runner shared by the exports of Facebook, LinkedIn and Instagram.

A reader turns an export into plain values (people as the export lists them, exchanges naming
the other person by name, link or user name); the runner matches those to connections and
writes everything through the same paths a sync uses (``save_people``, ``save_exchanges``,
``extend_coverage``), in **one transaction**: an export that turns out to be damaged halfway
through leaves the store exactly as it was.

An import is a unit. The messages of an export are read according to who the owner is, and
each thread (Facebook, Instagram) or messages file (LinkedIn) is a part with its own event id
prefix; what an earlier import of the account wrote for a part, within the span of time the
new export holds for it, is replaced by what the new export says: a corrected export (the
owner now known) leaves no wrong row behind, another zip of the same export (other threads)
touches nothing it does not hold, and the same export imported again changes nothing.

An export is a snapshot at its own date (its newest entry, or its files' dates where they
are later: a zip keeps the date it was made). One older than an export already imported adds its exchanges but leaves the connection list alone: an old list
would mark current connections vanished and bring dropped ones back.

The owner: a reader that cannot tell which participant of the messages is the account's
owner reads no messages (``refused``) and says which names it hesitates between; the
connections still import, and no coverage is claimed, so nobody is judged on half the data.

Matching (``Resolver``): the strongest key wins — a profile link or user name where the
export has one, else the name. Two friends with the same name stay two connections (their
keys carry the day the friendship began, and their handles say they share the name), and an
exchange that names only that name counts for both: the doubt falls on keeping them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, Protocol

from sqlalchemy import Column, MetaData, String, Table, delete, exists, or_, select, text
from sqlalchemy.orm import Session

from service.config import Account as AccountConfig
from service.config import Rules
from service.imports.export import Export, ExportError, open_export
from service.imports.names import clean_name, homonym_key, name_key
from service.logs import get_logger
from service.model import Direction, Kind, Span
from service.platforms.base import Exchange, Person
from service.removals import settle_manual_removals
from service.store import Store, periods
from service.store.models import Account, Connection, Interaction, SyncCursor, SyncRun
from service.sync import (
    IMPORT_STREAM,
    SyncReport,
    close_listing,
    ensure_account,
    extend_coverage,
    save_exchanges,
    save_people,
)

log = get_logger("lopper.imports")
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


SNAPSHOT = "export-snapshot"  # the sync_cursors row holding the newest export listing applied


def owner_unknown(where: str, candidates: Sequence[str], remedy: str) -> str:
    """The line that refuses a messages part whose owner the export does not settle."""
    names = ", ".join(repr(c) for c in candidates) if candidates else "nobody stands out"
    return (
        f"messages not imported: lopper cannot tell which participant of {where} is you "
        f"(candidates: {names}); import again with --me 'YOUR NAME' as the messages write it, "
        f"or {remedy}. Connections were imported; verdicts wait for the messages."
    )


class Reader(Protocol):
    platform: str
    handle: str | None  # the account's handle, set by the runner: a hint to who "you" are
    me: str | None  # the owner's name as given with --me, set by the runner
    refused: str | None  # set by ``exchanges`` when the messages could not be read

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
    exchanges_replaced: int = 0  # rows of an earlier import of this export's parts, replaced
    refused: str | None = None  # the messages part was not read: why
    older: bool = False  # an export older than one imported before: its listing not applied
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
                    # Mutual: the relationship dates from when you followed them.
                    connected_since=(
                        person.since
                        if person.following and not first.following and person.since
                        else first.connected_since or person.since
                    ),
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
    me: str | None = None,
    start: Callable[[int], None] | None = None,
    tick: Tick | None = None,
) -> ImportReport:
    """Read one export into the store, all of it or nothing.

    ``me``: the owner's name as the messages write it, when the export cannot tell.
    ``start`` is told the number of bytes the import will read, ``tick`` each step of it.
    """
    if config.platform != reader.platform:
        raise ExportError(
            f"{config.key} is a {config.platform} account; this is the {reader.platform} import"
        )
    report = ImportReport(config.key, str(path))
    reader.handle = config.handle
    reader.me = me
    advance: Tick = tick or (lambda _n: None)
    with open_export(path) as export:
        members = reader.members(export)
        export.check(members)  # a compression bomb is refused before anything is read
        if start is not None:
            start(export.total_size(members))
        with store.session() as session:
            account = ensure_account(session, config, now)
            account_id = account.id
            resolver = Resolver(session, account_id)
            listing = reader.listing(export, advance)
            people = resolver.assign(listing.people if listing is not None else [])
            report.shared_names = resolver.shared if listing is not None else 0
            newest = max((p.connected_since for p in people if p.connected_since), default=None)
            earliest: datetime | None = None
            latest: datetime | None = None
            parts: dict[str, tuple[datetime, datetime]] = {}
            _begin_said(session)
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
                    latest = last if latest is None else max(latest, last)
                    _note_parts(session, parts, exchanges)
                report.exchanges_read += len(batch)
                report.exchanges_new += save_exchanges(session, account_id, exchanges)
            report.exchanges_replaced = _replace_parts(session, account_id, parts)
            report.refused = reader.refused
            # An export is dated by its newest entry or its files' dates, whichever is later.
            # Never later than now: a zip dated in the future would hold back every later list.
            taken = max((t for t in (newest, latest, export.dated) if t is not None), default=None)
            taken = min(taken, now) if taken is not None else None
            if listing is not None:
                report.connections_seen = len(people)
                applied = _snapshot(session, account_id, taken, now)
                if applied is not None:
                    report.older = True
                    assert taken is not None
                    report.notes.append(
                        f"this export (of {taken:%Y-%m-%d}) is older than one imported before "
                        f"(of {applied:%Y-%m-%d}): its exchanges were added, its connection list "
                        "was not applied"
                    )
                else:
                    label = uuid.uuid4().hex[:12]
                    for chunk in _chunks(people, BATCH):
                        report.connections_new += save_people(
                            session, account_id, chunk, label, now
                        )
                    if listing.complete:
                        sync = SyncReport(config.key, label)
                        close_listing(session, account_id, label, rules, now, sync)
                        report.connections_vanished = sync.connections_vanished
                        report.brake = sync.brake
                        if sync.brake is None:
                            report.manual_closed, report.asked_again = settle_manual_removals(
                                session, account_id, rules, now, "import"
                            )
            if reader.refused is not None:
                pass  # no coverage: the messages this export holds were not read
            elif earliest is not None and latest is not None and earliest <= now:
                # The export holds every exchange it knows of up to its newest item.
                end = max(latest, newest) if newest is not None else latest
                report.coverage = Span(earliest, min(end, now))
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
                "; ".join(n for n in (report.brake, report.refused) if n) or None,
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
        replaced=report.exchanges_replaced,
        messages_refused=report.refused is not None,
    )
    return report


# The event ids one import gives, kept beside the store for the length of its transaction:
# an export holds millions, which in memory would grow with its size.
_SAID = Table(
    "lopper_import_said",
    MetaData(),
    Column("event_id", String(255), primary_key=True),
    prefixes=["TEMPORARY"],
)


def _begin_said(session: Session) -> None:
    session.execute(
        text(
            "CREATE TEMPORARY TABLE IF NOT EXISTS lopper_import_said "
            "(event_id VARCHAR(255) PRIMARY KEY)"
        )
    )
    session.execute(delete(_SAID))


def _part_of(event_id: str) -> str | None:
    """The part of an export an exchange belongs to, for replacing an earlier reading of it.

    Messages are read according to who the owner is, so they are what a corrected export
    corrects: each Facebook or Instagram thread is a part of its own (an export split over
    several zips holds each thread, or each stretch of it, once), LinkedIn's one messages
    file another. Comments and reactions read the same whoever the owner is: never replaced.
    """
    kind, _, rest = event_id.partition(":")
    if kind in ("fbm", "igm"):
        return f"{kind}:{rest.partition(':')[0]}"
    return kind if kind == "lim" else None


def _note_parts(
    session: Session, parts: dict[str, tuple[datetime, datetime]], batch: list[Exchange]
) -> None:
    """The event ids of the replaceable parts the export gives (into the temporary table),
    and for each part the span of time it holds."""
    said: list[str] = []
    for exchange in batch:
        part = _part_of(exchange.event_id)
        if part is None:
            continue
        said.append(exchange.event_id)
        at = exchange.occurred_at
        held = parts.get(part)
        if held is None:
            parts[part] = (at, at)
        elif at < held[0] or at > held[1]:
            parts[part] = (min(held[0], at), max(held[1], at))
    if not said:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        rows = [{"event_id": e} for e in said]
        from sqlalchemy.dialects import postgresql  # not loaded by a SQLite store

        session.execute(postgresql.insert(_SAID).on_conflict_do_nothing(), rows)
    else:  # the driver's own executemany: a third of the time of the ORM's
        connection.exec_driver_sql(
            "INSERT OR IGNORE INTO lopper_import_said (event_id) VALUES (?)",
            [(e,) for e in said],
        )


def _replace_parts(
    session: Session, account_id: int, parts: dict[str, tuple[datetime, datetime]]
) -> int:
    """Remove what earlier imports wrote for these parts, in the span this export holds for
    each, that this export no longer says: it replaces the earlier reading of the same data.

    One pass over the account's stored messages from exports that this one did not give
    again (normally none); which of them belong to a part of this export is decided here."""
    kinds = sorted({part.partition(":")[0] for part in parts})
    stale: list[int] = []
    touched: set[str] = set()
    if kinds:
        rows = session.connection().execute(
            select(
                Interaction.id,
                Interaction.event_id,
                Interaction.occurred_at,
                Interaction.counterpart_id,
            ).where(
                Interaction.account_id == account_id,
                or_(*(Interaction.event_id.startswith(k + ":") for k in kinds)),
                ~exists().where(_SAID.c.event_id == Interaction.event_id),
            )
        )
        for row_id, event_id, at, counterpart in rows:
            part = _part_of(event_id)
            span = parts.get(part) if part is not None else None
            if span is not None and span[0] <= at <= span[1]:
                stale.append(row_id)
                touched.add(counterpart)
    for i in range(0, len(stale), 1000):
        session.execute(
            delete(Interaction)
            .where(Interaction.id.in_(stale[i : i + 1000]))
            .execution_options(synchronize_session=False)
        )
    # The summaries of the persons whose exchanges went, from what remains.
    periods.recompute(session, account_id, touched)
    session.execute(delete(_SAID))
    return len(stale)


def _snapshot(
    session: Session, account_id: int, taken: datetime | None, now: datetime
) -> datetime | None:
    """The date of a newer export whose listing was applied, when this one is older; else
    None, and this export's date is kept as the newest applied."""
    row = session.get(SyncCursor, (account_id, SNAPSHOT))
    applied = datetime.fromisoformat(row.cursor) if row is not None and row.cursor else None
    if taken is None:
        return None  # an export with no date at all: nothing to compare, as before
    if applied is not None and taken < applied:
        return applied
    if row is None:
        row = SyncCursor(account_id=account_id, stream=SNAPSHOT)
        session.add(row)
    row.cursor = taken.isoformat()
    row.updated_at = now
    return None


def _chunks(items: Sequence[Person], size: int) -> Iterable[Sequence[Person]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
