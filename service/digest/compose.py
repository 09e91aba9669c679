"""What a digest says, read from the store as plain values for the templates.

``gather`` is the only part that reads the store; rendering (``render.py``) takes the
values it returns and an explicit time zone, so a digest can be rendered and measured
without a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from service.config import Account as AccountConfig
from service.config import Rules, XOptions
from service.costs import month_costs
from service.model import ConnectionState, RemovalState, SuggestionState, Unseen
from service.rules import Verdict, counted_unseen, coverage_gap, unseen_todo, verdict_time
from service.store.models import Account, Connection, Removal, Suggestion, SyncRun
from service.store.queries import account_coverage, account_unseen
from service.suggestions import OPEN, judge_account, stale_gap
from service.text import web_link

S = SuggestionState

# Age of the last exchange with a connection, youngest first: (label, upper bound).
BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("under 1 month", timedelta(days=30)),
    ("1–3 months", timedelta(days=91)),
    ("3–6 months", timedelta(days=182)),
    ("6–12 months", timedelta(days=365)),
    ("over a year", None),
)
NEVER = "never"


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class Person:
    """One suggestion (or removal) as the digest and the review page show it."""

    id: int
    account: str
    handle: str
    name: str | None
    profile_url: str | None
    why: str
    reason: str
    connected_since: datetime | None
    last_exchange: datetime | None
    last_inbound: datetime | None
    last_outbound: datetime | None
    inbound: int
    outbound: int
    window_days: int | None
    value: float
    mutual: bool
    created_at: datetime
    state: str = S.PENDING.value
    note: str | None = None
    at: datetime | None = None  # removed at, for removals
    # What could not be seen on the account when it was suggested (accepted by the person).
    unseen: tuple[str, ...] = ()
    # Connected before lopper's first sync, on a date the platform does not tell: then
    # ``connected_since`` is that first sync, the latest it can have been.
    since_unknown: bool = False

    @classmethod
    def of(cls, suggestion: Suggestion, account_key: str, at: datetime | None = None) -> Person:
        e = suggestion.evidence or {}
        connection = suggestion.connection
        return cls(
            id=suggestion.id,
            account=account_key,
            handle=connection.handle,
            name=connection.display_name,
            profile_url=web_link(connection.profile_url or e.get("profile_url")),
            why=str(e.get("why") or suggestion.reason.value),
            reason=suggestion.reason.value,
            connected_since=_when(e.get("connected_since") or e.get("first_seen")),
            last_exchange=_when(e.get("last_exchange")),
            last_inbound=_when(e.get("last_inbound")),
            last_outbound=_when(e.get("last_outbound")),
            inbound=int(e.get("inbound_in_window") or 0),
            outbound=int(e.get("outbound_in_window") or 0),
            window_days=e.get("window_days"),
            value=float(e.get("value") or 0.0),
            mutual=bool(e.get("mutual")),
            created_at=suggestion.created_at,
            state=suggestion.state.value,
            note=suggestion.note,
            at=at,
            unseen=tuple(str(u) for u in e.get("unseen") or ()),
            since_unknown=bool(e.get("follow_date_unknown")),
        )


@dataclass(frozen=True, slots=True)
class Bucket:
    label: str
    kept: int  # judged worth keeping, protected, new, or not judgeable yet
    suggested: int  # an open suggestion in the queue
    waiting: int = 0  # flagged, but held back by the per-digest cap: suggested later

    @property
    def total(self) -> int:
        return self.kept + self.suggested + self.waiting


@dataclass
class AccountDigest:
    key: str
    simulated: bool = False
    synced: bool = True
    connections: int = 0
    following: int = 0
    change: int | None = None  # since the last digest; None: no earlier digest
    new: list[Person] = field(default_factory=list)
    pending: list[Person] = field(default_factory=list)  # still pending from earlier digests
    removed: list[Person] = field(default_factory=list)
    manual: list[Person] = field(default_factory=list)
    failed: list[Person] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    history_gap: str | None = None  # invariant 3: why nobody can be judged yet
    unseen: list[str] = field(default_factory=list)  # kinds not seen: why, and what to do
    too_early: int = 0  # connections not judgeable yet for lack of history
    brake: str | None = None
    buckets: list[Bucket] = field(default_factory=list)
    cost_month: float | None = None  # estimated platform cost this month (pay-per-use APIs)
    budget: float | None = None

    @property
    def suggestion_ids(self) -> list[int]:
        return [p.id for p in self.new] + [p.id for p in self.pending]


@dataclass
class DigestData:
    generated_at: datetime
    since: datetime | None
    accounts: list[AccountDigest]
    review_url: str | None = None
    schedule: str = ""
    link_expires: datetime | None = None
    preview: bool = False

    @property
    def new_count(self) -> int:
        return sum(len(a.new) for a in self.accounts)

    @property
    def pending_count(self) -> int:
        return sum(len(a.new) + len(a.pending) for a in self.accounts)

    @property
    def suggestion_ids(self) -> list[int]:
        return [i for a in self.accounts for i in a.suggestion_ids]

    def summary(self) -> dict[str, Any]:
        """What the next digest compares against."""
        return {
            a.key: {"connections": a.connections, "following": a.following}
            for a in self.accounts
            if a.synced
        }


def bucket_of(last: datetime | None, now: datetime) -> str:
    if last is None:
        return NEVER
    age = now - last
    for label, bound in BUCKETS:
        if bound is None or age < bound:
            return label
    return BUCKETS[-1][0]


def count_buckets(
    rows: Iterable[tuple[datetime | None, bool, bool]], now: datetime
) -> list[Bucket]:
    """Connections per age of their last exchange.

    Each row: (last exchange, has an open suggestion, flagged but not queued yet: the
    per-digest cap holds it back).
    """
    labels = [label for label, _ in BUCKETS] + [NEVER]
    kept = dict.fromkeys(labels, 0)
    suggested = dict.fromkeys(labels, 0)
    waiting = dict.fromkeys(labels, 0)
    for last, open_suggestion, flagged in rows:
        target = suggested if open_suggestion else waiting if flagged else kept
        target[bucket_of(last, now)] += 1
    return [Bucket(label, kept[label], suggested[label], waiting[label]) for label in labels]


def unseen_notes(unseen: Sequence[Unseen], config: AccountConfig, rules: Rules) -> list[str]:
    """Each counted kind the account's platform does not show: why, and what to do."""
    notes = []
    for item in counted_unseen(unseen, rules):
        if item.kind in config.accept_unseen:
            notes.append(
                f"{item.describe()} cannot be seen ({item.reason}); you accepted it, and "
                "each suggestion says so"
            )
            continue
        notes.append(
            f"{item.describe()} cannot be seen ({item.reason}); nobody on this account is "
            f"suggested until you {unseen_todo(item)}"
        )
    return notes


