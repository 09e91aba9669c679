"""The rules: who is flagged, what each connection is worth, and a reduction plan.

Pure functions over plain data and an explicit ``now``: no database, network or clock here.
Whatever is missing or uncertain falls on the side of keeping the person.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from service.config import Rules
from service.model import Direction, Kind, Span, Unseen

LN2 = math.log(2)


class ConnectionFacts(NamedTuple):
    """One connection as evaluation sees it. A named tuple: immutable like a frozen
    dataclass, and built faster (96,000 in 0.22 s instead of 0.28 s)."""

    id: int
    user_id: str
    handle: str
    display_name: str | None
    profile_url: str | None
    following: bool
    followed_by: bool
    connected_since: datetime | None
    first_seen_at: datetime
    gone: bool = False
    moved_to: str | None = None
    lists: tuple[str, ...] = ()
    kept: bool = False  # the person chose to keep them earlier
    last_active_at: datetime | None = None  # their own last post (None: unknown)
    # Listed at the account's first complete listing and not among its newest follows:
    # connected before lopper's first sync, on a date the platform does not tell.
    established: bool = False

    @property
    def mutual(self) -> bool:
        return self.following and self.followed_by

    @property
    def since(self) -> datetime:
        """When the connection began, or when lopper first saw it if the platform won't say."""
        return self.connected_since or self.first_seen_at


@dataclass(frozen=True, slots=True)
class ExchangeStats:
    """What the store knows of the exchanges with one person (all of it, or in the window)."""

    inbound: int = 0  # in the window, counted kinds only
    outbound: int = 0
    last_inbound: datetime | None = None  # ever, any kind
    last_outbound: datetime | None = None
    value: float = 0.0

    @property
    def last_exchange(self) -> datetime | None:
        times = [t for t in (self.last_inbound, self.last_outbound) if t is not None]
        return max(times) if times else None


NO_EXCHANGES = ExchangeStats()


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def combine(a: ExchangeStats, b: ExchangeStats) -> ExchangeStats:
    """The exchanges of one person seen through two accounts, as one."""
    return ExchangeStats(
        a.inbound + b.inbound,
        a.outbound + b.outbound,
        _later(a.last_inbound, b.last_inbound),
        _later(a.last_outbound, b.last_outbound),
        a.value + b.value,
    )


class Verdict(enum.StrEnum):
    FLAG = "flag"  # too few exchanges in the window: suggest removing
    GONE = "gone"  # deleted, suspended or moved: removing hurts nobody
    KEEP = "keep"  # enough exchanges in the window
    PROTECTED = "protected"  # by handle, list, mutual follow, or the person's earlier choice
    NEW = "new"  # still in grace
    TOO_EARLY = "too-early"  # coverage does not span the window yet
    HELD = "held"  # the sanity brake is on for this account
    NOT_FOLLOWING = "not-following"  # they follow the account; nothing to unfollow


REMOVABLE = frozenset({Verdict.FLAG, Verdict.GONE})


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    why: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def removable(self) -> bool:
        return self.verdict in REMOVABLE


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def window_text(window: timedelta) -> str:
    """``180 days``, ``1 day``, ``12 hours``, ``90 minutes``: a window as a person reads it."""
    seconds = int(window.total_seconds())
    if seconds % 86400 == 0:
        count, unit = seconds // 86400, "day"
    elif seconds % 3600 == 0:
        count, unit = seconds // 3600, "hour"
    else:
        count, unit = max(1, round(seconds / 60)), "minute"
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _window_days(window: timedelta) -> float:
    """The window in days for the evidence: whole days stay whole, a shorter one is not 0."""
    if window.total_seconds() % 86400 == 0:
        return window.days
    return round(window.total_seconds() / 86400, 3)


