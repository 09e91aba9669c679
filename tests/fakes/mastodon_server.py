"""A stateful fake of the Mastodon client API, served over real HTTP on 127.0.0.1.

Built from the responses recorded from a real server (``/work/shared/samples/api/mastodon``)
and from Mastodon's controllers: string ids, ``Link`` headers with ``max_id``/``min_id``
(follow ids and favourite ids for the lists that page on them), ``x-ratelimit-*`` headers
with an ISO 8601 reset, pages capped at twice the endpoint's default, a ``next`` link on the
follow and status lists only when a page came back full, and on notifications whenever a
page was not empty.

It holds the ground truth (accounts, who follows whom, statuses, notifications,
favourites) and, beside it, every exchange as it really happened (``truth``), so tests can
compare the store with the network in both directions. It counts requests per endpoint and
injects faults on demand. ``generate`` builds large synthetic networks quickly: records stay
compact and are rendered to JSON only when a page asks for them.
"""

from __future__ import annotations

import bisect
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fakes.faults import Fault, FaultQueue
from fakes.serving import Served

ME = "109000000000000001"
TOKEN = "fake-mastodon-token-7c1d"
WINDOW = timedelta(minutes=5)

# route name -> (method, pattern); the name is what ``requests`` counts
ROUTES: dict[str, tuple[str, re.Pattern[str]]] = {
    "verify_credentials": ("GET", re.compile(r"^/api/v1/accounts/verify_credentials$")),
    "relationships": ("GET", re.compile(r"^/api/v1/accounts/relationships$")),
    "following": ("GET", re.compile(r"^/api/v1/accounts/(\d+)/following$")),
    "followers": ("GET", re.compile(r"^/api/v1/accounts/(\d+)/followers$")),
    "statuses": ("GET", re.compile(r"^/api/v1/accounts/(\d+)/statuses$")),
    "follow": ("POST", re.compile(r"^/api/v1/accounts/(\d+)/follow$")),
    "unfollow": ("POST", re.compile(r"^/api/v1/accounts/(\d+)/unfollow$")),
    "notifications": ("GET", re.compile(r"^/api/v1/notifications$")),
    "favourites": ("GET", re.compile(r"^/api/v1/favourites$")),
    "conversations": ("GET", re.compile(r"^/api/v1/conversations/?$")),
    "instance": ("GET", re.compile(r"^/api/v1/instance/?$")),
    "instance_v2": ("GET", re.compile(r"^/api/v2/instance/?$")),
    "apps": ("POST", re.compile(r"^/api/v1/apps$")),
    "oauth_metadata": ("GET", re.compile(r"^/\.well-known/oauth-authorization-server$")),
    "token": ("POST", re.compile(r"^/oauth/token$")),
}
_OAUTH = frozenset({"apps", "oauth_metadata", "token", "instance", "instance_v2"})
_TEXT = "text/plain; charset=utf-8"
# "drop": hang up without an answer; "stall": act, but answer only after ``stall`` seconds
FAULTS = (
    "429",
    "500",
    "503",
    "malformed",
    "401",
    "bearer400",
    "403",
    "404",
    "422",
    "drop",
    "stall",
)


