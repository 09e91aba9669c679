"""The platform contract: one Protocol every adapter implements, and the values it speaks.

An adapter turns one platform's API (or simulation) into pages of plain data. It never
touches the store, never sleeps out a rate limit and never decides anything: it fetches,
translates vendor errors into the few below, and reports what it can do.

Times: every datetime an adapter returns is timezone-aware UTC. Where the platform does not
say exactly when an exchange happened (a favourite known only by the post's date, a like
without a date), the adapter reports the *latest* time it could have happened, so that any
doubt falls on the side of keeping the person (DESIGN.md, invariant 3).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Protocol, runtime_checkable

from service.model import Direction, Kind, Span, Unseen
from service.text import web_link


class Capability(enum.StrEnum):
    REMOVE = "remove"  # can end a connection through the API
    RESTORE = "restore"  # can re-create a connection it removed (undo)
    RELATIONSHIP = "relationship"  # can check one connection just before removing it


@dataclass(frozen=True)
class Identity:
    user_id: str
    handle: str
    display_name: str | None = None


@dataclass(frozen=True)
class Person:
    """A connection as the platform lists it."""

    user_id: str
    handle: str
    display_name: str | None = None
    profile_url: str | None = None
    following: bool = False  # the account follows them
    followed_by: bool = False  # they follow the account
    connected_since: datetime | None = None
    gone: bool = False  # deleted or suspended
    moved_to: str | None = None  # migrated to another account
    lists: tuple[str, ...] = ()
    last_active_at: datetime | None = None  # their last post anywhere (None: unknown)

    def __post_init__(self) -> None:
        # A server's or an export's link becomes an href in the digest: http(s) only.
        if self.profile_url is not None and web_link(self.profile_url) is None:
            object.__setattr__(self, "profile_url", None)


@dataclass(frozen=True)
class ConnectionPage:
    people: Sequence[Person]
    next_cursor: str | None  # None: the listing is complete


@dataclass(frozen=True)
class Exchange:
    """One interaction. ``event_id`` is the platform's own id, unique within the account."""

    event_id: str
    counterpart_id: str
    kind: Kind
    direction: Direction
    occurred_at: datetime


@dataclass(frozen=True)
class InteractionPage:
    """Exchanges since a cursor.

    ``cursor`` is what to pass next time (stored with the page, in the same transaction);
    ``covers`` is the span of time for which this page, together with the earlier ones,
    makes the stream complete; ``done`` says there is nothing newer to fetch now.
    """

    exchanges: Sequence[Exchange]
    cursor: str | None
    covers: Span | None
    done: bool


@dataclass(frozen=True)
class Relationship:
    """Whether the account still follows the person (asked just before a removal)."""

    connected: bool


@dataclass(frozen=True)
class RemovalOutcome:
    already_done: bool = False  # "not following any more" counts as done
    detail: str | None = None


# --- errors: each has one policy in the sync and the executor ---------------------------


class PlatformError(Exception):
    """Transient trouble: back off and retry later."""


class AuthError(PlatformError):
    """Credentials refused or revoked: pause the account and tell the person."""


@dataclass
class RateLimited(PlatformError):
    """A window is spent: stop this stream, keep its cursor, resume after ``reset_at``."""

    reset_at: datetime | None = None
    detail: str = "rate limited"

    def __str__(self) -> str:
        when = f" until {self.reset_at.isoformat()}" if self.reset_at else ""
        return f"{self.detail}{when}"


class Blocked(PlatformError):
    """The platform is pushing back on automation: stop removals for the account."""


class Unsupported(PlatformError):
    """The endpoint is not available to this app or account (e.g. access level)."""


class PersonNotFound(PlatformError):
    """The person no longer exists on the platform."""


@dataclass(frozen=True)
class Traits:
    """How a platform's data and limits differ, beyond what it can do (``capabilities``)."""

    # Seconds between two removals, drawn at random in this range, unless the account's
    # ``removal_spacing`` says otherwise.
    removal_spacing: tuple[float, float] = (20.0, 90.0)
    # The listing leaves people out (Facebook lists only the app's users): nobody in the
    # store is marked gone for being missing from it.
    partial_listing: bool = False
    # No API to sync from: the data comes only from imported exports.
    export_only: bool = False
    # The full listing is fetched at most this often, whatever the schedule asks (X bills
    # each person listed).
    min_relist: timedelta = timedelta(0)
    # The following list comes newest follow first (X, Mastodon): at the first listing the
    # newest follows can be told from the established ones (rules.newest_in_grace).
    newest_first: bool = False


@runtime_checkable
class Platform(Protocol):
    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    simulated: ClassVar[bool]
    traits: Traits

    def whoami(self) -> Identity: ...

    def connections(self, cursor: str | None) -> ConnectionPage:
        """One page of the full listing of connections, starting at ``cursor``."""
        ...

    def interaction_streams(self) -> Sequence[str]:
        """Names of the separate feeds of exchanges, each with its own cursor and coverage."""
        ...

    def interactions(self, stream: str, cursor: str | None) -> InteractionPage: ...

    def relationship(self, user_id: str) -> Relationship: ...

    def remove(self, user_id: str) -> RemovalOutcome: ...

    def restore(self, user_id: str) -> None: ...

    def profile_link(self, handle: str, user_id: str) -> str | None: ...

    def unseen(self) -> Sequence[Unseen]:
        """The kinds of exchange this adapter cannot see on the account, and why.

        Asked after a sync's streams ran, so it reflects what the calls so far found (an
        endpoint that answered 404, a server known to leave a stream hollow, a kind the
        platform's API never lists). A kind absent here is claimed as fully read wherever its
        stream's coverage says so.
        """
        ...