def evidence_for(
    facts: ConnectionFacts, stats: ExchangeStats, rules: Rules, coverage: Span | None
) -> dict[str, Any]:
    return {
        "handle": facts.handle,
        "name": facts.display_name,
        "profile_url": facts.profile_url,
        "connected_since": _iso(facts.connected_since),
        "first_seen": _iso(facts.first_seen_at),
        "last_exchange": _iso(stats.last_exchange),
        "last_inbound": _iso(stats.last_inbound),
        "last_outbound": _iso(stats.last_outbound),
        "inbound_in_window": stats.inbound,
        "outbound_in_window": stats.outbound,
        "value": round(stats.value, 4),
        "window_days": _window_days(rules.window),
        "min_exchanges": rules.min_exchanges,
        "mutual": facts.mutual,
        "coverage": [_iso(coverage.start), _iso(coverage.end)] if coverage else None,
        "moved_to": facts.moved_to,
        "gone": facts.gone,
        "last_active": _iso(facts.last_active_at),
        "follow_date_unknown": facts.established,
    }


# Day one: of the follows a newest-first listing held at its first complete read, this many
# of the newest stay in grace (their date is unknown, and they may be days old).
NEWEST_IN_GRACE_SHARE = 0.1
NEWEST_IN_GRACE_MIN = 10


def newest_in_grace(follows: int) -> int:
    """How many of the newest follows of a first listing stay in grace: a tenth, at least 10."""
    return min(follows, max(NEWEST_IN_GRACE_MIN, math.ceil(follows * NEWEST_IN_GRACE_SHARE)))


def protection(facts: ConnectionFacts, rules: Rules) -> str | None:
    """Why this connection may never be suggested, if it may not."""
    if facts.kept:
        return "you chose to keep them"
    if facts.handle.lower() in rules.protected or facts.user_id in rules.protected:
        return "protected by handle"
    listed = set(facts.lists) & rules.protected_lists
    if listed:
        return f"on your protected list {sorted(listed)[0]!r}"
    if rules.protect_mutuals and facts.mutual:
        return "you follow each other"
    return None


def verdict_time(coverage: Span | None, now: datetime) -> datetime:
    """The moment a verdict speaks of: where the account's complete data ends, never later
    than ``now``.

    Nothing after the last complete read is known, so "no exchange in the window" can only
    be said of the window that ends there. Exchanges stored after that moment still count
    (they only ever keep someone): see ``counting_rules``.
    """
    return now if coverage is None else min(now, coverage.end)


def counting_rules(rules: Rules, at: datetime, now: datetime) -> Rules:
    """The rules whose window counts every exchange from ``at - window`` up to ``now``.

    A verdict made at ``at`` (``verdict_time``) still counts what the store learned since:
    a later exchange keeps the person as surely as one inside the window.
    """
    if at >= now:
        return rules
    return rules.model_copy(update={"window": rules.window + (now - at)})


def coverage_gap(coverage: Span | None, rules: Rules, now: datetime) -> str | None:
    """Why the store's data cannot support a "no exchange in the window" verdict at ``now``.

    The whole window, up to ``now`` itself, must be covered: there is no allowance for a
    recent stretch nobody read. Callers judge at ``verdict_time`` (the end of the data);
    a caller that judges at the clock learns here how far behind the data is.
    """
    if coverage is None:
        return "no complete interaction history yet"
    needed = now - rules.window
    if coverage.start > needed:
        days = (coverage.start - needed).days + 1
        return f"history covers only since {coverage.start:%Y-%m-%d}; {days} more days needed"
    if coverage.end < now:
        return (
            f"history read only up to {coverage.end:%Y-%m-%d %H:%M} UTC, "
            f"not up to {now:%Y-%m-%d %H:%M} UTC"
        )
    return None


def counted_unseen(unseen: Sequence[Unseen], rules: Rules) -> list[Unseen]:
    """The unseen kinds that matter to these rules (a kind the rules do not count does not)."""
    return [
        u
        for u in unseen
        if u.kind in rules.count_kinds
        and (u.direction is None or u.direction in rules.count_directions)
    ]


