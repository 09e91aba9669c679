"""X (Twitter), through tweepy's ``Client`` (API v2): connections, exchanges both ways, unfollow and undo.

What is read, and from where (https://docs.x.com/x-api):

- connections: ``/2/users/:id/followers`` then ``.../following``, 1,000 a page, paged by
  ``meta.next_token``; fetched at most once a day (``traits.min_relist``), since every
  person listed is billed;
- ``mentions``: posts mentioning the account (replies and quotes among them), with
  ``since_id`` after the first pass (X keeps the last 800);
- ``posts``: the account's own posts: who each replies to, mentions, quotes or reposts (X keeps
  the last 3,200);
- ``likes``: the posts the account liked (their authors), newest like first; a like carries no
  time, so it counts from when lopper first saw it (DESIGN.md, invariant 3);
- ``messages``: direct-message events both ways (X keeps 30 days);
- ``reactions``: likes, reposts and quotes of the account's latest ``recent_posts`` posts, read
  again only for a post whose counts changed.

``likes``, ``messages`` and ``reactions`` read again what they read before, so they run once a
UTC day; ``mentions`` and ``posts`` read only what is new. X bills every resource returned
(https://docs.x.com/x-api/getting-started/pricing): the adapter counts them on its
:class:`~service.platforms.metering.CostMeter`, and the sync records and budgets the estimate.

Rate limits come from the ``x-rate-limit-*`` headers of every answer; tweepy never waits
(``wait_on_rate_limit=False``): a spent window raises ``RateLimited`` and the stream resumes
from its cursor on a later run. Writes also keep to 50 per 15 minutes across processes.

Credentials: OAuth 2.0 user context (a token from ``lopper auth x``, refreshed and rotated in a
0600 token file, sent as a bearer token with ``user_auth=False``) or OAuth 1.0a keys from the
account's credentials (``user_auth=True``). tweepy is imported here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time as _time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import requests
import tweepy
from requests.adapters import HTTPAdapter
from requests_oauthlib import OAuth2Session

from service.config import Account, XOptions
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
from service.platforms.metering import CostMeter
from service.platforms.tokens import load_token, save_token, token_lock

Clock = Callable[[], datetime]

# requests-oauthlib logs whole token responses at DEBUG, before lopper knows the new tokens
# to mask them: never let those lines through.
for _name in ("requests_oauthlib", "oauthlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)

API = "https://api.twitter.com"  # tweepy's host, fixed inside BaseClient.request
TOKEN_URL = f"{API}/2/oauth2/token"
SCOPES = (
    "tweet.read",
    "users.read",
    "follows.read",
    "follows.write",
    "like.read",
    "dm.read",
    "offline.access",
)
OAUTH1_KEYS = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")
REAUTH = "run `lopper auth x` again"

MENTIONS, POSTS, LIKES, MESSAGES, REACTIONS = "mentions", "posts", "likes", "messages", "reactions"
DAILY = frozenset({LIKES, MESSAGES, REACTIONS})
LIST_PAGE = 1000
PAGE = 100
FIRST_LOOK = 10  # the first page of an incremental likes/messages pass: most days, all there is
# The smallest max_results each endpoint accepts (X answers 400 below it).
LEAST = {MENTIONS: 5, POSTS: 5, LIKES: 10, MESSAGES: 1, "listing": 1, "quotes": 10, "users": 1}
LIKE_MARKS = 20  # the latest likes remembered to stop the next pass at
NAMED_BOUND = 10  # people one post is taken to name at most, when bounding a page's cost
KEEPS = {MENTIONS: 800, POSTS: 3200}  # X returns only this many of the latest
DM_DAYS = 30
TWEET_FIELDS = ["author_id", "created_at", "referenced_tweets", "in_reply_to_user_id", "entities"]
USER_FIELDS = ["created_at", "most_recent_tweet_id"]
WRITE_WINDOW = timedelta(minutes=15)
WRITE_LIMIT = 50  # follows and unfollows per 15 minutes per user
NO_RESET = timedelta(minutes=15)  # a 429 without a reset header waits a whole window
REFRESH_MARGIN = 120  # seconds before expiry an OAuth 2.0 token is renewed
RECHECK_AFTER = timedelta(minutes=1)
REQUEST_TIMEOUT = 30.0
_EPOCH_MS = 1288834974657  # X's snowflake epoch
_IN, _OUT = Direction.INBOUND, Direction.OUTBOUND
_SECOND = timedelta(seconds=1)


# --- small conversions -------------------------------------------------------------------


def snowflake_time(post_id: str) -> datetime | None:
    """When a post (or DM event) with this id was made: the top bits of a snowflake."""
    try:
        value = int(post_id)
    except (TypeError, ValueError):
        return None
    if value < 2**32:
        return None  # pre-2010 ids carry no time
    return datetime.fromtimestamp(((value >> 22) + _EPOCH_MS) // 1000, tz=UTC)


def _time_of(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _after_second(value: datetime) -> datetime:
    return value.replace(microsecond=0) + _SECOND


def _newer(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if int(a) >= int(b) else b


def intent_link(user_id: str) -> str:
    return f"https://x.com/intent/user?user_id={user_id}"


class _Rebase(HTTPAdapter):
    """Sends what tweepy addresses to https://api.twitter.com to another base (proxy, tests)."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base.rstrip("/")

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = request.url or ""
        if url.startswith(API):
            request.url = self.base + url[len(API) :]
        return super().send(request, **kwargs)


class _Session(requests.Session):
    """tweepy passes no timeout: a silent server would hold a job forever."""

    timeout = REQUEST_TIMEOUT

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


def rebased(session: requests.Session, base: str | None) -> requests.Session:
    if base:
        session.mount(f"{API}/", _Rebase(base))
    return session


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _body_of(response: requests.Response | None) -> Mapping[str, Any]:
    if response is None:
        return {}
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, Mapping) else {}


# --- the adapter -------------------------------------------------------------------------


