"""Bluesky, through the AT Protocol with the atproto SDK (``atproto_client.Client``).

Connections are the account's follows, then its followers (``app.bsky.graph.getFollows`` /
``getFollowers``, 100 a page), then its own follow records (``com.atproto.repo.listRecords``):
a followed account that is deleted or taken down drops out of ``getFollows`` while the
record stays in the repository, so a record whose subject the appview cannot show
(``getProfiles``) is listed as gone, and removing it deletes the record. A follow is dated by
the record key of the account's own follow record (when it followed, not when they did).

Exchanges come from three streams, each with its own cursor:

- ``notifications``: what others did to the account (likes, reposts, replies, mentions,
  quotes), newest first, in the appview's order: the earlier of a record's ``createdAt`` and
  the time it indexed it. A pass reads back to where the previous one started, less an
  overlap (:data:`NOTIFICATION_OVERLAP`), since one that arrives late sorts a little in the
  past. The appview does not keep notifications for ever, so a listing that ends is complete
  only from its oldest item: that is where a first pass's coverage starts.
- ``posts``: the account's own posts (replies, quotes, mentions) and reposts, read from its
  repository with ``com.atproto.repo.listRecords`` oldest first after the last record key seen,
  so that an incremental sync reads only what is new.
- ``likes``: the account's like records, the same way.

A stream claims coverage only when a pass is whole: the repository streams back to the
account's creation after a first full read (dated by the PLC directory's audit log, which no
client can backdate, unlike the profile record's ``createdAt``), from where the previous pass
started after an incremental one. Direct messages (``chat.bsky.convo.*``) are not read: the
adapter reports them unseen.

The session is created once from an app password and kept in a 0600 token file; the SDK
refreshes it ahead of expiry and every refreshed session is saved, so a restart or a second
instance never signs in again (Bluesky allows 30 sign-ins per 5 minutes and 300 a day). A
revoked app password goes unnoticed while the access token already issued works (about two
hours); the refresh after it is refused, and the account is paused.

Removal deletes the follow record named by ``viewer.following``, looked up again just before;
undo creates a new one. Writes cost points (delete 1, create 3; 5,000 an hour and 35,000 a day
per account), counted in a small file next to the token, and refused before a limit is crossed.
https://docs.bsky.app/docs/advanced-guides/rate-limits
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx

# The SDK ships no type information (no py.typed): its names are Any to mypy.
from atproto_client import Client, models
from atproto_client.client.base import is_method_not_served
from atproto_client.client.session import Session, SessionEvent
from atproto_client.exceptions import (
    LoginRequiredError,
    NetworkError,
    RequestErrorBase,
)
from atproto_client.request import Request
from atproto_core.exceptions import AtProtocolError

from service.config import Account
from service.model import Direction, Kind, Span, Unseen
from service.platforms.base import (
    AuthError,
    Blocked,
    Capability,
    ConnectionPage,
    Exchange,
    Identity,
    InteractionPage,
    Person,
    PersonNotFound,
    PlatformError,
    RateLimited,
    Relationship,
    RemovalOutcome,
    Traits,
    Unsupported,
)
from service.platforms.tokens import load_token, save_token, token_path

T = TypeVar("T")
Clock = Callable[[], datetime]

DEFAULT_BASE_URL = "https://bsky.social"
DEFAULT_PLC_URL = "https://plc.directory"
PAGE = 100  # the most any of these endpoints returns at once
NOTIFICATIONS, POSTS, LIKES = "notifications", "posts", "likes"
STREAMS = (NOTIFICATIONS, POSTS, LIKES)
FOLLOW = "app.bsky.graph.follow"
POST = "app.bsky.feed.post"
REPOST = "app.bsky.feed.repost"
LIKE = "app.bsky.feed.like"
_STREAM_COLLECTIONS = {POSTS: (POST, REPOST), LIKES: (LIKE,)}
# Notification reasons that are an exchange with the account ("follow", "verified",
# "subscribed-post" and the like are not).
_REASONS = {
    "like": Kind.LIKE,
    "repost": Kind.REPOST,
    "reply": Kind.REPLY,
    "mention": Kind.MENTION,
    "quote": Kind.QUOTE,
    "like-via-repost": Kind.LIKE,
    "repost-via-repost": Kind.REPOST,
}
NOTIFICATION_OVERLAP = timedelta(hours=1)
_OVERLAP_US = int(NOTIFICATION_OVERLAP.total_seconds()) * 1_000_000
HOUR_POINTS, DAY_POINTS = 5000, 35000
DELETE_POINTS, CREATE_POINTS = 1, 3
REAUTH = "run `lopper auth bluesky` again"
# Sign-ins are limited (30 per 5 minutes, 300 a day, per handle): after one, however it went,
# a refused session waits this long before the app password is tried again.
SIGN_IN_PAUSE = timedelta(hours=1)
_EVENT_ID_MAX = 128  # the store's column
# The account itself is suspended or switched off: nothing lopper does will help.
_ACCOUNT_REFUSED = frozenset(
    {
        "AccountTakedown",
        "AccountDeactivated",
        "AccountSuspended",
        "RepoTakendown",
        "RepoDeactivated",
        "RepoSuspended",
    }
)
_SESSION_REFUSED = frozenset(
    {"ExpiredToken", "InvalidToken", "AuthMissing", "AuthRequired", "AuthenticationRequired"}
)
_NOT_FOUND = frozenset({"NotFound", "ProfileNotFound", "ActorNotFound", "RepoNotFound"})
_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_TID_FLOOR = datetime(2022, 1, 1, tzinfo=UTC)  # before Bluesky: not a real record time
PROFILES_AT_ONCE = 25  # app.bsky.actor.getProfiles
# A follow record whose subject the appview cannot show is offered as gone once it is older
# than this: a brand-new account may not be indexed yet.
DANGLING_AFTER = timedelta(days=1)
MESSAGES_UNSEEN = Unseen(
    Kind.MESSAGE,
    "Bluesky direct messages are not read (they live in a separate chat service)",
    "if messages matter to you on this account, keep it unflagged; if they do not, "
    "add accept_unseen: [message] under the account",
)


# --- small readers of untyped JSON --------------------------------------------------------


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(body: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = body.get(key)
    if not isinstance(value, list):
        raise PlatformError(f"Bluesky sent a page without its {key!r} list")
    return [item for item in value if isinstance(item, Mapping)]


def _micros(value: object) -> int | None:
    """Microseconds since the epoch of an atproto datetime (a time without zone is UTC)."""
    text = _text(value)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _to_micros(moment)


def _to_micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _moment(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, tz=UTC) + timedelta(
        microseconds=micros % 1_000_000
    )


def _at_uri(uri: object) -> tuple[str, str, str] | None:
    """``at://<authority>/<collection>/<rkey>`` -> its three parts."""
    text = _text(uri)
    if text is None or not text.startswith("at://"):
        return None
    parts = text.removeprefix("at://").split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def _author(uri: object) -> str | None:
    """The DID a record belongs to: the authority of its URI."""
    parts = _at_uri(uri)
    return parts[0] if parts and parts[0].startswith("did:") else None


