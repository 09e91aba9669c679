"""A stateful fake of the Bluesky XRPC endpoints lopper uses, served over real HTTP.

The real atproto SDK talks to it on 127.0.0.1 exactly as it talks to a PDS: sessions
(createSession, refreshSession, getSession) with JWT-shaped tokens whose ``exp`` the SDK reads
to refresh ahead of time, the social graph (getFollows, getFollowers, getRelationships,
getProfile), notifications, the account's own repository (listRecords, createRecord,
deleteRecord), rate limits with ``RateLimit-*`` headers and ``{"error", "message"}`` bodies.

Shapes follow the recorded responses in ``samples/api/bluesky`` and the reference server
(bluesky-social/atproto): appview pages are keyset-paginated newest first with cursors like
``<ms>__<cid>``, and, as in the recorded getFollows answer, the last page carries no cursor.
``listRecords`` behaves as the PDS does: newest first by record key, ``reverse=true`` for
oldest first, and the cursor is the last record key of every non-empty page, so a full page at
the very end costs one more (empty) request. Notifications sort by ``sortAt``, the earlier of
a record's ``createdAt`` and the time it was indexed, which is what they show as ``indexedAt``.

Ground truth: every exchange the fake creates is counted in ``truth`` as (counterpart DID,
kind, direction) at the moment it is created, so the tests compare the store with what really
happened rather than with a second reading of the same answers.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import random
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from fakes.faults import Fault as QueuedFault
from fakes.faults import FaultQueue

Fault = Literal[
    "429", "500", "502", "malformed", "expired", "401", "takedown", "drop", "drop_after"
]
FAULTS: tuple[Fault, ...] = ("429", "500", "502", "malformed", "expired", "401", "drop")
_ALL_FAULTS: tuple[Fault, ...] = (*FAULTS, "takedown", "drop_after")
Truth = tuple[str, str, str]  # (counterpart DID, kind, direction)

FOLLOW = "app.bsky.graph.follow"
POST = "app.bsky.feed.post"
REPOST = "app.bsky.feed.repost"
LIKE = "app.bsky.feed.like"
_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_WRITE_POINTS = {"create": 3, "update": 2, "delete": 1}
# Reasons that are an exchange with the account, and the kind each one is.
EXCHANGE_REASONS = {
    "like": "like",
    "repost": "repost",
    "reply": "reply",
    "mention": "mention",
    "quote": "quote",
    "like-via-repost": "like",
    "repost-via-repost": "repost",
}
_SESSION_NSIDS = frozenset(
    {"com.atproto.server.createSession", "com.atproto.server.refreshSession"}
)
PLC_AUDIT = "plc.log.audit"  # how requests counts the PLC directory's audit log
PLC_DOCUMENT = "plc.document"  # and its DID documents
_WRITE_NSIDS = frozenset({"com.atproto.repo.createRecord", "com.atproto.repo.deleteRecord"})


# --- identifiers ---------------------------------------------------------------------------


def tid(micros: int, clock_id: int = 0) -> str:
    """A record key as atproto makes them: microseconds and a clock id, base32-sortable."""
    value = (micros << 10) | (clock_id & 0x3FF)
    chars = []
    for _ in range(13):
        chars.append(_TID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def did_for(name: str) -> str:
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode().lower()
    return f"did:plc:{digest[:24]}"


def cid_for(text: str) -> str:
    digest = base64.b32encode(hashlib.sha256(text.encode()).digest()).decode().lower()
    return f"bafyrei{digest[:52]}"


def iso(micros: int) -> str:
    moment = datetime.fromtimestamp(micros / 1_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def micros_of(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- the network -----------------------------------------------------------------------------


@dataclass
class Actor:
    did: str
    handle: str
    display_name: str | None
    created_us: int  # the DID's genesis operation, dated by the PLC directory
    # The profile record's createdAt, which the client writes (None: no profile record).
    profile_created_us: int | None = None
    deleted: bool = False


@dataclass(slots=True)
class Notification:
    sort_ms: int  # sortAt, shown as indexedAt
    cid: str
    author: str
    reason: str
    rkey: str
    subject: str | None  # the account's record the notification is about
    created_us: int  # the record's own createdAt
    indexed_us: int = 0  # when the appview indexed it: not listed before then

    @property
    def key(self) -> tuple[int, str]:
        return (self.sort_ms, self.cid)


@dataclass
class _Session:
    did: str
    access: set[str] = field(default_factory=set)
    refresh: set[str] = field(default_factory=set)


class _Reply(Exception):
    """Raised inside a handler to answer with an error body."""

    def __init__(
        self, status: int, error: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers or {}


class FakeBluesky(FaultQueue):
    """One account (``me``) on a PDS with an appview in front, and the people around it."""

    KINDS = _ALL_FAULTS
    RANDOM_EXEMPT = _SESSION_NSIDS | {"plc.log.audit", "plc.document"}

    def __init__(
        self,
        *,
        handle: str = "me.test",
        app_password: str = "abcd-efgh-ijkl-mnop",
        clock: Callable[[], datetime] | None = None,
        created_at: datetime | None = None,
        access_ttl: float = 7200.0,
        ip_limit: int = 3000,
        write_limits: tuple[int, int] = (5000, 35000),
    ) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        created = created_at or self.clock() - timedelta(days=720)
        self.me = Actor(did_for(handle), handle, "Me", micros_of(created), micros_of(created))
        self.app_password = app_password
        self.access_ttl = access_ttl
        self.ip_limit = ip_limit
        self.write_limits = write_limits
        self.actors: dict[str, Actor] = {self.me.did: self.me}
        # the account's repository: collection -> record key -> record
        self.repo: dict[str, dict[str, dict[str, Any]]] = {
            FOLLOW: {},
            POST: {},
            REPOST: {},
            LIKE: {},
        }
        self.follows: dict[str, str] = {}  # subject DID -> record key of the account's follow
        self.followers: dict[str, tuple[str, int]] = {}  # follower DID -> (their rkey, ms)
        self.notifications: list[Notification] = []  # ascending by (sortAt, cid)
        self.seen_at: int | None = None  # microseconds: when the person last opened them
        self.truth: Counter[Truth] = Counter()
        # what was asked of it
        self.requests: Counter[str] = Counter()
        self.logins = 0
        self.refreshes = 0
        self.write_log: list[tuple[str, str, str]] = []  # (action, collection, rkey)
        self._sessions: dict[str, _Session] = {}
        self.faults: list[QueuedFault] = []
        self._login_times: list[float] = []
        self._request_times: list[float] = []
        self._write_points: list[tuple[float, int]] = []
        self._last_tid = 0
        self._sorted: dict[str, list[Any]] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- serving ------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on an ephemeral port of 127.0.0.1; returns the base URL to give the client."""
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeBluesky:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- building the network -----------------------------------------------------------

    def now_us(self) -> int:
        return micros_of(self.clock())

    def _next_tid(self, micros: int) -> str:
        # Record keys stay unique and increasing in one repository, as the PDS makes them.
        micros = max(micros, self._last_tid + 1)
        self._last_tid = micros
        return tid(micros)

    def add_actor(
        self, name: str, *, display_name: str | None = None, created: datetime | None = None
    ) -> Actor:
        did = did_for(name)
        actor = self.actors.get(did)
        if actor is None:
            when = created or datetime.fromtimestamp(self.me.created_us / 1e6, tz=UTC)
            micros = micros_of(when)
            actor = Actor(did, f"{name}.test", display_name or name.title(), micros, micros)
            self.actors[did] = actor
        return actor

    def follow(self, did: str, at: datetime | None = None) -> str:
        """The account follows ``did`` (a follow record in its repository); returns the URI."""
        with self._lock:
            if did in self.follows:
                return f"at://{self.me.did}/{FOLLOW}/{self.follows[did]}"
            micros = micros_of(at) if at else self.now_us()
            rkey = self._next_tid(micros)
            self.repo[FOLLOW][rkey] = {"$type": FOLLOW, "subject": did, "createdAt": iso(micros)}
            self.follows[did] = rkey
            self._sorted.pop(FOLLOW, None)
            self._sorted.pop("follows", None)
            return f"at://{self.me.did}/{FOLLOW}/{rkey}"

    def unfollow(self, did: str) -> None:
        with self._lock:
            rkey = self.follows.pop(did, None)
            if rkey is not None:
                self.repo[FOLLOW].pop(rkey, None)
                self._sorted.pop(FOLLOW, None)
                self._sorted.pop("follows", None)

    def add_follower(self, did: str, at: datetime | None = None) -> None:
        with self._lock:
            micros = micros_of(at) if at else self.now_us()
            self.followers[did] = (tid(micros, 7), micros // 1000)
            self._sorted.pop("followers", None)

    def remove_follower(self, did: str) -> None:
        with self._lock:
            self.followers.pop(did, None)
            self._sorted.pop("followers", None)

    def delete_actor(self, did: str) -> None:
        """Their account is deleted, as the reference network shows it: they vanish from the
        appview (profiles, getFollows, getFollowers, relationships: not found), their
        notifications go (the appview's indexer deletes those they authored), and the
        account's own follow record of them stays in its repository, dangling."""
        with self._lock:
            self.actors[did].deleted = True
            self.followers.pop(did, None)
            self._sorted.pop("followers", None)
            self._sorted.pop("follows", None)
            self.notifications = [n for n in self.notifications if n.author != did]

    def see_notifications(self, at: datetime) -> None:
        """The person opens their notifications in the app at ``at``.

        The appview then deletes every notification that sorts more than 30 days before
        that moment (its ``tidyNotifications``: BEFORE_LAST_SEEN_DAYS = 30).
        """
        with self._lock:
            self.seen_at = micros_of(at)
            cutoff_ms = (self.seen_at - 30 * 86_400_000_000) // 1000
            self.notifications = [n for n in self.notifications if n.sort_ms >= cutoff_ms]

    def notify(
        self,
        author: str,
        reason: str,
        at: datetime,
        *,
        indexed_at: datetime | None = None,
    ) -> Notification:
        """``author`` did something to the account; ``at`` is the record's createdAt."""
        with self._lock:
            created = micros_of(at)
            indexed = micros_of(indexed_at) if indexed_at else created
            collection = {"like": LIKE, "like-via-repost": LIKE, "follow": FOLLOW}.get(
                reason, REPOST if "repost" in reason else POST
            )
            rkey = tid(created, len(self.notifications) & 0x3FF)
            subject = None
            if reason != "follow":
                subject = f"at://{self.me.did}/{POST}/{tid(created - 3_600_000_000)}"
            uri = f"at://{author}/{collection}/{rkey}"
            item = Notification(
                min(created, indexed) // 1000,
                cid_for(uri),
                author,
                reason,
                rkey,
                subject,
                created,
                indexed,
            )
            bisect.insort(self.notifications, item, key=lambda n: n.key)
            kind = EXCHANGE_REASONS.get(reason)
            if kind is not None and author != self.me.did:
                self.truth[(author, kind, "inbound")] += 1
            return item

    def post(
        self,
        at: datetime,
        *,
        reply_to: str | None = None,
        quote_of: str | None = None,
        mentions: Sequence[str] = (),
        text: str = "hello",
    ) -> str:
        """The account posts; each DID it answers, quotes or mentions is one exchange."""
        with self._lock:
            micros = micros_of(at)
            rkey = self._next_tid(micros)
            record: dict[str, Any] = {"$type": POST, "text": text, "createdAt": iso(micros)}
            if reply_to is not None:
                parent = f"at://{reply_to}/{POST}/{tid(micros - 60_000_000, 3)}"
                ref = {"uri": parent, "cid": cid_for(parent)}
                record["reply"] = {"root": ref, "parent": ref}
                self._count(reply_to, "reply")
            if quote_of is not None:
                quoted = f"at://{quote_of}/{POST}/{tid(micros - 120_000_000, 5)}"
                record["embed"] = {
                    "$type": "app.bsky.embed.record",
                    "record": {"uri": quoted, "cid": cid_for(quoted)},
                }
                self._count(quote_of, "quote")
            facets = []
            for index, did in enumerate(mentions):
                facets.append(
                    {
                        "index": {"byteStart": index * 10, "byteEnd": index * 10 + 8},
                        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did}],
                    }
                )
                self._count(did, "mention")
            if facets:
                record["facets"] = facets
            self.repo[POST][rkey] = record
            self._sorted.pop(POST, None)
            return f"at://{self.me.did}/{POST}/{rkey}"

    def repost(self, author: str, at: datetime) -> str:
        return self._subject_record(REPOST, author, at, "repost")

    def like(self, author: str, at: datetime) -> str:
        return self._subject_record(LIKE, author, at, "like")

    def _subject_record(self, collection: str, author: str, at: datetime, kind: str) -> str:
        with self._lock:
            micros = micros_of(at)
            rkey = self._next_tid(micros)
            subject = f"at://{author}/{POST}/{tid(micros - 7_200_000_000, 9)}"
            self.repo[collection][rkey] = {
                "$type": collection,
                "subject": {"uri": subject, "cid": cid_for(subject)},
                "createdAt": iso(micros),
            }
            self._sorted.pop(collection, None)
            self._count(author, kind)
            return f"at://{self.me.did}/{collection}/{rkey}"

    def put_record(self, collection: str, rkey: str, value: dict[str, Any]) -> str:
        """A record exactly as given (no ground truth kept): for shapes taken from recordings."""
        with self._lock:
            self.repo.setdefault(collection, {})[rkey] = value
            self._sorted.pop(collection, None)
            return f"at://{self.me.did}/{collection}/{rkey}"

    def _count(self, did: str, kind: str) -> None:
        if did != self.me.did:
            self.truth[(did, kind, "outbound")] += 1

    # -- ground truth -------------------------------------------------------------------

    def answer(self, nsid: str, **params: str) -> dict[str, Any]:
        """What a GET of ``nsid`` returns to the account (no HTTP, no counting, no faults)."""
        with self._lock:
            token = self._issue(self.me.did)["accessJwt"]
            query = {k: [v] for k, v in params.items()}
            _status, _headers, body = self.handle(
                "GET", nsid, query, None, {"Authorization": f"Bearer {token}"}
            )
            return dict(body)

    def connections(self) -> dict[str, tuple[bool, bool]]:
        """DID -> (the account follows them, they follow the account)."""
        dids = set(self.follows) | set(self.followers)
        return {d: (d in self.follows, d in self.followers) for d in dids}

    def follow_uri(self, did: str) -> str | None:
        rkey = self.follows.get(did)
        return f"at://{self.me.did}/{FOLLOW}/{rkey}" if rkey else None

    def exchange_notifications(self) -> int:
        return sum(1 for n in self.notifications if n.reason in EXCHANGE_REASONS)

    # -- faults and limits --------------------------------------------------------------

    # Faults: ``inject(kind, nsid)`` and ``at_random(rate, FAULTS, rng)`` (FaultQueue); the
    # session calls are never faulted at random.

    def calm(self) -> None:
        with self._lock:
            self.at_random(0, (), random.Random())
            self.faults.clear()

    def revoke_sessions(self) -> None:
        """Every token stops working (a password change, or the person revoked the app)."""
        with self._lock:
            self._sessions.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.logins = 0
            self.refreshes = 0
            self.write_log.clear()

    def _window(self, times: list[float], now: float, seconds: float) -> list[float]:
        while times and times[0] <= now - seconds:
            times.pop(0)
        return times

    def _limit_headers(
        self, limit: int, remaining: int, reset: float, window: int
    ) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(max(0, remaining)),
            "RateLimit-Reset": str(int(reset)),
            "RateLimit-Policy": f"{limit};w={window}",
        }

    def _rate_limited(self, headers: dict[str, str]) -> _Reply:
        return _Reply(429, "RateLimitExceeded", "Rate Limit Exceeded", headers)

    # -- tokens -------------------------------------------------------------------------

    def _issue(self, did: str) -> dict[str, Any]:
        now = int(time.time())  # the SDK compares ``exp`` with the wall clock
        session = self._sessions.setdefault(did, _Session(did))
        header = _b64({"typ": "at+jwt", "alg": "ES256K"})
        access_claims = {
            "scope": "com.atproto.appPass",
            "sub": did,
            "aud": "did:web:fake.pds.test",
            "iat": now,
            "exp": now + int(self.access_ttl),
        }
        refresh_claims = {
            "scope": "com.atproto.refresh",
            "sub": did,
            "aud": "did:web:fake.pds.test",
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + 90 * 86400,
        }
        signature = secrets.token_urlsafe(32)
        access = f"{header}.{_b64(access_claims)}.{signature}"
        refresh = f"{header}.{_b64(refresh_claims)}.{secrets.token_urlsafe(32)}"
        session.access.add(access)
        session.refresh.add(refresh)
        actor = self.actors[did]
        return {
            "accessJwt": access,
            "refreshJwt": refresh,
            "handle": actor.handle,
            "did": did,
            "active": True,
        }

    def _authorize(self, headers: Any, *, refresh: bool = False) -> str:
        value = headers.get("Authorization") or ""
        if not value.startswith("Bearer "):
            raise _Reply(401, "AuthMissing", "Authentication Required")
        token = value.removeprefix("Bearer ")
        for session in self._sessions.values():
            if token in (session.refresh if refresh else session.access):
                if not refresh and _expired(token):
                    raise _Reply(400, "ExpiredToken", "Token has expired")
                return session.did
        raise _Reply(400, "ExpiredToken", "Token has been revoked")

    # -- endpoints ----------------------------------------------------------------------

    def handle(
        self, method: str, nsid: str, query: dict[str, list[str]], body: Any, headers: Any
    ) -> tuple[int, dict[str, str], Any]:
        """Answer one XRPC call: (status, headers, JSON body)."""
        now = self.clock().timestamp()
        requests = self._window(self._request_times, now, 300)
        if len(requests) >= self.ip_limit:
            reset = requests[0] + 300
            raise self._rate_limited(self._limit_headers(self.ip_limit, 0, reset, 300))
        requests.append(now)
        limit = self._limit_headers(self.ip_limit, self.ip_limit - len(requests), now + 300, 300)
        if nsid == "com.atproto.server.createSession":
            return 200, limit, self._create_session(body, now)
        if nsid == "com.atproto.server.refreshSession":
            did = self._authorize(headers, refresh=True)
            token = headers.get("Authorization").removeprefix("Bearer ")
            self._sessions[did].refresh.discard(token)  # refresh tokens are single-use
            self.refreshes += 1
            return 200, limit, self._issue(did)
        viewer = self._authorize(headers)
        if nsid in _WRITE_NSIDS:
            limit = self._charge(nsid, now)
        route = _ROUTES.get(nsid)
        if route is None:
            raise _Reply(404, "MethodNotImplemented", f"Method Not Implemented: {nsid}")
        args = {k: v for k, v in query.items()} if method == "GET" else body
        return 200, limit, route(self, viewer, args)

    def _create_session(self, body: Any, now: float) -> dict[str, Any]:
        logins = self._window(self._login_times, now, 300)
        if len(logins) >= 30:
            headers = self._limit_headers(30, 0, logins[0] + 300, 300)
            raise self._rate_limited(headers)
        logins.append(now)
        identifier = str((body or {}).get("identifier", "")).lstrip("@")
        if (
            identifier not in (self.me.handle, self.me.did)
            or (body or {}).get("password") != self.app_password
        ):
            raise _Reply(401, "AuthenticationRequired", "Invalid identifier or password")
        self.logins += 1
        return self._issue(self.me.did)

    def _charge(self, nsid: str, now: float) -> dict[str, str]:
        points = _WRITE_POINTS["delete" if nsid.endswith("deleteRecord") else "create"]
        hour_limit, _day_limit = self.write_limits
        recent = [(t, p) for t, p in self._write_points if t > now - 3600]
        spent = sum(p for _, p in recent)
        reset = (recent[0][0] if recent else now) + 3600
        if spent + points > hour_limit:
            raise self._rate_limited(
                self._limit_headers(hour_limit, hour_limit - spent, reset, 3600)
            )
        self._write_points.append((now, points))
        return self._limit_headers(hour_limit, hour_limit - spent - points, reset, 3600)

    # views

    def _profile(self, did: str, viewer: str) -> dict[str, Any]:
        actor = self.actors.get(did)
        if actor is None or actor.deleted:
            raise _Reply(400, "InvalidRequest", "Profile not found")
        view: dict[str, Any] = {
            "did": actor.did,
            "handle": actor.handle,
            "associated": {"chat": {"allowIncoming": "all"}},
            "labels": [],
            "indexedAt": iso(actor.created_us),
        }
        # The profile record's createdAt, as its client wrote it; no record, no date.
        if actor.profile_created_us is not None:
            view["createdAt"] = iso(actor.profile_created_us)
        if actor.display_name is not None:
            view["displayName"] = actor.display_name
        if viewer == self.me.did and did != self.me.did:
            relation: dict[str, Any] = {"muted": False, "blockedBy": False}
            following = self.follow_uri(did)
            if following:
                relation["following"] = following
            if did in self.followers:
                relation["followedBy"] = f"at://{did}/{FOLLOW}/{self.followers[did][0]}"
            view["viewer"] = relation
        else:
            view["viewer"] = {"muted": False, "blockedBy": False}
        return view

    def _actor(self, args: dict[str, list[str]], name: str = "actor") -> str:
        value = (args.get(name) or [""])[0]
        for actor in self.actors.values():
            if value in (actor.did, actor.handle) and not actor.deleted:
                return actor.did
        raise _Reply(400, "InvalidRequest", "Profile not found")

    def _shown(self, did: str) -> bool:
        actor = self.actors.get(did)
        return actor is not None and not actor.deleted

    def _get_profiles(self, viewer: str, args: dict[str, list[str]]) -> dict[str, Any]:
        wanted = args.get("actors", [])
        if not 1 <= len(wanted) <= 25:
            raise _Reply(400, "InvalidRequest", "actors must name 1 to 25 accounts")
        profiles = []
        for value in wanted:
            found = next((a for a in self.actors.values() if value in (a.did, a.handle)), None)
            # As the appview does: an account it cannot show is left out, not an error.
            if found is not None and not found.deleted:
                profiles.append(self._profile(found.did, viewer))
        return {"profiles": profiles}

    def plc_document(self, did: str) -> dict[str, Any]:
        """A DID document as the PLC directory serves it (it outlives a deleted account)."""
        actor = self.actors.get(did)
        if actor is None:
            raise _Reply(404, "NotFound", f"DID not registered: {did}")
        return {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": did,
            "alsoKnownAs": [f"at://{actor.handle}"],
            "verificationMethod": [],
            "service": [],
        }

    def plc_audit(self, did: str) -> list[dict[str, Any]]:
        """The PLC directory's audit log of a DID: its operations, each dated by the directory."""
        actor = self.actors.get(did)
        if actor is None:
            raise _Reply(404, "NotFound", f"DID not registered: {did}")
        operation = {
            "type": "plc_operation",
            "prev": None,
            "alsoKnownAs": [f"at://{actor.handle}"],
            "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer"}},
        }
        return [
            {
                "did": did,
                "operation": operation,
                "cid": cid_for(f"genesis-{did}"),
                "nullified": False,
                "createdAt": iso(actor.created_us),
            }
        ]

    def _get_profile(self, viewer: str, args: dict[str, list[str]]) -> dict[str, Any]:
        did = self._actor(args)
        profile = self._profile(did, viewer)
        profile["followersCount"] = len(self.followers) if did == self.me.did else 0
        profile["followsCount"] = len(self.follows) if did == self.me.did else 0
        profile["postsCount"] = len(self.repo[POST]) if did == self.me.did else 0
        return profile

    def _get_session(self, viewer: str, _args: dict[str, list[str]]) -> dict[str, Any]:
        actor = self.actors[viewer]
        return {"handle": actor.handle, "did": actor.did, "active": True}

    def _graph_page(
        self, viewer: str, args: dict[str, list[str]], which: Literal["follows", "followers"]
    ) -> dict[str, Any]:
        subject = self._actor(args)
        limit = _limit(args)
        if subject != self.me.did:
            rows: list[tuple[int, str, str]] = []
        else:
            rows = self._sorted.get(which) or self._build_graph(which)
        # newest first: rows are ascending, so walk down from the cursor
        cursor = _unpack_cursor(args)
        end = bisect.bisect_left(rows, cursor) if cursor else len(rows)
        start = max(0, end - limit)
        page = rows[start:end][::-1]
        body: dict[str, Any] = {
            "subject": self._profile(subject, viewer),
            # A deleted account, or one the appview has not indexed, drops out of the
            # listings (it cannot show it); the page still ends where it would have.
            which: [self._profile(did, viewer) for _, _, did in page if self._shown(did)],
        }
        if start > 0 and page:
            body["cursor"] = f"{page[-1][0]}__{page[-1][1]}"
        return body

    def _build_graph(self, which: str) -> list[tuple[int, str, str]]:
        if which == "follows":
            rows = []
            for did, rkey in self.follows.items():
                ms = _tid_micros(rkey) // 1000
                rows.append((ms, cid_for(f"{self.me.did}/{rkey}"), did))
        else:
            rows = [
                (ms, cid_for(f"{did}/{rkey}"), did) for did, (rkey, ms) in self.followers.items()
            ]
        rows.sort()
        self._sorted[which] = rows
        return rows

    def _get_follows(self, viewer: str, args: dict[str, list[str]]) -> dict[str, Any]:
        return self._graph_page(viewer, args, "follows")

    def _get_followers(self, viewer: str, args: dict[str, list[str]]) -> dict[str, Any]:
        return self._graph_page(viewer, args, "followers")

    def _get_relationships(self, viewer: str, args: dict[str, list[str]]) -> dict[str, Any]:
        actor = self._actor(args)
        relationships: list[dict[str, Any]] = []
        for other in args.get("others", []):
            found = next((a.did for a in self.actors.values() if other in (a.did, a.handle)), None)
            if found is not None and self.actors[found].deleted:
                # The reference appview answers for a deleted account as for one not followed:
                # a relationship naming only its DID (the account's follow record stays).
                relationships.append({"$type": "app.bsky.graph.defs#relationship", "did": found})
                continue
            if found is None:
                relationships.append(
                    {"$type": "app.bsky.graph.defs#notFoundActor", "actor": other, "notFound": True}
                )
                continue
            item: dict[str, Any] = {"$type": "app.bsky.graph.defs#relationship", "did": found}
            if actor == self.me.did:
                following = self.follow_uri(found)
                if following:
                    item["following"] = following
                if found in self.followers:
                    item["followedBy"] = f"at://{found}/{FOLLOW}/{self.followers[found][0]}"
            relationships.append(item)
        return {"actor": actor, "relationships": relationships}

    def _list_notifications(self, viewer: str, args: dict[str, list[str]]) -> dict[str, Any]:
        limit = _limit(args)
        reasons = set(args.get("reasons", [])) or None
        cursor = _unpack_cursor(args)
        items = self.notifications if viewer == self.me.did else []
        index = bisect.bisect_left(items, cursor, key=lambda n: n.key) if cursor else len(items)
        page: list[Notification] = []
        more = False
        now = self.now_us()
        while index > 0:
            index -= 1
            candidate = items[index]
            if reasons is not None and candidate.reason not in reasons:
                continue
            if candidate.indexed_us > now:
                continue  # not indexed yet: the appview does not know of it
            if len(page) == limit:
                more = True
                break
            page.append(candidate)
        body: dict[str, Any] = {
            "notifications": [self._notification(n, viewer) for n in page],
            "priority": False,
        }
        if more and page:
            body["cursor"] = f"{page[-1].sort_ms}__{page[-1].cid}"
        return body

    def _notification(self, item: Notification, viewer: str) -> dict[str, Any]:
        collection = {"like": LIKE, "like-via-repost": LIKE, "follow": FOLLOW}.get(
            item.reason, REPOST if "repost" in item.reason else POST
        )
        uri = f"at://{item.author}/{collection}/{item.rkey}"
        created = iso(item.created_us)
        record: dict[str, Any]
        if collection in (LIKE, REPOST):
            assert item.subject is not None
            subject = {"uri": item.subject, "cid": cid_for(item.subject)}
            record = {"$type": collection, "subject": subject, "createdAt": created}
        elif collection == FOLLOW:
            record = {"$type": FOLLOW, "subject": self.me.did, "createdAt": created}
        else:
            assert item.subject is not None
            record = {"$type": POST, "text": "hi", "createdAt": created}
            ref = {"uri": item.subject, "cid": cid_for(item.subject)}
            if item.reason == "reply":
                record["reply"] = {"root": ref, "parent": ref}
            elif item.reason == "quote":
                record["embed"] = {"$type": "app.bsky.embed.record", "record": ref}
            elif item.reason == "mention":
                feature = {"$type": "app.bsky.richtext.facet#mention", "did": self.me.did}
                record["facets"] = [
                    {"index": {"byteStart": 0, "byteEnd": 8}, "features": [feature]}
                ]
        body: dict[str, Any] = {
            "uri": uri,
            "cid": item.cid,
            "author": self._profile(item.author, viewer),
            "reason": item.reason,
            "record": record,
            "isRead": False,
            "indexedAt": iso(item.sort_ms * 1000),
            "labels": [],
        }
        if item.subject is not None:
            body["reasonSubject"] = item.subject
        return body

    def _repo_rkeys(self, collection: str) -> list[str]:
        keys = self._sorted.get(collection)
        if keys is None:
            keys = sorted(self.repo.get(collection, {}))
            self._sorted[collection] = keys
        return keys

    def _list_records(self, _viewer: str, args: dict[str, list[str]]) -> dict[str, Any]:
        repo = self._actor(args, "repo")
        collection = (args.get("collection") or [""])[0]
        limit = _limit(args, default=50)
        reverse = (args.get("reverse") or ["false"])[0] == "true"
        cursor = (args.get("cursor") or [""])[0]
        keys = self._repo_rkeys(collection) if repo == self.me.did else []
        if reverse:
            start = bisect.bisect_right(keys, cursor) if cursor else 0
            chosen = keys[start : start + limit]
        else:
            end = bisect.bisect_left(keys, cursor) if cursor else len(keys)
            chosen = keys[max(0, end - limit) : end][::-1]
        records = []
        for rkey in chosen:
            uri = f"at://{repo}/{collection}/{rkey}"
            records.append({"uri": uri, "cid": cid_for(uri), "value": self.repo[collection][rkey]})
        body: dict[str, Any] = {"records": records}
        if chosen:
            body["cursor"] = chosen[-1]  # as the PDS does: the last key of any non-empty page
        return body

    def _repo_write_target(self, body: Any) -> tuple[str, str]:
        if not isinstance(body, dict):
            raise _Reply(400, "InvalidRequest", "Input must be an object")
        repo = str(body.get("repo", ""))
        if repo not in (self.me.did, self.me.handle):
            raise _Reply(400, "InvalidRequest", "Invalid repo")
        return self.me.did, str(body.get("collection", ""))

    def _delete_record(self, _viewer: str, body: Any) -> dict[str, Any]:
        _repo, collection = self._repo_write_target(body)
        rkey = str(body.get("rkey", ""))
        record = self.repo.get(collection, {}).pop(rkey, None)
        # "Delete a repository record, or ensure it doesn't exist": a missing one is no error
        if record is not None and collection == FOLLOW:
            self.follows.pop(str(record.get("subject")), None)
            self._sorted.pop("follows", None)
        self._sorted.pop(collection, None)
        self.write_log.append(("delete", collection, rkey))
        return {"commit": {"cid": cid_for(f"commit-{rkey}"), "rev": tid(self.now_us())}}

    def _create_record(self, _viewer: str, body: Any) -> dict[str, Any]:
        repo, collection = self._repo_write_target(body)
        record = body.get("record")
        if not isinstance(record, dict):
            raise _Reply(400, "InvalidRequest", "Input/record must be an object")
        rkey = str(body.get("rkey") or self._next_tid(self.now_us()))
        if collection in (FOLLOW, LIKE, REPOST):
            # As the reference PDS does: a new follow, like or repost of the same subject
            # replaces the older record (its "backlink conflicts" are deleted).
            subject = record.get("subject")
            key = subject.get("uri") if isinstance(subject, dict) else subject
            for old, value in list(self.repo.get(collection, {}).items()):
                other = value.get("subject")
                if (other.get("uri") if isinstance(other, dict) else other) == key:
                    del self.repo[collection][old]
        self.repo.setdefault(collection, {})[rkey] = record
        self._sorted.pop(collection, None)
        if collection == FOLLOW:
            self.follows[str(record.get("subject"))] = rkey
            self._sorted.pop("follows", None)
        self.write_log.append(("create", collection, rkey))
        uri = f"at://{repo}/{collection}/{rkey}"
        return {
            "uri": uri,
            "cid": cid_for(uri),
            "commit": {"cid": cid_for(f"commit-{rkey}"), "rev": tid(self.now_us())},
            "validationStatus": "valid",
        }

    # -- synthetic networks -------------------------------------------------------------

    def populate(
        self,
        *,
        follows: int,
        followers: int,
        mutual: int,
        notifications: int,
        posts: int = 0,
        reposts: int = 0,
        likes: int = 0,
        quiet: int = 0,
        seed: int = 1,
        history: timedelta = timedelta(days=600),
        calm_before_now: timedelta = timedelta(hours=2),
    ) -> None:
        """A large network, built quickly and reproducibly from ``seed``.

        ``mutual`` of the follows also follow back; ``quiet`` of the follows never exchange
        anything (the people lopper should flag). Every exchange happens within ``history``
        and ends ``calm_before_now`` before the clock, so later additions are clearly new.
        """
        rng = random.Random(seed)
        end_us = self.now_us() - int(calm_before_now.total_seconds() * 1e6)
        start_us = end_us - int(history.total_seconds() * 1e6)
        created = datetime.fromtimestamp((start_us - 86_400_000_000 * 30) / 1e6, tz=UTC)
        followed = [self.add_actor(f"f{i}", created=created).did for i in range(follows)]
        others = [self.add_actor(f"r{i}", created=created).did for i in range(followers - mutual)]
        for index, did in enumerate(followed):
            followed_us = start_us - 86_400_000_000 * 20 + index * 1000
            self.follow(did, datetime.fromtimestamp(followed_us / 1e6, tz=UTC))
        for index, did in enumerate(followed[:mutual] + others):
            follower_us = start_us - 86_400_000_000 * 10 + index * 1000
            self.add_follower(did, datetime.fromtimestamp(follower_us / 1e6, tz=UTC))
        talkers = followed[quiet:] + others
        if not talkers:
            return
        reasons = ("like", "like", "like", "repost", "reply", "mention", "quote", "follow")
        times = sorted(rng.randrange(start_us, end_us) for _ in range(notifications))
        made: list[Notification] = []
        for index, created_us in enumerate(times):
            author = talkers[rng.randrange(len(talkers))]
            reason = reasons[rng.randrange(len(reasons))]
            collection = {"like": LIKE, "follow": FOLLOW}.get(
                reason, REPOST if reason == "repost" else POST
            )
            rkey = tid(created_us, index & 0x3FF)
            uri = f"at://{author}/{collection}/{rkey}"
            subject = None
            if reason != "follow":
                subject = f"at://{self.me.did}/{POST}/{tid(created_us - 3_600_000_000)}"
                self.truth[(author, EXCHANGE_REASONS[reason], "inbound")] += 1
            made.append(
                Notification(
                    created_us // 1000, cid_for(uri), author, reason, rkey, subject, created_us
                )
            )
        made.sort(key=lambda n: n.key)
        self.notifications = sorted(self.notifications + made, key=lambda n: n.key)

        def moments(count: int) -> Iterator[datetime]:
            for micros in sorted(rng.randrange(start_us, end_us) for _ in range(count)):
                yield datetime.fromtimestamp(micros / 1e6, tz=UTC)

        for at in moments(posts):
            target = talkers[rng.randrange(len(talkers))]
            shape = rng.randrange(4)
            if shape == 0:
                self.post(at, reply_to=target)
            elif shape == 1:
                self.post(at, quote_of=target)
            elif shape == 2:
                self.post(at, mentions=[target])
            else:
                self.post(at, text="thinking aloud")  # no exchange with anyone
        for at in moments(reposts):
            self.repost(talkers[rng.randrange(len(talkers))], at)
        for at in moments(likes):
            self.like(talkers[rng.randrange(len(talkers))], at)


