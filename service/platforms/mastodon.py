"""Mastodon, through Mastodon.py: connections, exchanges both ways, unfollow and undo.

What is read, and from where (https://docs.joinmastodon.org/methods/):

- connections: ``/api/v1/accounts/:id/followers`` then ``.../following``, 80 a page, paged by
  the ``Link`` header (its ids are follow ids, not account ids, so only the header can page);
- ``notifications``: favourites, reblogs, mentions (replies and direct messages among them)
  and quotes of the account, each read once: backwards to the end of the server's history on
  the first sync, then forwards with ``min_id``;
- ``statuses``: the account's own posts (replies, mentions, reblogs, quotes, direct
  messages it sent);
- ``favourites``: the account's own favourites, which carry no time: each counts from the
  time lopper first saw it, the latest it can have happened (DESIGN.md, invariant 3);
- ``conversations``: direct conversations, a second source for direct messages, which some
  servers leave out of the account's statuses. Every exchange about a status is keyed by the
  status id, so a message found in two places is stored once.

Coverage is claimed only for what was read without a gap: a backwards page vouches for the
span between its oldest item and the page before it, the end of the history for the time of
its oldest item, and a forwards run for the span since the last run once an empty page shows
nothing newer is left.

What the adapter cannot see it reports through ``unseen()``, and nobody on the account is
flagged while a counted kind is unseen (unless the person accepts it with ``accept_unseen``):

- an endpoint that answers 404 or 501 makes its kinds unseen, whatever the server is: it is
  asked again at every sync (one request) and left out of the account's coverage meanwhile;
- ``/api/v1/conversations/`` (Mastodon.py adds the slash) that answers 404 is asked again
  without the slash before the endpoint counts as missing;
- the owner's ``statuses_count`` above the number of statuses the account's own listing
  gave, once it was read to the end: the server hides some (direct messages, boosts);
- the server software, read once a sync from ``/api/v1/instance`` (its ``version``), and
  what each family is known to leave hollow (answer empty whatever happened):

  ============== ======================= ============================================
  family         how it names itself     what lopper knows of it
  ============== ======================= ============================================
  Mastodon       ``4.3.2``               every endpoint above; the owner's statuses
                                         include direct messages and boosts
                                         (AccountStatusesFilter: the author sees all);
                                         notifications carry their time, favourites
                                         none; follow ids in the ``Link`` header come
                                         from a plain sequence (the ``follows`` table
                                         has no Snowflake ids), so they tell no date
  GoToSocial     ``x (compatible;        conversations only in recent versions (older
                 GoToSocial y)``         ones answer 404, which the probe catches);
                                         ids are ULIDs, not numbers
  Pleroma,       ``2.7.2 (compatible;    conversations served; 128-bit Flake ids
  Akkoma         Pleroma y)``            (strings), not Mastodon's Snowflakes
  Misskey family ``(compatible; Sharkey  conversations since Calckey 14, Firefish 1,
  (Sharkey,      y)`` and the like       Iceshrimp 1; nothing known hollow, so only the
  Iceshrimp,                             probes decide
  Firefish)
  Takahē         ``takahe/0.11``         conversations: 404 with the slash, always
                                         ``[]`` without it (hollow); the owner's
                                         statuses leave out direct messages and boosts
                                         while ``statuses_count`` counts them;
                                         ``last_status_at`` always null; no rate-limit
                                         headers; a bad token is a plain-text 400
  ============== ======================= ============================================

Credentials: ``access_token`` (and, for a server whose API is not at the address of the
handle, ``api_base_url``) from the account's credentials, else the token file written by
:func:`authorize`. The SDK is imported here and nowhere else.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from mastodon import (
    Mastodon,
    MastodonAPIError,
    MastodonError,
    MastodonIllegalArgumentError,
    MastodonNetworkError,
    MastodonNotFoundError,
    MastodonRatelimitError,
    MastodonUnauthorizedError,
)

from service.config import Account
from service.errors import ConfigError, ConfigProblem
from service.logs import register_secrets
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
from service.platforms.tokens import load_token, save_token

Clock = Callable[[], datetime]

# read:favourites is needed by /api/v1/favourites; the others by what their names say.
SCOPES = (
    "read:accounts",
    "read:follows",
    "read:notifications",
    "read:statuses",
    "read:favourites",
    "write:follows",
)
OOB = "urn:ietf:wg:oauth:2.0:oob"
APP_NAME = "lopper"

# Mastodon caps a page at twice the endpoint's default (Api::BaseController#limit_param).
ACCOUNTS_PAGE = 80
NOTIFICATIONS_PAGE = 80
STATUSES_PAGE = 40
REQUEST_TIMEOUT = 60.0

NOTIFICATIONS = "notifications"
STATUSES = "statuses"
FAVOURITES = "favourites"
CONVERSATIONS = "conversations"
STREAMS = (NOTIFICATIONS, STATUSES, FAVOURITES, CONVERSATIONS)
RECHECK_AFTER = timedelta(minutes=1)  # how long a relationship read stands for remove()
EXCHANGE_TYPES = ["mention", "favourite", "reblog", "quote"]

_IN, _OUT = Direction.INBOUND, Direction.OUTBOUND
_SECOND = timedelta(seconds=1)

# What each stream would have shown, and which way: a stream the server does not serve
# makes these unseen.
STREAM_KINDS: dict[str, tuple[tuple[Kind, Direction | None], ...]] = {
    NOTIFICATIONS: (
        (Kind.LIKE, _IN),
        (Kind.REPOST, _IN),
        (Kind.MENTION, _IN),
        (Kind.REPLY, _IN),
        (Kind.QUOTE, _IN),
        (Kind.MESSAGE, _IN),
    ),
    STATUSES: (
        (Kind.REPLY, _OUT),
        (Kind.MENTION, _OUT),
        (Kind.QUOTE, _OUT),
        (Kind.REPOST, _OUT),
        (Kind.MESSAGE, _OUT),
    ),
    FAVOURITES: ((Kind.LIKE, _OUT),),
    CONVERSATIONS: ((Kind.MESSAGE, None),),
}
_STREAM_PATHS = {
    NOTIFICATIONS: "/api/v1/notifications",
    STATUSES: "/api/v1/accounts/:id/statuses",
    FAVOURITES: "/api/v1/favourites",
    CONVERSATIONS: "/api/v1/conversations",
}


@dataclass(frozen=True)
class Family:
    """What one family of server software serves through the Mastodon client API."""

    name: str
    # Kinds the software is known to leave out of every endpoint lopper reads.
    hollow: tuple[tuple[Kind, Direction | None, str], ...] = ()


FAMILIES: dict[str, Family] = {
    "mastodon": Family("Mastodon"),
    "gotosocial": Family("GoToSocial"),
    "pleroma": Family("Pleroma"),
    "akkoma": Family("Akkoma"),
    "misskey": Family("Misskey-family"),
    "takahe": Family(
        "Takahē",
        hollow=(
            (
                Kind.MESSAGE,
                None,
                "Takahē answers conversations with an empty list and leaves direct messages "
                "out of the account's own statuses",
            ),
            (Kind.REPOST, _OUT, "Takahē leaves boosts out of the account's own statuses"),
        ),
    ),
}
_MISSKEY = ("misskey", "sharkey", "iceshrimp", "firefish", "calckey", "catodon", "foundkey")


def server_family(version: str) -> str | None:
    """The family from ``/api/v1/instance``'s ``version`` (None: not recognised).

    Compatible servers append themselves (``2.7.2 (compatible; Pleroma 2.6.0)``); Mastodon
    sends a bare version (``4.3.2``, ``4.4.0-beta.1``, ``4.3.2+glitch``).
    """
    text = version.strip().lower()
    for name in ("gotosocial", "akkoma", "pleroma", "takahe", "takahē"):
        if name in text:
            return "takahe" if name.startswith("takah") else name
    if any(name in text for name in _MISSKEY):
        return "misskey"
    if text[:1].isdigit() and "compatible" not in text:
        return "mastodon"
    return None


# --- small conversions -------------------------------------------------------------------


def instance_url(handle: str) -> str:
    """``@user@example.social`` -> ``https://example.social``."""
    parts = handle.lstrip("@").split("@")
    if len(parts) != 2 or not parts[1]:
        raise ValueError(f"{handle!r} names no instance; write it as @user@example.social")
    return f"https://{parts[1]}"


