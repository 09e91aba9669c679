"""The cost meter of pay-per-use platforms (X): what each sync is estimated to cost, and the budget.

X bills every resource a read returns and every write request
(https://docs.x.com/x-api/getting-started/pricing); a resource read again within the same UTC
day is charged once. The adapter counts what its answers return on a :class:`CostMeter`;
the sync records the estimate of each run (``cost_records``), and before a run checks that
the month's estimate plus the next run's stays within the account's ``monthly_budget``;
within a run, the adapter asks :meth:`CostMeter.page_size` before every billed page, so
the budget holds even where the estimate was short (a first run has none).
Removals are never held back by the budget: their cost is counted from the removals table.

All amounts are kept in micro-dollars (integers) so that sums stay exact. The meter itself
lives with the adapters (``service.platforms.metering``): an adapter counts what it reads,
and this module, above it, records and budgets what was counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.config import XPrices
from service.model import RemovalState
from service.platforms.metering import (
    MICROS,
    CostMeter,
    OverBudget,
    Usage,
    dollars,
    month_start,
    next_month,
)
from service.store import Store
from service.store.models import Account, CostRecord, Removal

__all__ = [
    "MICROS",
    "CostMeter",
    "OverBudget",
    "Usage",
    "dollars",
    "meter_of",
    "month_start",
    "next_month",
]

_RECENT_RUNS = 5  # the next run is estimated from the dearest of this many recent ones


def meter_of(adapter: Any) -> CostMeter | None:
    meter = getattr(adapter, "meter", None)
    return meter if isinstance(meter, CostMeter) else None


def _removal_micros(session: Session, account_id: int, since: datetime, prices: XPrices) -> int:
    """Writes made by the executor: an unfollow (with the check before it), or a follow (undo)."""
    rows = session.execute(
        select(Removal.state, func.count())
        .where(
            Removal.account_id == account_id,
            Removal.started_at >= since,
            Removal.state.in_([RemovalState.DONE, RemovalState.RESTORED]),
        )
        .group_by(Removal.state)
    ).all()
    counts = {state: count for state, count in rows}
    per_unfollow = round((prices.unfollow + prices.user_read) * MICROS)
    per_follow = round(prices.follow * MICROS)
    return (
        counts.get(RemovalState.DONE, 0) * per_unfollow
        + counts.get(RemovalState.RESTORED, 0) * per_follow
    )


def _month_micros(session: Session, account_id: int, now: datetime, prices: XPrices) -> int:
    since = month_start(now)
    recorded = session.scalar(
        select(func.coalesce(func.sum(CostRecord.micros), 0)).where(
            CostRecord.account_id == account_id, CostRecord.at >= since
        )
    )
    return int(recorded or 0) + _removal_micros(session, account_id, since, prices)


def month_costs(
    session: Session, now: datetime, prices: Mapping[str, XPrices] | None = None
) -> dict[str, float]:
    """Estimated cost this calendar month (UTC), in US dollars, of each account with any.

    ``prices`` by account key (default: the 2026 prices) values the removals and undos;
    syncs are valued at the prices in force when they ran.
    """
    accounts = session.execute(select(Account.id, Account.key, Account.platform)).all()
    costs: dict[str, float] = {}
    for account_id, key, platform in accounts:
        if platform != "x":
            recorded = session.scalar(
                select(func.count())
                .select_from(CostRecord)
                .where(CostRecord.account_id == account_id)
            )
            if not recorded:
                continue
        chosen = (prices or {}).get(key) or XPrices()
        micros = _month_micros(session, account_id, now, chosen)
        if micros or platform == "x":
            costs[key] = micros / MICROS
    return costs


def check_budget(
    store: Store, account_id: int, adapter: Any, listing_due: bool, now: datetime
) -> None:
    """Raise :class:`OverBudget` when the next run would take the month past the budget."""
    meter = meter_of(adapter)
    if meter is None or meter.budget is None:
        return
    with store.session() as session:
        spent = _month_micros(session, account_id, now, meter.prices)
        meter.spent_before = spent  # this run's own reads are on the meter, not yet recorded
        recent = session.execute(
            select(CostRecord.micros, CostRecord.listing_micros)
            .where(CostRecord.account_id == account_id, CostRecord.source == "sync")
            .order_by(CostRecord.at.desc(), CostRecord.id.desc())
            .limit(_RECENT_RUNS)
        ).all()
    streams = max((m - lm for m, lm in recent), default=0)
    estimate = streams + (meter.listing_estimate_micros if listing_due else 0)
    budget = round(meter.budget * MICROS)
    if spent + meter.usage.micros + estimate > budget:
        raise OverBudget(
            f"X budget: {dollars(spent)} of {dollars(budget)} spent this month, and the next "
            f"sync would cost about {dollars(estimate)}: not run. Syncs resume on "
            f"{next_month(now):%Y-%m-%d}, or raise x.monthly_budget; confirmed removals go on"
        )


def spend_allowed(
    store: Store, account_id: int, meter: CostMeter, extra_micros: int, now: datetime
) -> str | None:
    """Why spending ``extra_micros`` more now would pass the budget (None: it would not)."""
    if meter.budget is None:
        return None
    with store.session() as session:
        spent = _month_micros(session, account_id, now, meter.prices) + meter.usage.micros
    budget = round(meter.budget * MICROS)
    if spent + extra_micros <= budget:
        return None
    return (
        f"X budget: {dollars(spent)} of {dollars(budget)} spent this month; "
        f"{dollars(extra_micros)} more would pass it"
    )


def record_usage(
    session: Session,
    account_id: int,
    usage: Usage,
    now: datetime,
    *,
    source: str,
    sync_run_id: int | None = None,
) -> None:
    if not usage:
        return
    session.add(
        CostRecord(
            account_id=account_id,
            sync_run_id=sync_run_id,
            at=now,
            source=source,
            reads=dict(usage.reads),
            writes=dict(usage.writes),
            micros=usage.micros,
            listing_micros=usage.listing_micros,
        )
    )


def record_sync(
    session: Session, account_id: int, sync_run_id: int, adapter: Any, now: datetime
) -> None:
    """Record what the run just made cost (nothing for platforms without a meter)."""
    meter = meter_of(adapter)
    if meter is not None:
        record_usage(
            session, account_id, meter.drain(), now, source="sync", sync_run_id=sync_run_id
        )
