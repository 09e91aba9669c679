"""The executor: carries out confirmed suggestions, and undoes them where it can.

Only suggestions the person confirmed ever reach the platform (invariant 1). Each removal
is written as ``started`` before the platform is asked and finished after (a crash in
between is resumed, and platforms treat "not following any more" as done). Removals per
account per day are capped and spaced with jitter; just before acting the connection is
checked again, and the removal is dropped if the facts changed (invariant 5).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.config import Account as AccountConfig
from service.config import Rules
from service.errors import InvalidTransition, LopperError, NotFound
from service.logs import get_logger, scrub
from service.model import (
    Channel,
    ConnectionState,
    Kind,
    Reason,
    RemovalState,
    SuggestionState,
)
from service.platforms.base import (
    AuthError,
    Blocked,
    Capability,
    PersonNotFound,
    Platform,
    PlatformError,
    RateLimited,
)
from service.rules import REMOVABLE, Verdict
from service.store import Store
from service.store.models import Account, Removal, Suggestion
from service.suggestions import (
    LOPPER,
    PERSON,
    get_suggestion,
    judge_account,
    propose,
    transition,
)

log = get_logger("lopper.removals")
S = SuggestionState


@dataclass
class ExecutionReport:
    account: str
    removed: list[int] = field(default_factory=list)
    manual: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    held: dict[int, str] = field(default_factory=dict)  # confirmed, waiting for data
    failed: dict[int, str] = field(default_factory=dict)
    stopped: str | None = None  # why the run ended early (cap, rate limit, block, auth)


class RestoreError(LopperError):
    pass


def _due(session: Session, account_id: int, now: datetime, rules: Rules) -> list[Suggestion]:
    confirmed = list(
        session.scalars(
            select(Suggestion)
            .where(Suggestion.account_id == account_id, Suggestion.state == S.CONFIRMED)
            .order_by(Suggestion.decided_at, Suggestion.id)
        )
    )
    retry = []
    for suggestion in session.scalars(
        select(Suggestion).where(Suggestion.account_id == account_id, Suggestion.state == S.FAILED)
    ):
        last = _last_removal(session, suggestion.id)
        if last is not None and last.state is RemovalState.STARTED:
            retry.append(suggestion)  # a retry interrupted between asking and recording
        elif (
            last is not None
            and last.attempt < rules.max_attempts
            and last.next_attempt_at is not None
            and last.next_attempt_at <= now
        ):
            retry.append(suggestion)
    return confirmed + retry


def _last_removal(session: Session, suggestion_id: int) -> Removal | None:
    return session.scalar(
        select(Removal).where(Removal.suggestion_id == suggestion_id).order_by(Removal.id.desc())
    )


def _interrupted(session: Session, suggestion_id: int) -> bool:
    last = _last_removal(session, suggestion_id)
    return last is not None and last.state is RemovalState.STARTED


def _asked(session: Session, suggestion_id: int) -> bool:
    """The platform was asked and may have acted: interrupted, or no answer came."""
    last = _last_removal(session, suggestion_id)
    return last is not None and last.state in (RemovalState.STARTED, RemovalState.UNANSWERED)


def removals_today(session: Session, account_id: int, now: datetime) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Removal)
            .where(
                Removal.account_id == account_id,
                Removal.state.in_([RemovalState.DONE, RemovalState.STARTED]),
                Removal.started_at > now - timedelta(days=1),
            )
        )
        or 0
    )


PLAN_VERDICTS = frozenset({Verdict.FLAG, Verdict.GONE, Verdict.KEEP})  # as plan_reduction
WAIT = frozenset({Verdict.TOO_EARLY, Verdict.HELD})  # missing data says nothing of the person


@dataclass(frozen=True)
class Recheck:
    drop: str | None = None  # the facts changed: why the removal is dropped
    hold: str | None = None  # the data cannot tell yet: why it waits


def recheck(
    session: Session,
    suggestion: Suggestion,
    rules: Rules,
    now: datetime,
    *,
    accepted: frozenset[Kind] = frozenset(),
) -> Recheck:
    """Judge a confirmed suggestion again, with everything the store knows at ``now``.

    The judgement is evaluation's own (``judge_account``): protection added since the
    confirmation, exchanges on linked accounts, exchanges that arrived late though dated
    before the suggestion, unseen kinds and coverage all count. A person who would be kept
    now is dropped; one the data cannot judge yet (a coverage gap, an unseen kind, the
    sanity brake, data older than ``rules.stale_after``) waits.
    """
    evaluation = judge_account(
        session,
        suggestion.account,
        rules,
        now,
        with_evidence=False,
        accepted=accepted,
        connection_ids=[suggestion.connection_id],
    )
    if not evaluation.items:
        return Recheck(drop="no longer connected in the latest listing")
    item = evaluation.items[0]
    judgement = item.judgement
    if judgement.verdict in WAIT:
        return Recheck(hold=judgement.why)
    plan = suggestion.reason is Reason.PLAN
    if judgement.verdict not in (PLAN_VERDICTS if plan else REMOVABLE):
        return Recheck(drop=f"no longer flagged: {judgement.why}")
    if plan:
        # The person chose from a plan that showed their last exchange: a newer one is news.
        shown = suggestion.evidence.get("last_exchange")
        known = datetime.fromisoformat(shown) if isinstance(shown, str) else None
        last = item.stats.last_exchange
        if last is not None and (known is None or last > known):
            return Recheck(drop=f"an exchange on {last:%Y-%m-%d} the plan did not show")
    return Recheck()


def execute_account(
    store: Store,
    config: AccountConfig,
    adapter: Platform,
    rules: Rules,
    clock: Callable[[], datetime],
    *,
    sleep: Callable[[float], None] = lambda _s: None,
    rng: random.Random | None = None,
    spacing: tuple[float, float] = (0.0, 0.0),
) -> ExecutionReport:
    """Carry out the account's confirmed (and due-for-retry) removals, within the caps."""
    rng = rng or random.Random()
    report = ExecutionReport(config.key)
    with store.session() as session:
        account = session.scalar(select(Account).where(Account.key == config.key))
        if account is None:
            return report
        account_id = account.id
        if account.removals_blocked_reason:
            report.stopped = f"removals stopped: {account.removals_blocked_reason}"
            return report
        if account.paused_reason:
            report.stopped = f"account paused: {account.paused_reason}"
            return report
        if account.next_removal_at and account.next_removal_at > clock():
            report.stopped = f"rate limited until {account.next_removal_at:%Y-%m-%d %H:%M} UTC"
            return report
        due_ids = [s.id for s in _due(session, account_id, clock(), rules)]
    can_remove = Capability.REMOVE in adapter.capabilities
    first = True
    for suggestion_id in due_ids:
        if can_remove:
            with store.session() as session:
                # An interrupted removal was counted when it started: finishing it adds none.
                if (
                    not _interrupted(session, suggestion_id)
                    and removals_today(session, account_id, clock()) >= rules.daily_removal_cap
                ):
                    report.stopped = f"daily cap of {rules.daily_removal_cap} removals reached"
                    break
            if not first and spacing[1] > 0:
                sleep(rng.uniform(*spacing))
        first = False
        stop = _execute_one(
            store,
            suggestion_id,
            adapter,
            rules,
            clock,
            report,
            can_remove,
            config.accept_unseen,
        )
        if stop:
            report.stopped = stop
            break
    log.info(
        "executed",
        account=config.key,
        removed=len(report.removed),
        manual=len(report.manual),
        dropped=len(report.dropped),
        held=len(report.held),
        failed=len(report.failed),
        stopped=report.stopped,
    )
    return report