def _base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else f"https://{url}"


def _aware(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str):
        return _aware(datetime.fromisoformat(value))
    raise ValueError(f"not a time: {value!r}")


def last_active(value: Any) -> datetime | None:
    """``last_status_at`` as the latest moment it can mean.

    Mastodon sends a bare date (since 3.1) and Mastodon.py turns it into a naive midnight; the
    last post can have been any time that day, so it counts as the end of the day (UTC, the
    server's day). Other servers send a full time, taken as it is; null means unknown.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(UTC)
        value = value.date()
    if isinstance(value, date):
        return datetime.combine(value, time.max, tzinfo=UTC)
    raise ValueError(f"not a date: {value!r}")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _floor_second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def _after_second(value: datetime) -> datetime:
    # The store keeps whole seconds: a span may only start after the second of an item whose
    # neighbours of the same second have not all been read.
    return _floor_second(value) + _SECOND


def _id(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("id")
    if value is None or value == "":
        raise ValueError("missing id")
    return str(value)


def _page_param(page: Any, rel: str) -> str | None:
    """The id to page on from the ``Link`` header, as Mastodon.py parsed it."""
    info = getattr(page, f"_pagination_{rel}", None)
    if not info:
        return None
    for key in ("max_id",) if rel == "next" else ("min_id", "since_id"):
        value = info.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _newest(ids: Iterable[str]) -> str | None:
    numeric = [int(i) for i in ids if i.isdigit()]
    return str(max(numeric)) if numeric else None


def _quoted_author(status: Any) -> str | None:
    quote = status.get("quote")
    if not isinstance(quote, dict):
        return None
    quoted = quote.get("quoted_status")
    if isinstance(quoted, dict) and isinstance(quoted.get("account"), dict):
        return _id(quoted["account"])
    return None  # a shallow quote names the status only, not its author


def _status_targets(status: Any, me: str) -> dict[str, Kind]:
    """Who a status of the account's own is addressed to, and as what (one kind each)."""
    targets: dict[str, Kind] = {}
    for mention in status.get("mentions") or ():
        targets[_id(mention)] = Kind.MENTION
    quoted = _quoted_author(status)
    if quoted:
        targets[quoted] = Kind.QUOTE
    replied = status.get("in_reply_to_account_id")
    if replied:
        targets[str(replied)] = Kind.REPLY
    if status.get("visibility") == "direct":
        targets = dict.fromkeys(targets, Kind.MESSAGE)
    targets.pop(me, None)
    return targets


