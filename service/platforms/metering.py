"""What an adapter of a pay-per-use platform (X) counts of its own reads and writes.

The adapter holds a :class:`CostMeter` as its ``meter`` attribute and counts on it what the
platform's answers return, as the platform bills them. It never records or budgets: the flow
above it (``service.costs``, called by the sync) drains the meter after each run, records the
estimate and checks the month's budget. Amounts are in micro-dollars (integers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from service.config import XPrices

MICROS = 1_000_000


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

    def write(self, key: str) -> None:
        # Counted, not drained with a sync's usage: month_costs values writes from the
        # removals table, whichever process made them.
        self.writes[key] += 1

    def drain(self) -> Usage:
        usage, self.usage = self.usage, Usage()
        return usage