def _execute_one(
    store: Store,
    suggestion_id: int,
    adapter: Platform,
    rules: Rules,
    clock: Callable[[], datetime],
    report: ExecutionReport,
    can_remove: bool,
    accepted: frozenset[Kind] = frozenset(),
) -> str | None:
    """One removal; returns why the whole run must stop, if it must."""
    with store.session() as session:
        suggestion = get_suggestion(session, suggestion_id)
        if suggestion.state not in (S.CONFIRMED, S.FAILED) or suggestion.decided_via is None:
            # Only a person's confirmation leads here; anything else is refused outright.
            return None
        user_id = suggestion.connection.platform_user_id
        # The platform was already asked (before a crash, or no answer came): the re-check
        # was made then, and asking again is safe ("not following any more" counts as
        # done). Checking again now would take lopper's own removal for the person's.
        resuming = _asked(session, suggestion_id)
        if not resuming:
            found = recheck(session, suggestion, rules, clock(), accepted=accepted)
            if found.drop is not None:
                _drop(session, suggestion, found.drop, clock())
                report.dropped[suggestion_id] = found.drop
                return None
            if found.hold is not None:
                report.held[suggestion_id] = found.hold
                return None
        if not can_remove:
            transition(
                session,
                suggestion,
                S.MANUAL,
                actor=LOPPER,
                via=Channel.SYSTEM,
                now=clock(),
                detail="this platform has no removal API: remove by hand",
            )
            session.add(_removal(suggestion, RemovalState.MANUAL, clock()))
            report.manual.append(suggestion_id)
            return None
    if not resuming and Capability.RELATIONSHIP in adapter.capabilities:
        try:
            relationship = adapter.relationship(user_id)
        except PlatformError as exc:
            return _failure(store, suggestion_id, exc, rules, clock, report)
        if not relationship.connected:
            with store.session() as session:
                suggestion = get_suggestion(session, suggestion_id)
                _drop(session, suggestion, "no longer connected on the platform", clock())
                suggestion.connection.following = False
            report.dropped[suggestion_id] = "no longer connected"
            return None
    with store.session() as session:
        suggestion = get_suggestion(session, suggestion_id)
        previous = _last_removal(session, suggestion_id)
        if previous is not None and previous.state is RemovalState.STARTED:
            removal = previous  # a run was interrupted between asking and recording: resume it
        else:
            attempt = previous.attempt + 1 if previous else 1
            removal = _removal(suggestion, RemovalState.STARTED, clock(), attempt)
            session.add(removal)
        session.flush()
        removal_id = removal.id
    try:
        outcome = adapter.remove(user_id)
        detail = scrub(outcome.detail) if outcome.detail else None
    except PersonNotFound as exc:
        if _still_connected(adapter, user_id):
            _refused(store, suggestion_id, removal_id, adapter, scrub(str(exc)), clock())
            report.manual.append(suggestion_id)
            return None
        detail = f"already gone: {scrub(str(exc))}"
    except PlatformError as exc:
        return _failure(store, suggestion_id, exc, rules, clock, report, removal_id, resuming)
    with store.session() as session:
        suggestion = get_suggestion(session, suggestion_id)
        removal = session.get_one(Removal, removal_id)
        removal.state = RemovalState.DONE
        removal.finished_at = clock()
        removal.error = None
        transition(
            session,
            suggestion,
            S.REMOVED,
            actor=LOPPER,
            via=Channel.SYSTEM,
            now=clock(),
            detail=detail,
        )
        connection = suggestion.connection
        connection.following = False
        if not connection.followed_by:
            connection.state = ConnectionState.REMOVED
    report.removed.append(suggestion_id)
    return None