def unseen_todo(item: Unseen) -> str:
    """What the person can do about one unseen kind: accept it, or the adapter's remedy."""
    todo = f"accept it with accept_unseen: [{item.kind.value}] under the account"
    if item.remedy and "accept_unseen" not in item.remedy:
        todo += f", or {item.remedy}"
    return todo


def unseen_gap(
    unseen: Sequence[Unseen], rules: Rules, accepted: frozenset[Kind] = frozenset()
) -> str | None:
    """Why the account's data cannot support a flag because a counted kind is unseen, if so."""
    blocking = [u for u in counted_unseen(unseen, rules) if u.kind not in accepted]
    if not blocking:
        return None
    kinds = sorted({u.kind.value for u in blocking})
    reasons = "; ".join(dict.fromkeys(u.reason for u in blocking))
    return (
        f"{', '.join(kinds)} cannot be seen ({reasons}); "
        f"accept it with accept_unseen: [{', '.join(kinds)}] under the account"
    )


# The last account-wide gap worked out, as one tuple (read and replaced atomically, so
# threads judging other accounts never see half of another's): (rules, key, gap).
_last_gap: tuple[Rules, tuple[Any, ...], str | None] | None = None


def _account_gap(
    coverage: Span | None,
    rules: Rules,
    now: datetime,
    unseen: Sequence[Unseen],
    accepted: frozenset[Kind],
) -> str | None:
    """``coverage_gap`` or else ``unseen_gap``: the same for every connection of an account,
    so an evaluation of tens of thousands works it out once, not once a connection."""
    global _last_gap
    key = (coverage, now, tuple(unseen), accepted)
    last = _last_gap
    if last is not None and last[0] is rules and last[1] == key:
        return last[2]
    gap = coverage_gap(coverage, rules, now) or unseen_gap(unseen, rules, accepted)
    _last_gap = (rules, key, gap)
    return gap


def judge(
    facts: ConnectionFacts,
    stats: ExchangeStats,
    rules: Rules,
    coverage: Span | None,
    now: datetime,
    *,
    brake: bool = False,
    with_evidence: bool = True,
    unseen: Sequence[Unseen] = (),
    accepted: frozenset[Kind] = frozenset(),
) -> Judgement:
    """The verdict on one connection.

    ``unseen`` is what the account's adapter cannot see; a counted kind among them keeps
    everyone unless the person ``accepted`` it, and then every verdict's evidence says so.
    """
    # Evidence is what a suggestion carries: evaluating a whole account builds it only for
    # the few connections it queues, not for every one of tens of thousands.
    evidence = evidence_for(facts, stats, rules, coverage) if with_evidence else {}
    if with_evidence:
        evidence["unseen"] = [u.reason for u in counted_unseen(unseen, rules)]
    if not facts.following:
        return Judgement(Verdict.NOT_FOLLOWING, "they follow you; you do not follow them", evidence)
    why = protection(facts, rules)
    if why:
        return Judgement(Verdict.PROTECTED, why, evidence)
    if brake:
        return Judgement(Verdict.HELD, "sanity brake: waiting for a sync that agrees", evidence)
    if facts.gone:
        where = f" (moved to {facts.moved_to})" if facts.moved_to else ""
        return Judgement(Verdict.GONE, f"account gone or moved{where}", evidence)
    if facts.since > now - rules.grace and not facts.established:
        return Judgement(Verdict.NEW, f"connected since {facts.since:%Y-%m-%d}, in grace", evidence)
    gap = _account_gap(coverage, rules, now, unseen, accepted)
    if gap:
        return Judgement(Verdict.TOO_EARLY, f"not enough history yet: {gap}", evidence)
    counted = stats.inbound + stats.outbound
    if counted >= rules.min_exchanges:
        return Judgement(
            Verdict.KEEP, f"{counted} exchanges in the last {window_text(rules.window)}", evidence
        )
    if is_dormant(facts, rules, now):
        assert facts.last_active_at is not None
        return Judgement(
            Verdict.GONE,
            f"dormant: no post of their own since {facts.last_active_at:%Y-%m-%d}",
            evidence,
        )
    return Judgement(
        Verdict.FLAG,
        f"{counted} exchanges in the last {window_text(rules.window)} "
        f"(fewer than {rules.min_exchanges})",
        evidence,
    )


