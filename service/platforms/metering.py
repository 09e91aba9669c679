"""What an adapter of a pay-per-use platform (X) counts of its own reads and writes.

The adapter holds a :class:`CostMeter` as its ``meter`` attribute and counts on it what the
platform's answers return, as the platform bills them; before every billed page it asks
:meth:`CostMeter.page_size`, which stops the run with :class:`OverBudget` where the month's
budget cannot pay for the page. It never records: the flow above it (``service.costs``,
called by the sync) drains the meter after each run, records the estimate, and sets what the
month had spent before the run. Amounts are in micro-dollars (integers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from service.config import XPrices
from service.platforms.base import RateLimited

MICROS = 1_000_000


class OverBudget(RateLimited):
    """The month's budget cannot pay for the next run, or for the next page of one.

    A kind of :class:`RateLimited`: a stream stopped by it keeps its cursor and is deferred
    until ``reset_at`` (the next month), like one stopped by a spent rate-limit window.
    """

    def __init__(self, detail: str, reset_at: datetime | None = None) -> None:
        super().__init__(reset_at=reset_at, detail=detail)


def dollars(micros: int) -> str:
    cents = (Decimal(micros) / MICROS).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"${cents:,}"


@dataclass
class Usage:
    reads: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    micros: int = 0
    listing_micros: int = 0

    def __bool__(self) -> bool:
        return bool(self.reads or self.writes)


class CostMeter:
    """Counts the resources an adapter's answers return, as the platform bills them."""

    def __init__(
        self,
        prices: XPrices,
        *,
        owned_app: bool = False,
        budget: float | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.prices = prices
        self.owned_app = owned_app
        self.budget = budget
        self.clock = clock or (lambda: datetime.now(UTC))
        self.usage = Usage()
        self.writes: Counter[str] = Counter()
        # What the next complete listing would cost, once the adapter knows the network's size.
        self.listing_estimate_micros = 0
        # The month's estimated cost before this run (set by check_budget): with the run's own
        # usage, what every billed page is checked against.
        self.spent_before = 0
        self._day: date | None = None
        self._seen: dict[str, set[str]] = {}

    def price(self, key: str) -> int:
        return round(float(getattr(self.prices, key)) * MICROS)

    def read(
        self, key: str, ids: Iterable[str], *, owned: bool = False, listing: bool = False
    ) -> int:
        """Count resources read; one already read today (UTC) is not charged again."""
        today = self.clock().astimezone(UTC).date()
        if today != self._day:
            self._day, self._seen = today, {}
        key = "owned_read" if owned and self.owned_app else key
        seen = self._seen.setdefault(key, set())
        fresh = 0
        for resource in ids:
            if resource not in seen:
                seen.add(resource)
                fresh += 1
        if fresh:
            cost = fresh * self.price(key)
            self.usage.reads[key] += fresh
            self.usage.micros += cost
            if listing:
                self.usage.listing_micros += cost
        return fresh

    def room(self) -> int | None:
        """Micro-dollars left in the month's budget (None: no budget set)."""
        if self.budget is None:
            return None
        return round(self.budget * MICROS) - self.spent_before - self.usage.micros

    def page_size(self, what: str, wanted: int, least: int, per_item: int) -> int:
        """How many items the next billed page may ask for so that the budget holds.

        ``per_item`` is the most one item of the page can cost (the resource with what its
        expansions bring along); the page asks for fewer items near the end of the budget,
        and none below ``least`` (the endpoint's smallest ``max_results``): then the run
        stops with :class:`OverBudget`, before the request is made.
        """
        room = self.room()
        if room is None or per_item <= 0:
            return wanted
        fits = max(0, room) // per_item
        if fits < least:
            now = self.clock()
            budget = round(float(self.budget or 0) * MICROS)
            raise OverBudget(
                f"X budget: {dollars(self.spent_before + self.usage.micros)} of "
                f"{dollars(budget)} spent this month, and the next page of {what} could cost "
                f"{dollars(least * per_item)}: stopped before it. Syncs resume next month, or "
                "raise x.monthly_budget; confirmed removals go on",
                reset_at=next_month(now),
            )
        return min(wanted, fits)

    def write(self, key: str) -> None:
        # Counted, not drained with a sync's usage: month_costs values writes from the
        # removals table, whichever process made them.
        self.writes[key] += 1

    def drain(self) -> Usage:
        usage, self.usage = self.usage, Usage()
        return usage


def month_start(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