def _still_connected(adapter: Platform, user_id: str) -> bool:
    """After a "not found" to a removal: does the platform still list the follow?

    A suspended account can answer 404 to an unfollow while the follow stays listed; a
    platform that cannot say, or an answer that does not come, counts as still listed.
    """
    if Capability.RELATIONSHIP not in adapter.capabilities:
        return False
    try:
        return adapter.relationship(user_id).connected
    except PlatformError:
        return True


def _refused(
    store: Store,
    suggestion_id: int,
    removal_id: int,
    adapter: Platform,
    said: str,
    now: datetime,
) -> None:
    """The platform refused a removal of a follow it still lists: the person removes it by
    hand. The removal did not happen, so it does not count against the daily cap, and the
    open manual suggestion keeps the person from being suggested again."""
    with store.session() as session:
        suggestion = get_suggestion(session, suggestion_id)
        connection = suggestion.connection
        link = adapter.profile_link(connection.handle, connection.platform_user_id)
        link = link or connection.profile_url
        where = f" at {link}" if link else ""
        removal = session.get_one(Removal, removal_id)
        removal.state = RemovalState.MANUAL
        removal.finished_at = now
        removal.error = said
        transition(
            session,
            suggestion,
            S.MANUAL,
            actor=LOPPER,
            via=Channel.SYSTEM,
            now=now,
            detail=f"cannot be removed through the API ({said}): remove by hand{where}",
        )


