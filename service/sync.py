"""Sync: adapter pages into the store, one transaction per page.

Each page is written together with the cursor that follows it and the coverage it adds, so
a crash between pages loses nothing and a restart resumes where the last commit left off.
Exchanges are keyed by the platform's own id: fetching a page twice changes no count.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.config import Account as AccountConfig
from service.config import Rules
from service.model import ConnectionState
from service.platforms.base import (
    AuthError,
    Exchange,
    Person,
    Platform,
    PlatformError,
    RateLimited,
    Span,
    Unsupported,
)
from service.store import Store
from service.store.models import Account, Connection, Coverage, Interaction, SyncCursor, SyncRun
from service.store.types import to_epoch

log = structlog.get_logger("lopper.sync")

CONNECTIONS = "connections"
Clock = Callable[[], datetime]
Progress = Callable[[str, int], None]


@dataclass
class SyncReport:
    account: str
    run_id: str
    outcome: str = "ok"  # ok | partial | paused | failed
    connections_seen: int = 0
    connections_new: int = 0
    connections_vanished: int = 0
    brake: str | None = None
    interactions_new: int = 0
    streams: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


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
) -> SyncReport:
    run_id = run_id or uuid.uuid4().hex[:12]
    report = SyncReport(config.key, run_id)
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
            account.streams = streams
            if account.paused_reason:
                log.info("account resumed", account=config.key)
            account.paused_reason = None
            account.paused_at = None
        _sync_connections(store, account_id, adapter, rules, clock, report, progress)
        for stream in streams:
            _sync_stream(store, account_id, adapter, stream, clock, report, progress)
    except AuthError as exc:
        report.outcome = "paused"
        report.problems.append(f"credentials refused: {exc}")
        with store.session() as session:
            account = session.get_one(Account, account_id)
            account.paused_reason = f"credentials refused: {exc}"
            account.paused_at = clock()
    except PlatformError as exc:
        report.outcome = "failed"
        report.problems.append(str(exc))
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
            if report.outcome in ("ok", "partial"):
                session.get_one(Account, account_id).last_sync_at = clock()
    return report


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
    with store.session() as session:
        row = session.get(SyncCursor, (account_id, CONNECTIONS))
        listing = row.listing if row and row.listing else uuid.uuid4().hex[:12]
        cursor = row.cursor if row and row.listing else None
    while True:
        try:
            page = adapter.connections(cursor)
        except RateLimited as exc:
            report.outcome = "partial"
            report.streams[CONNECTIONS] = f"deferred: {exc}"
            return
        except Unsupported as exc:
            report.outcome = "partial"
            report.streams[CONNECTIONS] = f"unavailable: {exc}"
            return
        with store.session() as session:
            report.connections_new += _save_people(
                session, account_id, page.people, listing, clock()
            )
            _set_cursor(session, account_id, CONNECTIONS, page.next_cursor, clock(), listing)
        report.connections_seen += len(page.people)
        if progress:
            progress(CONNECTIONS, len(page.people))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    with store.session() as session:
        _close_listing(session, account_id, listing, rules, clock(), report)
        _set_cursor(session, account_id, CONNECTIONS, None, clock(), None)
    report.streams[CONNECTIONS] = "complete"


def _save_people(
    session: Session, account_id: int, people: Sequence[Person], listing: str, now: datetime
) -> int:
    if not people:
        return 0
    ids = [p.user_id for p in people]
    existing = {
        c.platform_user_id: c
        for c in session.scalars(
            select(Connection).where(
                Connection.account_id == account_id, Connection.platform_user_id.in_(ids)
            )
        )
    }
    new = 0
    for person in people:
        connection = existing.get(person.user_id)
        if connection is None:
            new += 1
            connection = Connection(
                account_id=account_id,
                platform_user_id=person.user_id,
                first_seen_at=now,
                protected=False,
            )
            session.add(connection)
            existing[person.user_id] = connection
        connection.handle = person.handle
        connection.display_name = person.display_name
        connection.profile_url = person.profile_url
        connection.following = person.following
        connection.followed_by = person.followed_by
        connection.lists = list(person.lists)
        if person.connected_since is not None:
            connection.connected_since = person.connected_since
        connection.gone = person.gone or person.moved_to is not None
        connection.moved_to = person.moved_to
        connection.last_seen_at = now
        connection.last_listing = listing
        connection.state = ConnectionState.ACTIVE
        connection.vanished_at = None
    return new


def _close_listing(
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
    with store.session() as session:
        row = session.get(SyncCursor, (account_id, stream))
        cursor = row.cursor if row else None
    while True:
        try:
            page = adapter.interactions(stream, cursor)
        except RateLimited as exc:
            report.outcome = "partial"
            report.streams[stream] = f"deferred: {exc}"
            return
        except Unsupported as exc:
            report.outcome = "partial"
            report.streams[stream] = f"unavailable: {exc}"
            return
        except AuthError:
            raise
        except PlatformError as exc:
            report.outcome = "partial"
            report.streams[stream] = f"failed: {exc}"
            return
        with store.session() as session:
            report.interactions_new += save_exchanges(session, account_id, page.exchanges)
            if page.covers is not None:
                extend_coverage(session, account_id, stream, "sync", page.covers)
            _set_cursor(session, account_id, stream, page.cursor, clock(), None)
        if progress:
            progress(stream, len(page.exchanges))
        cursor = page.cursor
        if page.done:
            break
    report.streams[stream] = "complete"


def save_exchanges(session: Session, account_id: int, exchanges: Sequence[Exchange]) -> int:
    """Insert exchanges, ignoring any already stored (same platform event id)."""
    if not exchanges:
        return 0
    rows = [
        {
            "account_id": account_id,
            "event_id": e.event_id,
            "counterpart_id": e.counterpart_id,
            "kind": e.kind.value,
            "direction": e.direction.value,
            "occurred_at": to_epoch(e.occurred_at),
        }
        for e in exchanges
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Interaction.__table__).on_conflict_do_nothing(
        index_elements=["account_id", "event_id"]
    )
    # Core executemany: the drivers sum the rows each statement inserted.
    result = session.connection().execute(statement, rows)
    return max(0, result.rowcount or 0)


def extend_coverage(
    session: Session, account_id: int, stream: str, source: str, span: Span
) -> None:
    """Merge a span into the stream's coverage; overlapping or touching spans become one."""
    rows = list(
        session.scalars(
            select(Coverage).where(Coverage.account_id == account_id, Coverage.stream == stream)
        )
    )
    start, end = span.start, span.end
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
