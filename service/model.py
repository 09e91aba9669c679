"""Shared vocabulary: the enums and plain values every layer speaks."""

from __future__ import annotations

import enum


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