def _removal(
    suggestion: Suggestion, state: RemovalState, now: datetime, attempt: int = 1
) -> Removal:
    return Removal(
        suggestion_id=suggestion.id,
        account_id=suggestion.account_id,
        connection_id=suggestion.connection_id,
        state=state,
        attempt=attempt,
        started_at=now,
        finished_at=now if state is not RemovalState.STARTED else None,
    )


def _drop(session: Session, suggestion: Suggestion, reason: str, now: datetime) -> None:
    transition(
        session,
        suggestion,
        S.EXPIRED,
        actor=LOPPER,
        via=Channel.SYSTEM,
        now=now,
        detail=f"removal dropped: {reason}",
    )
    removal = _removal(suggestion, RemovalState.DROPPED, now)
    removal.error = reason
    session.add(removal)


def _failure(
    store: Store,
    suggestion_id: int,
    exc: PlatformError,
    rules: Rules,
    clock: Callable[[], datetime],
    report: ExecutionReport,
    removal_id: int | None = None,
    asked_before: bool = False,
) -> str | None:
    """Record a failed attempt. ``removal_id``: the platform was asked in this attempt;
    ``asked_before``: it was asked in an earlier one whose outcome never came back."""
    now = clock()
    said = scrub(str(exc)) or type(exc).__name__  # invariant 7: SDKs echo tokens in errors
    with store.session() as session:
        suggestion = get_suggestion(session, suggestion_id)
        account = suggestion.account
        if removal_id is None:
            previous = _last_removal(session, suggestion_id)
            removal = _removal(
                suggestion, RemovalState.FAILED, now, previous.attempt + 1 if previous else 1
            )
            session.add(removal)
        else:
            removal = session.get_one(Removal, removal_id)
        removal.state = RemovalState.FAILED
        removal.finished_at = now
        removal.error = said
        if removal_id is not None and (asked_before or type(exc) is PlatformError):
            # It may have been done (now or in the attempt this one resumed): whatever
            # stopped this attempt, the next one asks again rather than re-checking.
            removal.state = RemovalState.UNANSWERED
        if isinstance(exc, RateLimited):
            # Not the removal's fault: it stays confirmed and waits for the window to reset.
            account.next_removal_at = exc.reset_at or now + timedelta(minutes=15)
            removal.attempt = max(0, removal.attempt - 1)
            # A suggestion already retrying (failed) must stay due once the window resets.
            removal.next_attempt_at = account.next_removal_at
            return f"rate limited: {said}"
        if isinstance(exc, Blocked):
            account.removals_blocked_reason = f"the platform pushed back: {said}"
            account.removals_blocked_at = now
            removal.next_attempt_at = now  # due again once the person lifts the stop
            report.failed[suggestion_id] = said
            return f"removals stopped for {account.key}: {said}"
        if isinstance(exc, AuthError):
            account.paused_reason = f"credentials refused: {said}"
            account.paused_at = now
            removal.next_attempt_at = now  # due again once a sync accepts the credentials
            return f"account paused: {said}"
        if removal.attempt < rules.max_attempts:
            removal.next_attempt_at = now + rules.retry_after * (2 ** (removal.attempt - 1))
            detail = f"attempt {removal.attempt} failed ({said}); retry after {removal.next_attempt_at:%Y-%m-%d %H:%M} UTC"
        else:
            detail = f"gave up after {removal.attempt} attempts: {said}"
        transition(
            session, suggestion, S.FAILED, actor=LOPPER, via=Channel.SYSTEM, now=now, detail=detail
        )
        report.failed[suggestion_id] = detail
    return None