def _inbound_kind(status: Any, me: str, fallback: Kind) -> Kind:
    """What a status someone addressed to the account is, from the status alone.

    The kind depends on the status, not on which notification brought it, so the same status
    read from a mention, a quote notification or a conversation is the same exchange.
    """
    if status.get("visibility") == "direct":
        return Kind.MESSAGE
    if str(status.get("in_reply_to_account_id") or "") == me:
        return Kind.REPLY
    if _quoted_author(status) == me:
        return Kind.QUOTE
    return fallback


# --- the adapter -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stream:
    name: str
    limit: int
    # Items carry a time that grows with their paging id, so a backwards page vouches for
    # the span it covers; favourites (no time) and conversations (a supplement) do not.
    timed: bool


_STREAM_SPECS = {
    NOTIFICATIONS: _Stream(NOTIFICATIONS, NOTIFICATIONS_PAGE, timed=True),
    STATUSES: _Stream(STATUSES, STATUSES_PAGE, timed=True),
    FAVOURITES: _Stream(FAVOURITES, STATUSES_PAGE, timed=False),
    CONVERSATIONS: _Stream(CONVERSATIONS, STATUSES_PAGE, timed=False),
}


class _Wire:
    """The last response the SDK received: the rate-limit headers and error bodies it drops.

    Mastodon.py raises ``MastodonRatelimitError`` without the reset time and turns a
    plain-text error body into nothing; a requests response hook keeps both.
    """

    def __init__(self) -> None:
        self.last: requests.Response | None = None
        self.budget: dict[bool, tuple[int, datetime | None]] = {}
        self.writing = False

    def hook(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        self.last = response
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.strip().lstrip("-").isdigit():
            self.budget[self.writing] = (int(remaining), self.reset_at(response))

    @staticmethod
    def reset_at(response: requests.Response | None) -> datetime | None:
        raw = response.headers.get("x-ratelimit-reset") if response is not None else None
        if not raw:
            return None
        raw = raw.strip()
        try:
            if raw.isdigit():  # some servers (GoToSocial) send seconds since the epoch
                return datetime.fromtimestamp(int(raw), tz=UTC)
            return _aware(datetime.fromisoformat(raw))
        except (ValueError, OverflowError):
            return None


class MastodonPlatform:
    """``platform: mastodon`` — one account on one Mastodon server."""

    name: ClassVar[str] = "mastodon"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.REMOVE, Capability.RESTORE, Capability.RELATIONSHIP}
    )
    simulated: ClassVar[bool] = False
    # Follows are listed newest first (paged by follow id, descending).
    traits: Traits = Traits(removal_spacing=(20.0, 90.0), newest_first=True)

    def __init__(
        self,
        *,
        handle: str,
        api_base_url: str,
        access_token: str | None,
        state_dir: Path,
        account_key: str,
        clock: Clock | None = None,
        timeout: float = REQUEST_TIMEOUT,
        token_configured: bool = False,
    ) -> None:
        self.handle = handle
        self._token_configured = token_configured  # an access_token credential, not `auth`
        self.base_url = _base_url(api_base_url)
        parts = handle.lstrip("@").split("@")
        # Local accounts are listed as bare names: qualify them with the account's own
        # domain (the handle's, which may differ from the web address) to keep handles unique.
        self.domain = parts[1] if len(parts) == 2 and parts[1] else urlsplit(self.base_url).netloc
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self._token = access_token
        self._wire = _Wire()
        session = requests.Session()
        session.hooks["response"].append(self._wire.hook)
        self.api = Mastodon(
            access_token=access_token,
            api_base_url=self.base_url,
            ratelimit_method="throw",  # never sleep inside a job: the sync defers instead
            request_timeout=timeout,
            session=session,
        )
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in account_key)
        self.folder = state_dir / "mastodon" / safe
        self._me: Any = None
        self._seen: tuple[str | None, set[str]] = (None, set())  # followers of this listing
        self._checked: dict[str, tuple[bool, datetime]] = {}  # follow found by relationship()
        self._found: dict[tuple[Kind, Direction | None], Unseen] = {}  # unseen, this sync
        self._plain_conversations = False
        self.software: str | None = None  # the server's own version string
        self.family: Family | None = None

    # -- errors -------------------------------------------------------------------------

    def _reauth(self, why: str) -> str:
        if self._token_configured:
            # The credential overrides what `lopper auth` stores: running it would not help.
            return (
                f"the Mastodon server at {self.base_url} {why}; the access_token credential "
                "of this account in the configuration is the one used (it overrides what "
                "`lopper auth mastodon` stores): replace it with a valid token, or remove it "
                f"and run `lopper auth mastodon --instance {self.base_url}`"
            )
        return (
            f"the Mastodon server at {self.base_url} {why}; run "
            f"`lopper auth mastodon --instance {self.base_url}` again"
        )

    def _call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        write: bool = False,
        missing: type[PlatformError] = PlatformError,
        **kwargs: Any,
    ) -> Any:
        """One SDK call, its failures turned into the contract's errors.

        ``missing`` is what a 404 means for this call: an endpoint the server lacks
        (``Unsupported``) or a person who is gone (``PersonNotFound``).
        """
        if not self._token:
            raise AuthError(self._reauth("has no access token from lopper yet"))
        remaining, reset = self._wire.budget.get(write, (1, None))
        if remaining <= 0 and reset is not None and reset > self.clock():
            # The last answer spent the window: asking now would only earn a 429.
            raise RateLimited(reset_at=reset, detail="Mastodon rate limit spent")
        self._wire.writing = write
        self._wire.last = None
        try:
            return fn(*args, **kwargs)
        except MastodonError as exc:
            raise self._translate(exc, write=write, missing=missing) from None

    def _translate(
        self, exc: MastodonError, *, write: bool, missing: type[PlatformError]
    ) -> PlatformError:
        response = self._wire.last
        if isinstance(exc, MastodonRatelimitError):
            return RateLimited(
                reset_at=_Wire.reset_at(response), detail="Mastodon rate limit reached"
            )
        if isinstance(exc, MastodonNetworkError):
            return PlatformError(f"could not reach the Mastodon server at {self.base_url}")
        status = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        said = exc.args[3] if len(exc.args) > 3 and isinstance(exc.args[3], str) else None
        body = response.text[:200] if response is not None and not said else ""
        detail = (said or body or "").strip()
        if isinstance(exc, MastodonUnauthorizedError) or status == 401:
            return AuthError(self._reauth("refused the access token (401)"))
        if status == 400 and "bearer" in detail.lower():
            # Some servers answer a bad token with a plain-text 400 instead of a 401.
            return AuthError(self._reauth("refused the access token (400: invalid bearer token)"))
        if status == 403:
            if "scope" in detail.lower():
                return AuthError(self._reauth(f"refused: {detail or 'missing permission'}"))
            if write:
                return Blocked(f"Mastodon refused the change (403: {detail or 'forbidden'})")
            return AuthError(self._reauth(f"refused access (403: {detail or 'forbidden'})"))
        if status == 422 and missing is PersonNotFound:
            # An unfollow the server cannot process for this person (a suspended account on
            # some servers): the executor checks whether the follow is still listed.
            return missing(f"refused by {self.base_url} (422: {detail or 'unprocessable'})")
        if status == 501 and missing is Unsupported:
            return missing(f"not implemented on {self.base_url} (501)")
        if isinstance(exc, MastodonNotFoundError) or status in (404, 410):
            return missing(f"not found on {self.base_url} ({status}: {detail or 'not found'})")
        if status is not None and status >= 500:
            return PlatformError(f"the Mastodon server at {self.base_url} failed ({status})")
        if status is None:
            return PlatformError(
                f"the Mastodon server at {self.base_url} sent an unreadable answer"
            )
        return PlatformError(f"Mastodon answered {status}: {detail or type(exc).__name__}")

    def _shape(self, what: str) -> PlatformError:
        return PlatformError(f"the Mastodon server sent {what} of an unexpected shape")

    # -- who the account is -------------------------------------------------------------

    def _me_id(self) -> str:
        if self._me is None:
            self.whoami()
        return _id(self._me)

    def _created_at(self) -> datetime:
        if self._me is None:
            self.whoami()
        try:
            return _aware(self._me["created_at"])
        except (KeyError, ValueError):
            return datetime(2016, 1, 1, tzinfo=UTC)  # no Mastodon account is older

    def _handle(self, acct: str) -> str:
        return f"@{acct}" if "@" in acct else f"@{acct}@{self.domain}"

    def whoami(self) -> Identity:
        me = self._call(self.api.account_verify_credentials)
        try:
            identity = Identity(
                user_id=_id(me),
                handle=self._handle(me["acct"]),
                display_name=me.get("display_name") or None,
            )
        except (KeyError, TypeError, ValueError):
            raise self._shape("an account") from None
        self._me = me
        return identity

    # -- connections --------------------------------------------------------------------

    def _profile_url(self, url: Any) -> str | None:
        """The account's ``url``, over plain HTTP where the server itself is reached so.

        A server behind plain HTTP may still write ``https://`` into its own accounts'
        addresses, which then lead nowhere.
        """
        if not isinstance(url, str) or not url:
            return None
        base = urlsplit(self.base_url)
        parts = urlsplit(url)
        if base.scheme == "http" and parts.scheme == "https" and parts.netloc == base.netloc:
            return "http" + url[len("https") :]
        return url

    def _person(self, account: Any, *, following: bool, followed_by: bool) -> Person:
        moved = account.get("moved")
        return Person(
            user_id=_id(account),
            handle=self._handle(str(account["acct"])),
            display_name=account.get("display_name") or None,
            profile_url=self._profile_url(account.get("url")),
            following=following,
            followed_by=followed_by,
            gone=bool(account.get("suspended")),
            moved_to=self._handle(str(moved["acct"])) if isinstance(moved, dict) else None,
            last_active_at=last_active(account.get("last_status_at")),
        )

    def connections(self, cursor: str | None) -> ConnectionPage:
        """Followers first, then following; each page says what its own list knows.

        The core adds the flags up within one listing, so someone in both lists ends up
        mutual. The order matters for a listing that a rate limit spreads over several runs:
        until the following list is reached, a mutual reads as a follower the account does
        not follow, and nobody is suggested for removal on that. The other order would show
        mutuals as people who do not follow back, and could queue one for removal where the
        person protects mutuals. Followers already seen in this run are reported as such on
        the following pages too, which makes each page right on its own.
        """
        state: dict[str, Any] = json.loads(cursor) if cursor else {}
        gen = state.get("gen") or secrets.token_hex(6)
        phase = state.get("list", "followers")
        max_id = state.get("max_id")
        if self._seen[0] != gen:
            self._seen = (gen, set())
        me = self._me_id()
        fetch = self.api.account_followers if phase == "followers" else self.api.account_following
        page = self._call(fetch, me, max_id=max_id, limit=ACCOUNTS_PAGE)
        if not isinstance(page, list):
            raise self._shape("a list of accounts")
        followers = self._seen[1]
        try:
            if phase == "followers":
                people = [self._person(a, following=False, followed_by=True) for a in page]
                followers.update(p.user_id for p in people)
            else:
                people = [
                    self._person(a, following=True, followed_by=_id(a) in followers) for a in page
                ]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._shape("a list of accounts") from None
        after = _page_param(page, "next") if page else None
        if after is not None:
            return ConnectionPage(people, json.dumps({"gen": gen, "list": phase, "max_id": after}))
        if phase == "followers":
            return ConnectionPage(people, json.dumps({"gen": gen, "list": "following"}))
        return ConnectionPage(people, None)

    # -- exchanges ----------------------------------------------------------------------

    def _findings_file(self) -> Path:
        return self.folder / "findings.json"

    def _findings(self) -> dict[str, Any]:
        """What earlier syncs found out about the server (endpoints missing, statuses hidden)."""
        try:
            data = json.loads(self._findings_file().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _remember(self, key: str, value: Any) -> None:
        data = self._findings()
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._findings_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(self._findings_file())

    def _read_family(self) -> None:
        """The server's software, from ``/api/v1/instance`` (read once a sync)."""
        try:
            info = self._call(self.api.instance_v1)
        except AuthError:
            raise
        except PlatformError:
            info = None
        version = str(info.get("version") or "") if isinstance(info, dict) else ""
        self.software = version or None
        self.family = FAMILIES.get(server_family(version) or "")

    def interaction_streams(self) -> Sequence[str]:
        """Every stream the server serves.

        One that answered 404 or 501 before is asked again (one request): while it still
        does, its kinds are unseen and it is left out of the account's coverage, which then
        stands on the streams that were read.
        """
        self._found = {}
        self._read_family()
        missing = dict(self._findings().get("missing") or {})
        streams = []
        for stream in STREAMS:
            if stream in missing:
                try:
                    self._fetch(stream, limit=1)
                except AuthError:
                    raise
                except PlatformError:
                    self._lack(stream)
                    continue
                missing.pop(stream)
                self._remember("missing", missing or None)
            streams.append(stream)
        return tuple(streams)

    def _lack(self, stream: str) -> None:
        """The server does not serve ``stream``: what it would have shown is unseen."""
        path = _STREAM_PATHS[stream]
        for kind, direction in STREAM_KINDS[stream]:
            self._found[(kind, direction)] = Unseen(
                kind,
                f"the server at {self.base_url} does not serve {path}",
                "ask the server's admin whether it can be enabled",
                direction,
            )

    def _conversations(self, **params: Any) -> Any:
        """Conversations, asked without the trailing slash when the server wants it so.

        Mastodon.py asks ``/api/v1/conversations/``; some servers (Takahē) route only the
        address without the slash and answer the other with a 404.
        """
        if not self._plain_conversations:
            try:
                return self._call(self.api.conversations, missing=Unsupported, **params)
            except Unsupported:
                pass
        request = self.api._Mastodon__api_request  # type: ignore[attr-defined]
        query = {k: str(v) for k, v in params.items() if v is not None}
        page = self._call(request, "GET", "/api/v1/conversations", query, missing=Unsupported)
        self._plain_conversations = True
        return page

    def _fetch(self, stream: str, **params: Any) -> Any:
        try:
            if stream == NOTIFICATIONS:
                params["types"] = list(EXCHANGE_TYPES)
                return self._call(self.api.notifications, missing=Unsupported, **params)
            if stream == STATUSES:
                return self._call(
                    self.api.account_statuses, self._me_id(), missing=Unsupported, **params
                )
            if stream == FAVOURITES:
                return self._call(self.api.favourites, missing=Unsupported, **params)
            return self._conversations(**params)
        except Unsupported:
            missing = dict(self._findings().get("missing") or {})
            missing.setdefault(stream, _iso(self.clock()))
            self._remember("missing", missing)
            self._lack(stream)
            raise

    def _count_statuses(self, state: dict[str, Any], page: Any, done: bool) -> None:
        """Compare the statuses the listing gave with the owner's ``statuses_count``.

        Mastodon lists every status of the owner's own (direct messages and boosts too) and
        counts all but direct messages, so the listing is never shorter. A server that lists
        fewer than it counts hides some, and a kind the listing never showed may be among
        them.
        """
        state["n"] = int(state.get("n") or 0) + len(page)
        state["dm"] = bool(state.get("dm")) or any(
            item.get("visibility") == "direct" for item in page
        )
        state["rb"] = bool(state.get("rb")) or any(
            isinstance(item.get("reblog"), dict) for item in page
        )
        if not done:
            return
        try:
            counted = int(self._me.get("statuses_count") or 0)
        except (TypeError, ValueError, AttributeError):
            counted = 0
        listed = state["n"]
        hidden = None
        if counted > listed:
            hidden = {"listed": listed, "counted": counted, "dm": state["dm"], "rb": state["rb"]}
        self._remember("hidden", hidden)

    def unseen(self) -> Sequence[Unseen]:
        found = dict(self._found)
        if self.family is not None:
            for kind, direction, reason in self.family.hollow:
                found.setdefault((kind, direction), Unseen(kind, reason, None, direction))
        hidden = self._findings().get("hidden")
        if isinstance(hidden, dict):
            why = (
                f"the server lists {hidden.get('listed')} of the account's "
                f"{hidden.get('counted')} statuses"
            )
            if not hidden.get("dm"):
                found.setdefault(
                    (Kind.MESSAGE, _OUT),
                    Unseen(Kind.MESSAGE, f"{why}: direct messages are not visible", None, _OUT),
                )
            if not hidden.get("rb"):
                found.setdefault(
                    (Kind.REPOST, _OUT),
                    Unseen(Kind.REPOST, f"{why}: boosts are not visible", None, _OUT),
                )
        return list(found.values())

    def _exchanges(self, stream: str, item: Any, seen_at: datetime) -> Iterator[Exchange]:
        me = self._me_id()
        if stream == NOTIFICATIONS:
            yield from self._from_notification(item, me)
        elif stream == STATUSES:
            yield from self._from_own_status(item, me)
        elif stream == FAVOURITES:
            author = _id(item["account"])
            if author != me:
                yield Exchange(f"fav:{_id(item)}", author, Kind.LIKE, _OUT, seen_at)
        else:
            yield from self._from_conversation(item, me)

    def _from_notification(self, item: Any, me: str) -> Iterator[Exchange]:
        kind = item.get("type")
        who = _id(item["account"])
        at = _aware(item["created_at"])
        if who == me:
            return
        if kind == "favourite":
            yield Exchange(f"notif:{_id(item)}", who, Kind.LIKE, _IN, at)
        elif kind == "reblog":
            yield Exchange(f"notif:{_id(item)}", who, Kind.REPOST, _IN, at)
        elif kind in ("mention", "quote"):
            fallback = Kind.QUOTE if kind == "quote" else Kind.MENTION
            status = item.get("status")
            if not isinstance(status, dict):
                yield Exchange(f"notif:{_id(item)}", who, fallback, _IN, at)
                return
            # The time of the notification, not of the status: a post can arrive late over
            # federation, and coverage is counted in the order notifications arrive.
            yield Exchange(f"in:{_id(status)}", who, _inbound_kind(status, me, fallback), _IN, at)

    def _from_own_status(self, item: Any, me: str) -> Iterator[Exchange]:
        at = _aware(item["created_at"])
        sid = _id(item)
        reblog = item.get("reblog")
        if isinstance(reblog, dict):
            author = _id(reblog["account"])
            if author != me:
                yield Exchange(f"out:{sid}:{author}", author, Kind.REPOST, _OUT, at)
            return
        for who, kind in _status_targets(item, me).items():
            yield Exchange(f"out:{sid}:{who}", who, kind, _OUT, at)

    def _from_conversation(self, item: Any, me: str) -> Iterator[Exchange]:
        status = item.get("last_status")
        if not isinstance(status, dict):
            return
        author = _id(status["account"])
        at = _aware(status["created_at"])
        sid = _id(status)
        if author == me:
            others = {_id(a) for a in item.get("accounts") or ()} - {me}
            for who in sorted(others):
                yield Exchange(f"out:{sid}:{who}", who, Kind.MESSAGE, _OUT, at)
        else:
            kind = _inbound_kind(status, me, Kind.MESSAGE)
            yield Exchange(f"in:{sid}", author, kind, _IN, at)

    def _page(
        self, stream: str, page: Any, seen_at: datetime
    ) -> tuple[list[Exchange], list[datetime]]:
        if not isinstance(page, list):
            raise self._shape(f"a page of {stream}")
        spec = _STREAM_SPECS[stream]
        try:
            exchanges = [e for item in page for e in self._exchanges(stream, item, seen_at)]
            times = [_aware(item["created_at"]) for item in page] if spec.timed else []
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._shape(f"a page of {stream}") from None
        return exchanges, times

    def _body_newest(self, stream: str, page: Any) -> str | None:
        if stream in (NOTIFICATIONS, STATUSES):
            return _newest(_id(item) for item in page)
        if stream == CONVERSATIONS:
            return _newest(_id(item["last_status"]) for item in page if item.get("last_status"))
        return None  # favourites page on ids the body does not carry

    def interactions(self, stream: str, cursor: str | None) -> InteractionPage:
        if stream not in _STREAM_SPECS:
            raise ValueError(f"Mastodon has no stream {stream!r}")
        state: dict[str, Any] = json.loads(cursor) if cursor else {"phase": "back"}
        if state.get("phase") == "forward":
            return self._forward(stream, state)
        return self._backward(stream, state)

    def _backward(self, stream: str, state: dict[str, Any]) -> InteractionPage:
        """One page further into the past; the first sync reads to the end of the history."""
        spec = _STREAM_SPECS[stream]
        now = self.clock()
        top_at = _aware(state["top_at"]) if state.get("top_at") else now
        params: dict[str, Any] = {"limit": spec.limit}
        if state.get("max_id"):
            params["max_id"] = state["max_id"]
        page = self._fetch(stream, **params)
        # Everything read backwards existed when the first page was fetched: a favourite
        # (no time of its own) happened by then at the latest.
        exchanges, times = self._page(stream, page, top_at)
        top = state.get("top")
        if top is None and page:
            top = _page_param(page, "prev") or self._body_newest(stream, page)
        upper = _aware(state["low"]) if state.get("low") else top_at
        low, covers = upper, None
        earliest = _aware(state["earliest"]) if state.get("earliest") else None
        if times:
            oldest = min(times)
            earliest = oldest if earliest is None else min(earliest, oldest)
            start = _after_second(oldest)
            if start <= upper:
                low, covers = start, Span(start, upper)
        after = _page_param(page, "next") if page else None
        counts: dict[str, Any] = {}
        if stream == STATUSES:
            counts = {k: state[k] for k in ("n", "dm", "rb") if k in state}
            self._count_statuses(counts, page, done=after is None)
        if after is not None:
            later = {
                "phase": "back",
                "max_id": after,
                "top": top,
                "top_at": _iso(top_at),
                "low": _iso(low),
                "earliest": _iso(earliest) if earliest else None,
                **counts,
            }
            return InteractionPage(exchanges, json.dumps(later), covers, done=False)
        # The end of what the server keeps.
        if spec.timed and earliest is not None:
            # Older items may have been cleared or deleted: vouch from the oldest one only.
            start = min(_floor_second(earliest), low)
        else:
            start = min(self._created_at(), low)
        covers = Span(start, upper)
        forward = {"phase": "forward", "min_id": top or "0", "at": _iso(top_at)}
        return InteractionPage(exchanges, json.dumps(forward), covers, done=True)

    def _forward(self, stream: str, state: dict[str, Any]) -> InteractionPage:
        """What is new since the last run, oldest first, until an empty page says that was all."""
        spec = _STREAM_SPECS[stream]
        now = self.clock()
        since = _aware(state["at"])
        min_id = str(state.get("min_id") or "0")
        page = self._fetch(stream, limit=spec.limit, min_id=min_id)
        exchanges, _times = self._page(stream, page, now)
        if page:
            newest = _page_param(page, "prev") or self._body_newest(stream, page)
            if newest is not None and newest != min_id:
                later = {"phase": "forward", "min_id": newest, "at": _iso(since)}
                return InteractionPage(exchanges, json.dumps(later), None, done=False)
            # No way to page on: what was read stays, but nothing is vouched for.
            return InteractionPage(exchanges, json.dumps(state), None, done=True)
        covers = Span(since, now) if now >= since else None
        later = {"phase": "forward", "min_id": min_id, "at": _iso(max(now, since))}
        return InteractionPage(exchanges, json.dumps(later), covers, done=True)

    # -- acting on one connection -------------------------------------------------------

    def relationship(self, user_id: str) -> Relationship:
        """Whether the account follows them now.

        A follow settles asynchronously on some servers: right after a follow the answer can
        still read ``following: false`` for a moment, so a removal checked just after an undo
        may be dropped as "no longer connected" — the safe way round.
        """
        # Suspended accounts are left out of the answer unless asked for.
        rows = self._call(self.api.account_relationships, [user_id], with_suspended=True)
        if not isinstance(rows, list):
            raise self._shape("a relationship")
        following = requested = False
        for row in rows:
            if isinstance(row, dict) and str(row.get("id")) == user_id:
                following, requested = bool(row.get("following")), bool(row.get("requested"))
        self._checked[user_id] = (following or requested, self.clock())
        return Relationship(connected=following)

    def remove(self, user_id: str) -> RemovalOutcome:
        """Unfollow (or withdraw a pending follow request); "not following" counts as done.

        Mastodon answers an unfollow of someone not followed with a plain 200, so the follow
        is checked first — with the answer of ``relationship`` if the executor asked it a
        moment ago, else with one more read.
        """
        checked = self._checked.pop(user_id, None)
        if checked is None or self.clock() - checked[1] > RECHECK_AFTER:
            self.relationship(user_id)
            checked = self._checked.pop(user_id)
        if not checked[0]:
            return RemovalOutcome(already_done=True, detail="not following any more")
        answer = self._call(self.api.account_unfollow, user_id, write=True, missing=PersonNotFound)
        if isinstance(answer, dict) and (answer.get("following") or answer.get("requested")):
            return RemovalOutcome(detail="the server still lists the follow; it may settle later")
        return RemovalOutcome()

    def restore(self, user_id: str) -> None:
        self._checked.pop(user_id, None)
        # A locked account gets a follow request: it is done once they accept it again.
        self._call(self.api.account_follow, user_id, write=True, missing=PersonNotFound)

    def profile_link(self, handle: str, user_id: str) -> str | None:
        return f"{self.base_url}/{handle}" if handle.startswith("@") else None


def build(account: Account, state_dir: Path, clock: Clock | None = None) -> MastodonPlatform:
    """The adapter for one configured account (no request is made here)."""
    credentials = {k: v.get_secret_value() for k, v in account.credentials.items()}
    stored = load_token(state_dir, account.key) or {}
    meta: dict[str, Any] = stored["meta"] if isinstance(stored.get("meta"), dict) else {}
    token = credentials.get("access_token") or stored.get("access_token")
    base = credentials.get("api_base_url") or meta.get("api_base_url")
    if not base:
        try:
            base = instance_url(account.handle)
        except ValueError as exc:
            raise ConfigError(
                [ConfigProblem(str(exc), key=f"accounts[{account.key}].handle")]
            ) from None
    if token:
        register_secrets([token])
    return MastodonPlatform(
        handle=account.handle,
        api_base_url=base,
        access_token=token,
        state_dir=state_dir,
        account_key=account.key,
        clock=clock,
        timeout=account.timeout_or(REQUEST_TIMEOUT),
        token_configured=bool(credentials.get("access_token")),
    )


# --- authorization -----------------------------------------------------------------------


@dataclass(frozen=True)
class Authorization:
    handle: str  # the account the token belongs to, e.g. @me@example.social
    token_file: Path
    authorize_url: str


def authorize(
    instance_url: str,
    state_dir: Path,
    account_key: str,
    ask: Callable[[str], str],
    *,
    session: requests.Session | None = None,
) -> Authorization:
    """Let lopper act for one Mastodon account: register the app, get a token, store it.

    ``ask`` is given the address of the server's authorization page (out-of-band: the page
    shows a code instead of redirecting anywhere) and returns the code the person copied from
    it; the CLI shows the address and prompts. The token is written, 0600, to the token file
    of ``account_key`` (``mastodon:@me@example.social``), where :func:`build` finds it.
    Scopes: read (accounts, follows, notifications, statuses, favourites) and write:follows,
    nothing else. Raises ``AuthError`` when the server refuses or the person authorized
    another account than ``account_key`` names; ``PlatformError`` when it cannot be reached.
    """
    base = _base_url(instance_url)
    allow_http = base.startswith("http://")
    session = session or requests.Session()
    try:
        client_id, client_secret = Mastodon.create_app(
            APP_NAME,
            scopes=list(SCOPES),
            redirect_uris=OOB,
            api_base_url=base,
            session=session,
            request_timeout=REQUEST_TIMEOUT,
        )
    except MastodonError:
        raise PlatformError(f"could not reach {base} to register lopper") from None
    except (KeyError, TypeError, ValueError):
        # The answer held no app keys: the server refuses new apps, or is no Mastodon.
        raise PlatformError(f"{base} did not register lopper as an app") from None
    register_secrets([client_secret])
    api = Mastodon(
        client_id=client_id,
        client_secret=client_secret,
        api_base_url=base,
        ratelimit_method="throw",
        request_timeout=REQUEST_TIMEOUT,
        session=session,
    )
    try:
        url = api.auth_request_url(
            redirect_uris=OOB, scopes=list(SCOPES), force_login=True, allow_http=allow_http
        )
    except MastodonError as exc:
        raise PlatformError(f"could not reach {base}: {type(exc).__name__}") from None
    code = ask(url).strip()
    if not code:
        raise AuthError("no authorization code was given; nothing was stored")
    try:
        token = api.log_in(code=code, redirect_uri=OOB, scopes=list(SCOPES), allow_http=allow_http)
    except (MastodonIllegalArgumentError, MastodonAPIError):
        raise AuthError(
            f"{base} did not accept the authorization code (or granted fewer permissions "
            f"than lopper asks for); run `lopper auth mastodon --instance {base}` again"
        ) from None
    except MastodonError as exc:
        raise PlatformError(f"could not reach {base}: {type(exc).__name__}") from None
    register_secrets([token])
    probe = MastodonPlatform(
        handle=account_key.split(":", 1)[-1],
        api_base_url=base,
        access_token=token,
        state_dir=state_dir,
        account_key=account_key,
    )
    identity = probe.whoami()
    wanted = account_key.split(":", 1)[-1].lstrip("@").split("@")[0].lower()
    got = identity.handle.lstrip("@").split("@")[0].lower()
    if wanted and wanted != got:
        raise AuthError(
            f"the code belongs to {identity.handle}, not to {account_key}; log in as that "
            "account in the browser and run the command again"
        )
    # Only the token and the app's keys are secrets: the address and handle sit one level
    # down, where the token store does not register them for masking in every log line.
    path = save_token(
        state_dir,
        account_key,
        {
            "access_token": token,
            "client_id": client_id,
            "client_secret": client_secret,
            "meta": {"api_base_url": base, "handle": identity.handle, "scopes": list(SCOPES)},
        },
    )
    return Authorization(handle=identity.handle, token_file=path, authorize_url=url)
