"""The daemon's work queue in the store: due work in, claimed with a lease, finished out.

The same code serves one SQLite daemon and several PostgreSQL replicas. Two partial unique
indexes (see ``JobRun``) make the database itself refuse a second queued-or-running copy of
a job, and a second running job of an account. A claim takes the oldest queued row with
``FOR UPDATE SKIP LOCKED`` (ignored by SQLite, where only one daemon runs), and holds it by
a lease that its daemon renews while it works; a lease that lapses (the daemon died) frees
the job to be due again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, and_, exists, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, aliased

from service.errors import LopperError
from service.logs import get_logger, scrub
from service.store import Store
from service.store.models import DaemonFact, JobRun, JobState

log = get_logger("lopper.daemon")

FINISHED = (JobState.DONE, JobState.FAILED, JobState.INTERRUPTED)
FIRST_START = "first_start"
_DETAIL_MAX = 2000


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class AlreadyRunning(LopperError):
    """Another daemon already uses this SQLite database."""

    exit_code = 75  # EX_TEMPFAIL: try again once the other one has stopped


@dataclass(frozen=True)
class Work:
    id: int
    job: str
    account: str
    slot: datetime | None
    run_id: str


def enqueue(store: Store, job: str, account: str, now: datetime, slot: datetime | None) -> bool:
    """Queue a job that came due; False when a copy is already queued or running."""
    try:
        with store.session() as session:
            session.add(
                JobRun(
                    job=job,
                    account=account,
                    slot=slot,
                    state=JobState.QUEUED,
                    run_id=uuid.uuid4().hex[:12],
                    queued_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


def claim(
    store: Store, instance: str, clock: Callable[[], datetime], lease: timedelta
) -> Work | None:
    """Take the oldest queued job whose account is not busy; None when there is none.

    The start is read from the clock once the row is ours, so that it never precedes the
    end of the account's previous job, which the query saw finished.
    """
    busy = aliased(JobRun)
    account_busy = exists().where(
        busy.account == JobRun.account, busy.account != "", busy.state == JobState.RUNNING
    )
    query = (
        select(JobRun)
        .where(JobRun.state == JobState.QUEUED, ~account_busy)
        .order_by(JobRun.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    try:
        with store.session() as session:
            row = session.scalars(query).first()
            if row is None:
                return None
            now = clock()
            row.state = JobState.RUNNING
            row.instance = instance
            row.started_at = now
            row.lease_until = now + lease
            return Work(row.id, row.job, row.account, row.slot, row.run_id)
    except IntegrityError:
        return None  # another daemon started this account's other job in the same instant


def renew(store: Store, instance: str, now: datetime, lease: timedelta) -> int:
    with store.session() as session:
        result = session.execute(
            update(JobRun)
            .where(JobRun.instance == instance, JobRun.state == JobState.RUNNING)
            .values(lease_until=now + lease)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)


def finish(
    store: Store, work: Work, instance: str, state: JobState, now: datetime, detail: str | None
) -> bool:
    """Record a job's outcome; False if its lease had lapsed and the row is no longer ours."""
    text_detail = scrub(detail)[:_DETAIL_MAX] if detail else None
    with store.session() as session:
        result = session.execute(
            update(JobRun)
            .where(
                JobRun.id == work.id,
                JobRun.instance == instance,
                JobRun.state == JobState.RUNNING,
            )
            .values(state=state, finished_at=now, lease_until=None, detail=text_detail)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))


def reap(store: Store, now: datetime, *, everything: bool = False) -> int:
    """Running jobs whose daemon stopped answering (or, at a lone start, every one) are over."""
    condition = JobRun.state == JobState.RUNNING
    if not everything:
        condition = and_(condition, JobRun.lease_until < now)
    with store.session() as session:
        result = session.execute(
            update(JobRun)
            .where(condition)
            .values(
                state=JobState.INTERRUPTED,
                finished_at=now,
                lease_until=None,
                detail="its daemon stopped before the end; it runs again from where it stopped",
            )
            .execution_options(synchronize_session=False)
        )
        count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        log.warning("interrupted jobs released", count=count)
    return count


def next_lapse(session: Session) -> datetime | None:
    """When ``reap`` would first release a running job, if nothing renews its lease (None:
    nothing runs).

    The leader plans again then, so that a dead replica's job is reaped and runs again
    within about one lease, however far off the next scheduled work is. Leases are kept
    in whole seconds, and so is the time ``reap`` compares them with: a lease has lapsed
    once the clock is a second past it.
    """
    first = session.scalar(
        select(func.min(JobRun.lease_until)).where(JobRun.state == JobState.RUNNING)
    )
    return first + timedelta(seconds=1) if first is not None else None