def iso_ms(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class FakeAccount:
    id: str
    username: str
    domain: str | None  # None: an account of this server
    display_name: str = ""
    created_at: datetime = datetime(2020, 1, 1, tzinfo=UTC)
    last_status_at: date | None = None
    moved_to: str | None = None
    suspended: bool = False
    locked: bool = False


@dataclass(slots=True)
class FakeStatus:
    id: str
    account_id: str
    created_at: datetime
    visibility: str = "public"
    in_reply_to_account_id: str | None = None
    mentions: tuple[str, ...] = ()
    reblog_of: str | None = None
    quote_of: str | None = None


@dataclass(slots=True)
class FakeNotification:
    id: int
    type: str
    account_id: str
    created_at: datetime
    status_id: str | None = None


@dataclass(frozen=True, slots=True)
class Truth:
    """One exchange as it really happened (``at`` None: the platform never says when)."""

    counterpart: str
    kind: str
    direction: str
    at: datetime | None


class _Sorted:
    """Keys in ascending order with the records they stand for: Mastodon's id paging."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.values: dict[int, Any] = {}

    def add(self, key: int, value: Any) -> None:
        if self.keys and key <= self.keys[-1]:
            bisect.insort(self.keys, key)
        else:
            self.keys.append(key)
        self.values[key] = value

    def remove(self, key: int) -> None:
        index = bisect.bisect_left(self.keys, key)
        if index < len(self.keys) and self.keys[index] == key:
            del self.keys[index]
            del self.values[key]

    def __len__(self) -> int:
        return len(self.keys)

    def page(
        self,
        limit: int,
        max_id: int | None,
        since_id: int | None,
        min_id: int | None,
        keep: Callable[[Any], bool] | None = None,
    ) -> list[int]:
        """Keys newest first, as ``paginate_by_max_id`` / ``paginate_by_min_id`` give them."""
        keys = self.keys
        hi = bisect.bisect_left(keys, max_id) if max_id is not None else len(keys)
        chosen: list[int] = []
        if min_id is not None:
            for i in range(bisect.bisect_right(keys, min_id), hi):
                if keep is None or keep(self.values[keys[i]]):
                    chosen.append(keys[i])
                    if len(chosen) == limit:
                        break
            return chosen[::-1]
        lo = bisect.bisect_right(keys, since_id) if since_id is not None else 0
        for i in range(hi - 1, lo - 1, -1):
            if keep is None or keep(self.values[keys[i]]):
                chosen.append(keys[i])
                if len(chosen) == limit:
                    break
        return chosen


class FakeMastodon(FaultQueue, Served):
    """One Mastodon server with one signed-in account (``ME``) and the world around it."""

    KINDS = FAULTS

    def __init__(
        self,
        clock: Callable[[], datetime],
        *,
        domain: str = "example.social",
        username: str = "me",
        created_at: datetime = datetime(2021, 3, 4, tzinfo=UTC),
        rate_limit: int = 300,
        token: str = TOKEN,
        window: timedelta = WINDOW,
    ) -> None:
        self.clock = clock
        self.domain = domain
        self.rate_limit = rate_limit
        self.window = window  # the rate limit's period
        self.stall = 3.0  # seconds a "stall" fault keeps the client waiting
        self.unfollowed: Counter[str] = Counter()  # follows ended by an unfollow request
        # Called with the route and the answer before it is sent (the chaos bench kills the
        # client there: after the server acted, before the client heard).
        self.on_answer: Callable[[str, _Answer], None] | None = None
        self.tokens = {token}
        self.lock = threading.RLock()
        self.accounts: dict[str, FakeAccount] = {}
        self.statuses: dict[str, FakeStatus] = {}
        self.own = _Sorted()  # status id -> status, the account's own
        self.notifications = _Sorted()
        self.favourites = _Sorted()  # favourite id -> status id
        self.following = _Sorted()  # follow id -> account id
        self.followers = _Sorted()
        self._follow_of: dict[str, int] = {}
        self._follower_of: dict[str, int] = {}
        self._conversations: dict[frozenset[str], tuple[int, list[str]]] = {}
        self._conversation_listing: _Sorted | None = None
        self.truth: list[Truth] = []
        self.requests: Counter[str] = Counter()
        self.answered: Counter[int] = Counter()  # by HTTP status
        self.faults: list[Fault] = []
        self.faulted: Counter[str] = Counter()
        self.window_start: datetime | None = None
        self.window_used = 0
        self.plain_400_for_bad_tokens = False
        self.hide_direct_in_statuses = False
        self.missing: set[str] = set()  # routes this server does not have
        # The software and version ``/api/v1/instance`` names (Mastodon sends a bare version,
        # compatible servers append themselves: "2.7.2 (compatible; Pleroma 2.6.0)").
        self.version = "4.3.2"
        # Takahē routes /api/v1/conversations without the trailing slash only: the address
        # Mastodon.py asks (with the slash) answers 404.
        self.conversations_slash_404 = False
        # Takahē answers conversations with an empty list whatever was sent.
        self.conversations_hollow = False
        self.lagging_follows: set[str] = set()  # relationships read stale once after a follow
        self.approved_codes: dict[str, str] = {}  # code the person would paste -> token
        self.app_scopes: str | None = None
        self.latency = 0.0  # seconds each answer waits first (the network); none unless set
        self._next_id = 1
        self._seq = 0
        self.add_account(username, None, account_id=ME, created_at=created_at, name="Me")

    # -- ids ------------------------------------------------------------------------------

    def _serial(self) -> int:
        self._next_id += 1
        return self._next_id

    def snowflake(self, at: datetime) -> str:
        """Mastodon's ids for statuses: milliseconds since the epoch, then a sequence."""
        self._seq = (self._seq + 1) % 65536
        return str((int(at.timestamp() * 1000) << 16) | self._seq)

    # -- the network, scripted ----------------------------------------------------------

    def add_account(
        self,
        username: str,
        domain: str | None = "remote.example",
        *,
        account_id: str | None = None,
        name: str = "",
        created_at: datetime = datetime(2020, 1, 1, tzinfo=UTC),
        last_status_at: date | None = None,
        moved_to: str | None = None,
        suspended: bool = False,
        locked: bool = False,
    ) -> str:
        account_id = account_id or str(110_000_000_000_000_000 + self._serial())
        self.accounts[account_id] = FakeAccount(
            account_id,
            username,
            domain,
            name,
            created_at,
            last_status_at,
            moved_to,
            suspended,
            locked,
        )
        return account_id

    def follow(self, account_id: str) -> None:
        """The account follows them (ground truth, no request)."""
        if account_id not in self._follow_of:
            key = self._serial()
            self._follow_of[account_id] = key
            self.following.add(key, account_id)

    def unfollow(self, account_id: str) -> None:
        key = self._follow_of.pop(account_id, None)
        if key is not None:
            self.following.remove(key)

    def add_follower(self, account_id: str) -> None:
        if account_id not in self._follower_of:
            key = self._serial()
            self._follower_of[account_id] = key
            self.followers.add(key, account_id)

    def remove_follower(self, account_id: str) -> None:
        key = self._follower_of.pop(account_id, None)
        if key is not None:
            self.followers.remove(key)

    def behave_as_takahe(self) -> None:
        """The Mastodon-API server Takahē 0.11 as seen on a real server: conversations a 404
        with the slash and always empty without it, the owner's direct messages left out of
        their statuses while ``statuses_count`` counts them."""
        self.version = "takahe/0.11.0"
        self.conversations_slash_404 = True
        self.conversations_hollow = True
        self.hide_direct_in_statuses = True

    def following_ids(self) -> set[str]:
        return set(self.following.values.values())

    def follower_ids(self) -> set[str]:
        return set(self.followers.values.values())

    def _status(self, author: str, at: datetime, **fields: Any) -> FakeStatus:
        status = FakeStatus(self.snowflake(at), author, at, **fields)
        self.statuses[status.id] = status
        if author == ME:
            self.own.add(int(status.id), status)
        if status.visibility == "direct":
            people = frozenset({author, *status.mentions} - {ME})
            number = len(self._conversations) + 1
            self._conversations.setdefault(people, (number, []))[1].append(status.id)
            self._conversation_listing = None
        return status

    def _notify(self, kind: str, who: str, at: datetime, status: FakeStatus | None) -> None:
        if len(self.notifications) and self.notifications.values[
            self.notifications.keys[-1]
        ].created_at > at + timedelta(seconds=1):
            # Notification ids follow arrival and created_at is the arrival: keep them in step.
            raise ValueError("notifications must be added in time order")
        key = self._serial()
        self.notifications.add(
            key, FakeNotification(key, kind, who, at, status.id if status else None)
        )

    def post(self, at: datetime) -> FakeStatus:
        """A status of the account's own that addresses nobody."""
        return self._status(ME, at)

    def mention_me(
        self,
        who: str,
        at: datetime,
        *,
        reply: bool = False,
        direct: bool = False,
        quote: bool = False,
        also_mention: bool = False,
    ) -> FakeStatus:
        """Someone addresses the account: a mention, reply, quote or direct message."""
        target = self.post(at - timedelta(hours=1)) if reply or quote else None
        status = self._status(
            who,
            at,
            visibility="direct" if direct else "public",
            in_reply_to_account_id=ME if reply else None,
            mentions=(ME,) if (not quote or also_mention) else (),
            quote_of=target.id if quote and target else None,
        )
        if quote:
            self._notify("quote", who, at, status)
        if not quote or also_mention:
            self._notify("mention", who, at, status)
        kind = "message" if direct else "reply" if reply else "quote" if quote else "mention"
        self.truth.append(Truth(who, kind, "inbound", at))
        return status

    def favourite_mine(self, who: str, at: datetime, status: FakeStatus | None = None) -> None:
        status = status or self.post(at - timedelta(hours=2))
        self._notify("favourite", who, at, status)
        self.truth.append(Truth(who, "like", "inbound", at))

    def reblog_mine(self, who: str, at: datetime, status: FakeStatus | None = None) -> None:
        status = status or self.post(at - timedelta(hours=2))
        self._notify("reblog", who, at, status)
        self.truth.append(Truth(who, "repost", "inbound", at))

    def followed_me(self, who: str, at: datetime) -> None:
        """A follow notification: not an exchange."""
        self._notify("follow", who, at, None)

    def write(
        self,
        at: datetime,
        *,
        reply_to: str | None = None,
        mentions: Sequence[str] = (),
        quote_of: str | None = None,
        direct: bool = False,
    ) -> FakeStatus:
        """The account writes to people: one exchange per person, of the strongest kind."""
        quoted = self._status(quote_of, at - timedelta(days=1)) if quote_of else None
        replied = self._status(reply_to, at - timedelta(hours=3)) if reply_to else None
        status = self._status(
            ME,
            at,
            visibility="direct" if direct else "public",
            in_reply_to_account_id=replied.account_id if replied else None,
            mentions=tuple(dict.fromkeys([*([reply_to] if reply_to else []), *mentions])),
            quote_of=quoted.id if quoted else None,
        )
        kinds: dict[str, str] = dict.fromkeys(mentions, "mention")
        if quote_of:
            kinds[quote_of] = "quote"
        if reply_to:
            kinds[reply_to] = "reply"
        for who, kind in kinds.items():
            self.truth.append(Truth(who, "message" if direct else kind, "outbound", at))
        return status

    def reblog(self, author: str, at: datetime) -> FakeStatus:
        original = self._status(author, at - timedelta(hours=5))
        wrapper = self._status(ME, at, reblog_of=original.id)
        self.truth.append(Truth(author, "repost", "outbound", at))
        return wrapper

    def favourite(self, author: str, posted: datetime) -> None:
        """The account favourites a status of theirs (the time of it is never told)."""
        status = self._status(author, posted)
        self.favourites.add(self._serial(), status.id)
        self.truth.append(Truth(author, "like", "outbound", None))

    # -- rendering ------------------------------------------------------------------------

    def acct(self, account: FakeAccount) -> str:
        return (
            account.username if account.domain is None else f"{account.username}@{account.domain}"
        )

    def render_account(self, account_id: str, *, depth: int = 0) -> dict[str, Any]:
        a = self.accounts[account_id]
        host = a.domain or self.domain
        url = f"https://{host}/@{a.username}"
        body: dict[str, Any] = {
            "id": a.id,
            "username": a.username,
            "acct": self.acct(a),
            "display_name": a.display_name,
            "locked": a.locked,
            "bot": False,
            "discoverable": None,
            "indexable": False,
            "group": False,
            "created_at": iso_ms(a.created_at.replace(hour=0, minute=0, second=0, microsecond=0)),
            "note": "",
            "url": url,
            "uri": f"https://{host}/users/{a.username}",
            "avatar": f"https://{self.domain}/avatars/original/missing.png",
            "avatar_static": f"https://{self.domain}/avatars/original/missing.png",
            "header": f"https://{self.domain}/headers/original/missing.png",
            "header_static": f"https://{self.domain}/headers/original/missing.png",
            "followers_count": 0,
            "following_count": 0,
            "statuses_count": 0,
            "last_status_at": a.last_status_at.isoformat() if a.last_status_at else None,
            "hide_collections": None,
            "emojis": [],
            "roles": [],
            "fields": [],
        }
        if a.moved_to and depth == 0:
            body["moved"] = self.render_account(a.moved_to, depth=1)
        if a.suspended:
            body["suspended"] = True
        return body

    def _statuses_count(self, account_id: str) -> int:
        if account_id != ME:
            return 0
        # Mastodon leaves direct messages out of the count (Status#increment_counter_caches);
        # a server that hides them from the listing (Takahē) counts them.
        return sum(
            1
            for status in self.own.values.values()
            if self.hide_direct_in_statuses or status.visibility != "direct"
        )

    def render_status(self, status_id: str, *, depth: int = 0) -> dict[str, Any]:
        s = self.statuses[status_id]
        author = self.accounts[s.account_id]
        host = author.domain or self.domain
        mentions = []
        for who in s.mentions:
            m = self.accounts[who]
            mentions.append(
                {
                    "id": m.id,
                    "username": m.username,
                    "url": f"https://{m.domain or self.domain}/@{m.username}",
                    "acct": self.acct(m),
                }
            )
        quote = None
        if s.quote_of and depth == 0:
            quote = {"state": "accepted", "quoted_status": self.render_status(s.quote_of, depth=1)}
        return {
            "id": s.id,
            "created_at": iso_ms(s.created_at),
            "in_reply_to_id": None,
            "in_reply_to_account_id": s.in_reply_to_account_id,
            "sensitive": False,
            "spoiler_text": "",
            "visibility": s.visibility,
            "language": "en",
            "uri": f"https://{host}/users/{author.username}/statuses/{s.id}",
            "url": f"https://{host}/@{author.username}/{s.id}",
            "replies_count": 0,
            "reblogs_count": 0,
            "favourites_count": 0,
            "quotes_count": 0,
            "edited_at": None,
            "favourited": False,
            "reblogged": s.reblog_of is not None,
            "muted": False,
            "bookmarked": False,
            "content": "" if s.reblog_of else "<p>hello</p>",
            "filtered": [],
            "reblog": self.render_status(s.reblog_of, depth=1) if s.reblog_of else None,
            "application": None,
            "account": self.render_account(s.account_id),
            "media_attachments": [],
            "mentions": mentions,
            "tags": [],
            "emojis": [],
            "quote": quote,
            "card": None,
            "poll": None,
        }

    def render_notification(self, n: FakeNotification) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": str(n.id),
            "type": n.type,
            "created_at": iso_ms(n.created_at),
            "group_key": f"ungrouped-{n.id}",
            "account": self.render_account(n.account_id),
        }
        if n.status_id is not None:
            body["status"] = self.render_status(n.status_id)
        return body

    def relationship(self, account_id: str) -> dict[str, Any]:
        following = account_id in self._follow_of and account_id not in self.lagging_follows
        self.lagging_follows.discard(account_id)
        return {
            "id": account_id,
            "following": following,
            "showing_reblogs": following,
            "notifying": False,
            "languages": None,
            "followed_by": account_id in self._follower_of,
            "blocking": False,
            "blocked_by": False,
            "muting": False,
            "muting_notifications": False,
            "muting_expires_at": None,
            "requested": False,
            "requested_by": False,
            "domain_blocking": False,
            "endorsed": False,
            "note": "",
        }

    def conversations(self) -> _Sorted:
        """Conversations page on the id of their last status, newest first."""
        if self._conversation_listing is None:
            listing = _Sorted()
            for people, (number, ids) in self._conversations.items():
                last = max(ids, key=int)
                listing.add(int(last), (number, people, last))
            self._conversation_listing = listing
        return self._conversation_listing

    # -- serving --------------------------------------------------------------------------

    def handler(self) -> type[_Handler]:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        return Handler

    def rate_headers(self) -> dict[str, str]:
        """Mastodon's rack-attack headers: the window resets on a boundary of its period."""
        now = self.clock()
        period = max(1, int(self.window.total_seconds()))
        start = datetime.fromtimestamp(int(now.timestamp()) // period * period, tz=UTC)
        if self.window_start != start:
            self.window_start, self.window_used = start, 0
        reset = start + timedelta(seconds=period)
        return {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(max(0, self.rate_limit - self.window_used)),
            "x-ratelimit-reset": reset.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
        authorization: str | None,
    ) -> _Answer:
        with self.lock:
            route, match = _route(method, path)
            self.requests[route or f"{method} {path}"] += 1
            if route == "conversations" and path.endswith("/") and self.conversations_slash_404:
                return _Answer(404, {"error": "Not Found"})
            if route is None or route in self.missing:
                return _Answer(404, {"error": "Not Found"})
            if route in _OAUTH:
                return self._oauth(route, form)
            self.rate_headers()
            self.window_used += 1
            fault = self._take_fault(route)
            stall = 0.0
            if fault == "stall":
                self.faulted[fault] += 1
                fault, stall = None, self.stall
            if fault is not None:
                self.faulted[fault] += 1
                return self._fault(fault)
            headers = self.rate_headers()
            if self.window_used > self.rate_limit:
                return _Answer(429, {"error": "Too many requests"}, headers)
            token = (authorization or "").removeprefix("Bearer ").strip()
            if token not in self.tokens:
                if self.plain_400_for_bad_tokens:
                    return _Answer(
                        400, None, headers, raw="Invalid Bearer token", content_type=_TEXT
                    )
                return _Answer(401, {"error": "The access token is invalid"}, headers)
            args = match.groups() if match else ()
            answer = getattr(self, f"_do_{route}")(query, *args)
            answer.headers.update(headers)
            answer.stall = stall
            return answer

    def answer(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
        authorization: str | None,
    ) -> _Answer:
        if self.latency > 0:
            time.sleep(self.latency)  # outside the lock: requests wait side by side
        answer = self.handle(method, path, query, form, authorization)
        with self.lock:
            self.answered[answer.status] += 1
        if self.on_answer is not None:
            self.on_answer(_route(method, path)[0] or path, answer)
        return answer

    def _fault(self, kind: str) -> _Answer:
        if kind == "429":
            headers = self.rate_headers()
            headers["x-ratelimit-remaining"] = "0"
            return _Answer(429, {"error": "Too many requests"}, headers)
        if kind in ("500", "503"):
            page = "<html><body><h1>We're sorry, but something went wrong.</h1></body></html>"
            return _Answer(int(kind), None, raw=page, content_type="text/html; charset=utf-8")
        if kind == "malformed":
            return _Answer(200, None, raw='[{"id": "1", "type": "ment')
        if kind == "401":
            return _Answer(401, {"error": "The access token was revoked"})
        if kind == "bearer400":
            return _Answer(400, None, raw="Invalid Bearer token", content_type=_TEXT)
        if kind == "403":
            return _Answer(403, {"error": "This action is not allowed"})
        if kind == "404":
            return _Answer(404, {"error": "Record not found"})
        if kind == "422":
            # An action the server will not process for this record, the follow left as it was.
            return _Answer(422, {"error": "Validation failed"})
        return _Answer(0, None, drop=True)

    def _oauth(self, route: str, form: dict[str, list[str]]) -> _Answer:
        if route in ("instance", "instance_v2"):
            # Mastodon.py asks for the version after logging in.
            body: dict[str, Any] = {"title": "Fake", "version": self.version}
            if route == "instance":
                body["uri"] = self.domain
            else:
                body |= {"domain": self.domain, "api_versions": {"mastodon": 2}}
            return _Answer(200, body)
        if route == "oauth_metadata":
            base = self.url
            return _Answer(
                200,
                {
                    "issuer": f"{base}/",
                    "authorization_endpoint": f"{base}/oauth/authorize",
                    "token_endpoint": f"{base}/oauth/token",
                    "scopes_supported": ["read", "write", "follow", "push"],
                    "grant_types_supported": ["authorization_code", "client_credentials"],
                    "response_types_supported": ["code"],
                },
            )
        if route == "apps":
            scopes = _first(form, "scopes") or "read"
            self.app_scopes = scopes
            return _Answer(
                200,
                {
                    "id": "42",
                    "name": _first(form, "client_name"),
                    "website": _first(form, "website"),
                    "scopes": scopes.split(),
                    "redirect_uri": _first(form, "redirect_uris"),
                    "redirect_uris": [_first(form, "redirect_uris")],
                    "client_id": "fake-client-id",
                    "client_secret": "fake-client-secret-99",
                },
            )
        code = _first(form, "code")
        if _first(form, "grant_type") != "authorization_code" or code not in self.approved_codes:
            return _Answer(400, {"error": "invalid_grant"})
        token = self.approved_codes.pop(code)
        self.tokens.add(token)
        return _Answer(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "scope": _first(form, "scope"),
                "created_at": int(self.clock().timestamp()),
            },
        )

    # -- endpoints --------------------------------------------------------------------------

    def _pagination(
        self, query: dict[str, list[str]], default: int
    ) -> tuple[int, int | None, int | None, int | None]:
        raw = _first(query, "limit")
        limit = min(abs(int(raw)), default * 2) if raw else default
        ids = [_first(query, k) for k in ("max_id", "since_id", "min_id")]
        max_id, since_id, min_id = (int(v) if v else None for v in ids)
        return limit, max_id, since_id, min_id

    def _links(
        self,
        path: str,
        query: dict[str, list[str]],
        newest: int | None,
        oldest: int | None,
        *,
        more: bool,
        prev_key: str = "min_id",
    ) -> dict[str, str]:
        keep = {k: v for k, v in query.items() if k in ("limit", "types[]", "exclude_types[]")}
        links = []
        if more and oldest is not None:
            links.append(f'<{self.url}{path}?{_qs(keep, max_id=oldest)}>; rel="next"')
        if newest is not None:
            links.append(f'<{self.url}{path}?{_qs(keep, **{prev_key: newest})}>; rel="prev"')
        return {"Link": ", ".join(links)} if links else {}

    def _accounts_page(
        self, listing: _Sorted, path: str, query: dict[str, list[str]], account_id: str
    ) -> _Answer:
        if account_id != ME:
            return _Answer(200, [])
        limit, max_id, since_id, min_id = self._pagination(query, 40)
        keys = listing.page(limit, max_id, since_id, min_id)
        body = [self.render_account(listing.values[k]) for k in keys]
        links = self._links(
            path,
            query,
            keys[0] if keys else None,
            keys[-1] if keys else None,
            more=len(keys) == limit,
            prev_key="since_id",
        )
        return _Answer(200, body, links)

    def _do_verify_credentials(self, query: dict[str, list[str]]) -> _Answer:
        body = self.render_account(ME)
        body["statuses_count"] = self._statuses_count(ME)
        body["source"] = {"privacy": "public", "sensitive": False, "note": "", "fields": []}
        return _Answer(200, body)

    def _do_following(self, query: dict[str, list[str]], account_id: str) -> _Answer:
        path = f"/api/v1/accounts/{account_id}/following"
        return self._accounts_page(self.following, path, query, account_id)

    def _do_followers(self, query: dict[str, list[str]], account_id: str) -> _Answer:
        path = f"/api/v1/accounts/{account_id}/followers"
        return self._accounts_page(self.followers, path, query, account_id)

    def _do_statuses(self, query: dict[str, list[str]], account_id: str) -> _Answer:
        if account_id != ME:
            return _Answer(200, [])
        limit, max_id, since_id, min_id = self._pagination(query, 20)

        def keep(status: FakeStatus) -> bool:
            return not (self.hide_direct_in_statuses and status.visibility == "direct")

        keys = self.own.page(limit, max_id, since_id, min_id, keep)
        body = [self.render_status(str(k)) for k in keys]
        path = f"/api/v1/accounts/{account_id}/statuses"
        links = self._links(
            path,
            query,
            keys[0] if keys else None,
            keys[-1] if keys else None,
            more=len(keys) == limit,
        )
        return _Answer(200, body, links)

    def _do_notifications(self, query: dict[str, list[str]]) -> _Answer:
        limit, max_id, since_id, min_id = self._pagination(query, 40)
        types = set(query.get("types[]", ()))
        excluded = set(query.get("exclude_types[]", ()))

        def keep(n: FakeNotification) -> bool:
            return (not types or n.type in types) and n.type not in excluded

        keys = self.notifications.page(limit, max_id, since_id, min_id, keep)
        body = [self.render_notification(self.notifications.values[k]) for k in keys]
        links = self._links(
            "/api/v1/notifications",
            query,
            keys[0] if keys else None,
            keys[-1] if keys else None,
            more=bool(keys),
        )
        return _Answer(200, body, links)

    def _do_favourites(self, query: dict[str, list[str]]) -> _Answer:
        limit, max_id, since_id, min_id = self._pagination(query, 20)
        keys = self.favourites.page(limit, max_id, since_id, min_id)
        body = [self.render_status(self.favourites.values[k]) for k in keys]
        links = self._links(
            "/api/v1/favourites",
            query,
            keys[0] if keys else None,
            keys[-1] if keys else None,
            more=len(keys) == limit,
        )
        return _Answer(200, body, links)

    def _do_conversations(self, query: dict[str, list[str]]) -> _Answer:
        limit, max_id, since_id, min_id = self._pagination(query, 20)
        listing = self.conversations()
        keys = [] if self.conversations_hollow else listing.page(limit, max_id, since_id, min_id)
        body = []
        for key in keys:
            number, people, last = listing.values[key]
            body.append(
                {
                    "id": str(number),
                    "unread": False,
                    "accounts": [self.render_account(p) for p in sorted(people)],
                    "last_status": self.render_status(last),
                }
            )
        links = self._links(
            "/api/v1/conversations",
            query,
            keys[0] if keys else None,
            keys[-1] if keys else None,
            more=len(keys) == limit,
        )
        return _Answer(200, body, links)

    def _do_relationships(self, query: dict[str, list[str]]) -> _Answer:
        with_suspended = _first(query, "with_suspended") in ("1", "true")
        rows = []
        for account_id in query.get("id[]", []):
            account = self.accounts.get(account_id)
            if account is None or (account.suspended and not with_suspended):
                continue
            rows.append(self.relationship(account_id))
        return _Answer(200, rows)

    def _do_follow(self, query: dict[str, list[str]], account_id: str) -> _Answer:
        account = self.accounts.get(account_id)
        if account is None or account.suspended:
            return _Answer(404, {"error": "Record not found"})
        self.follow(account_id)
        answer = self.relationship(account_id)
        answer["following"] = True
        return _Answer(200, answer)

    def _do_unfollow(self, query: dict[str, list[str]], account_id: str) -> _Answer:
        account = self.accounts.get(account_id)
        if account is None or account.suspended:
            return _Answer(404, {"error": "Record not found"})
        if account_id in self._follow_of:
            self.unfollowed[account_id] += 1
        self.unfollow(account_id)
        return _Answer(200, self.relationship(account_id))