@dataclass
class _Write:
    """Writes in the last window, in a small file so that every process keeps to the limit."""

    path: Path

    def times(self, now: datetime) -> list[datetime]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            stamps = [datetime.fromisoformat(s) for s in raw]
        except (OSError, ValueError, TypeError):
            return []
        return [s for s in stamps if s > now - WRITE_WINDOW]

    def check(self, now: datetime) -> None:
        recent = self.times(now)
        if len(recent) >= WRITE_LIMIT:
            raise RateLimited(
                reset_at=min(recent) + WRITE_WINDOW,
                detail=f"X allows {WRITE_LIMIT} follows and unfollows per 15 minutes",
            )

    def add(self, now: datetime) -> None:
        stamps = [*self.times(now), now]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump([_iso(s) for s in stamps], handle)
        os.replace(tmp, self.path)


class XPlatform:
    """``platform: x`` — one X account through the API v2."""

    name: ClassVar[str] = "x"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.REMOVE, Capability.RESTORE, Capability.RELATIONSHIP}
    )
    simulated: ClassVar[bool] = False
    # Every person in a listing is billed: a complete listing at most once a day.
    relist_floor: ClassVar[timedelta] = timedelta(hours=24)

    def __init__(
        self,
        *,
        handle: str,
        options: XOptions,
        credentials: Mapping[str, str],
        state_dir: Path,
        account_key: str,
        clock: Clock | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.handle = handle
        self.options = options
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.state_dir = state_dir
        self.account_key = account_key
        self.credentials = dict(credentials)
        self.mode = options.auth or (
            "oauth1" if all(credentials.get(k) for k in OAUTH1_KEYS) else "oauth2"
        )
        self.user_auth = self.mode == "oauth1"
        self.traits = Traits(
            removal_spacing=(30.0, 120.0),
            min_relist=max(self.relist_floor, options.relist_every),
            newest_first=True,  # the following list comes newest follow first
        )
        self.meter = CostMeter(
            options.prices,
            owned_app=options.owned_app,
            budget=options.monthly_budget,
            clock=self.clock,
        )
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in account_key)
        self.folder = state_dir / "x" / safe
        self._writes = _Write(self.folder / "writes.json")
        self._limits: dict[str, tuple[int, datetime | None]] = {}
        self._checked: dict[str, tuple[bool, datetime]] = {}
        self._me: dict[str, Any] | None = None
        self._token: dict[str, Any] | None = None
        self.timeout = timeout
        session = _Session()
        session.timeout = timeout
        self.session = rebased(session, options.api_base_url)
        if self.mode == "oauth1":
            register_secrets(credentials.get(k, "") for k in OAUTH1_KEYS)
            self.client = tweepy.Client(
                consumer_key=credentials.get("consumer_key"),
                consumer_secret=credentials.get("consumer_secret"),
                access_token=credentials.get("access_token"),
                access_token_secret=credentials.get("access_token_secret"),
                return_type=requests.Response,
                wait_on_rate_limit=False,  # never sleep inside a job: the sync defers
            )
        else:
            self._token = load_token(state_dir, account_key)
            bearer = self._token.get("access_token") if self._token else None
            self.client = tweepy.Client(
                bearer_token=bearer, return_type=requests.Response, wait_on_rate_limit=False
            )
        self.client.session = self.session

    # -- calls and their errors ---------------------------------------------------------

    def _ready(self, force: bool = False) -> None:
        """OAuth 2.0: a token exists, and is renewed shortly before it expires."""
        if self.mode == "oauth1":
            return
        if not self._token or not self._token.get("access_token"):
            raise AuthError(f"lopper has no X token for {self.account_key} yet; {REAUTH}")
        expires = float(self._token.get("expires_at") or 0)
        if not force and (not expires or expires - _time.time() > REFRESH_MARGIN):
            return
        self._refresh(force)

    def _refresh(self, force: bool) -> None:
        assert self._token is not None
        spent = self._token.get("access_token")
        with token_lock(self.state_dir, self.account_key):
            stored = load_token(self.state_dir, self.account_key) or {}
            if stored.get("access_token") and stored.get("access_token") != spent:
                # Another process renewed it meanwhile: its pair is the one that works now.
                self._use(stored)
                return
            refresh = stored.get("refresh_token") or self._token.get("refresh_token")
            client_id = self.options.client_id or str(stored.get("client_id") or "")
            if not refresh or not client_id:
                raise AuthError(f"the X token has expired and cannot be renewed; {REAUTH}")
            oauth = _oauth_session(self.options, self.credentials, client_id)
            try:
                fresh = oauth.refresh_token(
                    TOKEN_URL,
                    refresh_token=refresh,
                    auth=oauth.auth,
                    client_id=client_id,
                    timeout=self.timeout,
                )
            except requests.RequestException:
                raise PlatformError("could not reach X to renew the token") from None
            except Exception:  # oauthlib's OAuth2Error and friends: the grant was refused
                raise AuthError(f"X refused to renew the token; {REAUTH}") from None
            token = {**stored, **dict(fresh), "client_id": client_id}
            save_token(self.state_dir, self.account_key, token)
            self._use(token)

    def _use(self, token: dict[str, Any]) -> None:
        self._token = token
        register_secrets([str(token.get("access_token")), str(token.get("refresh_token"))])
        self.client.bearer_token = token.get("access_token")

    def _call(
        self,
        route: str,
        fn: Callable[..., Any],
        *args: Any,
        write: bool = False,
        missing: type[PlatformError] = PlatformError,
        **kwargs: Any,
    ) -> Mapping[str, Any]:
        """One tweepy call, its failures turned into the contract's errors."""
        now = self.clock()
        remaining, reset = self._limits.get(route, (1, None))
        if remaining <= 0 and reset is not None and reset > now:
            # The last answer spent this window: asking now would only earn a 429.
            raise RateLimited(reset_at=reset, detail=f"X rate limit for {route} spent")
        if write:
            self._writes.check(now)
        self._ready()
        retried = False
        while True:
            try:
                response = fn(*args, user_auth=self.user_auth, **kwargs)
                break
            except tweepy.TooManyRequests as exc:
                self._note_limits(route, exc.response)
                at = (
                    datetime.fromtimestamp(exc.reset_time, tz=UTC)
                    if exc.reset_time
                    else self.clock() + NO_RESET
                )
                # Without a reset time the window is taken as spent for a whole period: never
                # a tight loop of 429s.
                self._limits[route] = (0, at)
                raise RateLimited(reset_at=at, detail=f"X rate limit reached for {route}") from None
            except tweepy.Unauthorized:
                if self.mode == "oauth2" and not retried:
                    retried = True
                    self._ready(force=True)  # the token may have been revoked or expired early
                    continue
                raise AuthError(f"X refused the credentials (401); {REAUTH}") from None
            except tweepy.Forbidden as exc:
                raise self._forbidden(route, exc, write) from None
            except tweepy.NotFound as exc:
                raise missing(f"X found nothing at {route} (404: {self._said(exc)})") from None
            except tweepy.TwitterServerError as exc:
                code = exc.response.status_code if exc.response is not None else "5xx"
                raise PlatformError(f"X failed on {route} ({code})") from None
            except tweepy.HTTPException as exc:
                code = exc.response.status_code if exc.response is not None else "?"
                raise PlatformError(f"X answered {code} on {route}: {self._said(exc)}") from None
            except requests.RequestException as exc:
                raise PlatformError(
                    f"could not reach X for {route} ({type(exc).__name__})"
                ) from None
            except RecursionError:  # tweepy reads an error's JSON body: nested too deep
                raise PlatformError(f"X sent an answer nested too deep for {route}") from None
            finally:
                # tweepy's hidden look-up of the signed-in user (OAuth 2.0 follow and unfollow)
                # switches the client to dict answers and leaves it so when that call fails:
                # every later call would then break. The adapter never lets it run, and puts
                # the client back all the same.
                self.client.return_type = requests.Response
        self._note_limits(route, response)
        if write:
            self._writes.add(self.clock())
        try:
            body = response.json()
        except (ValueError, RecursionError):  # not JSON, or JSON nested too deep to read
            raise PlatformError(f"X sent an unreadable answer for {route}") from None
        if not isinstance(body, Mapping):
            raise PlatformError(f"X sent an answer of an unexpected shape for {route}")
        return body

    def _request(self, method: str, path: str, **kwargs: Any) -> Callable[..., Any]:
        """A call of tweepy's plain request, for the writes its helpers would precede with a
        hidden, unbilled and unguarded ``get_me`` under OAuth 2.0."""

        def call(*, user_auth: bool) -> requests.Response:
            response: requests.Response = self.client.request(
                method, path, user_auth=user_auth, **kwargs
            )
            return response

        return call

    @staticmethod
    def _said(exc: tweepy.HTTPException) -> str:
        body = _body_of(exc.response)
        return str(body.get("detail") or body.get("title") or "; ".join(exc.api_messages) or "")[
            :200
        ]

    def _forbidden(self, route: str, exc: tweepy.Forbidden, write: bool) -> PlatformError:
        body = _body_of(exc.response)
        reason = str(body.get("reason") or "")
        if reason == "client-not-enrolled":
            return Unsupported(
                f"the X app's access level does not include {route} (403 client-not-enrolled): "
                "attach the app to a project with that access in the X developer console"
            )
        if write:
            return Blocked(f"X refused the change (403: {self._said(exc) or 'forbidden'})")
        return Unsupported(f"X refused {route} (403: {self._said(exc) or 'forbidden'})")

    def _note_limits(self, route: str, response: requests.Response | None) -> None:
        if response is None:
            return
        remaining = response.headers.get("x-rate-limit-remaining")
        reset = response.headers.get("x-rate-limit-reset")
        if remaining is None or not remaining.strip().isdigit():
            return
        at = None
        if reset and reset.strip().isdigit():
            at = datetime.fromtimestamp(int(reset), tz=UTC)
        self._limits[route] = (int(remaining), at)

    def _count(
        self, body: Mapping[str, Any], key: str, *, owned: bool = False, listing: bool = False
    ) -> None:
        data = body.get("data")
        items = data if isinstance(data, list) else [data] if isinstance(data, Mapping) else []
        self.meter.read(
            key,
            (str(i.get("id")) for i in items if isinstance(i, Mapping)),
            owned=owned,
            listing=listing,
        )
        includes = body.get("includes")
        if isinstance(includes, Mapping):
            for name, price in (("tweets", "post_read"), ("users", "user_read")):
                extra = includes.get(name)
                if isinstance(extra, list):
                    self.meter.read(
                        price, (str(i.get("id")) for i in extra if isinstance(i, Mapping))
                    )

    def _affordable(self, what: str, wanted: int, least: int, *reads: tuple[str, bool, int]) -> int:
        """The page size the month's budget still pays for (see CostMeter.page_size).

        ``reads`` are (price key, owned, how many) per item: the item itself and the most
        its expansions bring along.
        """
        per_item = 0
        for key, owned, many in reads:
            chosen = "owned_read" if owned and self.options.owned_app else key
            per_item += many * self.meter.price(chosen)
        return self.meter.page_size(what, wanted, least, per_item)

    def _shape(self, what: str) -> PlatformError:
        return PlatformError(f"X sent {what} of an unexpected shape")

    # -- who the account is -------------------------------------------------------------

    def whoami(self) -> Identity:
        body = self._call("me", self.client.get_me, user_fields=["created_at", "public_metrics"])
        self._count(body, "user_read", owned=True)
        me = body.get("data")
        if not isinstance(me, Mapping) or not me.get("id") or not me.get("username"):
            raise self._shape("an account")
        self._me = dict(me)
        metrics = _mapping(me.get("public_metrics"))
        listed = int(metrics.get("followers_count") or 0) + int(metrics.get("following_count") or 0)
        key = "owned_read" if self.options.owned_app else "follows_read"
        self.meter.listing_estimate_micros = listed * self.meter.price(key)
        return Identity(str(me["id"]), f"@{me['username']}", me.get("name") or None)

    def _me_id(self) -> str:
        if self._me is None:
            self.whoami()
        assert self._me is not None
        return str(self._me["id"])

    def _all_of(self, stream: str, read: int) -> bool:
        """Whether a first pass read the account's whole history of ``stream``, as the
        account's own counts (``public_metrics``) tell: only its posts and likes are counted."""
        if self._me is None:
            return False
        metrics = _mapping(self._me.get("public_metrics"))
        key = {POSTS: "tweet_count", LIKES: "like_count"}.get(stream)
        total = metrics.get(key) if key else None
        if not isinstance(total, int) or total > KEEPS.get(stream, total):
            return False
        return read >= total

    def _created_at(self) -> datetime:
        if self._me is None:
            self.whoami()
        try:
            return _time_of((self._me or {}).get("created_at"))
        except ValueError:
            return datetime(2006, 3, 21, tzinfo=UTC)  # no X account is older

    # -- connections --------------------------------------------------------------------

    def connections(self, cursor: str | None) -> ConnectionPage:
        """Followers first, then following; the core adds up the flags of one listing."""
        state: dict[str, Any] = json.loads(cursor) if cursor else {}
        phase = state.get("list", "followers")
        me = self._me_id()
        fetch = (
            self.client.get_users_followers
            if phase == "followers"
            else self.client.get_users_following
        )
        size = self._affordable(phase, LIST_PAGE, LEAST["listing"], ("follows_read", True, 1))
        params: dict[str, Any] = {"max_results": size, "user_fields": USER_FIELDS}
        if state.get("token"):
            params["pagination_token"] = state["token"]
        body = self._call(phase, fetch, me, **params)
        self._count(body, "follows_read", owned=True, listing=True)
        data = body.get("data") or []
        if not isinstance(data, list):
            raise self._shape("a list of accounts")
        try:
            people = [self._person(u, phase) for u in data]
        except (KeyError, TypeError, ValueError):
            raise self._shape("a list of accounts") from None
        meta = _mapping(body.get("meta"))
        token = meta.get("next_token")
        if token:
            return ConnectionPage(people, json.dumps({"list": phase, "token": token}))
        if phase == "followers":
            return ConnectionPage(people, json.dumps({"list": "following"}))
        return ConnectionPage(people, None)

    def _person(self, user: Mapping[str, Any], phase: str) -> Person:
        username = str(user["username"])
        recent = user.get("most_recent_tweet_id")
        return Person(
            user_id=str(user["id"]),
            handle=f"@{username}",
            display_name=user.get("name") or None,
            profile_url=f"https://x.com/{username}",
            following=phase == "following",
            followed_by=phase == "followers",
            last_active_at=snowflake_time(str(recent)) if recent else None,
        )

    # -- exchanges ----------------------------------------------------------------------

    def interaction_streams(self) -> Sequence[str]:
        streams = [MENTIONS, POSTS, LIKES, MESSAGES]
        if self.options.recent_posts > 0:
            streams.append(REACTIONS)
        return tuple(streams)

    def interactions(self, stream: str, cursor: str | None) -> InteractionPage:
        state: dict[str, Any] = json.loads(cursor) if cursor else {}
        now = self.clock()
        today = now.astimezone(UTC).date().isoformat()
        if stream in DAILY and state.get("day") == today and not state.get("pass"):
            # Read today already: reading again would only bill the same resources.
            return InteractionPage((), json.dumps(state), None, done=True)
        if stream in (MENTIONS, POSTS):
            return self._since_stream(stream, state, now)
        if stream in (LIKES, MESSAGES):
            return self._newest_first(stream, state, now, today)
        if stream == REACTIONS:
            return self._reactions(state, now, today)
        raise ValueError(f"X has no stream {stream!r}")

    def _tweets_call(self, stream: str, params: dict[str, Any]) -> Mapping[str, Any]:
        me = self._me_id()
        # referenced_tweets.id brings the posts a post quotes, answers or reposts, with their
        # authors (tweet.fields author_id); ".author_id" would bring only the users.
        if stream == MENTIONS:
            params["expansions"] = ["referenced_tweets.id"]
            params["max_results"] = self._affordable(
                MENTIONS, params["max_results"], LEAST[MENTIONS], ("post_read", False, 3)
            )
            return self._call(MENTIONS, self.client.get_users_mentions, me, **params)
        params["expansions"] = ["referenced_tweets.id", "entities.mentions.username"]
        params["max_results"] = self._affordable(
            POSTS,
            params["max_results"],
            LEAST[POSTS],
            ("post_read", True, 1),
            ("post_read", False, 2),
            ("user_read", False, NAMED_BOUND),
        )
        return self._call(POSTS, self.client.get_users_tweets, me, **params)

    def _since_stream(self, stream: str, state: dict[str, Any], now: datetime) -> InteractionPage:
        """Newest first; a pass reads everything since the last one, then vouches for it."""
        run: dict[str, Any] = state.get("pass") or {"at": _iso(now), "n": 0}
        params: dict[str, Any] = {"max_results": PAGE, "tweet_fields": TWEET_FIELDS}
        if state.get("since"):
            params["since_id"] = state["since"]
        if run.get("token"):
            params["pagination_token"] = run["token"]
        body = self._tweets_call(stream, params)
        self._count(body, "post_read", owned=stream == POSTS)
        tweets, referenced = self._tweets(body)
        me = self._me_id()
        try:
            if stream == MENTIONS:
                exchanges = [e for t in tweets for e in self._inbound(t, referenced, me)]
            else:
                exchanges = [e for t in tweets for e in self._outbound(t, referenced, me, body)]
            times = [_time_of(t.get("created_at")) for t in tweets]
        except (KeyError, TypeError, ValueError):
            raise self._shape(f"a page of {stream}") from None
        run["n"] = int(run.get("n", 0)) + len(tweets)
        run["top"] = _newer(
            run.get("top"), max((str(t["id"]) for t in tweets), key=int, default=None)
        )
        if times:
            oldest = min(times)
            run["oldest"] = _iso(
                min(oldest, _time_of(run["oldest"])) if run.get("oldest") else oldest
            )
        meta = _mapping(body.get("meta"))
        if meta.get("next_token"):
            run["token"] = meta["next_token"]
            return InteractionPage(exchanges, json.dumps({**state, "pass": run}), None, done=False)
        at = _time_of(run["at"])
        capped = run["n"] >= KEEPS[stream]
        if capped and run.get("oldest"):
            start = _after_second(_time_of(run["oldest"]))  # older ones are beyond what X keeps
        elif state.get("prev"):
            start = _time_of(state["prev"])
        elif self._all_of(stream, int(run["n"])):
            start = self._created_at()  # every post the account ever wrote was read
        elif run.get("oldest"):
            # Fewer than X keeps can still leave history out (it drops deleted, withheld and
            # protected posts from the count): the pass vouches for what it read, no further.
            start = _after_second(_time_of(run["oldest"]))
        else:
            start = at
        covers = Span(start, at) if start <= at else None
        later = {"since": _newer(state.get("since"), run.get("top")), "prev": run["at"]}
        return InteractionPage(exchanges, json.dumps(later), covers, done=True)

    def _tweets(self, body: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], dict[str, str]]:
        data = body.get("data") or []
        if not isinstance(data, list):
            raise self._shape("a list of posts")
        referenced: dict[str, str] = {}  # post id -> its author, from the expansions
        includes = body.get("includes")
        if isinstance(includes, Mapping) and isinstance(includes.get("tweets"), list):
            for tweet in includes["tweets"]:
                if isinstance(tweet, Mapping) and tweet.get("author_id"):
                    referenced[str(tweet["id"])] = str(tweet["author_id"])
        return [t for t in data if isinstance(t, Mapping)], referenced

    def _inbound(
        self, tweet: Mapping[str, Any], referenced: Mapping[str, str], me: str
    ) -> Iterator[Exchange]:
        author = str(tweet["author_id"])
        if author == me:
            return
        yield Exchange(
            f"in:{tweet['id']}",
            author,
            inbound_kind(tweet, referenced, me),
            _IN,
            _time_of(tweet["created_at"]),
        )

    def _outbound(
        self,
        tweet: Mapping[str, Any],
        referenced: Mapping[str, str],
        me: str,
        body: Mapping[str, Any],
    ) -> Iterator[Exchange]:
        at = _time_of(tweet["created_at"])
        for who, kind in outbound_targets(tweet, referenced, me, _usernames(body)).items():
            yield Exchange(f"out:{tweet['id']}:{who}", who, kind, _OUT, at)

    def _newest_first(
        self, stream: str, state: dict[str, Any], now: datetime, today: str
    ) -> InteractionPage:
        """Likes and messages have no ``since_id``: read from the newest until the known top."""
        run: dict[str, Any] = state.get("pass") or {"at": _iso(now), "n": 0}
        first_look = state.get("known") is not None and not run.get("token")
        size = FIRST_LOOK if first_look else PAGE
        if stream == LIKES:
            size = self._affordable(LIKES, size, LEAST[LIKES], ("post_read", True, 1))
        else:
            size = self._affordable(MESSAGES, size, LEAST[MESSAGES], ("dm_event_read", False, 1))
        params: dict[str, Any] = {"max_results": size}
        if run.get("token"):
            params["pagination_token"] = run["token"]
        seen_at = _time_of(run["at"])
        me = self._me_id()
        if stream == LIKES:
            body = self._call(
                LIKES,
                self.client.get_liked_tweets,
                me,
                tweet_fields=["author_id", "created_at"],
                **params,
            )
            self._count(body, "post_read", owned=True)
        else:
            body = self._call(
                MESSAGES,
                self.client.get_direct_message_events,
                event_types="MessageCreate",
                dm_event_fields=[
                    "id",
                    "event_type",
                    "created_at",
                    "sender_id",
                    "dm_conversation_id",
                ],
                **params,
            )
            self._count(body, "dm_event_read")
        data = body.get("data") or []
        if not isinstance(data, list):
            raise self._shape(f"a page of {stream}")
        known = state.get("known")
        # Likes: the latest ones read before, newest first (an older state kept one id). A
        # like taken back leaves the others to stop at, instead of the whole history, billed.
        marks = set(known) if isinstance(known, list) else {known} if known else set()
        exchanges: list[Exchange] = []
        reached = False
        try:
            for item in data:
                if not isinstance(item, Mapping):
                    continue
                item_id = str(item["id"])
                if stream == MESSAGES and known is not None:
                    newest_known = max((int(m) for m in marks), default=0)
                    if int(item_id) <= newest_known:
                        reached = True  # the rest was read on an earlier pass
                        break
                elif item_id in marks:
                    reached = True
                    break
                run.setdefault("top", item_id)
                if stream == LIKES and len(run.setdefault("tops", [])) < LIKE_MARKS:
                    run["tops"].append(item_id)
                run["n"] = int(run.get("n", 0)) + 1
                if stream == LIKES:
                    author = str(item.get("author_id") or "")
                    if author and author != me:
                        exchanges.append(
                            Exchange(f"liked:{item_id}", author, Kind.LIKE, _OUT, seen_at)
                        )
                else:
                    exchanges.extend(self._message(item, me, run))
        except (KeyError, TypeError, ValueError):
            raise self._shape(f"a page of {stream}") from None
        meta = _mapping(body.get("meta"))
        if meta.get("next_token") and not reached:
            run["token"] = meta["next_token"]
            return InteractionPage(exchanges, json.dumps({**state, "pass": run}), None, done=False)
        if state.get("prev") and (reached or stream == LIKES):
            # Everything since the last pass: down to what it read, or to the end of the list.
            start = _time_of(state["prev"])
        elif stream == MESSAGES:
            start = seen_at - timedelta(days=DM_DAYS)  # read to the end of what X keeps
        elif self._all_of(LIKES, int(run.get("n", 0))):
            start = self._created_at()  # as many likes as the account has made: all of them
        else:
            # The listing ended short of the account's like count, or of a like read before
            # (all the remembered ones taken back): older likes may be missing, and a like
            # carries no time, so the pass vouches only for the moment it was made.
            start = seen_at
        covers = Span(min(start, seen_at), seen_at)
        groups: dict[str, list[str]] = {}
        if stream == MESSAGES:
            groups, sent = self._group_messages(state, run, me)
            exchanges.extend(sent)
        if stream == LIKES:
            fresh = list(run.get("tops") or [])
            old = known if isinstance(known, list) else [known] if known else []
            remembered: Any = [*fresh, *[m for m in old if m not in fresh]][:LIKE_MARKS]
        else:
            remembered = run.get("top") or known
        later: dict[str, Any] = {"known": remembered, "prev": run["at"], "day": today}
        if groups:
            later["groups"] = groups
        return InteractionPage(exchanges, json.dumps(later), covers, done=True)

    def _message(
        self, event: Mapping[str, Any], me: str, run: dict[str, Any]
    ) -> Iterator[Exchange]:
        sender = str(event.get("sender_id") or "")
        at = _time_of(event["created_at"])
        event_id = f"dm:{event['id']}"
        conversation = str(event.get("dm_conversation_id") or "")
        # One-to-one conversations are named "<id>-<id>"; a group has an id of its own.
        parts = conversation.split("-")
        group = bool(conversation) and len(parts) == 1
        if sender and sender != me:
            if group:
                members = run.setdefault("members", {}).setdefault(conversation, [])
                if sender not in members:
                    members.append(sender)
            yield Exchange(event_id, sender, Kind.MESSAGE, _IN, at)
            return
        others = [p for p in parts if p and p != me]
        if sender == me and len(parts) == 2 and len(others) == 1:
            yield Exchange(event_id, others[0], Kind.MESSAGE, _OUT, at)
        elif sender == me and group:
            # To everyone in the group: known once the pass has read who writes there.
            run.setdefault("pending", []).append([str(event["id"]), conversation, _iso(at)])

    def _group_messages(
        self, state: Mapping[str, Any], run: Mapping[str, Any], me: str
    ) -> tuple[dict[str, list[str]], list[Exchange]]:
        """The account's messages to groups, one exchange per member the messages show.

        X names no group's members in its message events: a member is known from the
        messages they wrote there (in this pass, or an earlier one, remembered).
        """
        groups: dict[str, list[str]] = {
            str(k): [str(m) for m in v] for k, v in _mapping(state.get("groups")).items()
        }
        for conversation, members in _mapping(run.get("members")).items():
            known = groups.setdefault(str(conversation), [])
            known.extend(str(m) for m in members if str(m) not in known)
        sent: list[Exchange] = []
        for event_id, conversation, at in run.get("pending") or ():
            for member in groups.get(conversation, ()):
                if member != me:
                    sent.append(
                        Exchange(
                            f"dm:{event_id}:{member}", member, Kind.MESSAGE, _OUT, _time_of(at)
                        )
                    )
        return groups, sent

    def _reactions(self, state: dict[str, Any], now: datetime, today: str) -> InteractionPage:
        """Likes, reposts and quotes of the latest posts: one request a call."""
        me = self._me_id()
        run: dict[str, Any] | None = state.get("pass")
        if run is None:
            wanted = max(LEAST[POSTS], self.options.recent_posts)
            self._affordable("recent posts", wanted, wanted, ("post_read", True, 1))
            body = self._call(
                "recent posts",
                self.client.get_users_tweets,
                me,
                max_results=wanted,
                tweet_fields=["created_at", "public_metrics"],
                exclude=["retweets"],
            )
            tweets, _ = self._tweets(body)
            tweets = tweets[: self.options.recent_posts]
            self.meter.read("post_read", (str(t["id"]) for t in tweets), owned=True)
            before: Mapping[str, Any] = state.get("counts") or {}
            counts: dict[str, list[int]] = {}
            queue: list[list[str]] = []
            try:
                oldest = min((_time_of(t["created_at"]) for t in tweets), default=now)
                for tweet in tweets:
                    post = str(tweet["id"])
                    metrics = tweet.get("public_metrics") or {}
                    now_counts = [
                        int(metrics.get("like_count") or 0),
                        int(metrics.get("retweet_count") or 0),
                        int(metrics.get("quote_count") or 0),
                    ]
                    counts[post] = now_counts
                    old = before.get(post) or [0, 0, 0]
                    for what, new, was in zip(
                        ("like", "repost", "quote"), now_counts, old, strict=True
                    ):
                        if new > 0 and new != was:
                            queue.append([post, what, ""])
            except (KeyError, TypeError, ValueError):
                raise self._shape("a list of posts") from None
            run = {"at": _iso(now), "oldest": _iso(oldest), "queue": queue}
            later = {**state, "counts": counts, "pass": run}
            if queue:
                return InteractionPage((), json.dumps(later), None, done=False)
        queue = run["queue"]
        exchanges: list[Exchange] = []
        if queue:
            post, what, token = queue[0]
            exchanges, more = self._reaction_page(post, what, token, _time_of(run["at"]), me)
            if more:
                queue[0] = [post, what, more]
            else:
                queue.pop(0)
        state = {**state, "pass": run}
        if queue:
            return InteractionPage(exchanges, json.dumps(state), None, done=False)
        at = _time_of(run["at"])
        start = min(_time_of(run["oldest"]), at)
        later = {"counts": state.get("counts") or {}, "day": today, "prev": run["at"]}
        return InteractionPage(exchanges, json.dumps(later), Span(start, at), done=True)

    def _reaction_page(
        self, post: str, what: str, token: str, seen_at: datetime, me: str
    ) -> tuple[list[Exchange], str | None]:
        if what == "quote":
            size = self._affordable("quotes", PAGE, LEAST["quotes"], ("post_read", False, 1))
        else:
            size = self._affordable(f"{what}s", PAGE, LEAST["users"], ("user_read", False, 1))
        params: dict[str, Any] = {"max_results": size}
        if token:
            params["pagination_token"] = token
        try:
            if what == "quote":
                # Every quote is of this post: no expansion is needed to know whose it quotes.
                body = self._call(
                    "quotes",
                    self.client.get_quote_tweets,
                    post,
                    tweet_fields=TWEET_FIELDS,
                    missing=PersonNotFound,
                    **params,
                )
                self._count(body, "post_read")
            else:
                # Each listing keeps its own rate-limit key: X limits every endpoint apart,
                # and the liking users of a post are not the account's own liked posts.
                route, fetch = (
                    ("liking users", self.client.get_liking_users)
                    if what == "like"
                    else ("retweeters", self.client.get_retweeters)
                )
                body = self._call(route, fetch, post, missing=PersonNotFound, **params)
                self._count(body, "user_read")
        except PersonNotFound:
            return [], None  # the post was deleted meanwhile
        data = body.get("data") or []
        if not isinstance(data, list):
            raise self._shape(f"a page of {what}s")
        exchanges: list[Exchange] = []
        try:
            if what == "quote":
                tweets, referenced = self._tweets(body)
                referenced = {**referenced, post: me}
                for tweet in tweets:
                    exchanges.extend(self._inbound(tweet, referenced, me))
            else:
                kind = Kind.LIKE if what == "like" else Kind.REPOST
                prefix = "like" if what == "like" else "rt"
                for user in data:
                    who = str(user["id"])
                    if who != me:
                        # No time is given: the latest it can have happened is now.
                        exchanges.append(
                            Exchange(f"{prefix}:{post}:{who}", who, kind, _IN, seen_at)
                        )
        except (KeyError, TypeError, ValueError):
            raise self._shape(f"a page of {what}s") from None
        meta = _mapping(body.get("meta"))
        return exchanges, meta.get("next_token") or None

    def post_authors(self, post_ids: Sequence[str]) -> dict[str, str]:
        """Who wrote each post (at most 100 a request); deleted posts are left out."""
        found: dict[str, str] = {}
        for i in range(0, len(post_ids), PAGE):
            chunk = [str(p) for p in post_ids[i : i + PAGE]]
            body = self._call(
                "post lookup", self.client.get_tweets, chunk, tweet_fields=["author_id"]
            )
            self._count(body, "post_read")
            for tweet in body.get("data") or ():
                if isinstance(tweet, Mapping) and tweet.get("id") and tweet.get("author_id"):
                    found[str(tweet["id"])] = str(tweet["author_id"])
        return found

    # -- acting on one connection -------------------------------------------------------

    def relationship(self, user_id: str) -> Relationship:
        """Whether the account follows them now (``connection_status`` of the user)."""
        body = self._call(
            "user", self.client.get_user, id=user_id, user_fields=["connection_status"]
        )
        data = body.get("data")
        if not isinstance(data, Mapping):
            # Suspended or deleted: the unfollow will tell (a 404 there counts as done).
            self._checked[user_id] = (True, self.clock())
            return Relationship(connected=True)
        status = data.get("connection_status") or []
        following = "following" in status or "follow_request_sent" in status
        self._checked[user_id] = (following, self.clock())
        return Relationship(connected=following)

    def remove(self, user_id: str) -> RemovalOutcome:
        """Unfollow; "not following any more" counts as done (X answers 200 either way)."""
        checked = self._checked.pop(user_id, None)
        if checked is None or self.clock() - checked[1] > RECHECK_AFTER:
            self.relationship(user_id)
            checked = self._checked.pop(user_id)
        if not checked[0]:
            return RemovalOutcome(already_done=True, detail="not following any more")
        me = self._me_id()  # the account's own id: tweepy would look it up unasked
        body = self._call(
            "unfollow",
            self._request("DELETE", f"/2/users/{me}/following/{user_id}"),
            write=True,
            missing=PersonNotFound,
        )
        self.meter.write("unfollow")
        self._checked[user_id] = (False, self.clock())
        data = body.get("data")
        if isinstance(data, Mapping) and data.get("following"):
            return RemovalOutcome(detail="X still lists the follow; it may settle later")
        return RemovalOutcome()

    def restore(self, user_id: str) -> None:
        self._checked.pop(user_id, None)
        me = self._me_id()
        self._call(
            "follow",
            self._request("POST", f"/2/users/{me}/following", json={"target_user_id": user_id}),
            write=True,
            missing=PersonNotFound,
        )
        self.meter.write("follow")

    def unseen(self) -> Sequence[Unseen]:
        """Likes, reposts and quotes of the account's older posts: never read.

        X lists them only post by post (one billed request per post and kind), so the
        reactions stream reads the latest ``recent_posts`` posts and vouches for no more.
        Someone who reacts only to older posts is unseen; quotes that mention the account
        come with the mentions all the same.
        """
        recent = self.options.recent_posts
        if recent > 0:
            reason = (
                f"likes, reposts and quotes of your posts older than your latest {recent} are "
                "not read: X lists them only post by post, each a billed request"
            )
            remedy = (
                "accept it with accept_unseen: [like, repost, quote] under the account, or read "
                "more posts with x.recent_posts (up to 100; each costs requests and reads)"
            )
        else:
            reason = "likes, reposts and quotes of your posts are not read (x.recent_posts is 0)"
            remedy = (
                "set x.recent_posts to read those of your latest posts, or accept it with "
                "accept_unseen: [like, repost, quote] under the account"
            )
        return tuple(
            Unseen(kind, reason, remedy, _IN, stream=REACTIONS)
            for kind in (Kind.LIKE, Kind.REPOST, Kind.QUOTE)
        )

    def profile_link(self, handle: str, user_id: str) -> str | None:
        if handle.startswith("@"):
            return f"https://x.com/{handle[1:]}"
        return intent_link(user_id)