def tid_time(rkey: str) -> datetime | None:
    """When a record with a TID key was made; None for other keys or implausible times.

    TIDs are 13 base32-sortable characters: 53 bits of microseconds, then a clock id.
    https://atproto.com/specs/tid
    """
    if (
        len(rkey) != 13
        or any(c not in _TID_ALPHABET for c in rkey)
        or rkey[0] not in "234567abcdefghij"
    ):
        return None
    value = 0
    for char in rkey:
        value = value * 32 + _TID_ALPHABET.index(char)
    moment = _moment(value >> 10)
    if moment < _TID_FLOOR or moment > datetime.now(UTC) + timedelta(days=1):
        return None
    return moment


def _quoted(embed: object) -> str | None:
    """The author of the post a post quotes (a record embed, with or without media)."""
    embed = _mapping(embed)
    kind = embed.get("$type")
    if kind == "app.bsky.embed.record":
        ref = _mapping(embed.get("record"))
    elif kind == "app.bsky.embed.recordWithMedia":
        ref = _mapping(_mapping(embed.get("record")).get("record"))
    else:
        return None
    parts = _at_uri(ref.get("uri"))
    # Embedding a list or a feed is not quoting anyone.
    if parts is None or parts[1] != POST or not parts[0].startswith("did:"):
        return None
    return parts[0]


def _record_time(uri: object) -> datetime | None:
    parts = _at_uri(uri)
    return tid_time(parts[2]) if parts else None


def _event_id(*parts: str) -> str:
    """The platform's id for an exchange, shortened by hashing if the store could not hold it."""
    text = "#".join(parts)
    if len(text) <= _EVENT_ID_MAX:
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _earliest(*candidates: int | None) -> int | None:
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def _sort_key(item: Mapping[str, Any]) -> int | None:
    """Where a notification sorts: the earlier of its record's ``createdAt`` and its indexing.

    The reference appview already shows that sort key as ``indexedAt``; the earlier of the
    two is the same there, and stays the listing's order on a server that shows the real
    time of indexing instead.
    """
    indexed = _micros(item.get("indexedAt"))
    created = _micros(_mapping(item.get("record")).get("createdAt"))
    return _earliest(indexed, created) if indexed is not None else None


def _latest(ceiling: int, *candidates: int | None) -> int:
    """The latest time an exchange can have happened (invariant 3), never after ``ceiling``."""
    known = [c for c in candidates if c is not None]
    return min(max(known), ceiling) if known else ceiling


# --- errors --------------------------------------------------------------------------------


def _error_body(content: object) -> tuple[str, str]:
    error = getattr(content, "error", None)
    message = getattr(content, "message", None)
    if isinstance(content, Mapping):
        error, message = content.get("error"), content.get("message")
    return (error if isinstance(error, str) else ""), (message if isinstance(message, str) else "")


def _rate_limited(headers: Mapping[str, Any]) -> RateLimited:
    """From the ``RateLimit-*`` headers (the SDK lowercases them); reset is epoch seconds."""
    reset_at = None
    with contextlib.suppress(TypeError, ValueError, OverflowError, OSError):
        reset_at = datetime.fromtimestamp(int(headers.get("ratelimit-reset", "")), tz=UTC)
    policy = headers.get("ratelimit-policy")
    detail = f"Bluesky rate limit reached ({policy})" if policy else "Bluesky rate limit reached"
    return RateLimited(reset_at=reset_at, detail=detail)


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, RequestErrorBase) and exc.response is not None:
        return _error_body(exc.response.content)[0]
    return ""


def _session_refused(exc: BaseException) -> bool:
    """Would signing in again help? (an expired, revoked or unreadable session)"""
    if isinstance(exc, LoginRequiredError) or type(exc).__module__.startswith("atproto_server"):
        return True
    if isinstance(exc, RequestErrorBase) and exc.response is not None:
        error = _error_name(exc)
        if error in _ACCOUNT_REFUSED:
            return False  # a suspended account stays suspended however often it signs in
        return error in _SESSION_REFUSED or exc.response.status_code == 401
    return False