def is_dormant(facts: ConnectionFacts, rules: Rules, now: datetime) -> bool:
    """Known to have posted nothing for ``dormant_after`` (an unknown date is not dormant)."""
    return (
        rules.dormant_after is not None
        and facts.last_active_at is not None
        and facts.last_active_at < now - rules.dormant_after
    )


# --- the value score and the window counts, in plain Python ------------------------------


@dataclass(frozen=True, slots=True)
class ExchangeRow:
    counterpart_id: str
    kind: Kind
    direction: Direction
    occurred_at: datetime


def decay(age_seconds: float, rules: Rules) -> float:
    return math.exp(-LN2 * max(age_seconds, 0.0) / rules.half_life.total_seconds())


def stats_from_rows(
    rows: Iterable[ExchangeRow], rules: Rules, now: datetime
) -> dict[str, ExchangeStats]:
    """The same aggregate as the store's SQL query, computed row by row (the reference)."""
    since = now - rules.window
    acc: dict[str, list[Any]] = {}
    for row in rows:
        if row.occurred_at > now:
            continue  # as the query: nothing after ``now`` is known yet
        a = acc.setdefault(row.counterpart_id, [0, 0, None, None, 0.0])
        counted = (
            row.kind in rules.count_kinds
            and row.direction in rules.count_directions
            and row.occurred_at >= since
        )
        inbound = row.direction is Direction.INBOUND
        if counted:
            a[0 if inbound else 1] += 1
        slot = 2 if inbound else 3
        if a[slot] is None or row.occurred_at > a[slot]:
            a[slot] = row.occurred_at
        direction_weight = rules.inbound_weight if inbound else rules.outbound_weight
        a[4] += (
            rules.weights[row.kind]
            * direction_weight
            * decay((now - row.occurred_at).total_seconds(), rules)
        )
    return {k: ExchangeStats(v[0], v[1], v[2], v[3], v[4]) for k, v in acc.items()}


# --- the reduction plan ------------------------------------------------------------------


@dataclass(frozen=True)
class PlanItem:
    facts: ConnectionFacts
    stats: ExchangeStats
    judgement: Judgement


@dataclass(frozen=True)
class Plan:
    network: int  # connections the account follows
    keep_target: int
    remove: list[PlanItem]
    untouchable: int  # protected, new, too early or held
    shortfall: int  # how many more would have to go to reach the target


def _order(item: PlanItem) -> tuple[Any, ...]:
    last = item.stats.last_exchange
    return (
        0 if item.judgement.verdict is Verdict.GONE else 1,
        item.stats.value,
        last.timestamp() if last else float("-inf"),
        item.facts.since.timestamp(),
        item.facts.id,
    )


def plan_reduction(items: Sequence[PlanItem], keep: float | int) -> Plan:
    """Who goes first to bring the network down to ``keep`` (a share, or a number of people).

    Lowest value first (gone accounts before anyone), then the longest silent, then the
    oldest connection. Protected, new and not-yet-judgeable connections are never in it.
    """
    following = [i for i in items if i.facts.following]
    network = len(following)
    target = math.ceil(network * keep) if isinstance(keep, float) else int(keep)
    to_remove = max(0, network - target)
    candidates = [
        i for i in following if i.judgement.verdict in (Verdict.FLAG, Verdict.GONE, Verdict.KEEP)
    ]
    chosen = sorted(candidates, key=_order)[:to_remove]
    return Plan(
        network=network,
        keep_target=target,
        remove=chosen,
        untouchable=network - len(candidates),
        shortfall=to_remove - len(chosen),
    )