# --- what a post says ----------------------------------------------------------------------


def _usernames(body: Mapping[str, Any]) -> dict[str, str]:
    includes = body.get("includes")
    found: dict[str, str] = {}
    if isinstance(includes, Mapping) and isinstance(includes.get("users"), list):
        for user in includes["users"]:
            if isinstance(user, Mapping) and user.get("username") and user.get("id"):
                found[str(user["username"]).lower()] = str(user["id"])
    return found


def inbound_kind(tweet: Mapping[str, Any], referenced: Mapping[str, str], me: str) -> Kind:
    """What a post someone addressed to the account is, from the post alone.

    The same post read from the mentions or from the quotes of a post gets the same kind, so
    the store keeps it once.
    """
    if str(tweet.get("in_reply_to_user_id") or "") == me:
        return Kind.REPLY
    for ref in tweet.get("referenced_tweets") or ():
        if (
            isinstance(ref, Mapping)
            and ref.get("type") == "quoted"
            and referenced.get(str(ref.get("id"))) == me
        ):
            return Kind.QUOTE
    return Kind.MENTION


def outbound_targets(
    tweet: Mapping[str, Any], referenced: Mapping[str, str], me: str, usernames: Mapping[str, str]
) -> dict[str, Kind]:
    """Who a post of the account's own is addressed to, and as what (one kind each)."""
    targets: dict[str, Kind] = {}
    refs = [r for r in tweet.get("referenced_tweets") or () if isinstance(r, Mapping)]
    for ref in refs:
        if ref.get("type") == "retweeted":
            author = referenced.get(str(ref.get("id")))
            return {author: Kind.REPOST} if author and author != me else {}
    entities = _mapping(tweet.get("entities"))
    for mention in entities.get("mentions") or ():
        if not isinstance(mention, Mapping):
            continue
        who = mention.get("id") or usernames.get(str(mention.get("username") or "").lower())
        if who:
            targets[str(who)] = Kind.MENTION
    for ref in refs:
        if ref.get("type") == "quoted":
            author = referenced.get(str(ref.get("id")))
            if author:
                targets[author] = Kind.QUOTE
    replied = tweet.get("in_reply_to_user_id")
    if replied:
        targets[str(replied)] = Kind.REPLY
    targets.pop(me, None)
    return targets