def _expired(token: str) -> bool:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return True
    return bool(claims.get("exp", 0) <= time.time())


def _limit(args: dict[str, list[str]], default: int = 50) -> int:
    try:
        value = int((args.get("limit") or [str(default)])[0])
    except ValueError:
        raise _Reply(400, "InvalidRequest", "limit must be an integer") from None
    if not 1 <= value <= 100:
        raise _Reply(400, "InvalidRequest", "limit must be between 1 and 100")
    return value


def _unpack_cursor(args: dict[str, list[str]]) -> tuple[int, str] | None:
    raw = (args.get("cursor") or [""])[0]
    if not raw:
        return None
    primary, _, secondary = raw.partition("__")
    if not primary.isdigit() or not secondary:
        raise _Reply(400, "InvalidRequest", "Malformed cursor")
    return (int(primary), secondary)


def _tid_micros(rkey: str) -> int:
    value = 0
    for char in rkey:
        value = value * 32 + _TID_ALPHABET.index(char)
    return value >> 10


Route = Callable[[FakeBluesky, str, Any], dict[str, Any]]
_ROUTES: dict[str, Route] = {
    "com.atproto.server.getSession": FakeBluesky._get_session,
    "app.bsky.actor.getProfile": FakeBluesky._get_profile,
    "app.bsky.actor.getProfiles": FakeBluesky._get_profiles,
    "app.bsky.graph.getFollows": FakeBluesky._get_follows,
    "app.bsky.graph.getFollowers": FakeBluesky._get_followers,
    "app.bsky.graph.getRelationships": FakeBluesky._get_relationships,
    "app.bsky.notification.listNotifications": FakeBluesky._list_notifications,
    "com.atproto.repo.listRecords": FakeBluesky._list_records,
    "com.atproto.repo.deleteRecord": FakeBluesky._delete_record,
    "com.atproto.repo.createRecord": FakeBluesky._create_record,
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's httpx client expects
    server_fake: FakeBluesky

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add tens of milliseconds to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        fake = self.server_fake
        parts = urlsplit(self.path)
        if parts.path.startswith("/did:"):
            self._serve_plc(parts.path.strip("/"))
            return
        nsid = parts.path.removeprefix("/xrpc/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with fake._lock:
            fake.requests[nsid] += 1
            fault = fake._take_fault(nsid)
            if fault == "drop":
                self.close_connection = True
                return
            try:
                if fault is not None and fault not in ("drop_after", "malformed"):
                    raise _fault_reply(fault, fake)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    raise _Reply(400, "InvalidRequest", "Request body is not JSON") from None
                status, headers, answer = fake.handle(
                    method, nsid, parse_qs(parts.query), body, self.headers
                )
                if fault == "drop_after":
                    self.close_connection = True
                    return
                payload = json.dumps(answer).encode()
                if fault == "malformed":
                    payload = payload[: len(payload) // 2]
            except _Reply as reply:
                status, headers = reply.status, reply.headers
                payload = json.dumps({"error": reply.error, "message": reply.message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _serve_plc(self, path: str) -> None:
        """The PLC directory, served beside the PDS (``plc_url`` names the same server):
        ``/<did>`` is the DID document, ``/<did>/log/audit`` its operations."""
        fake = self.server_fake
        did, _, rest = path.partition("/")
        route = PLC_AUDIT if rest == "log/audit" else PLC_DOCUMENT
        with fake._lock:
            fake.requests[route] += 1
            fault = fake._take_fault(route)
            try:
                if fault is not None:
                    raise _fault_reply(fault, fake)
                answer = fake.plc_audit(did) if route == PLC_AUDIT else fake.plc_document(did)
                status, payload = 200, json.dumps(answer).encode()
            except _Reply as reply:
                status = reply.status
                payload = json.dumps({"message": reply.message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _fault_reply(kind: Fault, fake: FakeBluesky) -> _Reply:
    reset = fake.clock().timestamp() + 300
    if kind == "429":
        return fake._rate_limited(fake._limit_headers(fake.ip_limit, 0, reset, 300))
    if kind == "500":
        return _Reply(500, "InternalServerError", "Internal Server Error")
    if kind == "502":
        return _Reply(502, "UpstreamFailure", "Upstream Failure")
    if kind == "expired":
        return _Reply(400, "ExpiredToken", "Token has expired")
    if kind == "takedown":  # what the PDS's auth verifier answers for a suspended account
        return _Reply(401, "AccountTakedown", "Account has been taken down")
    return _Reply(401, "AuthenticationRequired", "Authentication Required")
