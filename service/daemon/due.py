"""What is due, decided from what the store records as last done.

The scheduler's own job store stays in memory and knows nothing worth keeping: after a
restart, a crash or a week switched off, the next run of every job is computed again from
the store (the last run of each job, each account's last sync, the digests already made), so
work that came due while nothing ran happens once, on start, and nothing runs twice.

The calculation itself takes plain facts and an explicit ``now``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Settings
from service.daemon import cron
from service.daemon.queue import FIRST_START, get_fact, last_finished
from service.store.models import Account, JobRun, JobState

SYNC, EVALUATE, EXECUTE, DIGEST, DELIVER = "sync", "evaluate", "execute", "digest", "deliver"
ACCOUNT_JOBS = (SYNC, EVALUATE, EXECUTE)
GLOBAL = ""  # the account of jobs that belong to no account


@dataclass(frozen=True)
class Due:
    job: str
    account: str
    at: datetime | None  # None: not due until something else happens (a sync, for evaluate)
    slot: datetime | None = None

    def ready(self, now: datetime) -> bool:
        return self.at is not None and self.at <= now


@dataclass(frozen=True)
class LastRun:
    state: JobState
    started_at: datetime | None
    finished_at: datetime | None
    slot: datetime | None = None

    @classmethod
    def of(cls, row: JobRun | None) -> LastRun | None:
        if row is None:
            return None
        return cls(row.state, row.started_at, row.finished_at, row.slot)


@dataclass(frozen=True)
class AccountFacts:
    key: str
    last_sync_at: datetime | None
    last_evaluated_at: datetime | None
    runs: dict[str, LastRun | None]


def jitter(key: str, anchor: datetime | None, spread: timedelta) -> timedelta:
    """A share of ``spread`` fixed by the account and its last run: a restart re-rolls nothing."""
    if spread <= timedelta(0):
        return timedelta(0)
    seed = f"{key}|{anchor.isoformat() if anchor else '-'}".encode()
    share = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") / 2**64
    return spread * share


def _after(last: LastRun | None, every: timedelta, retry: timedelta) -> datetime | None:
    """When a periodic job is next due after its last run (None: due now)."""
    if last is None or last.state is JobState.INTERRUPTED:
        return None  # never ran, or stopped half-way: resume at once
    if last.state is JobState.FAILED:
        return (last.finished_at or last.started_at or datetime.min) + min(every, retry)
    assert last.started_at is not None
    return last.started_at + every


def account_dues(facts: AccountFacts, settings: Settings, now: datetime) -> list[Due]:
    schedule = settings.schedule
    retry = schedule.retry_after
    dues: list[Due] = []

    last_sync = facts.runs.get(SYNC)
    sync_at = _after(last_sync, schedule.sync_every, retry)
    # A sync from the command line counts as well: the next one waits a full interval.
    if (last_sync is None or last_sync.state is JobState.DONE) and facts.last_sync_at is not None:
        by_hand = facts.last_sync_at + schedule.sync_every
        sync_at = by_hand if sync_at is None else max(sync_at, by_hand)
    if sync_at is not None:
        anchor = last_sync.started_at if last_sync is not None else facts.last_sync_at
        sync_at += jitter(facts.key, anchor, schedule.sync_jitter)
    dues.append(Due(SYNC, facts.key, sync_at or now))

    # Evaluation follows each successful sync (and catches up one a crash cut short).
    evaluate_at: datetime | None = None
    if facts.last_sync_at is not None and (
        facts.last_evaluated_at is None or facts.last_evaluated_at < facts.last_sync_at
    ):
        evaluate_at = facts.last_sync_at
        last_eval = facts.runs.get(EVALUATE)
        if last_eval is not None and last_eval.state is JobState.FAILED:
            evaluate_at = max(evaluate_at, (last_eval.finished_at or now) + retry)
    dues.append(Due(EVALUATE, facts.key, evaluate_at))

    execute_at = _after(facts.runs.get(EXECUTE), schedule.execute_every, retry)
    dues.append(Due(EXECUTE, facts.key, execute_at or now))
    return dues


def digest_due(
    settings: Settings,
    now: datetime,
    first_start: datetime,
    last: LastRun | None,
    done_for_slot: bool,
) -> Due:
    """The digest of the latest schedule slot, unless made already or older than lopper.

    A slot before the daemon's first start is never mailed: a fresh install waits for its
    first real slot instead of sending one at once for a time that passed before it ran.
    Missed slots are not made one by one: only the latest is (a week off sends one digest).
    """
    expression, zone = settings.schedule.digest, settings.digest.zone
    slot = cron.latest_fire(expression, zone, now)
    upcoming = cron.next_fire(expression, zone, now)
    if slot is None or slot < first_start or done_for_slot:
        return Due(DIGEST, GLOBAL, upcoming, slot=upcoming)
    if last is not None and last.slot == slot and last.state is JobState.FAILED:
        return Due(DIGEST, GLOBAL, (last.finished_at or now) + settings.schedule.retry_after, slot)
    return Due(DIGEST, GLOBAL, slot, slot=slot)


def load_account_facts(session: Session, key: str) -> AccountFacts:
    row = session.scalar(select(Account).where(Account.key == key))
    runs = {job: LastRun.of(last_finished(session, job, key)) for job in ACCOUNT_JOBS}
    return AccountFacts(
        key,
        row.last_sync_at if row is not None else None,
        row.last_evaluated_at if row is not None else None,
        runs,
    )


def first_start_of(session: Session) -> datetime | None:
    value = get_fact(session, FIRST_START)
    return datetime.fromisoformat(value) if value else None


def all_dues(
    session: Session,
    settings: Settings,
    now: datetime,
    *,
    first_start: datetime | None,
) -> list[Due]:
    """Every job of every enabled account and the global ones, with when each is due."""
    dues: list[Due] = []
    for account in settings.accounts:
        if account.enabled:
            dues += account_dues(load_account_facts(session, account.key), settings, now)
    if first_start is not None:
        last = LastRun.of(last_finished(session, DIGEST, GLOBAL))
        slot = cron.latest_fire(settings.schedule.digest, settings.digest.zone, now)
        done = slot is not None and (
            session.scalar(
                select(JobRun.id)
                .where(
                    JobRun.job == DIGEST,
                    JobRun.slot == slot,
                    JobRun.state == JobState.DONE,
                )
                .limit(1)
            )
            is not None
        )
        dues.append(digest_due(settings, now, first_start, last, done))
        deliver_at = _after(
            LastRun.of(last_finished(session, DELIVER, GLOBAL)),
            settings.schedule.deliver_every,
            settings.schedule.retry_after,
        )
        dues.append(Due(DELIVER, GLOBAL, deliver_at or now))
    return dues
