"""Sync: adapter pages into the store, a few pages per transaction.

Pages are written together with the cursor that follows the last of them and the coverage
they add, so a crash between two writes loses nothing and a restart resumes where the last
commit left off (pages read but not yet written are read again).
Exchanges are keyed by the platform's own id: fetching a page twice changes no count.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Table,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from service import costs
from service.config import Account as AccountConfig
from service.config import Rules
from service.logs import get_logger, scrub
from service.model import CONNECTIONS, ConnectionState, Span, Unseen
from service.platforms.base import (
    AuthError,
    Exchange,
    InteractionPage,
    Person,
    Platform,
    PlatformError,
    RateLimited,
    Unsupported,
)
from service.removals import settle_manual_removals
from service.rules import newest_in_grace
from service.store import Store, periods
from service.store.models import Account, Connection, Coverage, SyncCursor, SyncRun
from service.store.types import to_epoch

log = get_logger("lopper.sync")

IMPORT_STREAM = "export"  # coverage streams of data-export imports start with this
# Exchanges read are written together once there are this many, or once the first of them was
# read this long ago (see _sync_stream).
BATCH_EXCHANGES = 20_000
BATCH_SECONDS = 2.0
_ANALYZE_AFTER = 2000  # new connections in one sync before PostgreSQL's statistics are renewed
_Page = TypeVar("_Page")
Clock = Callable[[], datetime]
Progress = Callable[[str, int], None]

_INTERACTION_COLUMNS = (
    "account_id",
    "event_id",
    "counterpart_id",
    "kind",
    "direction",
    "occurred_at",
)
# SQLite: the statement as the driver takes it, fed plain tuples. Through a Core insert each
# value of each row would go through its column type's conversion again (a fifth of the time).
_SQLITE_INSERT_EXCHANGE = (
    f"INSERT INTO interactions ({', '.join(_INTERACTION_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (account_id, event_id) DO NOTHING"
)
# The rows a page inserted are those past the largest id before it: SQLite gives a new row
# the largest id plus one, and no other writer can come between (one writer at a time, and a
# transaction whose snapshot another has since written past cannot write at all).
_SQLITE_NEWEST_ID = "SELECT COALESCE(MAX(id), 0) FROM interactions"
_SQLITE_SUMMARIES = (
    f"{periods.INSERT} "
    + periods.each(
        "(SELECT counterpart_id, kind, direction, occurred_at FROM interactions "
        "WHERE id > :after) AS inserted"
    )
    + f" {periods.UPSERT}"
)
# PostgreSQL: one statement per page. The rows come as one array per column (an executemany
# sends one multi-row VALUES statement per thousand rows, which the driver parses again each
# time: three times slower); the rows inserted (RETURNING: not those already stored) are
# summed into the period summaries by a second INSERT in the same statement.
_POSTGRESQL_SAVE = f"""
    WITH page AS (
        SELECT * FROM unnest(CAST(:event_ids AS TEXT[]), CAST(:counterparts AS TEXT[]),
                             CAST(:kinds AS TEXT[]), CAST(:directions AS TEXT[]),
                             CAST(:times AS BIGINT[]))
                   AS page(event_id, counterpart_id, kind, direction, occurred_at)
    ), inserted AS (
        INSERT INTO interactions ({", ".join(_INTERACTION_COLUMNS)})
        SELECT :account, event_id, counterpart_id, kind, direction, occurred_at FROM page
        ON CONFLICT (account_id, event_id) DO NOTHING
        RETURNING counterpart_id, kind, direction, occurred_at
    ), summed AS (
        {periods.INSERT} {periods.summarize("inserted")} {periods.UPSERT}
    )
    SELECT count(*) FROM inserted
