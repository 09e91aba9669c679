"""Facebook, through facebook-sdk's ``GraphAPI``: who you are, the friends the API reaches, and
the comments and reactions on your recent posts. There is no removal API.

What the Graph API gives (https://developers.facebook.com/docs/graph-api/reference/user/):

- ``/me``: the account's id and name;
- ``/me/friends`` (permission ``user_friends``): only the friends who also use this app, with
  app-scoped ids, and ``summary.total_count``, the number of all friends. The listing is
  therefore never complete (``partial_listing``): nobody counts as gone because the API does
  not list them. The data export (``lopper import facebook``) lists everyone;
- ``/me/posts`` with nested ``comments{from,created_time}`` and
  ``reactions.summary(total_count){id,name,type}`` (``user_posts``): other people are named
  only when they authorized the app; the rest are stored as anonymous exchanges, which keep
  the account's totals honest and count for nobody. Inbound comments and reactions are
  therefore reported unseen (``unseen()``) unless every friend is reachable: a friend who
  comments every week may never be named.

People are keyed by name (``service.imports.names``), as the export knows them by name only.
A reaction carries no time: it counts from when lopper first saw it, the latest it can have
happened (DESIGN.md, invariant 3).

Errors (https://developers.facebook.com/docs/graph-api/guides/error-handling/): code 190 is
an expired or revoked token (the account is paused until it is renewed); codes 4, 17, 32 and
613 are rate limits (the stream is deferred). The SDK is imported here and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import facebook  # facebook-sdk
import requests

from service.config import Account, FacebookOptions
from service.errors import ConfigError, ConfigProblem
from service.imports.names import ANONYMOUS, clean_name, facebook_search_link, name_key
from service.logs import get_logger, register_secrets, scrub
from service.model import Direction, Kind, Span, Unseen
from service.platforms.base import (
    AuthError,
    Capability,
    ConnectionPage,
    Exchange,
    Identity,
    InteractionPage,
    Person,
    PlatformError,
    RateLimited,
    Relationship,
    RemovalOutcome,
    Traits,
    Unsupported,
)

log = get_logger("lopper.facebook")
Clock = Callable[[], datetime]

POSTS = "posts"
EXPORT = "export"  # the coverage stream of `lopper import facebook` (sync.IMPORT_STREAM)
FRIENDS_PAGE = 100
POSTS_PAGE = 25
NESTED_PAGE = 100
REQUEST_TIMEOUT = 60
TOKEN_EXPIRED = 190
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613})
PERMISSION_CODES = frozenset({10, 200})
RENEW = (
    "renew it: create a new long-lived user access token for lopper's Facebook app (Graph API "
    "Explorer, then the access token debugger's 'Extend'), put it in the account's "
    "access_token secret, and run `lopper resume {key}`"
)
POST_FIELDS = (
    "id,created_time,"
    f"comments.limit({NESTED_PAGE}){{id,from,created_time}},"
    f"reactions.limit({NESTED_PAGE}).summary(total_count){{id,name,type}}"
)


def _parse_time(value: Any) -> datetime:
    """Graph's times: ``2026-03-04T10:11:12+0000``."""
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    return parsed.astimezone(UTC)


def _next_args(page: dict[str, Any]) -> dict[str, str] | None:
    """The query of ``paging.next`` without the token: what asks for the following page."""
    paging = page.get("paging")
    link = paging.get("next") if isinstance(paging, dict) else None
    if not link:
        return None
    args = {k: v[-1] for k, v in parse_qs(urlsplit(str(link)).query).items()}
    args.pop("access_token", None)
    return args


class _RedirectedSession(requests.Session):
    """Send the SDK's requests to another Graph host (a proxy, or a test's fake server).

    facebook-sdk 3.1.0 joins the module constant ``FACEBOOK_GRAPH_URL`` with each path in
    ``GraphAPI.request``; changing the constant would redirect every account in the process,
    so the prefix is swapped here, per account, on the session the SDK takes.
    """

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/") + "/"

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        text = url.decode() if isinstance(url, bytes) else str(url)
        if text.startswith(facebook.FACEBOOK_GRAPH_URL):
            text = self.base_url + text[len(facebook.FACEBOOK_GRAPH_URL) :]
        return super().request(method, text, *args, **kwargs)