def _count(session: Session, *where: Any) -> int:
    return session.scalar(select(func.count()).select_from(Connection).where(*where)) or 0


def gather_account(
    session: Session,
    config: AccountConfig,
    rules: Rules,
    now: datetime,
    since: datetime | None,
    previous: dict[str, Any] | None,
) -> AccountDigest:
    digest = AccountDigest(config.key, simulated=config.platform == "sandbox")
    account = session.scalar(select(Account).where(Account.key == config.key))
    if account is None:
        digest.synced = False
        return digest
    active = Connection.state == ConnectionState.ACTIVE
    digest.connections = _count(session, Connection.account_id == account.id, active)
    digest.following = _count(
        session, Connection.account_id == account.id, active, Connection.following
    )
    if previous and config.key in previous:
        digest.change = digest.following - int(previous[config.key].get("following", 0))

    pending = session.scalars(
        select(Suggestion)
        .where(Suggestion.account_id == account.id, Suggestion.state == S.PENDING)
        .options(selectinload(Suggestion.connection))
        .order_by(Suggestion.id)
    )
    for suggestion in pending:
        person = Person.of(suggestion, config.key)
        if since is None or suggestion.created_at > since:
            digest.new.append(person)
        else:
            digest.pending.append(person)

    removals = (
        select(Suggestion, Removal.finished_at)
        .join(Removal, Removal.suggestion_id == Suggestion.id)
        .options(selectinload(Suggestion.connection))
    )
    removals = removals.where(
        Suggestion.account_id == account.id,
        Removal.state == RemovalState.DONE,
        Suggestion.state == S.REMOVED,  # not those undone since
    )
    if since is not None:
        removals = removals.where(Removal.finished_at > since)
    for suggestion, finished in session.execute(removals.order_by(Removal.finished_at)):
        digest.removed.append(Person.of(suggestion, config.key, at=finished))
    for state, target in ((S.MANUAL, digest.manual), (S.FAILED, digest.failed)):
        for suggestion in session.scalars(
            select(Suggestion)
            .where(Suggestion.account_id == account.id, Suggestion.state == state)
            .options(selectinload(Suggestion.connection))
            .order_by(Suggestion.id)
        ):
            target.append(Person.of(suggestion, config.key))

    if account.paused_reason:
        digest.problems.append(f"paused: {account.paused_reason}")
    if account.removals_blocked_reason:
        digest.problems.append(
            f"removals stopped: {account.removals_blocked_reason} "
            f"(after you looked: `lopper resume {config.key}`)"
        )
    runs = select(SyncRun).where(
        SyncRun.account_id == account.id,
        SyncRun.outcome.in_(["failed", "paused", "skipped", "partial"]),
    )
    if since is not None:
        runs = runs.where(SyncRun.started_at > since)
    # A partial run without a problem was only deferred by a rate limit: that is routine.
    shown = [
        r
        for r in session.scalars(runs.order_by(SyncRun.id.desc()).limit(20))
        if r.detail or r.outcome != "partial"
    ]
    for run in shown[:3]:
        digest.problems.append(
            f"sync {run.outcome} on {run.started_at:%Y-%m-%d %H:%M} UTC"
            + (f": {run.detail}" if run.detail else "")
        )
    if account.brake_engaged_at is not None:
        digest.brake = (
            f"{account.brake_vanished} of {account.brake_total} connections vanished at once "
            f"on {account.brake_engaged_at:%Y-%m-%d}; nobody is marked gone or suggested "
            "until a later sync agrees"
        )
    coverage = account_coverage(session, account, config.accept_unseen)
    digest.history_gap = coverage_gap(coverage, rules, verdict_time(coverage, now)) or stale_gap(
        coverage, rules, now
    )
    digest.unseen = unseen_notes(account_unseen(account), config, rules)
    if config.platform == "x":
        options = config.x or XOptions()
        costs = month_costs(session, now, {config.key: options.prices})
        digest.cost_month = costs.get(config.key, 0.0)
        digest.budget = options.monthly_budget

    evaluation = judge_account(
        session,
        account,
        rules,
        now,
        with_evidence=False,
        accepted=config.accept_unseen,
        read_apart=True,
    )
    open_ids = set(
        session.scalars(
            select(Suggestion.connection_id).where(
                Suggestion.account_id == account.id, Suggestion.state.in_(OPEN)
            )
        )
    )
    rows = []
    for item in evaluation.items:
        if item.judgement.verdict is Verdict.TOO_EARLY:
            digest.too_early += 1
        if item.facts.following:
            queued = item.facts.id in open_ids
            rows.append((item.stats.last_exchange, queued, item.judgement.removable and not queued))
    digest.buckets = count_buckets(rows, now)
    return digest


def gather(
    session: Session,
    accounts: Sequence[AccountConfig],
    rules: Rules,
    now: datetime,
    since: datetime | None,
    previous: dict[str, Any] | None,
) -> DigestData:
    return DigestData(
        generated_at=now,
        since=since,
        accounts=[gather_account(session, a, rules, now, since, previous) for a in accounts],
    )