# --- HTTP plumbing ------------------------------------------------------------------------


@dataclass
class _Answer:
    status: int
    body: Any  # JSON, unless ``raw`` is given
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None
    content_type: str = "application/json; charset=utf-8"
    drop: bool = False
    stall: float = 0.0  # seconds of silence before the answer


def _first(values: dict[str, list[str]], key: str) -> str | None:
    found = values.get(key)
    return found[0] if found else None


def _qs(keep: dict[str, list[str]], **extra: Any) -> str:
    pairs = [(k, v) for k, vs in keep.items() for v in vs]
    pairs += [(k, str(v)) for k, v in extra.items()]
    return urlencode(pairs)


def _route(method: str, path: str) -> tuple[str | None, re.Match[str] | None]:
    for name, (verb, pattern) in ROUTES.items():
        if verb == method:
            match = pattern.match(path)
            if match:
                return name, match
    return None, None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeMastodon

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes: without this, delayed ACKs stall each
        # kept-alive request for tens of milliseconds.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests read counters, not access logs

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8") if length else ""
        form = parse_qs(raw, keep_blank_values=True) if raw else {}
        query = parse_qs(parts.query, keep_blank_values=True)
        answer = self.server_fake.answer(
            method, parts.path, query, form, self.headers.get("Authorization")
        )
        if answer.stall:
            time.sleep(answer.stall)
        if answer.drop:
            self.close_connection = True  # hang up without a word: a dropped connection
            return
        if answer.raw is not None:
            payload = answer.raw.encode("utf-8")
        else:
            payload = json.dumps(answer.body).encode("utf-8")
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


