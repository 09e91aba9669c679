"""Column types that keep invariant 8: every time in the store is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Dialect
from sqlalchemy.types import TypeDecorator


class UTCTime(TypeDecorator[datetime]):
    """An aware UTC datetime stored as whole seconds since the epoch.

    Integers compare and subtract quickly in both SQLite and PostgreSQL, which the
    evaluation's single aggregate query relies on, and take 8 bytes instead of a string.
    A naive datetime is refused rather than guessed at.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, int):
            return value
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: times must be aware")
        return int(value.timestamp())

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return datetime.fromtimestamp(int(value), tz=UTC)


def to_epoch(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("naive datetime refused")
    return int(value.timestamp())
