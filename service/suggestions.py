"""The suggestion queue: its state machine, the person's decisions, and evaluation.

Every change of state goes through ``transition``, which refuses moves the state machine
does not allow and writes an audit row (who, what, when, through which channel).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from service.config import Rules
from service.errors import InvalidTransition, NotFound
from service.logs import get_logger
from service.model import CONNECTIONS, Channel, Kind, Reason, Span, SuggestionState, Unseen
from service.people import with_linked
from service.rules import (
    NO_EXCHANGES,
    Judgement,
    PlanItem,
    Verdict,
    counting_rules,
    judge,
    verdict_time,
)
from service.store import Store
from service.store.models import Account, AuditEntry, Suggestion, SyncCursor
from service.store.queries import (
    account_coverage,
    account_unseen,
    connection_facts,
    exchange_stats,
)

log = get_logger("lopper.suggestions")

S = SuggestionState
ALLOWED: dict[SuggestionState, frozenset[SuggestionState]] = {
    S.PENDING: frozenset({S.CONFIRMED, S.KEPT, S.SNOOZED, S.EXPIRED}),
    S.SNOOZED: frozenset({S.PENDING, S.CONFIRMED, S.KEPT, S.EXPIRED}),
    S.CONFIRMED: frozenset({S.REMOVED, S.MANUAL, S.FAILED, S.EXPIRED, S.KEPT}),
    S.FAILED: frozenset({S.REMOVED, S.MANUAL, S.FAILED, S.EXPIRED, S.KEPT}),
    S.MANUAL: frozenset({S.REMOVED, S.EXPIRED}),
    S.REMOVED: frozenset({S.RESTORED}),
    S.KEPT: frozenset(),
    S.EXPIRED: frozenset(),
    S.RESTORED: frozenset(),
}
OPEN = frozenset({S.PENDING, S.SNOOZED, S.CONFIRMED, S.FAILED, S.MANUAL})
PERSON = "person"
# A suggestion's state and its last change (None: not known, the state alone is checked).
Version = tuple[SuggestionState, datetime | None]
LOPPER = "lopper"

T = TypeVar("T")


def transition(
    session: Session,
    suggestion: Suggestion,
    to: SuggestionState,
    *,
    actor: str,
    via: Channel,
    now: datetime,
    detail: str | None = None,
) -> None:
    current = suggestion.state
    if to not in ALLOWED[current]:
        raise InvalidTransition(
            f"suggestion {suggestion.id} is {current.value}; it cannot become {to.value}"
        )
    if to is S.CONFIRMED and actor != PERSON:
        # Invariant 1: the executor acts on confirmed suggestions, so only a person confirms.
        raise InvalidTransition(f"suggestion {suggestion.id}: only the person can confirm it")
    suggestion.state = to
    suggestion.updated_at = now
    if actor == PERSON:
        suggestion.decided_at = now
        suggestion.decided_via = via
    if detail:
        suggestion.note = detail
    session.add(
        AuditEntry(
            at=now,
            actor=actor,
            via=via,
            entity="suggestion",
            entity_id=suggestion.id,
            account_id=suggestion.account_id,
            from_state=current.value,
            to_state=to.value,
            detail=detail,
        )
    )


def get_suggestion(session: Session, suggestion_id: int) -> Suggestion:
    suggestion = session.get(Suggestion, suggestion_id)
    if suggestion is None:
        raise NotFound(f"no suggestion with id {suggestion_id}")
    return suggestion


# --- the person's decisions --------------------------------------------------------------


@dataclass
class DecisionResult:
    changed: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


def decide(
    store: Store,
    ids: Sequence[int],
    to: SuggestionState,
    *,
    via: Channel,
    now: datetime,
    until: datetime | None = None,
    shown: Mapping[int, Version] | None = None,
) -> DecisionResult:
    """Confirm, keep or snooze suggestions: each is checked and changed on its own.

    ``shown``: the version (state and last change) of each suggestion as a page showed it.
    A suggestion changed since (decided in the terminal, expired by an evaluation) is left
    as it is and refused as decided elsewhere: a stale page never overrides a decision.
    """
    if to not in (S.CONFIRMED, S.KEPT, S.SNOOZED):
        raise InvalidTransition(f"a person cannot set a suggestion to {to.value}")
    if to is S.SNOOZED and (until is None or until <= now):
        raise InvalidTransition("a snooze needs a date in the future")
    result = DecisionResult()
    for suggestion_id in ids:
        with store.session() as session:
            if shown is not None and not _still_as_shown(session, suggestion_id, shown):
                current = session.get(Suggestion, suggestion_id)
                result.refused[suggestion_id] = (
                    "no such suggestion" if current is None else _elsewhere(current)
                )
                continue
            suggestion = session.get(Suggestion, suggestion_id)
            if suggestion is None:
                result.refused[suggestion_id] = "no such suggestion"
                continue
            try:
                transition(session, suggestion, to, actor=PERSON, via=via, now=now)
            except InvalidTransition as exc:
                result.refused[suggestion_id] = str(exc)
                continue
            if to is S.SNOOZED:
                suggestion.snoozed_until = until
            if to is S.KEPT:
                suggestion.connection.protected = True
            result.changed.append(suggestion_id)
    return result


def _still_as_shown(session: Session, suggestion_id: int, shown: Mapping[int, Version]) -> bool:
    """Whether the suggestion is still as shown; if so, it stays so until the commit.

    A conditional UPDATE, not a read: on PostgreSQL it locks the row, so a decision made
    elsewhere at the same moment either comes before (and this one is refused) or after.
    """
    version = shown.get(suggestion_id)
    if version is None:
        return False
    state, at = version
    unchanged = (Suggestion.id == suggestion_id) & (Suggestion.state == state)
    if at is not None:
        unchanged &= Suggestion.updated_at == at
    result = session.execute(
        update(Suggestion)
        .where(unchanged)
        .values(state=state)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def _elsewhere(suggestion: Suggestion) -> str:
    how = f" through {suggestion.decided_via.value}" if suggestion.decided_via else ""
    return (
        f"decided elsewhere since the page was shown: now {suggestion.state.value}{how} "
        f"({suggestion.updated_at:%Y-%m-%d %H:%M} UTC)"
    )


def version_of(suggestion: Suggestion) -> tuple[SuggestionState, datetime]:
    """What a page shows a suggestion at: its state and the time of its last change."""
    return suggestion.state, suggestion.updated_at


def pending_ids(store: Store, account_id: int | None = None) -> list[int]:
    with store.session() as session:
        query = select(Suggestion.id).where(Suggestion.state == S.PENDING)
        if account_id is not None:
            query = query.where(Suggestion.account_id == account_id)
        return list(session.scalars(query.order_by(Suggestion.id)))


# --- evaluation --------------------------------------------------------------------------


@dataclass
class EvaluationReport:
    account: str
    verdicts: dict[str, int] = field(default_factory=dict)
    queued: int = 0
    expired: int = 0
    woke: int = 0
    capped: int = 0  # flagged but held back by the per-digest cap
    brake: bool = False
    coverage: tuple[datetime, datetime] | None = None


@dataclass
class Evaluation:
    account: Account
    items: list[PlanItem]
    coverage: tuple[datetime, datetime] | None
    brake: bool
    unseen: list[Unseen] = field(default_factory=list)
    accepted: frozenset[Kind] = frozenset()
    at: datetime | None = None  # the moment the verdicts speak of (``verdict_time``)


def judge_account(
    session: Session,
    account: Account,
    rules: Rules,
    now: datetime,
    *,
    with_evidence: bool = True,
    accepted: frozenset[Kind] = frozenset(),
    connection_ids: Sequence[int] | None = None,
    read_apart: bool = False,
) -> Evaluation:
    """Every active connection of the account with its judgement (no writes).

    ``accepted`` holds the unseen kinds the person accepted for the account (``accept_unseen``);
    ``connection_ids`` limits the judgement to those connections (the executor's re-check),
    judged exactly as a whole evaluation judges them. ``read_apart``: on PostgreSQL, the
    exchanges are summed on a connection of their own while ``session`` reads the
    connections (``_alongside``); only for a session that has written nothing uncommitted.

    A verdict speaks of the moment the account's complete data ends (``verdict_time``): the
    window ending there must be covered, and every exchange stored since still counts. Data
    older than ``rules.stale_after`` flags nobody (``stale_gap``).
    """
    coverage = account_coverage(session, account, accepted)
    unseen = account_unseen(account)
    brake = account.brake_engaged_at is not None
    at = verdict_time(coverage, now)
    counting = counting_rules(rules, at, now)
    # Tens of thousands of objects that live until the judgement is returned, none of them
    # in a cycle: the collector would only walk them again and again (a fifth of the time).
    with collector_paused():
        if connection_ids is None:
            with _alongside(
                session, lambda s: exchange_stats(s, account.id, counting, now), apart=read_apart
            ) as sums:
                people = connection_facts(session, account.id)
            stats = sums()
        else:
            people = connection_facts(session, account.id, connection_ids)
            counterparts = [f.user_id for f in people]
            stats = exchange_stats(session, account.id, counting, now, counterparts)
        if rules.count_linked:
            stats = with_linked(session, account.id, stats, counting, now)
        old = stale_gap(coverage, rules, now)
        items = []
        for facts in people:
            s = stats.get(facts.user_id, NO_EXCHANGES)
            judgement = judge(
                facts,
                s,
                rules,
                coverage,
                at,
                brake=brake,
                with_evidence=with_evidence,
                unseen=unseen,
                accepted=accepted,
            )
            if old and judgement.removable and not facts.gone:
                # "No exchange" said of data this old says nothing of the time since: keep.
                why = f"not enough history yet: {old}"
                judgement = Judgement(Verdict.TOO_EARLY, why, judgement.evidence)
            items.append(PlanItem(facts, s, judgement))
    span = (coverage.start, coverage.end) if coverage else None
    return Evaluation(account, items, span, brake, unseen, accepted, at)


_pause_lock = threading.Lock()
_pauses = 0  # judgements under way in this process
_resume = False  # whether the collector was on when the first of them paused it


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the body runs, and on again when the last
    of the judgements running in this process ends (if it was on before the first). Memory
    is still freed as usual: only reference cycles wait for the next collection."""
    global _pauses, _resume
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()


@contextmanager
def _alongside(
    session: Session, read: Callable[[Session], T], *, apart: bool
) -> Iterator[Callable[[], T]]:
    """Run ``read`` while the body runs: with ``apart`` on a PostgreSQL engine, in a thread on
    a session of its own, so that the server works on one statement while this process reads
    the other; else (SQLite, whose reads are this process's own work) in ``session``, after
    the body. Yields what gives ``read``'s result once the body has run.

    Under PostgreSQL's READ COMMITTED every statement reads its own snapshot, in one session
    or in two, so the two reads agree as well as they did one after the other; the other
    session cannot see what ``session`` has written and not committed, hence ``apart``.
    """
    bind = session.get_bind()
    if not (apart and isinstance(bind, Engine) and bind.dialect.name == "postgresql"):
        yield lambda: read(session)
        return

    def own() -> T:
        with Session(bind) as other:
            return read(other)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lopper-read") as pool:
        future = pool.submit(own)
        yield future.result


def stale_gap(coverage: Span | None, rules: Rules, now: datetime) -> str | None:
    """Why the account's complete data is too old for anyone to be found silent, if it is.

    A verdict speaks of the window that ends with the data (``verdict_time``); once that
    end is more than ``rules.stale_after`` ago, the time since is too long to ignore, and
    nobody is flagged (or carried out) until a newer sync or export.
    """
    if coverage is None or coverage.end >= now - rules.stale_after:
        return None
    return f"no complete sync since {coverage.end:%Y-%m-%d}"


def _reason(judgement: Judgement) -> Reason:
    return Reason.GONE if judgement.verdict is Verdict.GONE else Reason.QUIET


def evaluate_account(
    store: Store,
    account_key: str,
    rules: Rules,
    now: datetime,
    *,
    accepted: frozenset[Kind] = frozenset(),
) -> EvaluationReport:
    """Judge every connection, queue new suggestions, expire those the facts overtook."""
    report = EvaluationReport(account_key)
    # The objects of a whole account's judgement live until the end: see judge_account.
    with collector_paused(), store.session() as session:
        account = session.scalar(select(Account).where(Account.key == account_key))
        if account is None:
            raise NotFound(f"account {account_key} has not been synced yet")
        # Evidence only for the suggestions written below: for every connection it was a third
        # of the time spent outside the aggregate query.
        evaluation = judge_account(
            session, account, rules, now, with_evidence=False, accepted=accepted, read_apart=True
        )
        coverage = Span(*evaluation.coverage) if evaluation.coverage else None

        def complete(item: PlanItem) -> PlanItem:
            judgement = judge(
                item.facts,
                item.stats,
                rules,
                coverage,
                evaluation.at or now,
                brake=evaluation.brake,
                unseen=evaluation.unseen,
                accepted=accepted,
            )
            return PlanItem(item.facts, item.stats, judgement)

        report.brake = evaluation.brake
        report.coverage = evaluation.coverage
        by_connection = {item.facts.id: item for item in evaluation.items}
        for item in evaluation.items:
            verdict = item.judgement.verdict.value
            report.verdicts[verdict] = report.verdicts.get(verdict, 0) + 1

        open_suggestions = list(
            session.scalars(
                select(Suggestion).where(
                    Suggestion.account_id == account.id,
                    Suggestion.state.in_([S.PENDING, S.SNOOZED]),
                )
            )
        )
        # Halfway through a listing (a rate limit split it across runs) a mutual may so far
        # have been seen in one list only: the flags are not final, so they expire nothing.
        listing_open = (
            session.scalar(
                select(SyncCursor.listing).where(
                    SyncCursor.account_id == account.id, SyncCursor.stream == CONNECTIONS
                )
            )
            is not None
        )
        for suggestion in open_suggestions:
            current = by_connection.get(suggestion.connection_id)
            if current is None:
                expire: str | None = "no longer connected"
            elif (
                not listing_open
                and not current.judgement.removable
                and current.judgement.verdict
                not in (
                    Verdict.HELD,
                    Verdict.TOO_EARLY,  # missing data says nothing about the person: wait
                )
            ):
                expire = f"no longer flagged: {current.judgement.why}"
            else:
                expire = None
            if expire is not None:
                transition(
                    session,
                    suggestion,
                    S.EXPIRED,
                    actor=LOPPER,
                    via=Channel.SYSTEM,
                    now=now,
                    detail=expire,
                )
                report.expired += 1
            elif (
                current is not None
                and suggestion.state is S.SNOOZED
                and suggestion.snoozed_until
                and suggestion.snoozed_until <= now
            ):
                transition(
                    session,
                    suggestion,
                    S.PENDING,
                    actor=LOPPER,
                    via=Channel.SYSTEM,
                    now=now,
                    detail="snooze ended",
                )
                suggestion.evidence = complete(current).judgement.evidence
                report.woke += 1

        busy = set(
            session.scalars(
                select(Suggestion.connection_id).where(
                    Suggestion.account_id == account.id, Suggestion.state.in_(OPEN)
                )
            )
        )
        pending = (
            session.scalar(
                select(func.count())
                .select_from(Suggestion)
                .where(Suggestion.account_id == account.id, Suggestion.state == S.PENDING)
            )
            or 0
        )
        room = max(0, rules.per_digest_cap - pending)
        fresh = [i for i in evaluation.items if i.judgement.removable and i.facts.id not in busy]
        fresh.sort(
            key=lambda i: (i.judgement.verdict is not Verdict.GONE, i.stats.value, i.facts.id)
        )
        queue(session, account.id, [complete(i) for i in fresh[:room]], now)
        report.queued = min(room, len(fresh))
        report.capped = max(0, len(fresh) - room)
        account.last_evaluated_at = now
    log.info(
        "evaluated",
        account=account_key,
        queued=report.queued,
        expired=report.expired,
        **report.verdicts,
    )
    return report


def queue(
    session: Session,
    account_id: int,
    items: Iterable[PlanItem],
    now: datetime,
    reason: Reason | None = None,
) -> list[Suggestion]:
    return [
        propose(
            session,
            account_id,
            item.facts.id,
            reason or _reason(item.judgement),
            {**item.judgement.evidence, "why": item.judgement.why},
            now,
        )
        for item in items
    ]


def propose(
    session: Session,
    account_id: int,
    connection_id: int,
    reason: Reason,
    evidence: dict[str, Any],
    now: datetime,
) -> Suggestion:
    """A new pending suggestion, audited as lopper's; ``evidence["why"]`` says why."""
    suggestion = Suggestion(
        account_id=account_id,
        connection_id=connection_id,
        state=S.PENDING,
        reason=reason,
        evidence=evidence,
        created_at=now,
        updated_at=now,
    )
    session.add(suggestion)
    session.flush()
    session.add(
        AuditEntry(
            at=now,
            actor=LOPPER,
            via=Channel.SYSTEM,
            entity="suggestion",
            entity_id=suggestion.id,
            account_id=account_id,
            from_state=None,
            to_state=S.PENDING.value,
            detail=evidence.get("why"),
        )
    )
    return suggestion


def queue_plan(store: Store, account_key: str, items: Sequence[PlanItem], now: datetime) -> int:
    """Queue a reduction plan's choices as pending suggestions (the person still confirms)."""
    with store.session() as session:
        account = session.scalar(select(Account).where(Account.key == account_key))
        if account is None:
            raise NotFound(f"account {account_key} has not been synced yet")
        busy = set(
            session.scalars(
                select(Suggestion.connection_id).where(
                    Suggestion.account_id == account.id, Suggestion.state.in_(OPEN)
                )
            )
        )
        fresh = [i for i in items if i.facts.id not in busy]
        queue(session, account.id, fresh, now, reason=Reason.PLAN)
        return len(fresh)