class FacebookPlatform:
    name: ClassVar[str] = "facebook"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()  # no unfriend API
    simulated: ClassVar[bool] = False
    # /me/friends lists only the app's users; nothing can be removed through the API.
    traits: Traits = Traits(partial_listing=True)

    def __init__(
        self,
        access_token: str | None,
        *,
        account_key: str,
        options: FacebookOptions | None = None,
        clock: Clock | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.options = options or FacebookOptions()
        self.account_key = account_key
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.access_token = access_token
        if access_token:
            register_secrets([access_token])
        session: requests.Session = (
            _RedirectedSession(self.options.graph_url)
            if self.options.graph_url.rstrip("/") + "/" != facebook.FACEBOOK_GRAPH_URL
            else requests.Session()
        )
        self.api = facebook.GraphAPI(access_token=access_token, timeout=timeout, session=session)
        # facebook-sdk's last release (3.1.0, 2018) accepts only versions 2.8-3.1 in its
        # constructor (VALID_API_VERSIONS) and raises on a current one such as "25.0"; Graph
        # retired those versions long ago. Every request path is built from this attribute, so
        # a current version set after construction is what goes on the wire.
        # https://developers.facebook.com/docs/graph-api/changelog/versions
        self.api.version = self.options.graph_version
        self._me: Identity | None = None
        self.friends_total: int | None = None  # summary.total_count of the last listing
        self.friends_reachable: int | None = None  # friends the last complete listing named

    # -- calls --------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.access_token:
            raise AuthError(f"no access token for {self.account_key}; " + self._renew())
        try:
            answer = fn(*args, **kwargs)
        except facebook.GraphAPIError as exc:
            raise self._translate(exc) from None
        except requests.RequestException as exc:
            # Its text carries the URL, and the URL the token: say only what kind it was.
            raise PlatformError(f"Facebook could not be reached ({type(exc).__name__})") from None
        except (ValueError, RecursionError):  # not JSON, or JSON nested too deep to read
            raise PlatformError("Facebook answered with something that is not JSON") from None
        if not isinstance(answer, dict):
            raise PlatformError("Facebook answered with an unexpected shape")
        return answer

    def _renew(self) -> str:
        return RENEW.format(key=self.account_key)

    def _translate(self, exc: Any) -> PlatformError:
        code = exc.code
        message = scrub(str(exc.message))[:300]
        if code == TOKEN_EXPIRED:
            return AuthError(f"Facebook refused the access token ({message}); " + self._renew())
        if code in RATE_LIMIT_CODES:
            return RateLimited(None, f"Facebook rate limit (code {code}): {message}")
        if code in PERMISSION_CODES:
            return Unsupported(f"Facebook refused a permission (code {code}): {message}")
        return PlatformError(f"Facebook error {code}: {message}")

    # -- identity and friends -----------------------------------------------------------

    def whoami(self) -> Identity:
        if self._me is None:
            me = self._call(self.api.get_object, "me", fields="id,name")
            try:
                self._me = Identity(str(me["id"]), str(me.get("name") or me["id"]), me.get("name"))
            except KeyError:
                raise PlatformError("Facebook's /me carried no id") from None
        return self._me

    def connections(self, cursor: str | None) -> ConnectionPage:
        state: dict[str, Any] = json.loads(cursor) if cursor else {}
        args: dict[str, Any] = dict(state.get("args") or {})
        if not args:
            args = {"fields": "id,name,link", "limit": str(FRIENDS_PAGE)}
        page = self._call(self.api.get_connections, "me", "friends", **args)
        summary = page.get("summary")
        if isinstance(summary, dict) and isinstance(summary.get("total_count"), int):
            self.friends_total = summary["total_count"]
        people = []
        for friend in page.get("data") or ():
            name = clean_name(str(friend.get("name") or ""))
            if not name:
                continue
            people.append(
                Person(
                    user_id=name_key(name),
                    handle=name,
                    display_name=name,
                    profile_url=friend.get("link") or facebook_search_link(name),
                    following=True,
                    followed_by=True,
                )
            )
        seen = int(state.get("seen") or 0) + len(people)
        after = _next_args(page) if page.get("data") else None
        if after is None:
            log.info("facebook friends listed", reachable=seen, total=self.friends_total)
            self.friends_reachable = seen
            return ConnectionPage(people, None)
        return ConnectionPage(people, json.dumps({"args": after, "seen": seen}))

    # -- exchanges ----------------------------------------------------------------------

    def interaction_streams(self) -> Sequence[str]:
        # Messages, the main exchange on Facebook, are only in the data export: naming its
        # stream here makes the account's history complete only where an import vouches for
        # it, so the API's posts alone never lead to a verdict (DESIGN.md, invariant 3).
        return (POSTS, EXPORT)

    def interactions(self, stream: str, cursor: str | None) -> InteractionPage:
        """One page of the account's posts since the lookback, newest first.

        Every run reads the whole lookback again (comments keep arriving on older posts);
        the store's deduplication by comment id, and by post and person for a reaction,
        keeps the counts. Once the last page is read the run vouches for the lookback.
        """
        if stream == EXPORT:
            return InteractionPage((), None, None, done=True)  # read by `lopper import`
        if stream != POSTS:
            raise ValueError(f"Facebook has no stream {stream!r}")
        now = self.clock()
        state: dict[str, Any] = json.loads(cursor) if cursor else {}
        top = datetime.fromisoformat(state["top"]) if state.get("top") else now
        since = top - self.options.posts_lookback
        args: dict[str, Any] = dict(state.get("args") or {})
        if not args:
            args = {
                "fields": POST_FIELDS,
                "limit": str(POSTS_PAGE),
                "since": str(int(since.timestamp())),
            }
        page = self._call(self.api.get_connections, "me", "posts", **args)
        me = self.whoami().user_id
        exchanges: list[Exchange] = []
        try:
            for post in page.get("data") or ():
                exchanges.extend(self._post_exchanges(post, me, now))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise PlatformError("Facebook answered /me/posts with an unexpected shape") from None
        after = _next_args(page) if page.get("data") else None
        if after is not None:
            later = {"top": top.isoformat(), "args": after}
            return InteractionPage(exchanges, json.dumps(later), None, done=False)
        return InteractionPage(exchanges, None, Span(since, top), done=True)

    def _nested(self, post_id: str, edge: str, first: Any) -> Iterator[dict[str, Any]]:
        """A post's comments or reactions, following their own ``paging.next``."""
        page = first if isinstance(first, dict) else {}
        while True:
            yield from page.get("data") or ()
            args = _next_args(page) if page.get("data") else None
            if args is None:
                return
            page = self._call(self.api.get_connections, post_id, edge, **args)

    def _post_exchanges(self, post: dict[str, Any], me: str, now: datetime) -> Iterator[Exchange]:
        post_id = str(post["id"])
        for comment in self._nested(post_id, "comments", post.get("comments")):
            author = comment.get("from")
            if isinstance(author, dict) and str(author.get("id")) == me:
                continue
            who = (
                name_key(str(author["name"]))
                if isinstance(author, dict) and author.get("name")
                else ANONYMOUS
            )
            at = _parse_time(comment["created_time"])
            yield Exchange(f"comment:{comment['id']}", who, Kind.COMMENT, Direction.INBOUND, at)
        reactions = post.get("reactions")
        named = 0
        for reaction in self._nested(post_id, "reactions", reactions):
            if str(reaction.get("id")) == me:
                continue
            if reaction.get("id") and reaction.get("name"):
                named += 1
                yield Exchange(
                    f"reaction:{post_id}:{reaction['id']}",
                    name_key(str(reaction["name"])),
                    Kind.REACTION,
                    Direction.INBOUND,
                    now,
                )
        summary = reactions.get("summary") if isinstance(reactions, dict) else None
        total = summary.get("total_count") if isinstance(summary, dict) else None
        # Facebook counts every reaction but names only the people who use the app.
        for n in range(max(0, int(total or 0) - named)):
            yield Exchange(
                f"reaction:{post_id}:anonymous:{n}",
                ANONYMOUS,
                Kind.REACTION,
                Direction.INBOUND,
                now,
            )

    # -- acting on one connection: nothing, Facebook has no unfriend API ------------------

    def relationship(self, user_id: str) -> Relationship:
        raise Unsupported("Facebook does not say whether someone is still a friend")

    def remove(self, user_id: str) -> RemovalOutcome:
        raise Unsupported("Facebook has no unfriend API: remove by hand")

    def restore(self, user_id: str) -> None:
        raise Unsupported("Facebook has no friend request API: add them again by hand")

    def unseen(self) -> Sequence[Unseen]:
        """Comments and reactions from friends the Graph API does not name.

        The API names a commenter or a reacting person only when they use lopper's app;
        everyone else's comment or reaction comes anonymous and counts for nobody, and the
        data export holds only the account's own. So inbound comments and reactions are
        unseen, unless the listing showed every friend reachable through the app.
        """
        total, reachable = self.friends_total, self.friends_reachable
        if total is not None and reachable is not None and reachable >= total:
            return ()
        share = (
            f" ({reachable:,} of your {total:,} friends do)"
            if total is not None and reachable is not None
            else ""
        )
        reason = (
            "Facebook names who comments on or reacts to your posts only for friends who use "
            f"lopper's app{share}; the others' comments and reactions count for nobody, and "
            "your data export holds only your own"
        )
        remedy = (
            "accept it with accept_unseen: [comment, reaction] under the account: verdicts "
            "then rest on messages and on your own comments and reactions"
        )
        return tuple(
            Unseen(kind, reason, remedy, Direction.INBOUND)
            for kind in (Kind.COMMENT, Kind.REACTION)
        )

    def profile_link(self, handle: str, user_id: str) -> str | None:
        return facebook_search_link(handle)


def build(account: Account, state_dir: Path, clock: Clock | None = None) -> FacebookPlatform:
    """The adapter for one configured account (no request is made here)."""
    secret = account.credentials.get("access_token")
    if secret is None:
        raise ConfigError(
            [
                ConfigProblem(
                    "a facebook account needs an access_token credential (a user access "
                    "token with user_friends and user_posts)",
                    key=f"accounts[{account.key}].credentials",
                )
            ]
        )
    return FacebookPlatform(
        secret.get_secret_value(),
        account_key=account.key,
        options=account.facebook,
        clock=clock,
        timeout=account.timeout_or(REQUEST_TIMEOUT),
    )