def _translate(exc: BaseException, *, write: bool = False, person: bool = False) -> PlatformError:
    """One of our errors for whatever the SDK or the network raised.

    ``write``: the request changes the account's repository; ``person``: it asks about one
    other person, so "not found" and "suspended" are about them, not about the account.
    """
    if isinstance(exc, PlatformError):
        return exc
    if isinstance(exc, LoginRequiredError) or type(exc).__module__.startswith("atproto_server"):
        return AuthError(f"the saved Bluesky session cannot be used: {REAUTH}")
    if isinstance(exc, RequestErrorBase) and exc.response is not None:
        status = exc.response.status_code
        if status == 429:
            return _rate_limited(exc.response.headers)
        error, message = _error_body(exc.response.content)
        said = " ".join(p for p in (str(status), error, message) if p)
        if error in _ACCOUNT_REFUSED:
            # The appview says it of someone else with a 400; the PDS says it of the signed-in
            # account itself with a 401, and then it is not the other person who is gone.
            if person and status == 400:
                return PersonNotFound(f"their Bluesky account is gone ({said})")
            if write:
                return Blocked(f"Bluesky refuses changes from this account ({said})")
            return AuthError(
                f"Bluesky refuses this account ({said}); check it in the app, then {REAUTH}"
            )
        if error in _SESSION_REFUSED or status == 401:
            return AuthError(f"Bluesky no longer accepts the saved session ({said}): {REAUTH}")
        if status == 403:
            if write:
                return Blocked(f"Bluesky forbade the change ({said})")
            return Unsupported(f"Bluesky does not allow this with an app password ({said})")
        if person and (status == 404 or error in _NOT_FOUND or "not found" in message.lower()):
            return PersonNotFound(f"not on Bluesky any more ({said})")
        if is_method_not_served(exc):
            return Unsupported(f"this Bluesky server does not offer it ({said})")
        if status >= 500 or isinstance(exc, NetworkError):
            return PlatformError(f"Bluesky is having trouble ({said})")
        return PlatformError(f"Bluesky refused the request ({said})")
    if isinstance(exc, NetworkError | httpx.HTTPError):
        return PlatformError(f"could not reach Bluesky ({type(exc).__name__})")
    if isinstance(exc, ValueError):
        return PlatformError("Bluesky sent an answer that could not be read")
    return PlatformError(f"Bluesky: {type(exc).__name__}: {exc}")


# --- cursors -------------------------------------------------------------------------------


def _load_state(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
    except ValueError:
        return {}  # not ours (or from an older version): read again from the start
    return data if isinstance(data, dict) else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class _FeedCursor:
    """Where the notifications stream stands, newest first.

    A pass starts at ``pass_at`` and reads pages back until it reaches ``stop`` (None: to the
    end of the listing); once whole, its start and newest item become the mark the next pass
    stops at. Times are sort keys: the earlier of a record's ``createdAt`` and the time the
    appview indexed it, the order the listing is in.
    """

    pass_at: int | None = None  # microseconds, as all the times here
    page: str | None = None  # the platform's cursor of the pass's next page
    stop: int | None = None
    newest: int | None = None
    oldest: int | None = None
    mark_at: int | None = None
    mark_newest: int | None = None
    floor: int | None = None  # the oldest item the listing still held when last read whole

    @classmethod
    def load(cls, cursor: str | None) -> _FeedCursor:
        data = _load_state(cursor)
        return cls(
            pass_at=_int(data.get("pass_at")),
            page=_text(data.get("page")),
            stop=_int(data.get("stop")),
            newest=_int(data.get("newest")),
            oldest=_int(data.get("oldest")),
            mark_at=_int(data.get("mark_at")),
            mark_newest=_int(data.get("mark_newest")),
            floor=_int(data.get("floor")),
        )

    def dump(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})


@dataclass
class _RepoCursor:
    """Where a stream of the account's own records stands, oldest first.

    ``after`` holds, per collection, the record key a pass ends at: the next pass asks for
    what comes after it. ``since`` is when the last whole pass started.
    """

    pass_at: int | None = None
    phase: int = 0  # which collection of the stream the pass is in
    page: str | None = None
    oldest: int | None = None
    since: int | None = None
    after: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, cursor: str | None) -> _RepoCursor:
        data = _load_state(cursor)
        after = _mapping(data.get("after"))
        return cls(
            pass_at=_int(data.get("pass_at")),
            phase=_int(data.get("phase")) or 0,
            page=_text(data.get("page")),
            oldest=_int(data.get("oldest")),
            since=_int(data.get("since")),
            after={k: v for k, v in after.items() if isinstance(v, str)},
        )

    def dump(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None and v != {}}
        return json.dumps(data)


# --- the write budget ----------------------------------------------------------------------