def prune(store: Store, before: datetime) -> None:
    """Forget finished runs older than ``before``, keeping the last of each job and account."""
    newer = aliased(JobRun)
    with store.session() as session:
        rows = session.scalars(
            select(JobRun.id).where(
                JobRun.state.in_(FINISHED),
                JobRun.finished_at < before,
                exists().where(
                    newer.job == JobRun.job, newer.account == JobRun.account, newer.id > JobRun.id
                ),
            )
        ).all()
        if rows:
            session.execute(
                JobRun.__table__.delete().where(JobRun.id.in_(rows))  # type: ignore[attr-defined]
            )


def active_jobs(session: Session) -> set[tuple[str, str]]:
    """(job, account) of every queued or running job."""
    rows = session.execute(
        select(JobRun.job, JobRun.account).where(
            JobRun.state.in_([JobState.QUEUED, JobState.RUNNING])
        )
    )
    return {(job, account) for job, account in rows}


def last_finished(session: Session, job: str, account: str) -> JobRun | None:
    return session.scalars(
        select(JobRun)
        .where(JobRun.job == job, JobRun.account == account, JobRun.state.in_(FINISHED))
        .order_by(JobRun.id.desc())
        .limit(1)
    ).first()


def get_fact(session: Session, name: str) -> str | None:
    row = session.get(DaemonFact, name)
    return row.value if row is not None else None


def set_fact(store: Store, name: str, value: str, now: datetime, *, only_once: bool) -> str:
    """Write a fact (or, with only_once, keep the one already there); returns what is kept."""
    try:
        with store.session() as session:
            row = session.get(DaemonFact, name)
            if row is not None and only_once:
                return row.value
            if row is None:
                session.add(DaemonFact(name=name, value=value, updated_at=now))
            else:
                row.value, row.updated_at = value, now
    except IntegrityError:
        with store.session() as session:
            kept = get_fact(session, name)
            return kept if kept is not None else value
    return value


# --- who plans -----------------------------------------------------------------------------


class Leadership:
    """Exactly one daemon plans the schedule; the others only take queued work."""

    def try_lead(self) -> bool:
        raise NotImplementedError

    @property
    def leading(self) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class SqliteLock(Leadership):
    """SQLite: one daemon per database, held by a lock file beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, database: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise AlreadyRunning(
                f"another `lopper run` ({holder}) is already using {database}; with SQLite only "
                f"one may run at a time (lock file {self.path}). Stop it first, or use "
                "PostgreSQL (storage.url) to run several."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._file = handle

    def try_lead(self) -> bool:
        return self._file is not None

    @property
    def leading(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


class PostgresLeader(Leadership):
    """PostgreSQL: a session advisory lock, held on a connection of its own.

    The lock dies with the connection, so a replica that dies (or loses the server) stops
    leading and another one takes over at its next try. The key is derived from the schema,
    so that separate installations sharing one server do not elect each other.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._connection: Connection | None = None
        self._key: int | None = None

    def _lock_key(self, connection: Connection) -> int:
        schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        digest = hashlib.sha256(f"lopper leader {schema}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def try_lead(self) -> bool:
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                return True
            except OperationalError:
                log.warning("lost the connection that held the leadership")
                self._drop()
        try:
            connection = self.store.engine.connect()
        except OperationalError:
            return False
        try:
            key = self._key if self._key is not None else self._lock_key(connection)
            self._key = key
            won = bool(
                connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": key}
                ).scalar_one()
            )
            connection.commit()  # no transaction left open: the lock belongs to the session
        except OperationalError:
            connection.close()
            return False
        if not won:
            connection.close()
            return False
        self._connection = connection
        log.info("leading: this daemon plans the schedule")
        return True

    @property
    def leading(self) -> bool:
        return self._connection is not None

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.invalidate()
            finally:
                self._connection = None

    def release(self) -> None:
        if self._connection is None:
            return
        try:
            self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            self._connection.commit()
            self._connection.close()
        except OperationalError:
            pass
        self._connection = None


def service_running(store: Store, database_url: str) -> str | None:
    """Who runs the service (``lopper run``) on this database now, or None when nobody does.

    SQLite: whoever holds the lock file beside the database. PostgreSQL: whether a session
    holds the leader's advisory lock (a replica that leads; replicas that do not are not seen).
    """
    if store.dialect == "sqlite":
        database = make_url(database_url).database or ""
        lock = Path(f"{database}.lock")
        if not database or not lock.exists():
            return None
        with lock.open("r", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or "another process"
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None
    with store.engine.connect() as connection:
        key = PostgresLeader(store)._lock_key(connection) & 0xFFFF_FFFF_FFFF_FFFF
        held = connection.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1"
            ),
            {"high": key >> 32, "low": key & 0xFFFF_FFFF},
        ).scalar_one()
    return "a replica leads" if held else None