# --- building and authorizing ------------------------------------------------------------


def _oauth_session(
    options: XOptions, credentials: Mapping[str, str], client_id: str
) -> tweepy.OAuth2UserHandler:
    handler = tweepy.OAuth2UserHandler(
        client_id=client_id,
        redirect_uri=options.redirect_uri,
        scope=list(SCOPES),
        client_secret=credentials.get("client_secret") or None,
    )
    rebased(handler, options.api_base_url)
    return handler


def build(account: Account, state_dir: Path, clock: Clock | None = None) -> XPlatform:
    """The adapter for one configured account (no request is made here)."""
    options = account.x or XOptions()
    credentials = {k: v.get_secret_value() for k, v in account.credentials.items()}
    if options.auth == "oauth1":
        missing = [k for k in OAUTH1_KEYS if not credentials.get(k)]
        if missing:
            raise ConfigError(
                [
                    ConfigProblem(
                        f"OAuth 1.0a needs {', '.join(missing)}",
                        key=f"accounts[{account.key}].credentials",
                    )
                ]
            )
    return XPlatform(
        handle=account.handle,
        options=options,
        credentials=credentials,
        state_dir=state_dir,
        account_key=account.key,
        clock=clock,
        timeout=account.timeout_or(REQUEST_TIMEOUT),
    )