class WriteBudget:
    """Write points spent per minute, kept in a small file so that every run sees them."""

    def __init__(self, path: Path, clock: Clock, limits: tuple[int, int]) -> None:
        self.path = path
        self.clock = clock
        self.limits = limits

    def _load(self, now: float) -> dict[int, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            raw = _mapping(_mapping(data).get("minutes"))
            minutes = {int(k): int(v) for k, v in raw.items()}
        except (OSError, ValueError, TypeError):
            return {}
        return {m: p for m, p in minutes.items() if (m + 1) * 60 > now - 86400}

    def check(self, points: int) -> None:
        """Raise RateLimited if spending ``points`` now would cross an hourly or daily limit."""
        now = self.clock().timestamp()
        minutes = self._load(now)
        hour, day = self.limits
        for window, limit, label in ((3600, hour, "hour"), (86400, day, "day")):
            inside = sorted((m, p) for m, p in minutes.items() if (m + 1) * 60 > now - window)
            excess = sum(p for _, p in inside) + points - limit
            if excess <= 0:
                continue
            reset = now + window
            for minute, spent in inside:  # the window frees its oldest minutes first
                excess -= spent
                if excess <= 0:
                    reset = (minute + 1) * 60 + window
                    break
            raise RateLimited(
                reset_at=datetime.fromtimestamp(reset, tz=UTC),
                detail=f"Bluesky write budget of {limit} points per {label} is spent",
            )

    def spend(self, points: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # `lopper run` and a `lopper execute` by hand may spend at the same moment: one
        # read-modify-write at a time, or one of them would lose the other's points.
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._add(points)

    def _add(self, points: int) -> None:
        now = self.clock().timestamp()
        minutes = self._load(now)
        minute = int(now // 60)
        minutes[minute] = minutes.get(minute, 0) + points
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"minutes": {str(m): p for m, p in sorted(minutes.items())}}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# --- the adapter ---------------------------------------------------------------------------


class BlueskyPlatform:
    """``platform: bluesky`` — one account, through its PDS and the Bluesky appview."""

    name: ClassVar[str] = "bluesky"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.REMOVE, Capability.RESTORE, Capability.RELATIONSHIP}
    )
    simulated: ClassVar[bool] = False
    traits: Traits = Traits(removal_spacing=(20.0, 90.0))

    def __init__(
        self,
        account_key: str,
        handle: str,
        state_dir: Path,
        *,
        app_password: str | None = None,
        base_url: str | None = None,
        plc_url: str | None = None,
        clock: Clock | None = None,
        write_limits: tuple[int, int] = (HOUR_POINTS, DAY_POINTS),
        timeout: float = 30.0,
    ) -> None:
        self.account_key = account_key
        self.handle = handle
        self.state_dir = state_dir
        self.app_password = app_password
        self.base_url = base_url or DEFAULT_BASE_URL
        self.plc_url = (plc_url or DEFAULT_PLC_URL).rstrip("/")
        self.clock = clock or (lambda: datetime.now(UTC))
        self.timeout = timeout
        self.budget = WriteBudget(
            token_path(state_dir, account_key).with_suffix(".writes.json"),
            self.clock,
            write_limits,
        )
        self._client: Client | None = None
        self._token: dict[str, Any] = {}
        self._signed_in_at: datetime | None = None  # the last sign-in this adapter tried
        self._sign_in_error: PlatformError | None = None
        self._listed: set[str] = set()  # whom the current listing showed as followed

    # -- the session ----------------------------------------------------------------------

    def _new_client(self) -> Client:
        client = Client(self.base_url, request=Request(timeout=self.timeout))
        client.on_session_change(self._session_changed)
        return client

    def _session_changed(self, event: SessionEvent, session: Session) -> None:
        """Keep every new or refreshed session, so that no later run has to sign in again."""
        if event not in (SessionEvent.CREATE, SessionEvent.REFRESH):
            return
        profile = dict(_mapping(self._token.get("profile")))
        if profile.get("did") != session.did:
            profile = {}
        profile.update(did=session.did, handle=session.handle)
        # Only the session string sits at the top level: save_token masks those values in logs.
        self._token = {"session": session.export(), "profile": profile}
        save_token(self.state_dir, self.account_key, self._token)

    def _session(self) -> Client:
        if self._client is None:
            self._client = self._resume() or self._sign_in()
        return self._client

    def _resume(self, unless: str | None = None) -> Client | None:
        """The session saved in the token file (None if there is none, or it is ``unless``)."""
        token = load_token(self.state_dir, self.account_key) or {}
        session = _text(token.get("session"))
        if session is None or session == unless:
            return None
        client = self._new_client()
        try:
            # No request: the SDK only decodes the string, and refreshes it when first used.
            client.login(session_string=session, fetch_bsky_profile=False)
        except (AtProtocolError, ValueError):
            return None
        self._token = token
        return client

    def _sign_in(self) -> Client:
        if not self.app_password:
            raise AuthError(f"there is no usable Bluesky session for {self.handle}: {REAUTH}")
        now = self.clock()
        if (
            self._sign_in_error is not None
            and self._signed_in_at is not None
            and now < self._signed_in_at + SIGN_IN_PAUSE
        ):
            raise self._sign_in_error  # a refused password is not tried again at every call
        self._signed_in_at = now
        client = self._new_client()
        try:
            client.login(self.handle.lstrip("@"), self.app_password, fetch_bsky_profile=False)
        except (AtProtocolError, httpx.HTTPError, ValueError) as exc:
            error = _translate(exc)
            refused = isinstance(error, AuthError) or (
                isinstance(exc, RequestErrorBase)
                and exc.response is not None
                and exc.response.status_code == 400
            )
            if refused and _error_name(exc) not in _ACCOUNT_REFUSED:
                error = AuthError(f"Bluesky refused the app password for {self.handle}: {REAUTH}")
            self._sign_in_error = error
            raise error from None
        self._sign_in_error = None
        return client

    def _recover(self) -> Client | None:
        """A working session after the current one was refused, if there is a way to one.

        First a newer session another run saved (refresh tokens are single-use: a CLI run and
        the daemon each refresh in turn, and `lopper auth bluesky` writes a new one), then a
        sign-in with the app password, at most once per :data:`SIGN_IN_PAUSE`.
        """
        client = self._resume(unless=_text(self._token.get("session")))
        if client is not None:
            return client
        recent = self._signed_in_at is not None and (
            self.clock() < self._signed_in_at + SIGN_IN_PAUSE
        )
        if self.app_password and not recent:
            return self._sign_in()
        return None

    def _call(
        self, request: Callable[[Client], T], *, write: bool = False, person: bool = False
    ) -> T:
        """Run one SDK call; on a refused session, retry once with a better one if any."""
        client = self._session()
        try:
            return request(client)
        except (AtProtocolError, httpx.HTTPError, ValueError) as exc:
            if not _session_refused(exc):
                raise _translate(exc, write=write, person=person) from None
            self._client = None  # so that the next call reads the token file again
            self._client = self._recover()
            if self._client is None:
                raise _translate(exc, write=write, person=person) from None
        try:
            return request(self._client)
        except (AtProtocolError, httpx.HTTPError, ValueError) as again:
            if _session_refused(again):
                self._client = None
            raise _translate(again, write=write, person=person) from None

    def _query(self, nsid: str, params: Any, *, person: bool = False) -> Mapping[str, Any]:
        # Pages are read as plain JSON through the client's generic XRPC call: the typed
        # methods validate every item into models, so one odd record would make a whole page
        # (and every cursor behind it) unreadable, and would cost ten times the parsing.
        response = self._call(lambda c: c.invoke_query(nsid, params=params), person=person)
        content = response.content
        if not isinstance(content, Mapping):
            raise PlatformError(f"Bluesky answered {nsid} with something other than JSON")
        return content

    def _profile(self) -> Mapping[str, Any]:
        self._session()
        return _mapping(self._token.get("profile"))

    def _did(self) -> str:
        did = _text(self._profile().get("did"))
        if did is None:
            raise AuthError(f"the saved Bluesky session names no account: {REAUTH}")
        return did

    def _now(self) -> int:
        return _to_micros(self.clock())

    def _account_created(self) -> int | None:
        """When the account was made, from what no client can set (asked once, then kept).

        The profile record's ``createdAt`` is written by the client and may be missing or
        backdated; the PLC directory's audit log dates the DID's genesis operation itself,
        by the directory's clock. A ``did:web`` account has no such log: its creation stays
        unknown, and each full read claims only from its oldest record.
        https://web.plc.directory/api/redoc#operation/GetPlcAuditLog
        """
        profile = self._profile()
        known = profile.get("genesis_at")
        if isinstance(known, str):
            return _micros(known)  # "" when it cannot be known
        did = self._did()
        genesis = ""
        if did.startswith("did:plc:"):
            try:
                response = httpx.get(
                    f"{self.plc_url}/{did}/log/audit",
                    timeout=self.timeout,
                    headers={"accept": "application/json"},
                )
                response.raise_for_status()
                log = response.json()
            except (httpx.HTTPError, ValueError):
                return None  # not this time: the pass falls back on its earliest item
            # The operations, oldest first, each dated when the directory accepted it.
            dated = [
                (_micros(op.get("createdAt")), op.get("createdAt"))
                for op in (log if isinstance(log, list) else [])
                if isinstance(op, Mapping)
            ]
            known = [(at, text) for at, text in dated if at is not None]
            if not known:
                return None
            genesis = str(min(known)[1])
        updated = dict(profile)
        updated["genesis_at"] = genesis
        self._token = {**self._token, "profile": updated}
        save_token(self.state_dir, self.account_key, self._token)
        return _micros(genesis)

    def _learn_display_name(self) -> None:
        """Keep the account's display name with the session (one getProfile)."""
        try:
            body = self._query(
                "app.bsky.actor.getProfile",
                models.AppBskyActorGetProfile.Params(actor=self._did()),
            )
        except AuthError:
            raise
        except PlatformError:
            return
        name = _text(body.get("displayName"))
        if name:
            self._token = {**self._token, "profile": {**self._profile(), "display_name": name}}
            save_token(self.state_dir, self.account_key, self._token)

    def _history_start(self, oldest: int | None, end: int) -> int:
        """Where a full read of a stream starts to be complete."""
        created = self._account_created()
        known = [t for t in (created, oldest) if t is not None]
        return min(min(known), end) if known else end

    # -- the contract ---------------------------------------------------------------------

    def whoami(self) -> Identity:
        # One request per sync: it proves the session works before anything else is asked,
        # and learns of a changed handle or a suspended account.
        body = self._query("com.atproto.server.getSession", None)
        did = _text(body.get("did")) or self._did()
        handle = _text(body.get("handle")) or self.handle.lstrip("@")
        if body.get("active") is False:
            status = _text(body.get("status")) or "inactive"
            raise AuthError(
                f"Bluesky reports the account as {status}; check it in the app, then {REAUTH}"
            )
        profile = dict(self._profile())
        if profile.get("handle") != handle and profile.get("did") == did:
            profile["handle"] = handle
            self._token = {**self._token, "profile": profile}
            save_token(self.state_dir, self.account_key, self._token)
        return Identity(
            user_id=did, handle=f"@{handle}", display_name=_text(profile.get("display_name"))
        )

    def connections(self, cursor: str | None) -> ConnectionPage:
        state = _load_state(cursor)
        listing = state.get("list")
        listing = listing if listing in ("followers", "records") else "follows"
        page = _text(state.get("cursor"))
        if listing == "records":
            return self._dangling_follows(page)
        if listing == "follows" and page is None:
            self._listed = set()  # a new listing starts
        if listing == "follows":
            nsid = "app.bsky.graph.getFollows"
            params: Any = models.AppBskyGraphGetFollows.Params(
                actor=self._did(), limit=PAGE, cursor=page
            )
        else:
            nsid = "app.bsky.graph.getFollowers"
            params = models.AppBskyGraphGetFollowers.Params(
                actor=self._did(), limit=PAGE, cursor=page
            )
        body = self._query(nsid, params)
        items = _items(body, listing)
        people = [p for p in (self._person(item, listing) for item in items) if p is not None]
        self._listed.update(p.user_id for p in people if p.following)
        following = _text(body.get("cursor"))
        # Follows, then followers: each entry carries the viewer's state both ways, so a
        # mutual ends right whichever page the sync saw last. Then the account's own follow
        # records, for those the appview no longer lists.
        if items and following and following != page:
            next_cursor: str | None = json.dumps({"list": listing, "cursor": following})
        elif listing == "follows":
            next_cursor = json.dumps({"list": "followers"})
        else:
            next_cursor = json.dumps({"list": "records"})
        return ConnectionPage(people, next_cursor)

    def _dangling_follows(self, page: str | None) -> ConnectionPage:
        """The account's follow records whose subject the appview cannot show: gone people.

        A followed account that is deleted (or taken down) drops out of ``getFollows``, but
        the follow record stays in the account's repository; those are offered as gone, so
        that the record can be deleted. Subjects this adapter saw listed are skipped; the
        others are checked with ``getProfiles``, which leaves out accounts it cannot show.
        """
        me = self._did()
        params = models.ComAtprotoRepoListRecords.Params(
            repo=me, collection=FOLLOW, limit=PAGE, cursor=page
        )
        body = self._query("com.atproto.repo.listRecords", params)
        records = _items(body, "records")
        recent = self.clock() - DANGLING_AFTER
        subjects: dict[str, datetime | None] = {}
        for record in records:
            parts = _at_uri(record.get("uri"))
            subject = _text(_mapping(record.get("value")).get("subject"))
            if parts is None or subject is None or not subject.startswith("did:"):
                continue
            if subject in self._listed or subject == me:
                continue
            made = tid_time(parts[2])
            # The appview may not have indexed a new account yet: a new record is not a sign.
            if made is None or made > recent:
                continue
            earlier = subjects.get(subject)
            subjects[subject] = made if earlier is None else min(earlier, made)
        shown = self._shown(list(subjects))
        people = [
            Person(
                user_id=did,
                handle=self._last_handle(did),
                following=True,
                connected_since=made,
                gone=True,
            )
            for did, made in subjects.items()
            if did not in shown
        ]
        following = _text(body.get("cursor"))
        # The PDS returns a cursor with every non-empty page; only a full one can have more.
        if len(records) >= PAGE and following and following != page:
            return ConnectionPage(people, json.dumps({"list": "records", "cursor": following}))
        return ConnectionPage(people, None)

    def _last_handle(self, did: str) -> str:
        """The handle a gone account last had, from its DID document in the PLC directory
        (``alsoKnownAs``), so that the person can tell who it was; else the DID itself."""
        if did.startswith("did:plc:"):
            try:
                response = httpx.get(f"{self.plc_url}/{did}", timeout=self.timeout)
                response.raise_for_status()
                document = _mapping(response.json())
            except (httpx.HTTPError, ValueError):
                document = {}
            for name in document.get("alsoKnownAs") or ():
                if isinstance(name, str) and name.startswith("at://") and len(name) > 5:
                    return "@" + name.removeprefix("at://")
        return did

    def _shown(self, dids: Sequence[str]) -> set[str]:
        """Which of these accounts the appview can show (getProfiles, 25 at a time)."""
        found: set[str] = set()
        for start in range(0, len(dids), PROFILES_AT_ONCE):
            batch = list(dids[start : start + PROFILES_AT_ONCE])
            body = self._query(
                "app.bsky.actor.getProfiles", models.AppBskyActorGetProfiles.Params(actors=batch)
            )
            found.update(d for d in (_text(p.get("did")) for p in _items(body, "profiles")) if d)
        return found

    def _follow_keys(self, user_id: str) -> list[str]:
        """The record keys of the account's follow records of ``user_id``, read from its repo."""
        me = self._did()
        keys: list[str] = []
        page: str | None = None
        while True:
            params = models.ComAtprotoRepoListRecords.Params(
                repo=me, collection=FOLLOW, limit=PAGE, cursor=page
            )
            body = self._query("com.atproto.repo.listRecords", params)
            records = _items(body, "records")
            for record in records:
                parts = _at_uri(record.get("uri"))
                if parts and _mapping(record.get("value")).get("subject") == user_id:
                    keys.append(parts[2])
            following = _text(body.get("cursor"))
            if len(records) < PAGE or not following or following == page:
                return keys
            page = following

    def _person(self, item: Mapping[str, Any], listing: str) -> Person | None:
        did = _text(item.get("did"))
        if did is None or not did.startswith("did:"):
            return None
        handle = _text(item.get("handle")) or did
        viewer = _mapping(item.get("viewer"))
        mine = _text(viewer.get("following"))
        theirs = _text(viewer.get("followedBy"))
        # The connection lopper may end is the account's own follow, and its record key says
        # when it was made: following back someone who followed years ago, or following
        # someone again, starts a new connection (and its grace). Only a follower the account
        # does not follow is dated by their record.
        since = _record_time(mine) if mine is not None else _record_time(theirs)
        return Person(
            user_id=did,
            handle=f"@{handle}",
            display_name=_text(item.get("displayName")),
            profile_url=self.profile_link(handle, did),
            following=listing == "follows" or mine is not None,
            followed_by=listing == "followers" or theirs is not None,
            connected_since=since,
        )

    def interaction_streams(self) -> Sequence[str]:
        return STREAMS

    def interactions(self, stream: str, cursor: str | None) -> InteractionPage:
        if stream == NOTIFICATIONS:
            return self._notifications(cursor)
        collections = _STREAM_COLLECTIONS.get(stream)
        if collections is None:
            raise ValueError(f"Bluesky has no stream {stream!r}")
        return self._records(collections, cursor)

    def _notifications(self, cursor: str | None) -> InteractionPage:
        state = _FeedCursor.load(cursor)
        if state.pass_at is None:
            stop = None
            if state.mark_at is not None:
                newest = state.mark_newest if state.mark_newest is not None else state.mark_at
                stop = min(state.mark_at, newest) - _OVERLAP_US
            state = _FeedCursor(
                pass_at=self._now(),
                stop=stop,
                mark_at=state.mark_at,
                mark_newest=state.mark_newest,
                floor=state.floor,
            )
        assert state.pass_at is not None
        params = models.AppBskyNotificationListNotifications.Params(
            limit=PAGE, cursor=state.page, reasons=list(_REASONS)
        )
        body = self._query("app.bsky.notification.listNotifications", params)
        ceiling = self._now()
        me = self._did()
        exchanges: list[Exchange] = []
        reached = False
        items = _items(body, "notifications")
        for item in items:
            sorted_at = _sort_key(item)
            if sorted_at is None:
                continue
            if state.stop is not None and sorted_at < state.stop:
                reached = True  # newest first: the rest was read by an earlier pass
                break
            state.newest = max(sorted_at, state.newest or sorted_at)
            state.oldest = min(sorted_at, state.oldest or sorted_at)
            exchange = self._inbound(item, me, ceiling)
            if exchange is not None:
                exchanges.append(exchange)
        following = _text(body.get("cursor"))
        if not reached and items and following and following != state.page:
            state.page = following
            return InteractionPage(exchanges, state.dump(), covers=None, done=False)
        end = state.pass_at
        # The appview does not keep notifications for ever (it has deleted those older than
        # 30 days before the person last opened them): a listing that ends says nothing of
        # what came before its oldest item. Coverage starts at the oldest item read, unless
        # the pass met the previous one, or the listing ends where it always ended.
        if reached:
            assert state.stop is not None
            start, floor = state.stop, _earliest(state.floor, state.oldest)
        elif state.stop is not None and (state.floor is None or state.floor >= state.stop):
            start, floor = state.stop, _earliest(state.floor, state.oldest)
        else:
            start = state.oldest if state.oldest is not None else end
            floor = state.oldest
        seen = [t for t in (state.newest, state.mark_newest) if t is not None]
        mark = _FeedCursor(mark_at=end, mark_newest=max(seen) if seen else None, floor=floor)
        covers = Span(_moment(min(start, end)), _moment(end))
        return InteractionPage(exchanges, mark.dump(), covers=covers, done=True)

    def _inbound(self, item: Mapping[str, Any], me: str, ceiling: int) -> Exchange | None:
        reason = _text(item.get("reason")) or ""
        kind = _REASONS.get(reason)
        author = _text(_mapping(item.get("author")).get("did"))
        uri = _text(item.get("uri"))
        if kind is None or author is None or uri is None or author == me:
            return None
        record = _mapping(item.get("record"))
        at = _latest(ceiling, _micros(record.get("createdAt")), _micros(item.get("indexedAt")))
        return Exchange(_event_id(uri, reason), author, kind, Direction.INBOUND, _moment(at))

    def _records(self, collections: Sequence[str], cursor: str | None) -> InteractionPage:
        state = _RepoCursor.load(cursor)
        if state.pass_at is None or state.phase >= len(collections):
            state = _RepoCursor(pass_at=self._now(), since=state.since, after=state.after)
        assert state.pass_at is not None
        collection = collections[state.phase]
        start_key = state.page or state.after.get(collection)
        params = models.ComAtprotoRepoListRecords.Params(
            repo=self._did(), collection=collection, limit=PAGE, reverse=True, cursor=start_key
        )
        body = self._query("com.atproto.repo.listRecords", params)
        ceiling = self._now()
        me = self._did()
        records = _items(body, "records")
        exchanges: list[Exchange] = []
        last_key: str | None = None
        for record in records:
            uri = _text(record.get("uri"))
            parts = _at_uri(uri)
            if uri is None or parts is None:
                continue
            last_key = parts[2]
            for exchange in self._outbound(
                collection, uri, _mapping(record.get("value")), me, ceiling
            ):
                exchanges.append(exchange)
                at = _to_micros(exchange.occurred_at)
                state.oldest = min(at, state.oldest or at)
        following = _text(body.get("cursor"))
        # The PDS returns a cursor with every non-empty page; only a full one can have more.
        if len(records) >= PAGE and following and following != start_key:
            state.page = following
            return InteractionPage(exchanges, state.dump(), covers=None, done=False)
        bookmark = following or last_key or start_key
        if bookmark:
            state.after[collection] = bookmark
        state.page = None
        state.phase += 1
        if state.phase < len(collections):
            return InteractionPage(exchanges, state.dump(), covers=None, done=False)
        end = state.pass_at
        start = state.since if state.since is not None else self._history_start(state.oldest, end)
        whole = _RepoCursor(since=end, after=state.after)
        covers = Span(_moment(min(start, end)), _moment(end))
        return InteractionPage(exchanges, whole.dump(), covers=covers, done=True)

    def _outbound(
        self, collection: str, uri: str, value: Mapping[str, Any], me: str, ceiling: int
    ) -> Iterator[Exchange]:
        """The exchanges one of the account's own records is: whom it answers, quotes, names."""
        created = _micros(value.get("createdAt"))
        if created is None:
            keyed = _record_time(uri)
            created = _to_micros(keyed) if keyed else None
        at = _moment(_latest(ceiling, created))
        out = Direction.OUTBOUND
        if collection in (LIKE, REPOST):
            target = _author(_mapping(value.get("subject")).get("uri"))
            if target is not None and target != me:
                kind = Kind.LIKE if collection == LIKE else Kind.REPOST
                yield Exchange(_event_id(uri), target, kind, out, at)
            return
        named = {me}
        parent = _author(_mapping(_mapping(value.get("reply")).get("parent")).get("uri"))
        if parent is not None and parent not in named:
            named.add(parent)
            yield Exchange(_event_id(uri, "reply"), parent, Kind.REPLY, out, at)
        quoted = _quoted(value.get("embed"))
        if quoted is not None and quoted not in named:
            named.add(quoted)
            yield Exchange(_event_id(uri, "quote"), quoted, Kind.QUOTE, out, at)
        for facet in value.get("facets") or ():
            for feature in _mapping(facet).get("features") or ():
                feature = _mapping(feature)
                did = _text(feature.get("did"))
                if feature.get("$type") != "app.bsky.richtext.facet#mention" or did is None:
                    continue
                # Naming the person a post answers or quotes is part of that one exchange.
                if did.startswith("did:") and did not in named:
                    named.add(did)
                    yield Exchange(_event_id(uri, "mention", did), did, Kind.MENTION, out, at)

    def _follow_record(self, user_id: str) -> tuple[bool, str | None]:
        """(do they exist, the URI of the account's follow record of them if any), asked now."""
        params = models.AppBskyGraphGetRelationships.Params(actor=self._did(), others=[user_id])
        body = self._query("app.bsky.graph.getRelationships", params, person=True)
        for item in _items(body, "relationships"):
            if item.get("notFound") is True and item.get("actor") in (user_id, None):
                return False, None
            if item.get("did") == user_id:
                return True, _text(item.get("following"))
        return False, None

    def _dangling(self, user_id: str, exists: bool, following: str | None) -> bool:
        """Is the account's follow of ``user_id`` a record left behind by a gone account?

        The appview answers for a deleted account as for one not followed (a relationship
        without ``following``); only an account it cannot show any more, with a follow record
        still in the account's repository, is one.
        """
        if following is not None:
            return False
        if exists and self._shown([user_id]):
            return False  # there, and not followed
        return bool(self._follow_keys(user_id))

    def relationship(self, user_id: str) -> Relationship:
        exists, following = self._follow_record(user_id)
        if following is None:
            return Relationship(connected=self._dangling(user_id, exists, following))
        return Relationship(connected=True)

    def remove(self, user_id: str) -> RemovalOutcome:
        self.budget.check(DELETE_POINTS)
        exists, following = self._follow_record(user_id)
        if self._dangling(user_id, exists, following):
            return self._remove_dangling(user_id)
        if not exists:
            raise PersonNotFound(f"{user_id} is not on Bluesky any more")
        if following is None:
            return RemovalOutcome(already_done=True, detail="not following any more")
        parts = _at_uri(following)
        me = self._did()
        if parts is None or parts[0] != me or parts[1] != FOLLOW:
            raise PlatformError(f"Bluesky named an unexpected follow record: {following}")
        self.budget.spend(DELETE_POINTS)
        self._delete_follow(me, parts[2])
        return RemovalOutcome()

    def _delete_follow(self, me: str, rkey: str) -> None:
        data = models.ComAtprotoRepoDeleteRecord.Data(repo=me, collection=FOLLOW, rkey=rkey)
        # Deleting a record that is already gone succeeds: a retry after a lost answer is safe.
        self._call(lambda c: c.com.atproto.repo.delete_record(data), write=True)

    def _remove_dangling(self, user_id: str) -> RemovalOutcome:
        """Delete the follow records left behind by an account that is gone."""
        keys = self._follow_keys(user_id)
        me = self._did()
        for rkey in keys:
            self.budget.check(DELETE_POINTS)
            self.budget.spend(DELETE_POINTS)
            self._delete_follow(me, rkey)
        return RemovalOutcome(
            detail="their account is gone; the follow record left behind is deleted"
        )

    def restore(self, user_id: str) -> None:
        self.budget.check(CREATE_POINTS)
        exists, following = self._follow_record(user_id)
        if not exists:
            raise PersonNotFound(f"{user_id} is not on Bluesky any more")
        if following is not None:
            return  # a second follow record would be a duplicate, not an undo
        me = self._did()
        record = models.AppBskyGraphFollow.Record(
            created_at=self.clock().isoformat().replace("+00:00", "Z"), subject=user_id
        )
        self.budget.spend(CREATE_POINTS)
        # What ``Client.follow`` does, without the profile lookup it needs for ``me``.
        self._call(lambda c: c.app.bsky.graph.follow.create(me, record), write=True)

    def unseen(self) -> Sequence[Unseen]:
        # Direct messages are served by the chat service (chat.bsky.convo.*, through the PDS
        # with an atproto-proxy header), which an app password reaches only when made with
        # the direct-messages permission; lopper does not read them.
        return (MESSAGES_UNSEEN,)

    def profile_link(self, handle: str, user_id: str) -> str | None:
        name = handle.lstrip("@")
        if not name or name == "handle.invalid":
            name = user_id
        return f"https://bsky.app/profile/{name}"


