"""Shared vocabulary: the enums and plain values every layer speaks."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

# The stream under which a sync keeps the cursor of its listing of connections.
CONNECTIONS = "connections"


class Kind(enum.StrEnum):
    LIKE = "like"
    REPLY = "reply"
    MENTION = "mention"
    REPOST = "repost"
    QUOTE = "quote"
    COMMENT = "comment"
    REACTION = "reaction"
    MESSAGE = "message"


class Direction(enum.StrEnum):
    INBOUND = "inbound"  # they -> you
    OUTBOUND = "outbound"  # you -> them


class ConnectionState(enum.StrEnum):
    ACTIVE = "active"
    VANISHED = "vanished"  # no longer listed by the platform (unfollowed elsewhere, deleted)
    REMOVED = "removed"  # removed by lopper


class SuggestionState(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REMOVED = "removed"
    MANUAL = "manual"
    FAILED = "failed"
    KEPT = "kept"
    SNOOZED = "snoozed"
    EXPIRED = "expired"
    RESTORED = "restored"


class Reason(enum.StrEnum):
    QUIET = "quiet"  # too few exchanges in the window
    GONE = "gone"  # the account is deleted, suspended or moved
    PLAN = "plan"  # queued by a reduction plan


class RemovalState(enum.StrEnum):
    STARTED = "started"  # written before the platform is asked
    DONE = "done"
    MANUAL = "manual"
    FAILED = "failed"
    # Asked, but no answer came (a timeout, a dropped connection, a 5xx): it may have been
    # done, so the next attempt asks again without first checking the facts.
    UNANSWERED = "unanswered"
    DROPPED = "dropped"  # the facts changed at the last check
    RESTORED = "restored"


class Channel(enum.StrEnum):
    """Where a decision came from; every audit row carries one."""

    CLI = "cli"
    REVIEW = "review"
    WEB = "web"
    DAEMON = "daemon"
    SYSTEM = "system"


@dataclass(frozen=True)
class Span:
    """A span of time, both ends timezone-aware."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("span times must be aware")
        if self.end < self.start:
            raise ValueError("a span cannot end before it starts")


@dataclass(frozen=True)
class Unseen:
    """A kind of exchange that lopper cannot see on an account, and why.

    Unseen is not empty: while a kind the rules count is unseen (and the person has not
    accepted it with ``accept_unseen``), nobody on the account is flagged.
    """

    kind: Kind
    reason: str  # shown to the person: "direct messages are not visible on this server"
    remedy: str | None = None  # what the person can do about it
    direction: Direction | None = None  # None: both directions are unseen
    # The stream that reads this kind only in part (X reads reactions to the latest posts
    # only): its coverage claims just what it read, and once the person accepts every kind it
    # leaves unseen, it no longer holds back the account's coverage.
    stream: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "kind": self.kind.value,
            "reason": self.reason,
            "remedy": self.remedy,
            "direction": self.direction.value if self.direction else None,
            "stream": self.stream,
        }

    @classmethod
    def from_json(cls, data: dict[str, str | None]) -> Unseen:
        direction = data.get("direction")
        return cls(
            Kind(str(data["kind"])),
            str(data.get("reason") or "not visible"),
            data.get("remedy"),
            Direction(direction) if direction else None,
            data.get("stream"),
        )

    def describe(self) -> str:
        """``message (inbound)``: the kind and, if only one way is unseen, the direction."""
        return self.kind.value + (f" ({self.direction.value})" if self.direction else "")