# --- large synthetic networks -------------------------------------------------------------


@dataclass(frozen=True)
class NetworkSize:
    following: int
    followers: int
    mutual: int
    notifications: int
    statuses: int = 0
    favourites: int = 0


def generate(
    fake: FakeMastodon,
    size: NetworkSize,
    *,
    now: datetime,
    days: int = 400,
    seed: int = 1,
) -> None:
    """A network of the given size with a history of ``days`` before ``now``.

    Everyone interacts through every channel the adapter reads: mentions, replies, quotes
    and direct messages in, favourites and reblogs of the account's posts, its own replies,
    mentions, reblogs and quotes out, and its favourites. Times are drawn, then sorted, so
    that notification ids follow arrival as on a real server.
    """
    if size.mutual > min(size.following, size.followers):
        raise ValueError("more mutuals than follows")
    rng = random.Random(seed)
    people = size.following + size.followers - size.mutual
    ids = []
    for index in range(people):
        remote = index % 3 != 0
        ids.append(
            fake.add_account(
                f"p{index}",
                f"host{index % 17}.example" if remote else None,
                name=f"Person {index}",
                last_status_at=(now - timedelta(days=rng.randint(0, 900))).date()
                if index % 11
                else None,
            )
        )
    for account_id in ids[: size.following]:
        fake.follow(account_id)
    for account_id in ids[size.following - size.mutual :]:
        fake.add_follower(account_id)
    span = days * 86400
    pool = [fake.post(now - timedelta(days=days + 1)) for _ in range(3)]
    for second in sorted(rng.random() * span for _ in range(size.notifications)):
        at = now - timedelta(seconds=span - second)
        who = rng.choice(ids)
        roll = rng.random()
        if roll < 0.35:
            fake.favourite_mine(who, at, rng.choice(pool))
        elif roll < 0.55:
            fake.reblog_mine(who, at, rng.choice(pool))
        elif roll < 0.62:
            fake.followed_me(who, at)
        elif roll < 0.72:
            fake.mention_me(who, at, reply=True)
        elif roll < 0.80:
            fake.mention_me(who, at, direct=True)
        elif roll < 0.84:
            fake.mention_me(who, at, quote=True)
        else:
            fake.mention_me(who, at)
    for second in sorted(rng.random() * span for _ in range(size.statuses)):
        at = now - timedelta(seconds=span - second)
        roll = rng.random()
        who = rng.choice(ids)
        if roll < 0.4:
            fake.write(at, reply_to=who)
        elif roll < 0.6:
            fake.write(at, mentions=[who, rng.choice(ids)])
        elif roll < 0.8:
            fake.reblog(who, at)
        elif roll < 0.9:
            fake.write(at, quote_of=who)
        else:
            fake.write(at, mentions=[who], direct=True)
    for _ in range(size.favourites):
        fake.favourite(rng.choice(ids), now - timedelta(seconds=rng.random() * span))


def expected_pages(count: int, limit: int, *, next_unless_empty: bool = False) -> int:
    """Requests Mastodon needs to list ``count`` items ``limit`` a page, by its Link rules.

    The follow, status and favourite lists give a next link only when a page came back full,
    so a listing ends with a short page (or an empty one after a full page); notifications
    give one after every page that was not empty, so they always end with an empty page.
    """
    if next_unless_empty:
        return -(-count // limit) + 1
    return count // limit + 1
