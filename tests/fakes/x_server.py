"""A stateful fake of the X API v2, served over real HTTP on 127.0.0.1, for tweepy to talk to.

Built from the responses recorded from the real API (``/work/shared/samples/api/x``) and X's
API reference: string ids, ``data`` / ``includes`` / ``meta`` bodies, only the fields a
request asks for, ``meta.next_token`` (absent on the last page) sent back as
``pagination_token``, ``since_id`` on post timelines, ``x-rate-limit-limit/-remaining/-reset``
(unix seconds) on every answer and a 429 once a 15-minute window is spent, problem bodies
for errors (a 403 ``client-not-enrolled`` like the one X sends an app without the access),
OAuth 2.0 tokens whose refresh token works once, and OAuth 1.0a signatures by key.

It holds the ground truth (who follows whom, posts, likes, reposts, quotes, messages) and,
beside it, every exchange the API would show (``truth``), so tests compare the store with
the network in both directions. It counts requests per route and injects faults on demand.
tweepy sends to https://api.twitter.com: tests mount the adapter's rebasing transport
(``x.api_base_url``) to reach it.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakes.faults import Fault, FaultQueue
from fakes.serving import Served

ME = "1072250532645998596"
USERNAME = "TweepyDev"
TOKEN = "fake-x-user-token-5c2a"
REFRESH = "fake-x-refresh-0"
CLIENT_ID = "fake-x-client-id"
OAUTH1 = {
    "consumer_key": "fake-consumer-key",
    "consumer_secret": "fake-consumer-secret",
    "access_token": f"{ME}-fake-access-token",
    "access_token_secret": "fake-access-token-secret",
}
WINDOW = timedelta(minutes=15)
_EPOCH_MS = 1288834974657

# route -> (method, pattern, requests per 15-minute window per user, 2026 docs)
ROUTES: dict[str, tuple[str, re.Pattern[str], int]] = {
    "me": ("GET", re.compile(r"^/2/users/me$"), 75),
    "followers": ("GET", re.compile(r"^/2/users/(\d+)/followers$"), 300),
    "following": ("GET", re.compile(r"^/2/users/(\d+)/following$"), 300),
    "follow": ("POST", re.compile(r"^/2/users/(\d+)/following$"), 50),
    "unfollow": ("DELETE", re.compile(r"^/2/users/(\d+)/following/(\d+)$"), 50),
    "mentions": ("GET", re.compile(r"^/2/users/(\d+)/mentions$"), 300),
    "tweets": ("GET", re.compile(r"^/2/users/(\d+)/tweets$"), 900),
    "liked_tweets": ("GET", re.compile(r"^/2/users/(\d+)/liked_tweets$"), 75),
    "user": ("GET", re.compile(r"^/2/users/(\d+)$"), 900),
    "liking_users": ("GET", re.compile(r"^/2/tweets/(\d+)/liking_users$"), 75),
    "retweeted_by": ("GET", re.compile(r"^/2/tweets/(\d+)/retweeted_by$"), 75),
    "quote_tweets": ("GET", re.compile(r"^/2/tweets/(\d+)/quote_tweets$"), 75),
    "tweets_lookup": ("GET", re.compile(r"^/2/tweets$"), 900),
    "dm_events": ("GET", re.compile(r"^/2/dm_events$"), 15),
    "token": ("POST", re.compile(r"^/2/oauth2/token$"), 10**9),
}
FAULTS = (
    "429",
    "429-noreset",
    "401",
    "403",
    "500",
    "503",
    "timeout",
    "malformed",
    "nested",
    "nested-400",
)
# A hostile or broken server's answer: valid JSON nested deeper than any parser recurses
# (no real X answer is nested more than a few levels).
NESTED_DEPTH = 100_000


def iso(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class FakeUser:
    id: str
    username: str
    name: str
    created_at: datetime
    last_post: str | None = None


@dataclass(slots=True)
class FakeTweet:
    id: str
    author: str
    created_at: datetime
    reply_to: str | None = None  # in_reply_to_user_id
    mentions: tuple[str, ...] = ()
    refs: tuple[tuple[str, str], ...] = ()  # (type, tweet id): replied_to, quoted, retweeted
    likers: list[str] = field(default_factory=list)
    retweeters: list[str] = field(default_factory=list)
    quotes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class FakeDM:
    id: str
    sender: str
    conversation: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Truth:
    counterpart: str
    kind: str
    direction: str
    post: str | None = None  # a like, repost or quote of one of the account's posts: which


@dataclass
class _Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None
    delay: float = 0.0
    drop: bool = False  # close the connection without an answer


class FakeX(FaultQueue, Served):
    """The X API for one signed-in account (``ME``) and the world around it."""

    KINDS = FAULTS

    def __init__(
        self, clock: Callable[[], datetime], *, created_at: datetime | None = None
    ) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.users: dict[str, FakeUser] = {}
        self.tweets: dict[str, FakeTweet] = {}
        self.following: dict[str, None] = {}  # ordered: oldest follow first
        self.followers: dict[str, None] = {}
        self.own: list[str] = []  # the account's posts, oldest first
        self.mentioning: list[str] = []  # posts mentioning the account, oldest first
        self.liked: list[str] = []  # posts the account liked, oldest like first
        self.dms: list[FakeDM] = []
        self.groups: dict[str, tuple[str, ...]] = {}  # group conversation id -> members
        # X counts likes of posts since deleted or made protected in the account's like_count,
        # but leaves them out of its liked posts.
        self.hidden_likes = 0
        self.hidden: set[str] = set()  # posts deleted or withheld since: timelines skip them
        self.truth: list[Truth] = []
        self.requests: Counter[str] = Counter()
        self.answered: Counter[int] = Counter()
        self.faults: list[Fault] = []
        self.faulted: Counter[str] = Counter()
        self.limits = {route: spec[2] for route, spec in ROUTES.items()}
        self.used: Counter[tuple[str, int]] = Counter()  # (route, window) -> requests
        self.tokens: dict[str, float] = {TOKEN: float("inf")}  # access token -> expiry (time.time)
        self.refresh_tokens = {REFRESH}
        self.approved_codes: dict[str, str] = {}
        self.oauth1 = dict(OAUTH1)
        # A "timeout" fault holds the request this long, then hangs up without an answer: to
        # the client it ends as a timed-out read does (a requests exception, no answer), without
        # tests waiting out a client timeout short enough to fail on a loaded machine.
        self.timeout_delay = 0.3
        self.busy = 0.0  # seconds spent answering (parsing, rendering, encoding, sending)
        self._seq = 0
        self._serial = 10_000
        self.add_user(USERNAME, user_id=ME, name="Tweepy Testing", created_at=created_at)

    # -- ids ------------------------------------------------------------------------------

    def snowflake(self, at: datetime) -> str:
        self._seq = (self._seq + 1) % 4096
        return str(((int(at.timestamp() * 1000) - _EPOCH_MS) << 22) | (1 << 12) | self._seq)

    # -- the network, scripted ----------------------------------------------------------

    def add_user(
        self,
        username: str,
        *,
        user_id: str | None = None,
        name: str = "",
        created_at: datetime | None = None,
    ) -> str:
        if user_id is None:
            self._serial += 1
            user_id = str(self._serial)
        self.users[user_id] = FakeUser(
            user_id, username, name or username, created_at or datetime(2015, 1, 1, tzinfo=UTC)
        )
        return user_id

    def follow(self, user_id: str) -> None:
        self.following.setdefault(user_id, None)

    def unfollow(self, user_id: str) -> None:
        self.following.pop(user_id, None)

    def add_follower(self, user_id: str) -> None:
        self.followers.setdefault(user_id, None)

    def remove_follower(self, user_id: str) -> None:
        self.followers.pop(user_id, None)

    def _tweet(self, author: str, at: datetime, **fields: Any) -> FakeTweet:
        tweet = FakeTweet(self.snowflake(at), author, at, **fields)
        self.tweets[tweet.id] = tweet
        if author != ME:
            self.users[author].last_post = tweet.id
        else:
            self.own.append(tweet.id)
        if ME in tweet.mentions and author != ME:
            self.mentioning.append(tweet.id)
        return tweet

    def post(self, at: datetime) -> FakeTweet:
        """A post of the account's own that addresses nobody."""
        return self._tweet(ME, at)

    def mention_me(
        self,
        who: str,
        at: datetime,
        *,
        reply_to: FakeTweet | None = None,
        quote_of: FakeTweet | None = None,
    ) -> FakeTweet:
        """Someone mentions the account (in a reply to its post, or quoting one)."""
        refs: list[tuple[str, str]] = []
        if reply_to is not None:
            refs.append(("replied_to", reply_to.id))
        if quote_of is not None:
            refs.append(("quoted", quote_of.id))
        tweet = self._tweet(
            who, at, reply_to=ME if reply_to else None, mentions=(ME,), refs=tuple(refs)
        )
        if quote_of is not None:
            quote_of.quotes.append(tweet.id)
        kind = "reply" if reply_to else "quote" if quote_of else "mention"
        self.truth.append(Truth(who, kind, "inbound"))
        return tweet

    def quote_mine(self, who: str, post: FakeTweet, at: datetime) -> FakeTweet:
        """A quote of the account's post that does not mention it: seen only among the quotes."""
        tweet = self._tweet(who, at, refs=(("quoted", post.id),))
        post.quotes.append(tweet.id)
        self.truth.append(Truth(who, "quote", "inbound", post.id))
        return tweet

    def like_mine(self, who: str, post: FakeTweet) -> None:
        if who not in post.likers:
            post.likers.insert(0, who)  # most recent first
            self.truth.append(Truth(who, "like", "inbound", post.id))

    def retweet_mine(self, who: str, post: FakeTweet) -> None:
        if who not in post.retweeters:
            post.retweeters.insert(0, who)
            self.truth.append(Truth(who, "repost", "inbound", post.id))

    def latest_posts(self, count: int) -> list[str]:
        """The account's latest posts as its timeline lists them without reposts."""
        own = [t for t in self.own if not any(k == "retweeted" for k, _ in self.tweets[t].refs)]
        return sorted(own, key=int, reverse=True)[:count]

    def reactions_beyond(self, count: int) -> list[Truth]:
        """Reactions to posts older than the latest ``count``: no listing but the post's own."""
        latest = set(self.latest_posts(count))
        return [t for t in self.truth if t.post is not None and t.post not in latest]

    def write(
        self,
        at: datetime,
        *,
        reply_to: str | None = None,
        mentions: Sequence[str] = (),
        quote_of: str | None = None,
    ) -> FakeTweet:
        """The account writes to people: one exchange per person, of the strongest kind."""
        refs: list[tuple[str, str]] = []
        if reply_to:
            refs.append(("replied_to", self._tweet(reply_to, at - timedelta(hours=1)).id))
        if quote_of:
            refs.append(("quoted", self._tweet(quote_of, at - timedelta(hours=2)).id))
        named = tuple(dict.fromkeys([*([reply_to] if reply_to else []), *mentions]))
        tweet = self._tweet(ME, at, reply_to=reply_to, mentions=named, refs=tuple(refs))
        kinds = dict.fromkeys(mentions, "mention")
        if quote_of:
            kinds[quote_of] = "quote"
        if reply_to:
            kinds[reply_to] = "reply"
        for who, kind in kinds.items():
            self.truth.append(Truth(who, kind, "outbound"))
        return tweet

    def retweet(self, author: str, at: datetime) -> FakeTweet:
        original = self._tweet(author, at - timedelta(hours=3))
        tweet = self._tweet(ME, at, mentions=(author,), refs=(("retweeted", original.id),))
        self.truth.append(Truth(author, "repost", "outbound"))
        return tweet

    def like(self, author: str, posted: datetime) -> FakeTweet:
        tweet = self._tweet(author, posted)
        self.liked.append(tweet.id)
        self.truth.append(Truth(author, "like", "outbound"))
        return tweet

    def unlike(self, tweet_id: str) -> None:
        """The account takes a like back: X drops it from the liked posts (DELETE
        /2/users/:id/likes/:tweet_id), wherever it stood in the list."""
        self.liked.remove(tweet_id)
        self.truth.remove(Truth(self.tweets[tweet_id].author, "like", "outbound"))

    def dm(self, other: str, at: datetime, *, inbound: bool) -> FakeDM:
        pair = sorted([ME, other], key=int)
        event = FakeDM(self.snowflake(at), other if inbound else ME, f"{pair[0]}-{pair[1]}", at)
        self.dms.append(event)
        self.truth.append(Truth(other, "message", "inbound" if inbound else "outbound"))
        return event

    def group(self, members: Sequence[str], at: datetime) -> str:
        """A group conversation of the account with ``members``: X gives it an id of its own
        (a one-to-one conversation is named "<id>-<id>")."""
        conversation = self.snowflake(at)
        self.groups[conversation] = tuple(members)
        return conversation

    def group_dm(self, conversation: str, sender: str, at: datetime) -> FakeDM:
        """A message to a group: from a member to everyone, or from the account to all of them."""
        event = FakeDM(self.snowflake(at), sender, conversation, at)
        self.dms.append(event)
        if sender != ME:
            self.truth.append(Truth(sender, "message", "inbound"))
        else:
            for member in self.groups[conversation]:
                self.truth.append(Truth(member, "message", "outbound"))
        return event

    # -- tokens ---------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        header = header or ""
        if header.startswith("Bearer "):
            expiry = self.tokens.get(header.removeprefix("Bearer ").strip())
            return expiry is not None and expiry > time.time()
        if header.startswith("OAuth "):
            pairs = dict(re.findall(r'(\w+)="([^"]*)"', header))
            return (
                pairs.get("oauth_consumer_key") == self.oauth1["consumer_key"]
                and pairs.get("oauth_token") == self.oauth1["access_token"]
                and bool(pairs.get("oauth_signature"))
            )
        return False

    def _issue(self, lifetime: int = 7200) -> dict[str, Any]:
        self._serial += 1
        access, refresh = f"fake-x-access-{self._serial}", f"fake-x-refresh-{self._serial}"
        self.tokens[access] = time.time() + lifetime
        self.refresh_tokens.add(refresh)
        return {
            "token_type": "bearer",
            "expires_in": lifetime,
            "access_token": access,
            "scope": "tweet.read users.read follows.read follows.write like.read dm.read offline.access",
            "refresh_token": refresh,
        }

    # -- serving --------------------------------------------------------------------------

    def handler(self) -> type[_Handler]:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        return Handler

    def _window(self) -> tuple[int, int]:
        now = int(self.clock().timestamp())
        period = int(WINDOW.total_seconds())
        start = now // period * period
        return start, start + period

    def rate_headers(self, route: str) -> dict[str, str]:
        start, reset = self._window()
        limit = self.limits[route]
        used = self.used[(route, start)]
        return {
            "x-rate-limit-limit": str(limit),
            "x-rate-limit-remaining": str(max(0, limit - used)),
            "x-rate-limit-reset": str(reset),
        }

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, Any],
        auth: str | None,
    ) -> _Answer:
        with self.lock:
            route, match = _route(method, path)
            self.requests[route or f"{method} {path}"] += 1
            if route is None:
                return _Answer(404, _problem(404, "Not Found Error", "no such route"))
            if route == "token":
                return self._token(form)
            start, _reset = self._window()
            self.used[(route, start)] += 1
            fault = self._take_fault(route)
            if fault is not None:
                self.faulted[fault] += 1
                return self._fault(fault, route)
            headers = self.rate_headers(route)
            if self.used[(route, start)] > self.limits[route]:
                return _Answer(
                    429, _problem(429, "Too Many Requests", "Too Many Requests"), headers
                )
            if not self._authorized(auth):
                return _Answer(401, _problem(401, "Unauthorized", "Unauthorized"), headers)
            args = match.groups() if match else ()
            answer: _Answer = getattr(self, f"_do_{route}")(query, form, *args)
            answer.headers.update(headers)
            return answer

    def _fault(self, kind: str, route: str) -> _Answer:
        headers = self.rate_headers(route)
        if kind == "429":
            headers["x-rate-limit-remaining"] = "0"
            return _Answer(429, _problem(429, "Too Many Requests", "Too Many Requests"), headers)
        if kind == "429-noreset":
            return _Answer(429, _problem(429, "Too Many Requests", "Too Many Requests"))
        if kind == "401":
            return _Answer(401, _problem(401, "Unauthorized", "Unauthorized"), headers)
        if kind == "403":
            return _Answer(
                403,
                {
                    "client_id": "12262375",
                    "detail": "When authenticating requests to the Twitter API v2 endpoints, you "
                    "must use keys and tokens from a Twitter developer App that is attached to a "
                    "Project. You can create a project via the developer portal.",
                    "registration_url": "https://developer.twitter.com/en/docs/projects/overview",
                    "title": "Client Forbidden",
                    "required_enrollment": "Appropriate Level of API Access",
                    "reason": "client-not-enrolled",
                    "type": "https://api.twitter.com/2/problems/client-forbidden",
                },
                headers,
            )
        if kind in ("500", "503"):
            return _Answer(int(kind), None, headers, raw="<html><body>Over capacity</body></html>")
        if kind == "timeout":
            return _Answer(200, None, headers, delay=self.timeout_delay, drop=True)
        if kind in ("nested", "nested-400"):
            deep = '{"data": ' + "[" * NESTED_DEPTH + "]" * NESTED_DEPTH + "}"
            return _Answer(400 if kind == "nested-400" else 200, None, headers, raw=deep)
        return _Answer(200, None, headers, raw='{"data": [{"id": "1", "name": "Trun')

    def _token(self, form: dict[str, Any]) -> _Answer:
        grant = _first(form, "grant_type")
        if grant == "refresh_token":
            refresh = _first(form, "refresh_token")
            if refresh not in self.refresh_tokens:
                return _Answer(
                    400,
                    {
                        "error": "invalid_request",
                        "error_description": "Value passed for the token was invalid.",
                    },
                )
            self.refresh_tokens.discard(refresh)  # a refresh token works once
            return _Answer(200, self._issue())
        if grant == "authorization_code":
            code = _first(form, "code")
            if code not in self.approved_codes or not _first(form, "code_verifier"):
                return _Answer(400, {"error": "invalid_request"})
            del self.approved_codes[code]
            return _Answer(200, self._issue())
        return _Answer(400, {"error": "unsupported_grant_type"})

    # -- rendering ------------------------------------------------------------------------

    def render_user(self, user_id: str, fields: set[str]) -> dict[str, Any]:
        u = self.users[user_id]
        body: dict[str, Any] = {"id": u.id, "name": u.name, "username": u.username}
        if "created_at" in fields:
            body["created_at"] = iso(u.created_at)
        if "most_recent_tweet_id" in fields and u.last_post:
            body["most_recent_tweet_id"] = u.last_post
        if "public_metrics" in fields:
            body["public_metrics"] = {
                "followers_count": len(self.followers),
                "following_count": len(self.following),
                "tweet_count": len(self.own),
                "listed_count": 0,
                "like_count": len(self.liked) + self.hidden_likes,
            }
        if "connection_status" in fields:
            status = []
            if user_id in self.following:
                status.append("following")
            if user_id in self.followers:
                status.append("followed_by")
            body["connection_status"] = status
        return body

    def render_tweet(self, tweet_id: str, fields: set[str]) -> dict[str, Any]:
        t = self.tweets[tweet_id]
        body: dict[str, Any] = {"edit_history_tweet_ids": [t.id], "id": t.id, "text": "hello"}
        if "author_id" in fields:
            body["author_id"] = t.author
        if "created_at" in fields:
            body["created_at"] = iso(t.created_at)
        if "in_reply_to_user_id" in fields and t.reply_to:
            body["in_reply_to_user_id"] = t.reply_to
        if "referenced_tweets" in fields and t.refs:
            body["referenced_tweets"] = [{"type": kind, "id": ref} for kind, ref in t.refs]
        if "entities" in fields and t.mentions:
            mentions, at = [], 0
            for who in t.mentions:
                name = self.users[who].username
                mentions.append(
                    {"start": at, "end": at + len(name) + 1, "username": name, "id": who}
                )
                at += len(name) + 2
            body["entities"] = {"mentions": mentions}
        if "public_metrics" in fields:
            body["public_metrics"] = {
                "retweet_count": len(t.retweeters),
                "reply_count": 0,
                "like_count": len(t.likers),
                "quote_count": len(t.quotes),
            }
        return body

    def _tweets_body(
        self, ids: Sequence[str], query: dict[str, list[str]], meta: dict[str, Any]
    ) -> dict[str, Any]:
        fields = _fields(query, "tweet.fields")
        expansions = _fields(query, "expansions")
        user_fields = _fields(query, "user.fields")
        body: dict[str, Any] = {}
        if ids:
            body["data"] = [self.render_tweet(i, fields) for i in ids]
        users: dict[str, None] = {}
        referenced: dict[str, None] = {}
        for tweet_id in ids:
            t = self.tweets[tweet_id]
            if "author_id" in expansions:
                users[t.author] = None
            if "entities.mentions.username" in expansions:
                users.update(dict.fromkeys(t.mentions))
            if "in_reply_to_user_id" in expansions and t.reply_to:
                users[t.reply_to] = None
            referenced.update(dict.fromkeys(ref for _kind, ref in t.refs if ref in self.tweets))
        # X's expansions: referenced_tweets.id brings the referenced posts (includes.tweets),
        # referenced_tweets.id.author_id only their authors (includes.users).
        if "referenced_tweets.id.author_id" in expansions:
            users.update(dict.fromkeys(self.tweets[r].author for r in referenced))
        if "referenced_tweets.id" not in expansions:
            referenced = {}
        includes: dict[str, Any] = {}
        if users:
            includes["users"] = [self.render_user(u, user_fields) for u in users if u in self.users]
        if referenced:
            includes["tweets"] = [self.render_tweet(r, fields | {"author_id"}) for r in referenced]
        if includes:
            body["includes"] = includes
        body["meta"] = meta
        return body

    # -- endpoints --------------------------------------------------------------------------

    def _page(
        self, items: Sequence[str], query: dict[str, list[str]], default: int, most: int
    ) -> tuple[Sequence[str], dict[str, Any]]:
        raw = _first(query, "max_results")
        size = min(int(raw), most) if raw else default
        token = _first(query, "pagination_token")
        offset = int(token.removeprefix("t"), 36) if token else 0
        chosen = items[offset : offset + size]
        meta: dict[str, Any] = {"result_count": len(chosen)}
        if offset + size < len(items):
            meta["next_token"] = "t" + _base36(offset + size)
        return chosen, meta

    def _users_page(
        self, listing: Iterable[str], query: dict[str, list[str]], most: int
    ) -> _Answer:
        newest_first = list(reversed(list(listing)))
        chosen, meta = self._page(newest_first, query, 100, most)
        fields = _fields(query, "user.fields")
        body: dict[str, Any] = {"meta": meta}
        if chosen:
            body["data"] = [self.render_user(u, fields) for u in chosen]
        return _Answer(200, body)

    def _timeline(self, ids: Sequence[str], query: dict[str, list[str]], keep: int) -> _Answer:
        # X picks the latest ``keep`` first, then leaves out the deleted and withheld among
        # them: fewer come back while older ones stay out of reach all the same.
        newest = [i for i in sorted(ids[-keep:], key=int, reverse=True) if i not in self.hidden]
        since = _first(query, "since_id")
        if since:
            newest = [i for i in newest if int(i) > int(since)]
        excluded = _fields(query, "exclude")
        if "retweets" in excluded:
            newest = [
                i for i in newest if not any(k == "retweeted" for k, _ in self.tweets[i].refs)
            ]
        chosen, meta = self._page(newest, query, 10, 100)
        if chosen:
            meta["newest_id"], meta["oldest_id"] = chosen[0], chosen[-1]
        return _Answer(200, self._tweets_body(chosen, query, meta))

    def _do_me(self, query: dict[str, list[str]], _form: Any) -> _Answer:
        return _Answer(200, {"data": self.render_user(ME, _fields(query, "user.fields"))})

    def _do_user(self, query: dict[str, list[str]], _form: Any, user_id: str) -> _Answer:
        if user_id not in self.users:
            return _Answer(
                200,
                {
                    "errors": [
                        {
                            "value": user_id,
                            "detail": f"Could not find user with id: [{user_id}].",
                            "title": "Not Found Error",
                            "resource_type": "user",
                            "parameter": "id",
                            "resource_id": user_id,
                            "type": "https://api.twitter.com/2/problems/resource-not-found",
                        }
                    ]
                },
            )
        return _Answer(200, {"data": self.render_user(user_id, _fields(query, "user.fields"))})

    def _do_followers(self, query: dict[str, list[str]], _form: Any, user_id: str) -> _Answer:
        return self._users_page(self.followers if user_id == ME else (), query, 1000)

    def _do_following(self, query: dict[str, list[str]], _form: Any, user_id: str) -> _Answer:
        return self._users_page(self.following if user_id == ME else (), query, 1000)

    def _do_mentions(self, query: dict[str, list[str]], _form: Any, user_id: str) -> _Answer:
        return self._timeline(self.mentioning if user_id == ME else [], query, 800)

    def _do_tweets(self, query: dict[str, list[str]], _form: Any, user_id: str) -> _Answer:
        return self._timeline(self.own if user_id == ME else [], query, 3200)

    def _do_liked_tweets(self, query: dict[str, list[str]], _form: Any, user_id: str) -> _Answer:
        newest_first = list(reversed(self.liked)) if user_id == ME else []
        chosen, meta = self._page(newest_first, query, 100, 100)
        return _Answer(200, self._tweets_body(chosen, query, meta))

    def _reactors(self, query: dict[str, list[str]], tweet_id: str, what: str) -> _Answer:
        tweet = self.tweets.get(tweet_id)
        if tweet is None:
            return _Answer(
                404,
                _problem(404, "Not Found Error", f"Could not find tweet with id: [{tweet_id}]."),
            )
        return self._users_page(list(reversed(getattr(tweet, what))), query, 100)

    def _do_liking_users(self, query: dict[str, list[str]], _form: Any, tweet_id: str) -> _Answer:
        return self._reactors(query, tweet_id, "likers")

    def _do_retweeted_by(self, query: dict[str, list[str]], _form: Any, tweet_id: str) -> _Answer:
        return self._reactors(query, tweet_id, "retweeters")

    def _do_quote_tweets(self, query: dict[str, list[str]], _form: Any, tweet_id: str) -> _Answer:
        tweet = self.tweets.get(tweet_id)
        if tweet is None:
            return _Answer(404, _problem(404, "Not Found Error", "no such tweet"))
        chosen, meta = self._page(sorted(tweet.quotes, key=int, reverse=True), query, 10, 100)
        return _Answer(200, self._tweets_body(chosen, query, meta))

    def _do_tweets_lookup(self, query: dict[str, list[str]], _form: Any) -> _Answer:
        ids = [i for i in (_first(query, "ids") or "").split(",") if i]
        found = [i for i in ids[:100] if i in self.tweets]
        body = self._tweets_body(found, query, {})
        body.pop("meta", None)
        missing = [i for i in ids[:100] if i not in self.tweets]
        if missing:
            body["errors"] = [
                {
                    "value": i,
                    "detail": f"Could not find tweet with id: [{i}].",
                    "title": "Not Found Error",
                    "resource_type": "tweet",
                    "parameter": "ids",
                    "resource_id": i,
                    "type": "https://api.twitter.com/2/problems/resource-not-found",
                }
                for i in missing
            ]
        return _Answer(200, body)

    def _do_dm_events(self, query: dict[str, list[str]], _form: Any) -> _Answer:
        cutoff = self.clock() - timedelta(days=30)
        events = sorted(
            (e for e in self.dms if e.created_at >= cutoff), key=lambda e: int(e.id), reverse=True
        )
        by_id = {e.id: e for e in events}
        chosen, meta = self._page([e.id for e in events], query, 100, 100)
        fields = _fields(query, "dm_event.fields")
        data = []
        for event_id in chosen:
            e = by_id[event_id]
            item: dict[str, Any] = {"id": e.id, "event_type": "MessageCreate", "text": "hi"}
            if "created_at" in fields:
                item["created_at"] = iso(e.created_at)
            if "sender_id" in fields:
                item["sender_id"] = e.sender
            if "dm_conversation_id" in fields:
                item["dm_conversation_id"] = e.conversation
            data.append(item)
        body: dict[str, Any] = {"meta": meta}
        if data:
            body["data"] = data
        return _Answer(200, body)

    def _do_follow(self, _query: Any, form: dict[str, Any], user_id: str) -> _Answer:
        target = str(form.get("target_user_id") or "")
        if user_id != ME:
            return _Answer(
                403, _problem(403, "Forbidden", "You are not permitted to perform this action.")
            )
        if target not in self.users:
            return _Answer(404, _problem(404, "Not Found Error", "no such user"))
        self.follow(target)
        return _Answer(200, {"data": {"following": True, "pending_follow": False}})

    def _do_unfollow(self, _query: Any, _form: Any, user_id: str, target: str) -> _Answer:
        if user_id != ME:
            return _Answer(
                403, _problem(403, "Forbidden", "You are not permitted to perform this action.")
            )
        if target not in self.users:
            return _Answer(404, _problem(404, "Not Found Error", "no such user"))
        self.unfollow(target)  # not following: a plain success all the same
        return _Answer(200, {"data": {"following": False}})