def build(account: Account, state_dir: Path, clock: Clock | None = None) -> BlueskyPlatform:
    """The adapter for one ``platform: bluesky`` account; no request is made until it is used.

    Credentials: ``app_password`` (optional once ``lopper auth bluesky`` has saved a session),
    ``base_url`` (another PDS; defaults to bsky.social) and ``plc_url`` (the PLC directory
    that dates the account's creation; defaults to plc.directory).
    """
    credentials = account.credentials
    password = credentials.get("app_password")
    base_url = credentials.get("base_url")
    plc_url = credentials.get("plc_url")
    return BlueskyPlatform(
        account.key,
        account.handle,
        state_dir,
        app_password=password.get_secret_value() if password else None,
        base_url=base_url.get_secret_value() if base_url else None,
        plc_url=plc_url.get_secret_value() if plc_url else None,
        clock=clock,
        timeout=account.timeout_or(30.0),
    )


def login(
    handle: str,
    app_password: str,
    state_dir: Path,
    account_key: str,
    *,
    base_url: str | None = None,
) -> Identity:
    """Sign in with an app password and save the session for the daemon (``lopper auth bluesky``).

    Makes two requests (createSession, then getProfile) and writes the session to the
    account's 0600 token file under ``state_dir``; from then on the daemon refreshes it and
    never needs the password. Returns who signed in. Raises AuthError if Bluesky refuses the
    password, RateLimited if it refuses more sign-ins for now, PlatformError otherwise.
    Create an app password at https://bsky.app/settings/app-passwords.
    """
    adapter = BlueskyPlatform(
        account_key, handle, state_dir, app_password=app_password, base_url=base_url
    )
    adapter._client = adapter._sign_in()
    adapter._learn_display_name()
    profile = adapter._profile()
    return Identity(
        user_id=adapter._did(),
        handle=f"@{_text(profile.get('handle')) or handle.lstrip('@')}",
        display_name=_text(profile.get("display_name")),
    )
