"""A stateful fake of the parts of Facebook's Graph API lopper reads, over real HTTP on 127.0.0.1.

Built from Graph's documented shapes (https://developers.facebook.com/docs/graph-api/):
``/vNN.N/me``, ``/me/friends`` (only the friends who use the app, with app-scoped ids, and
``summary.total_count`` counting every friend), ``/me/posts`` with nested
``comments.limit(N){...}`` and ``reactions.limit(N).summary(total_count){...}``, and the
``/{post-id}/comments|reactions`` edges that nested ``paging.next`` links point to. Pages
carry ``paging.cursors.before/after`` and a ``next`` link (on graph.facebook.com, as Graph
writes it) only while more remains. Errors come back as Graph writes them: HTTP 400 with
``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`` — code 190 for an
expired or invalid token, 4/17/32/613 for rate limits.

People who never authorized the app are not named: their comments come without ``from`` and
their reactions are only counted in the summary. The token expires at a time the test sets.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fakes.serving import Served

ME = "10150000000000001"
ME_NAME = "Harriet Vane"
TOKEN = "EAAfakeFacebookToken0123456789"
GRAPH = "https://graph.facebook.com"
RATE_LIMIT_MESSAGES = {
    4: "(#4) Application request limit reached",
    17: "(#17) User request limit reached",
    32: "(#32) Page request limit reached",
    613: "(#613) Calls to this api have exceeded the rate limit.",
}


def graph_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


@dataclass
class FakeUser:
    id: str  # app-scoped
    name: str
    uses_app: bool = True  # authorized this app: Graph names them
    friend: bool = True


@dataclass
class FakeComment:
    id: str
    author: str  # user id
    created: datetime


@dataclass
class FakePost:
    id: str
    created: datetime
    comments: list[FakeComment] = field(default_factory=list)
    reactions: list[tuple[str, str]] = field(default_factory=list)  # (user id, type)


class FakeGraph(Served):
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.users: dict[str, FakeUser] = {}
        self.posts: list[FakePost] = []
        self.token = TOKEN
        self.token_expires: datetime | None = None
        self.requests: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.faults: list[int] = []  # Graph error codes to answer the next requests with
        # Bodies sent as they are to the next requests (status, text): answers no real Graph
        # server sends, such as JSON nested deeper than any parser recurses.
        self.raw_answers: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        self._serial = 0

    # -- the network ----------------------------------------------------------------------

    def _next_id(self) -> str:
        self._serial += 1
        return str(self._serial)

    def add_user(self, name: str, *, uses_app: bool = True, friend: bool = True) -> FakeUser:
        user = FakeUser(f"9{len(self.users) + 1:015d}", name, uses_app, friend)
        self.users[user.id] = user
        return user

    def post(self, at: datetime) -> FakePost:
        post = FakePost(f"{ME}_{self._next_id()}", at)
        self.posts.append(post)
        self.posts.sort(key=lambda p: p.created, reverse=True)
        return post

    def comment(self, post: FakePost, user: FakeUser | str, at: datetime) -> FakeComment:
        author = user.id if isinstance(user, FakeUser) else user
        item = FakeComment(f"{post.id.split('_')[1]}_{self._next_id()}", author, at)
        post.comments.append(item)
        return item

    def react(self, post: FakePost, user: FakeUser, kind: str = "LIKE") -> None:
        post.reactions.append((user.id, kind))

    def expire_token(self, at: datetime) -> None:
        self.token_expires = at

    # -- serving --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return super().url + "/"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                status, body = fake.handle(parts.path, query)
                if fake.raw_answers:
                    status, text = fake.raw_answers.pop(0)
                    data = text.encode()
                else:
                    data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler

    # -- answers --------------------------------------------------------------------------

    @staticmethod
    def error(code: int, message: str, kind: str = "OAuthException", sub: int | None = None) -> Any:
        body: dict[str, Any] = {"message": message, "type": kind, "code": code}
        if sub is not None:
            body["error_subcode"] = sub
        body["fbtrace_id"] = "AbCdEfGhIjK"
        return {"error": body}

    def handle(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        with self.lock:
            match = re.match(r"^/(v\d+\.\d+)/(.+)$", path)
            if match is None:
                return 400, self.error(2500, "Unknown path components: " + path)
            version, rest = match.groups()
            self.versions[version] += 1
            self.requests[re.sub(r"\d+_\d+", "{post}", rest)] += 1
            if self.faults:
                code = self.faults.pop(0)
                kind = "OAuthException" if code in (4, 17, 32, 613, 190) else "GraphMethodException"
                return 400, self.error(code, RATE_LIMIT_MESSAGES.get(code, "fault"), kind)
            token = query.get("access_token")
            if token != self.token:
                return 400, self.error(
                    190, "Invalid OAuth access token - Cannot parse access token"
                )
            now = self.clock()
            if self.token_expires is not None and now >= self.token_expires:
                return 400, self.error(
                    190,
                    "Error validating access token: Session has expired on "
                    f"{self.token_expires:%A, %d-%b-%y %H:%M:%S} PDT. The current time is "
                    f"{now:%A, %d-%b-%y %H:%M:%S} PDT.",
                    sub=463,
                )
            if rest == "me":
                return 200, {"id": ME, "name": ME_NAME}
            if rest == "me/friends":
                return 200, self._friends(version, query)
            if rest == "me/posts":
                return 200, self._posts(version, query)
            edge = re.match(r"^(\d+_\d+)/(comments|reactions)$", rest)
            if edge:
                post = next((p for p in self.posts if p.id == edge[1]), None)
                if post is None:
                    return 400, self.error(100, "Unsupported get request.", "GraphMethodException")
                limit = int(query.get("limit", "25"))
                offset = _offset(query.get("after"))
                make = self._comments if edge[2] == "comments" else self._reactions
                return 200, make(version, post, limit, offset, summary=False)
            return 400, self.error(100, f"Unknown path components: /{rest}", "GraphMethodException")

    def _page(
        self,
        version: str,
        path: str,
        items: list[Any],
        limit: int,
        offset: int,
        query: dict[str, str],
    ) -> dict[str, Any]:
        chunk = items[offset : offset + limit]
        page: dict[str, Any] = {"data": chunk}
        if chunk:
            paging: dict[str, Any] = {
                "cursors": {"before": _cursor(offset), "after": _cursor(offset + len(chunk) - 1)}
            }
            if offset + len(chunk) < len(items):
                args = {**query, "access_token": self.token, "limit": str(limit)}
                args["after"] = _cursor(offset + len(chunk) - 1)
                paging["next"] = f"{GRAPH}/{version}/{path}?{urlencode(args)}"
            page["paging"] = paging
        return page

    def _friends(self, version: str, query: dict[str, str]) -> dict[str, Any]:
        friends = [u for u in self.users.values() if u.friend]
        reachable = [
            {
                "id": u.id,
                "name": u.name,
                "link": f"https://www.facebook.com/app_scoped_user_id/{u.id}/",
            }
            for u in friends
            if u.uses_app
        ]
        limit = int(query.get("limit", "25"))
        page = self._page(
            version, "me/friends", reachable, limit, _offset(query.get("after")), query
        )
        page["summary"] = {"total_count": len(friends)}
        return page

    def _posts(self, version: str, query: dict[str, str]) -> dict[str, Any]:
        since = int(query.get("since", "0"))
        posts = [p for p in self.posts if p.created.timestamp() >= since]
        fields = query.get("fields", "")
        comments = re.search(r"comments\.limit\((\d+)\)", fields)
        reactions = re.search(r"reactions\.limit\((\d+)\)", fields)
        rendered = []
        for post in posts:
            item: dict[str, Any] = {"id": post.id, "created_time": graph_time(post.created)}
            if comments and post.comments:
                item["comments"] = self._comments(version, post, int(comments[1]), 0)
            if reactions:
                with_summary = "summary(total_count)" in fields
                item["reactions"] = self._reactions(
                    version, post, int(reactions[1]), 0, summary=with_summary
                )
            rendered.append(item)
        limit = int(query.get("limit", "25"))
        return self._page(version, "me/posts", rendered, limit, _offset(query.get("after")), query)

    def _person(self, user_id: str) -> dict[str, str] | None:
        if user_id == ME:
            return {"id": ME, "name": ME_NAME}
        user = self.users.get(user_id)
        return {"id": user.id, "name": user.name} if user and user.uses_app else None

    def _comments(
        self, version: str, post: FakePost, limit: int, offset: int, summary: bool = False
    ) -> dict[str, Any]:
        items = []
        for c in post.comments:
            item: dict[str, Any] = {"id": c.id, "created_time": graph_time(c.created)}
            who = self._person(c.author)
            if who is not None:
                item["from"] = who
            items.append(item)
        return self._page(version, f"{post.id}/comments", items, limit, offset, {})

    def _reactions(
        self, version: str, post: FakePost, limit: int, offset: int, summary: bool = False
    ) -> dict[str, Any]:
        named = []
        for user_id, kind in post.reactions:
            who = self._person(user_id)
            if who is not None:
                named.append({**who, "type": kind})
        page = self._page(version, f"{post.id}/reactions", named, limit, offset, {})
        if summary:
            page["summary"] = {"total_count": len(post.reactions), "viewer_reaction": "NONE"}
        return page


def _cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    return int(base64.b64decode(cursor).decode().split(":")[1]) + 1
