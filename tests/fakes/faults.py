"""Faults that a fake platform answers with instead of its data, queued by the tests.

The fakes share how faults are scheduled (by route, after some requests, a number of
times); what each kind of fault looks like on the wire is the fake's own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any


@dataclass
class Fault:
    kind: str
    route: str | None = None  # a route name of the fake; None: any route
    skip: int = 0  # matching requests that still succeed first
    times: int = 1


class FaultQueue:
    """Mixed into a fake: ``inject`` queues a fault, ``_take_fault`` hands out the next one."""

    KINDS: tuple[str, ...] = ()
    RANDOM_EXEMPT: frozenset[str] = frozenset()  # routes never faulted at random
    faults: list[Fault]
    tokens: Any  # what each fake keeps of its tokens
    # At random (``at_random``): each request not answered by a queued fault gets one of
    # these kinds with this probability.
    _random: tuple[float, tuple[str, ...], random.Random] | None = None

    def at_random(self, rate: float, kinds: tuple[str, ...], rng: random.Random) -> None:
        """Answer a share ``rate`` of requests with a fault drawn from ``kinds`` (0: stop)."""
        unknown = set(kinds) - set(self.KINDS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        self._random = (rate, kinds, rng) if rate > 0 else None

    def inject(self, kind: str, route: str | None = None, *, skip: int = 0, times: int = 1) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        self.faults.append(Fault(kind, route, skip, times))

    def revoke(self) -> None:
        self.tokens.clear()

    def _take_fault(self, route: str) -> str | None:
        for fault in self.faults:
            if fault.route is not None and fault.route != route:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
            return fault.kind
        if self._random is not None and route not in self.RANDOM_EXEMPT:
            rate, kinds, rng = self._random
            if rng.random() < rate:
                return rng.choice(kinds)
        return None