@dataclass(frozen=True)
class Authorization:
    handle: str
    token_file: Path
    authorize_url: str


def authorize(
    account: Account, state_dir: Path, ask: Callable[[str], str], *, clock: Clock | None = None
) -> Authorization:
    """OAuth 2.0 with PKCE: show X's authorize page, take the redirect back, keep the tokens.

    ``ask`` is given the address of X's authorization page and returns the address the
    browser was sent back to (it carries the code). The token pair is written, 0600, to the
    account's token file, where :func:`build` finds it; the refresh token rotates on every
    renewal and each new pair replaces the file atomically.
    """
    options = account.x or XOptions()
    if not options.client_id:
        raise ConfigError(
            [
                ConfigProblem(
                    "set the OAuth 2.0 client id of your X app (developer console → the app → "
                    "Keys and tokens)",
                    key=f"accounts[{account.key}].x.client_id",
                )
            ]
        )
    credentials = {k: v.get_secret_value() for k, v in account.credentials.items()}
    handler = _oauth_session(options, credentials, options.client_id)
    url = handler.get_authorization_url()
    answer = ask(url).strip()
    query = parse_qs(urlsplit(answer).query)
    code = (query.get("code") or [""])[0]
    state = (query.get("state") or [""])[0]
    if not code:
        raise AuthError("the address has no authorization code; nothing was stored")
    if state != handler._state:  # requests-oauthlib keeps the state there
        raise AuthError("the address answers another authorization request; run it again")
    try:
        token = OAuth2Session.fetch_token(
            handler,
            TOKEN_URL,
            code=code,
            auth=handler.auth,
            include_client_id=True,
            code_verifier=handler._client.code_verifier,  # as tweepy does
            timeout=REQUEST_TIMEOUT,
        )
    except requests.RequestException:
        raise PlatformError("could not reach X to finish the authorization") from None
    except Exception:
        raise AuthError(
            "X did not accept the authorization code; run `lopper auth x` again"
        ) from None
    stored = {**dict(token), "client_id": options.client_id}
    register_secrets([str(stored.get("access_token")), str(stored.get("refresh_token"))])
    probe_options = options.model_copy(update={"auth": "oauth2"})
    path = save_token(state_dir, account.key, stored)
    try:
        probe = XPlatform(
            handle=account.handle,
            options=probe_options,
            credentials=credentials,
            state_dir=state_dir,
            account_key=account.key,
            clock=clock,
        )
        identity = probe.whoami()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if identity.handle.lower() != account.handle.lower():
        path.unlink(missing_ok=True)
        raise AuthError(
            f"X signed in {identity.handle}, not {account.handle}; sign in as that account in "
            "the browser and run `lopper auth x` again"
        )
    return Authorization(identity.handle, path, url)