"""


@dataclass
class SyncReport:
    account: str
    run_id: str
    outcome: str = "ok"  # ok | partial | paused | failed
    connections_seen: int = 0  # people listed in this run (a mutual is one)
    people_seen: int = 0  # people listed in this run
    connections_new: int = 0
    connections_vanished: int = 0
    brake: str | None = None
    interactions_new: int = 0
    streams: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unseen: list[Unseen] = field(default_factory=list)  # kinds the adapter cannot see
    reading: str | None = None  # the stream being read, while the sync runs


def ensure_account(session: Session, config: AccountConfig, now: datetime) -> Account:
    account = session.scalar(select(Account).where(Account.key == config.key))
    if account is None:
        account = Account(
            key=config.key,
            platform=config.platform,
            handle=config.handle,
            streams=[],
            created_at=now,
        )
        session.add(account)
        session.flush()
    return account


def sync_account(
    store: Store,
    config: AccountConfig,
    adapter: Platform,
    rules: Rules,
    clock: Clock,
    *,
    run_id: str | None = None,
    progress: Progress | None = None,
    relist_after: timedelta | None = None,
) -> SyncReport:
    """Fetch the account's connections and exchanges into the store.

    A complete listing of connections newer than ``relist_after`` is not fetched again (on a
    large network it costs more requests than everything else), and the streams run least
    recently synced first, so that a rate limit never starves the same stream run after run.
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    report = SyncReport(config.key, run_id)
    if adapter.traits.export_only:
        # No API to ask: its data comes from `lopper import`, and only from there.
        report.outcome = "skipped"
        report.streams[CONNECTIONS] = (
            f"read from its data export: lopper import {config.platform} PATH"
        )
        return report
    with store.session() as session:
        account = ensure_account(session, config, clock())
        account_id = account.id
        run = SyncRun(account_id=account_id, run_id=run_id, started_at=clock())
        session.add(run)
        session.flush()
        run_pk = run.id
    try:
        identity = adapter.whoami()
        streams = list(adapter.interaction_streams())
        with store.session() as session:
            account = session.get_one(Account, account_id)
            if account.platform_user_id not in (None, identity.user_id):
                raise PlatformError(
                    f"the credentials belong to {identity.handle}, not to {config.handle}"
                )
            account.platform_user_id = identity.user_id
            # Streams an export import vouches for stay part of the account's coverage.
            account.streams = streams + [
                s for s in account.streams or () if s.startswith(IMPORT_STREAM) and s not in streams
            ]
            if account.paused_reason:
                log.info("account resumed", account=config.key)
            account.paused_reason = None
            account.paused_at = None
        if relist_after is not None:
            # A platform that bills each read sets how seldom its listing may be fetched.
            relist_after = max(relist_after, adapter.traits.min_relist)
        listing_due = _listing_due(store, account_id, clock(), relist_after, report)
        costs.check_budget(store, account_id, adapter, listing_due, clock())
        if listing_due:
            _sync_connections(store, account_id, adapter, rules, clock, report, progress)
        for stream in _least_recent_first(store, account_id, streams):
            _sync_stream(store, account_id, adapter, stream, clock, report, progress)
        # What the adapter found it cannot see (an endpoint missing, a stream the server leaves
        # hollow): unseen is not empty, and evaluation keeps everyone while a counted kind is.
        unseen = [u.to_json() for u in adapter.unseen()]
        with store.session() as session:
            session.get_one(Account, account_id).unseen = unseen
        report.unseen = [Unseen.from_json(u) for u in unseen]
    except AuthError as exc:
        report.outcome = "paused"
        report.problems.append(f"credentials refused: {scrub(str(exc))}")
        with store.session() as session:
            account = session.get_one(Account, account_id)
            account.paused_reason = f"credentials refused: {scrub(str(exc))}"
            account.paused_at = clock()
    except costs.OverBudget as exc:
        report.outcome = "skipped"
        report.problems.append(str(exc))
    except PlatformError as exc:
        report.outcome = "failed"
        report.problems.append(scrub(str(exc)))
    except KeyboardInterrupt as exc:
        # Ctrl-C: every page read so far is stored with its cursor; the next sync goes on.
        report.outcome = "interrupted"
        where = f" while reading {report.reading}" if report.reading else ""
        said = f"interrupted{where}; the next sync resumes from there (every page read is kept)"
        report.problems.append(said)
        exc.add_note(said)
        raise
    except BaseException as exc:
        # A crash: the committed pages stay, but the run must not be recorded as a good one.
        report.outcome = "failed"
        report.problems.append(f"interrupted by {type(exc).__name__}")
        raise
    finally:
        with store.session() as session:
            run = session.get_one(SyncRun, run_pk)
            run.finished_at = clock()
            run.outcome = report.outcome
            run.connections_seen = report.connections_seen
            run.connections_new = report.connections_new
            run.connections_vanished = report.connections_vanished
            run.interactions_new = report.interactions_new
            run.detail = "; ".join(report.problems + ([report.brake] if report.brake else []))
            costs.record_sync(session, account_id, run_pk, adapter, clock())
            if report.outcome in ("ok", "partial"):
                session.get_one(Account, account_id).last_sync_at = clock()
    return report


