"""The tables. Status columns are enums, platform ids are strings, times are aware UTC."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from service.model import (
    Channel,
    ConnectionState,
    Direction,
    Kind,
    Reason,
    RemovalState,
    SuggestionState,
)
from service.store.types import UTCTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _enum(kind: type[Any], name: str) -> Enum:
    # Stored as plain strings (no native ENUM type) so that adding a member needs no DDL.
    return Enum(
        kind,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    platform: Mapped[str] = mapped_column(String(32))
    handle: Mapped[str] = mapped_column(String(200))
    platform_user_id: Mapped[str | None] = mapped_column(String(255))
    streams: Mapped[list[str]] = mapped_column(JSON, default=list)
    # What the adapter reported it cannot see at the last sync (model.Unseen as JSON).
    unseen: Mapped[list[dict[str, str | None]] | None] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCTime)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_at: Mapped[datetime | None] = mapped_column(UTCTime)
    removals_blocked_reason: Mapped[str | None] = mapped_column(Text)
    removals_blocked_at: Mapped[datetime | None] = mapped_column(UTCTime)
    # Sanity brake (invariant 4): how many vanished at the sync that engaged it.
    brake_engaged_at: Mapped[datetime | None] = mapped_column(UTCTime)
    brake_vanished: Mapped[int | None] = mapped_column(Integer)
    brake_total: Mapped[int | None] = mapped_column(Integer)
    next_removal_at: Mapped[datetime | None] = mapped_column(UTCTime)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCTime)
    last_evaluated_at: Mapped[datetime | None] = mapped_column(UTCTime)
    # When the account's first complete listing of connections closed (day one).
    first_listing_at: Mapped[datetime | None] = mapped_column(UTCTime)


class PersonLink(Base):
    """One person known on several platforms: their connections share a ``person_id``."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCTime)
    via: Mapped[str] = mapped_column(String(32))  # person | suggested


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (
        UniqueConstraint("account_id", "platform_user_id"),
        Index("ix_connections_account_state", "account_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    platform_user_id: Mapped[str] = mapped_column(String(255))  # a did:web can be long
    handle: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str | None] = mapped_column(String(300))
    profile_url: Mapped[str | None] = mapped_column(Text)
    following: Mapped[bool] = mapped_column(default=False)  # the account follows them
    followed_by: Mapped[bool] = mapped_column(default=False)  # they follow the account
    lists: Mapped[list[str]] = mapped_column(JSON, default=list)
    connected_since: Mapped[datetime | None] = mapped_column(UTCTime)
    first_seen_at: Mapped[datetime] = mapped_column(UTCTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCTime)
    last_listing: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[ConnectionState] = mapped_column(
        _enum(ConnectionState, "connection_state"), default=ConnectionState.ACTIVE
    )
    vanished_at: Mapped[datetime | None] = mapped_column(UTCTime)
    gone: Mapped[bool] = mapped_column(default=False)  # deleted, suspended on the platform
    moved_to: Mapped[str | None] = mapped_column(String(300))
    protected: Mapped[bool] = mapped_column(default=False)  # set when the person keeps them
    last_active_at: Mapped[datetime | None] = mapped_column(UTCTime)
    # Listed at the account's first complete listing, and not among its newest follows:
    # connected before lopper's first sync, on a date the platform does not tell.
    established: Mapped[bool] = mapped_column(default=False, server_default=false())
    person_id: Mapped[int | None] = mapped_column(
        ForeignKey("people.id", ondelete="SET NULL"), index=True
    )

    account: Mapped[Account] = relationship()

    @property
    def mutual(self) -> bool:
        return self.following and self.followed_by


class Interaction(Base):
    __tablename__ = "interactions"
    __table_args__ = (
        UniqueConstraint("account_id", "event_id", name="uq_interactions_account_event"),
        Index("ix_interactions_counterpart", "account_id", "counterpart_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(128))
    counterpart_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[Kind] = mapped_column(_enum(Kind, "interaction_kind"))
    direction: Mapped[Direction] = mapped_column(_enum(Direction, "interaction_direction"))
    occurred_at: Mapped[datetime] = mapped_column(UTCTime)


class ExchangePeriod(Base):
    """A summary of the account's exchanges with one person, of one kind, in one period.

    A period is ``PERIOD_SECONDS`` (30 days) of epoch time: ``period = occurred_at //
    PERIOD_SECONDS``. The decayed sums are rebased to the period's start, so that a period that
    has closed is worth ``sum * exp((period_start - now) * ln 2 / PERIOD_HALF_LIFE)`` at any
    later ``now``. Written in the same transaction as the interactions it sums
    (``service.sync.save_exchanges``; ``service.imports.common`` recomputes what it deletes);
    read by ``service.store.periods``. The kind is part of the key, so that the weights and the
    counted kinds and directions stay the reader's choice.
    """

    __tablename__ = "exchange_periods"
    # SQLite: the key is the table's own order, not a second B-tree beside it.
    __table_args__ = ({"sqlite_with_rowid": False},)

    # The period leads the key, and there is no other index: a sync writes into the latest
    # period mostly, a few pages of the table; the evaluation finds the persons of one period
    # by a range of the key, and a few persons (``counterparts``) by one seek per period.
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    counterpart_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[Kind] = mapped_column(_enum(Kind, "interaction_kind"), primary_key=True)
    inbound: Mapped[int] = mapped_column(Integer, default=0)
    outbound: Mapped[int] = mapped_column(Integer, default=0)
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCTime)
    last_outbound_at: Mapped[datetime | None] = mapped_column(UTCTime)
    inbound_decayed: Mapped[float] = mapped_column(Float, default=0.0)
    outbound_decayed: Mapped[float] = mapped_column(Float, default=0.0)


class SyncCursor(Base):
    __tablename__ = "sync_cursors"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(Text)
    listing: Mapped[str | None] = mapped_column(String(40))  # connections: listing in progress
    updated_at: Mapped[datetime] = mapped_column(UTCTime)


class Coverage(Base):
    """A span of time for which one stream of an account holds complete data."""

    __tablename__ = "coverage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))  # sync | import | backfill
    covered_from: Mapped[datetime] = mapped_column(UTCTime)
    covered_to: Mapped[datetime] = mapped_column(UTCTime)


class SyncRun(Base):
    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(UTCTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCTime)
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    connections_seen: Mapped[int] = mapped_column(Integer, default=0)
    connections_new: Mapped[int] = mapped_column(Integer, default=0)
    connections_vanished: Mapped[int] = mapped_column(Integer, default=0)
    interactions_new: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text)


class Suggestion(Base):
    __tablename__ = "suggestions"
    __table_args__ = (Index("ix_suggestions_account_state", "account_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    state: Mapped[SuggestionState] = mapped_column(_enum(SuggestionState, "suggestion_state"))
    reason: Mapped[Reason] = mapped_column(_enum(Reason, "suggestion_reason"))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCTime)
    updated_at: Mapped[datetime] = mapped_column(UTCTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCTime)
    decided_via: Mapped[Channel | None] = mapped_column(_enum(Channel, "channel"))
    snoozed_until: Mapped[datetime | None] = mapped_column(UTCTime)
    note: Mapped[str | None] = mapped_column(Text)

    connection: Mapped[Connection] = relationship()
    account: Mapped[Account] = relationship()


class Removal(Base):
    """One attempt to carry out a confirmed suggestion, written before the platform is asked."""

    __tablename__ = "removals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suggestion_id: Mapped[int] = mapped_column(ForeignKey("suggestions.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    state: Mapped[RemovalState] = mapped_column(_enum(RemovalState, "removal_state"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(UTCTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCTime)
    error: Mapped[str | None] = mapped_column(Text)

    suggestion: Mapped[Suggestion] = relationship()


class AuditEntry(Base):
    """Every state change: who, what, when, through which channel."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_entity", "entity", "entity_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCTime)
    actor: Mapped[str] = mapped_column(String(32))  # person | lopper
    via: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)


class DigestState(enum.StrEnum):
    QUEUED = "queued"  # waiting to be sent (again, after a failure: see next_attempt_at)
    SENDING = "sending"  # claimed by a sender; the claim lapses if that sender died
    SENT = "sent"
    PREVIEW = "preview"  # written for the person to look at, never delivered


class Digest(Base):
    """The outbox: one digest per schedule slot, kept until it is delivered."""

    __tablename__ = "digests"
    __table_args__ = (Index("ix_digests_state_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The schedule's fire time it belongs to: unique, so a slot never yields two digests.
    slot: Mapped[datetime | None] = mapped_column(UTCTime, unique=True)
    preview: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCTime)
    since: Mapped[datetime | None] = mapped_column(UTCTime)
    subject: Mapped[str] = mapped_column(String(300))
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    message_id: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)  # the whole RFC 5322 message, sent as is
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    suggestion_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    state: Mapped[DigestState] = mapped_column(_enum(DigestState, "digest_state"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class ReviewLink(Base):
    """A signed review-page link: it expires, and carries one decision (one submit)."""

    __tablename__ = "review_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCTime)
    expires_at: Mapped[datetime] = mapped_column(UTCTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCTime)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    digest: Mapped[Digest] = relationship()


# --- the daemon: its work queue and its own few facts -------------------------------------


class JobState(enum.StrEnum):
    QUEUED = "queued"  # due, waiting for a worker to claim it
    RUNNING = "running"  # claimed: its lease must be renewed, or it lapses
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped (SIGTERM) or its worker died (lease lapsed)


class PreciseUTCTime(TypeDecorator[datetime]):
    """An aware UTC datetime kept to the microsecond: job runs are compared for overlap."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: times must be aware")
        delta: timedelta = value - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(value))


class JobRun(Base):
    """One unit of the daemon's work, from the moment it came due to its outcome.

    What is due is decided from these rows (and the accounts' own last sync), never from the
    scheduler's memory. At most one row per (job, account) is queued or running at a time:
    the partial unique index makes a second copy of a job impossible, whatever the number
    of daemons sharing the database.
    """

    __tablename__ = "job_runs"
    # The two partial unique indexes carry the same WHERE on PostgreSQL (migration 0005, which
    # creates them there). Only SQLite's is named here: a `postgresql_where` would load the
    # PostgreSQL dialect (about 2 MiB) into every process, SQLite daemons included; the
    # schema is only ever built by the migrations.
    __table_args__ = (
        Index(
            "uq_job_runs_active",
            "job",
            "account",
            unique=True,
            sqlite_where=text("state IN ('queued', 'running')"),
        ),
        # One job at a time per account: its adapter and its rows are not shared.
        Index(
            "uq_job_runs_account_running",
            "account",
            unique=True,
            sqlite_where=text("state = 'running' AND account <> ''"),
        ),
        Index("ix_job_runs_job_account", "job", "account", "id"),
        Index("ix_job_runs_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(32))  # sync | evaluate | execute | digest | deliver
    account: Mapped[str] = mapped_column(String(200), default="")  # "" for global jobs
    slot: Mapped[datetime | None] = mapped_column(UTCTime)  # the digest's schedule slot
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"))
    run_id: Mapped[str] = mapped_column(String(40))
    instance: Mapped[str | None] = mapped_column(String(200))  # host:pid of the worker
    queued_at: Mapped[datetime] = mapped_column(PreciseUTCTime)
    started_at: Mapped[datetime | None] = mapped_column(PreciseUTCTime)
    finished_at: Mapped[datetime | None] = mapped_column(PreciseUTCTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCTime)
    detail: Mapped[str | None] = mapped_column(Text)


class DaemonFact(Base):
    """A few named facts of the daemon: when it first started, who leads."""

    __tablename__ = "daemon_facts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCTime)


class CostRecord(Base):
    """The estimated cost of one sync (or import lookup) on a pay-per-use platform (X)."""

    __tablename__ = "cost_records"
    __table_args__ = (Index("ix_cost_records_account_at", "account_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    sync_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCTime)
    source: Mapped[str] = mapped_column(String(16))  # sync | import
    reads: Mapped[dict[str, int]] = mapped_column(JSON)  # resources charged, by price key
    writes: Mapped[dict[str, int]] = mapped_column(JSON)
    micros: Mapped[int] = mapped_column(BigInteger)  # US dollars x 1,000,000
    listing_micros: Mapped[int] = mapped_column(BigInteger)  # the listing's share of it