def restore(
    store: Store, suggestion_id: int, adapter: Platform, *, via: Channel, now: datetime
) -> None:
    """Undo a removal: re-follow through the platform and protect the person from then on."""
    with store.session() as session:
        suggestion = get_suggestion(session, suggestion_id)
        if suggestion.state is not S.REMOVED:
            raise InvalidTransition(
                f"suggestion {suggestion_id} is {suggestion.state.value}; only a removed one can be undone"
            )
        user_id = suggestion.connection.platform_user_id
    if Capability.RESTORE not in adapter.capabilities:
        raise RestoreError(
            f"{adapter.name} cannot re-follow through its API; follow them again by hand"
        )
    try:
        adapter.restore(user_id)
    except PlatformError as exc:
        raise RestoreError(f"the platform refused to restore: {scrub(str(exc))}") from None
    with store.session() as session:
        suggestion = get_suggestion(session, suggestion_id)
        transition(session, suggestion, S.RESTORED, actor=PERSON, via=via, now=now)
        connection = suggestion.connection
        connection.following = True
        connection.state = ConnectionState.ACTIVE
        connection.protected = True
        session.add(_removal(suggestion, RemovalState.RESTORED, now))


def manual_done(store: Store, suggestion_id: int, *, via: Channel, now: datetime) -> None:
    with store.session() as session:
        suggestion = get_suggestion(session, suggestion_id)
        if suggestion.state is not S.MANUAL:
            raise NotFound(f"suggestion {suggestion_id} is not waiting for a manual removal")
        transition(session, suggestion, S.REMOVED, actor=PERSON, via=via, now=now)
        # As after a removal through the API: not suggested again before the next listing.
        connection = suggestion.connection
        connection.following = False
        if not connection.followed_by:
            connection.state = ConnectionState.REMOVED


def settle_manual_removals(
    session: Session, account_id: int, rules: Rules, now: datetime, source: str
) -> tuple[int, int]:
    """After a complete listing (an import or a sync): close or reopen removals done by hand.

    A removal waiting for the person's own click is closed as removed once the listing no
    longer holds the connection. A connection the person removed by hand (`lopper done`) that
    is still listed stays out of the verdicts for ``rules.manual_recheck_after`` (an export
    can predate the click); after that, a new pending suggestion asks the person again.
    Returns (closed, asked again).
    """
    closed = asked = 0
    for suggestion in session.scalars(
        select(Suggestion).where(Suggestion.account_id == account_id, Suggestion.state == S.MANUAL)
    ):
        connection = suggestion.connection
        if connection.state is ConnectionState.ACTIVE:
            continue
        transition(
            session,
            suggestion,
            S.REMOVED,
            actor=LOPPER,
            via=Channel.SYSTEM,
            now=now,
            detail=f"no longer connected in the {source} of {now:%Y-%m-%d}",
        )
        connection.following = False
        connection.state = ConnectionState.REMOVED
        closed += 1
    latest = dict(
        session.execute(
            select(Suggestion.connection_id, func.max(Suggestion.id))
            .where(Suggestion.account_id == account_id)
            .group_by(Suggestion.connection_id)
        ).all()
    )
    by_hand = select(Removal.suggestion_id).where(
        Removal.account_id == account_id, Removal.state == RemovalState.MANUAL
    )
    for suggestion in list(
        session.scalars(
            select(Suggestion).where(
                Suggestion.account_id == account_id,
                Suggestion.state == S.REMOVED,
                Suggestion.id.in_(by_hand),
            )
        )
    ):
        connection = suggestion.connection
        if connection.state is not ConnectionState.ACTIVE or latest[connection.id] != suggestion.id:
            continue
        if now - suggestion.updated_at < rules.manual_recheck_after:
            connection.state = ConnectionState.REMOVED
            continue
        why = (
            f"still connected in the {source} of {now:%Y-%m-%d}, "
            f"{(now - suggestion.updated_at).days} days after the removal by hand"
        )
        evidence = {**suggestion.evidence, "asked_again_after": suggestion.id, "why": why}
        propose(session, account_id, connection.id, suggestion.reason, evidence, now)
        asked += 1
    return closed, asked