@contextmanager
def _interrupt_held() -> Iterator[None]:
    """Ctrl-C during a page's write takes effect once the write is committed.

    An interrupt that lands inside the database driver or the session's commit can leave the
    transaction open, and SQLite's write lock with it: the run's own record then waits for a
    lock nobody releases. Held here, a page is stored whole and the sync stops between pages.
    Only the main thread receives signals; elsewhere this does nothing.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def _fetch_page(report: SyncReport, stream: str, fetch: Callable[[], _Page]) -> _Page | None:
    """One page, or None when this stream must stop for now; its cursor stays where it was.

    Refused credentials stop the whole sync (the account is paused); anything else the
    platform answers stops only this stream, and the others still run.
    """
    try:
        return fetch()
    except AuthError:
        raise
    except RateLimited as exc:
        problem = f"deferred: {exc}"
    except Unsupported as exc:
        problem = f"unavailable: {exc}"
    except PlatformError as exc:
        problem = f"failed: {exc}"
    report.outcome = "partial"
    report.streams[stream] = scrub(problem)
    return None


def _listing_due(
    store: Store, account_id: int, now: datetime, relist_after: timedelta | None, report: SyncReport
) -> bool:
    if relist_after is None:
        return True
    with store.session() as session:
        row = session.get(SyncCursor, (account_id, CONNECTIONS))
        if row is None or row.listing is not None or row.updated_at <= now - relist_after:
            return True
        report.streams[CONNECTIONS] = f"listed {row.updated_at:%Y-%m-%d %H:%M} UTC, still fresh"
        return False


def _least_recent_first(store: Store, account_id: int, streams: Sequence[str]) -> list[str]:
    with store.session() as session:
        updated = dict(
            session.execute(
                select(SyncCursor.stream, SyncCursor.updated_at).where(
                    SyncCursor.account_id == account_id
                )
            ).all()
        )
    floor = datetime.min.replace(tzinfo=UTC)
    return sorted(streams, key=lambda s: (updated.get(s) or floor, streams.index(s)))


# --- connections -------------------------------------------------------------------------


def _sync_connections(
    store: Store,
    account_id: int,
    adapter: Platform,
    rules: Rules,
    clock: Clock,
    report: SyncReport,
    progress: Progress | None,
) -> None:
    report.reading = CONNECTIONS
    with store.session() as session:
        row = session.get(SyncCursor, (account_id, CONNECTIONS))
        listing = row.listing if row and row.listing else uuid.uuid4().hex[:12]
        cursor = row.cursor if row and row.listing else None
        first = session.get_one(Account, account_id).first_listing_at is None
    # The follows of a first listing read from its start in this run, in the platform's order.
    follows: list[str] | None = [] if first and cursor is None else None
    # A mutual is listed twice (once among follows, once among followers): count people.
    people: set[str] = set()
    analyzed = False
    while True:
        page = _fetch_page(report, CONNECTIONS, partial(adapter.connections, cursor))
        if page is None:
            return
        with _interrupt_held(), store.session() as session:
            report.connections_new += save_people(
                session, account_id, page.people, listing, clock()
            )
            _set_cursor(session, account_id, CONNECTIONS, page.next_cursor, clock(), listing)
            if (
                not analyzed
                and report.connections_new >= _ANALYZE_AFTER
                and store.dialect == "postgresql"
            ):
                # A first listing grows the table from nothing: with the planner's statistics
                # still saying "empty", each page's lookup scans every row instead of the index.
                session.execute(text("ANALYZE connections"))
                analyzed = True
        people.update(p.user_id for p in page.people)
        report.people_seen = report.connections_seen = len(people)
        if follows is not None:
            follows.extend(p.user_id for p in page.people if p.following)
        if progress:
            progress(CONNECTIONS, len(page.people))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    with store.session() as session:
        # A listing the platform says is partial (Facebook lists only the app's users) marks
        # nobody as gone.
        if not adapter.traits.partial_listing:
            close_listing(session, account_id, listing, rules, clock(), report)
        if first:
            account = session.get_one(Account, account_id)
            account.first_listing_at = clock()
            if follows is not None and adapter.traits.newest_first:
                mark_established(session, account_id, follows)
        if report.brake is None:
            settle_manual_removals(session, account_id, rules, clock(), "sync")
        _set_cursor(session, account_id, CONNECTIONS, None, clock(), None)
    report.streams[CONNECTIONS] = "complete"


def mark_established(session: Session, account_id: int, follows: Sequence[str]) -> None:
    """Day one: the follows of the account's first complete listing count as established.

    ``follows`` come newest first. The newest of them (``rules.newest_in_grace``) stay in
    grace, since they may have been made days before; the others were made before lopper's
    first sync, on a date the platform does not tell, and are judged from the first day.
    A date the platform gives (``connected_since``) is used instead.
    """
    ordered = list(dict.fromkeys(follows))
    older = ordered[newest_in_grace(len(ordered)) :]
    for start in range(0, len(older), 500):
        chunk = older[start : start + 500]
        session.execute(
            update(Connection)
            .where(
                Connection.account_id == account_id,
                Connection.platform_user_id.in_(chunk),
                Connection.connected_since.is_(None),
            )
            .values(established=True)
            .execution_options(synchronize_session=False)
        )


def save_people(
    session: Session, account_id: int, people: Sequence[Person], listing: str, now: datetime
) -> int:
    """Write one page of a listing; returns how many people were new.

    Known people are updated and new ones inserted as plain rows, one executemany each: an
    ORM object per person costs several times as much on a listing of tens of thousands.
    """
    if not people:
        return 0
    ids = [p.user_id for p in people]
    existing = {
        row.platform_user_id: row
        for row in session.execute(
            select(
                Connection.id,
                Connection.platform_user_id,
                Connection.last_listing,
                Connection.following,
                Connection.followed_by,
            ).where(Connection.account_id == account_id, Connection.platform_user_id.in_(ids))
        )
    }
    known: dict[int, dict[str, Any]] = {}
    fresh: dict[str, dict[str, Any]] = {}
    for person in people:
        values = _listed_values(person, listing, now)
        stored = existing.get(person.user_id)
        if stored is not None:
            row = known.get(stored.id)
            if row is None:
                if stored.last_listing == listing:
                    _merge_flags(values, stored.following, stored.followed_by)
                row = known[stored.id] = {"id": stored.id}
            else:
                _merge_flags(values, row["following"], row["followed_by"])
            row.update(values)
            continue
        row = fresh.get(person.user_id)
        if row is None:
            row = fresh[person.user_id] = {
                "account_id": account_id,
                "platform_user_id": person.user_id,
                "first_seen_at": now,
                "protected": False,
                "connected_since": None,
                "last_active_at": None,
            }
        elif row["last_listing"] == listing:
            _merge_flags(values, row["following"], row["followed_by"])
        row.update(values)
    # Core statements, not the ORM's bulk paths: those split a batch wherever one row has a
    # None the next has not, and a listing of ten thousand became a thousand statements.
    table = cast(Table, Connection.__table__)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in known.values():
        groups.setdefault(tuple(sorted(row)), []).append(
            {f"v_{key}": value for key, value in row.items()}
        )
    for keys, rows in groups.items():
        changes: dict[str, Any] = {key: bindparam(f"v_{key}") for key in keys if key != "id"}
        statement = update(table).where(table.c.id == bindparam("v_id")).values(changes)
        session.execute(statement, rows)
    if fresh:
        session.execute(insert(table), list(fresh.values()))
    return len(fresh)


def _merge_flags(values: dict[str, Any], following: bool, followed_by: bool) -> None:
    """A person listed twice in one listing (in "following", then in "followers") is both.

    Platforms list the two directions separately; each appearance says what that list knows,
    so within one listing the flags add up instead of the later page overwriting the earlier.
    """
    values["following"] = values["following"] or following
    values["followed_by"] = values["followed_by"] or followed_by


def _listed_values(person: Person, listing: str, now: datetime) -> dict[str, Any]:
    """What a listing says of a connection (a date it leaves out keeps the one stored)."""
    values: dict[str, Any] = {
        "handle": person.handle,
        "display_name": person.display_name,
        "profile_url": person.profile_url,
        "following": person.following,
        "followed_by": person.followed_by,
        "lists": list(person.lists),
        "gone": person.gone or person.moved_to is not None,
        "moved_to": person.moved_to,
        "last_seen_at": now,
        "last_listing": listing,
        "state": ConnectionState.ACTIVE,
        "vanished_at": None,
    }
    if person.connected_since is not None:
        values["connected_since"] = person.connected_since
    if person.last_active_at is not None:
        values["last_active_at"] = person.last_active_at
    return values


def close_listing(
    session: Session,
    account_id: int,
    listing: str,
    rules: Rules,
    now: datetime,
    report: SyncReport,
) -> None:
    """Mark who vanished from a complete listing, unless the sanity brake holds it back."""
    account = session.get_one(Account, account_id)
    active = Connection.state == ConnectionState.ACTIVE
    total = (
        session.scalar(
            select(func.count())
            .select_from(Connection)
            .where(Connection.account_id == account_id, active)
        )
        or 0
    )
    missing = (
        (Connection.account_id == account_id)
        & active
        & ((Connection.last_listing != listing) | Connection.last_listing.is_(None))
    )
    vanished = session.scalar(select(func.count()).select_from(Connection).where(missing)) or 0
    large = vanished >= rules.brake_min and vanished >= rules.brake_share * total
    if large and account.brake_engaged_at is None:
        account.brake_engaged_at = now
        account.brake_vanished = vanished
        account.brake_total = total
        report.brake = (
            f"sanity brake: {vanished} of {total} connections vanished at once; nothing is "
            "marked gone and nobody is flagged until a later sync agrees"
        )
        log.warning("sanity brake engaged", vanished=vanished, total=total)
        return
    if account.brake_engaged_at is not None:
        log.info("sanity brake released", agreed=large, vanished=vanished)
    account.brake_engaged_at = None
    account.brake_vanished = None
    account.brake_total = None
    session.execute(
        update(Connection).where(missing).values(state=ConnectionState.VANISHED, vanished_at=now)
    )
    report.connections_vanished = vanished


# --- interactions ------------------------------------------------------------------------


def _sync_stream(
    store: Store,
    account_id: int,
    adapter: Platform,
    stream: str,
    clock: Clock,
    report: SyncReport,
    progress: Progress | None,
) -> None:
    """Read the stream from its stored cursor on, writing the pages in batches.

    Pages are kept in memory until they hold ``BATCH_EXCHANGES`` exchanges, or the first of
    them was read ``BATCH_SECONDS`` ago, or the stream ends or stops; then they are written in
    one transaction with the cursor after the last of them. Each commit rewrites every index
    page the batch touched, so a few thousand exchanges per commit instead of one platform
    page (40 to 100 on most platforms) cost a fraction of the time. Whatever stops the
    reading (a refusal, Ctrl-C, a crash in the adapter, the daemon's stop raised by
    ``progress``, which hears of each page read) first writes the pages already read.
    """
    report.reading = stream
    with store.session() as session:
        row = session.get(SyncCursor, (account_id, stream))
        cursor = row.cursor if row else None
    batch: list[InteractionPage] = []
    held = 0
    since = 0.0
    try:
        while True:
            page = _fetch_page(report, stream, partial(adapter.interactions, stream, cursor))
            if page is None:
                return
            if not batch:
                since = time.monotonic()
            batch.append(page)
            held += len(page.exchanges)
            cursor = page.cursor
            if progress:
                progress(stream, len(page.exchanges))  # the daemon's stop is raised here
            if page.done:
                break
            if held >= BATCH_EXCHANGES or time.monotonic() - since >= BATCH_SECONDS:
                pending, batch, held = batch, [], 0
                _save_pages(store, account_id, stream, pending, clock, report)
    finally:
        if batch:
            _save_pages(store, account_id, stream, batch, clock, report)
    report.streams[stream] = "complete"


def _save_pages(
    store: Store,
    account_id: int,
    stream: str,
    pages: Sequence[InteractionPage],
    clock: Clock,
    report: SyncReport,
) -> None:
    """Pages read in order, written in one transaction: their exchanges, the coverage each
    adds, and the cursor after the last."""
    exchanges = [e for page in pages for e in page.exchanges]
    with _interrupt_held(), store.session() as session:
        report.interactions_new += save_exchanges(session, account_id, exchanges)
        for page in pages:
            if page.covers is not None:
                extend_coverage(session, account_id, stream, "sync", page.covers)
        _set_cursor(session, account_id, stream, pages[-1].cursor, clock(), None)


def save_exchanges(session: Session, account_id: int, exchanges: Sequence[Exchange]) -> int:
    """Insert exchanges, ignoring any already stored (same platform event id), and add those
    inserted to the account's period summaries (``service.store.periods``). Returns how many
    were inserted."""
    if not exchanges:
        return 0
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        params = {
            "account": account_id,
            "event_ids": [e.event_id for e in exchanges],
            "counterparts": [e.counterpart_id for e in exchanges],
            "kinds": [e.kind._value_ for e in exchanges],
            "directions": [e.direction._value_ for e in exchanges],
            "times": [to_epoch(e.occurred_at) for e in exchanges],
            **periods.WRITE_PARAMS,
        }
        return int(connection.execute(text(_POSTGRESQL_SAVE), params).scalar_one())
    # The members' own values: ``Kind.value`` is a property, a third of the time spent here.
    rows = [
        (
            account_id,
            e.event_id,
            e.counterpart_id,
            e.kind._value_,
            e.direction._value_,
            to_epoch(e.occurred_at),
        )
        for e in exchanges
    ]
    after = connection.exec_driver_sql(_SQLITE_NEWEST_ID).scalar_one()
    # executemany: sqlite3 sums the rows each statement inserted.
    inserted = max(0, connection.exec_driver_sql(_SQLITE_INSERT_EXCHANGE, rows).rowcount or 0)
    if inserted:
        connection.execute(
            text(_SQLITE_SUMMARIES), {"account": account_id, "after": after, **periods.WRITE_PARAMS}
        )
    return inserted


def extend_coverage(
    session: Session, account_id: int, stream: str, source: str, span: Span
) -> None:
    """Merge a span into the stream's coverage; overlapping or touching spans become one.

    The store keeps whole seconds (``UTCTime``), so the span is cut to whole seconds first,
    as it would be when written: a span that starts where the last one ended (with the
    same fraction of a second) must touch it as stored, or the stream's coverage would fall
    apart into pieces and the account would never again count as covered.
    """
    rows = list(
        session.scalars(
            select(Coverage).where(Coverage.account_id == account_id, Coverage.stream == stream)
        )
    )
    start, end = span.start.replace(microsecond=0), span.end.replace(microsecond=0)
    for row in rows:
        if row.covered_from <= end and start <= row.covered_to:
            start = min(start, row.covered_from)
            end = max(end, row.covered_to)
            session.delete(row)
    session.add(
        Coverage(
            account_id=account_id, stream=stream, source=source, covered_from=start, covered_to=end
        )
    )


def _set_cursor(
    session: Session,
    account_id: int,
    stream: str,
    cursor: str | None,
    now: datetime,
    listing: str | None,
) -> None:
    row = session.get(SyncCursor, (account_id, stream))
    if row is None:
        row = SyncCursor(account_id=account_id, stream=stream)
        session.add(row)
    row.cursor = cursor
    row.listing = listing
    row.updated_at = now