# --- HTTP plumbing ------------------------------------------------------------------------


def _problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"title": title, "detail": detail, "type": "about:blank", "status": status}


def _first(values: dict[str, Any], key: str) -> str | None:
    found = values.get(key)
    if isinstance(found, list):
        return found[0] if found else None
    return None if found is None else str(found)


def _fields(query: dict[str, list[str]], key: str) -> set[str]:
    raw = _first(query, key)
    return set(raw.split(",")) if raw else set()


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
        if value == 0:
            return out


def _route(method: str, path: str) -> tuple[str | None, re.Match[str] | None]:
    for name, (verb, pattern, _limit) in ROUTES.items():
        if verb == method:
            match = pattern.match(path)
            if match:
                return name, match
    return None, None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeX

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        began = time.perf_counter()
        try:
            self._answer(method)
        finally:
            with self.server_fake.lock:
                self.server_fake.busy += time.perf_counter() - began

    def _answer(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8") if length else ""
        form: dict[str, Any] = {}
        if raw:
            if (self.headers.get("Content-Type") or "").startswith("application/json"):
                form = json.loads(raw)
            else:
                form = parse_qs(raw, keep_blank_values=True)
        query = parse_qs(parts.query, keep_blank_values=True)
        fake = self.server_fake
        answer = fake.handle(method, parts.path, query, form, self.headers.get("Authorization"))
        with fake.lock:
            fake.answered[answer.status] += 1
        if answer.delay:
            time.sleep(answer.delay)
        if answer.drop:
            self.close_connection = True
            return
        payload = (answer.raw if answer.raw is not None else json.dumps(answer.body)).encode(
            "utf-8"
        )
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(payload)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


# --- large synthetic networks -------------------------------------------------------------


@dataclass(frozen=True)
class NetworkSize:
    following: int
    followers: int
    mutual: int
    mentions: int = 0
    posts: int = 0
    likes: int = 0
    messages: int = 0
    recent: int = 20  # reactions go to the account's latest posts (what the adapter scans)
    reactions: int = 0
    older_reactions: int = 0  # and some to its older posts, which no affordable listing shows


def generate(
    fake: FakeX, size: NetworkSize, *, now: datetime, days: int = 300, seed: int = 1
) -> list[str]:
    """A network of the given size, with exchanges through every stream the adapter reads."""
    if size.mutual > min(size.following, size.followers):
        raise ValueError("more mutuals than follows")
    rng = random.Random(seed)
    people = size.following + size.followers - size.mutual
    ids = [fake.add_user(f"p{i}", name=f"Person {i}") for i in range(people)]
    for user_id in ids[: size.following]:
        fake.follow(user_id)
    for user_id in ids[size.following - size.mutual :]:
        fake.add_follower(user_id)
    span = days * 86400

    # Everything before the last day: the latest posts are the ones that get reactions.
    base = now - timedelta(days=1)

    def moments(count: int, within: float = span) -> list[datetime]:
        draws = sorted(rng.random() * within for _ in range(count))
        return [base - timedelta(seconds=within - s) for s in draws]

    own_targets = [fake.post(at) for at in moments(3, span)]
    for at in moments(size.mentions):
        who, roll = rng.choice(ids), rng.random()
        if roll < 0.3:
            fake.mention_me(who, at, reply_to=rng.choice(own_targets))
        elif roll < 0.4:
            fake.mention_me(who, at, quote_of=rng.choice(own_targets))
        else:
            fake.mention_me(who, at)
    for at in moments(size.posts):
        who, roll = rng.choice(ids), rng.random()
        if roll < 0.4:
            fake.write(at, reply_to=who)
        elif roll < 0.6:
            fake.write(at, mentions=[who, rng.choice(ids)])
        elif roll < 0.8:
            fake.retweet(who, at)
        else:
            fake.write(at, quote_of=who)
    for at in moments(size.likes):
        fake.like(rng.choice(ids), at)
    for at in moments(size.messages, 25 * 86400):
        fake.dm(rng.choice(ids), at, inbound=rng.random() < 0.5)
    if size.reactions:
        recent = [
            fake.post(now - timedelta(minutes=10 * (size.recent - i))) for i in range(size.recent)
        ]
        for _ in range(size.reactions):
            who, post, roll = rng.choice(ids), rng.choice(recent), rng.random()
            if roll < 0.6:
                fake.like_mine(who, post)
            elif roll < 0.9:
                fake.retweet_mine(who, post)
            else:
                fake.quote_mine(who, post, post.created_at + timedelta(minutes=1))
    latest = set(fake.latest_posts(size.recent))
    older = [fake.tweets[t] for t in fake.own if not fake.tweets[t].refs and t not in latest]
    for _ in range(size.older_reactions if older else 0):
        who, post, roll = rng.choice(ids), rng.choice(older), rng.random()
        if roll < 0.6:
            fake.like_mine(who, post)
        elif roll < 0.9:
            fake.retweet_mine(who, post)
        else:
            fake.quote_mine(who, post, post.created_at + timedelta(minutes=1))
    return ids


def minimum_pages(count: int, size: int) -> int:
    """The fewest requests that list ``count`` items ``size`` a page (one for an empty list)."""
    return max(1, -(-count // size))
