"""The X archive ("Download an archive of your data"): a zip, or the folder it unpacks to.

Each data file is JavaScript: ``window.YTD.<name>.part0 = [ ... ]``, large ones continued in
``<name>-part1.js`` and so on. The prefix is stripped and the array read one element at a
time (:func:`records`): memory stays flat whatever the size, and the JSON is parsed by the
standard library's C scanner, so throughput stays close to ``json.loads`` of the whole file.
Nothing is ever executed.

What is read (https://help.x.com/en/managing-your-account/accessing-your-x-data):

- ``account.js``: whose archive it is (it must be the configured account); some archives
  circulate without it, and then ``manifest.js`` (``userInfo``) names the owner;
- ``following.js`` / ``follower.js``: ids only (no handle, no date): a person not yet in the
  store is added as ``x:<id>`` with X's intent link, and the next sync through the API names
  them; people the store already knows are left as the API last listed them;
- ``tweets.js`` (``tweet.js`` in older archives): the account's replies, mentions and reposts,
  each dated, with the same ids the API adapter gives them, so the two never count twice;
- ``direct-messages.js`` and ``direct-messages-group.js``: messages both ways, dated;
- ``like.js``: the liked post only, no author and no date. With the API configured the authors
  are looked up 100 posts a request; a like counts as of the archive's date (the latest it can
  have happened). Without the API they are counted as unattributed and the report says so.

The archive vouches for the streams it holds (``posts``, ``messages``, and ``likes`` when every
like was attributed) from the account's creation to the archive's date. Everything is written
in one transaction: a damaged file leaves the store as it was.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Account as AccountConfig
from service.costs import Usage, record_usage
from service.imports.common import record_import_run
from service.imports.export import Export, ExportError, open_export
from service.model import Direction, Kind, Span
from service.platforms.base import Exchange, Person, PlatformError
from service.store import Store
from service.store.models import Connection, Interaction
from service.sync import ensure_account, extend_coverage, save_exchanges, save_people

CHUNK = 1 << 20  # characters read at a time
MAX_ELEMENT = 32 << 20  # characters of one record (a real one is a few kilobytes)
MAX_MANIFEST = 16 << 20  # bytes of manifest.js (a real one: a few kilobytes)
BATCH = 5000  # exchanges written at a time
LOOKUP = 100  # posts per lookup request (X's most)
POSTS, MESSAGES, LIKES = "posts", "messages", "likes"  # the API adapter's stream names
_PREFIX = re.compile(r"\s*window\.YTD\.([A-Za-z0-9_]+)\.part(\d+)\s*=\s*")
_THAR = re.compile(r"\s*window\.__THAR_CONFIG\s*=\s*")
_IN, _OUT = Direction.INBOUND, Direction.OUTBOUND

Tick = Callable[[int], None]
Lookup = Callable[[Sequence[str]], Mapping[str, str]]  # post ids (<= 100) -> author ids


@dataclass
class ArchiveReport:
    account: str
    generated: datetime | None = None
    files: list[str] = field(default_factory=list)
    connections_new: int = 0
    exchanges_read: int = 0
    exchanges_new: int = 0
    likes: int = 0
    likes_attributed: int = 0
    likes_unattributed: int = 0
    likes_note: str | None = None
    covered: dict[str, Span] = field(default_factory=dict)
    cost_micros: int = 0
    earliest: datetime | None = None  # the oldest exchange read


# --- reading the files -------------------------------------------------------------------


def records(export: Export, member: str, tick: Tick | None = None) -> Iterator[Any]:
    """The elements of one ``window.YTD.<name>.partN = [...]`` file, one at a time."""
    where = export.describe(member)
    decoder = json.JSONDecoder()
    with export.open(member) as raw, export.reading(member):
        text = io.TextIOWrapper(raw, encoding="utf-8-sig")
        first = max(CHUNK, 4096)  # the prefix whole
        buf = text.read(first)
        eof = len(buf) < first
        done_bytes = 0

        def advance() -> None:
            nonlocal done_bytes
            if tick is not None:
                position = raw.tell()
                tick(position - done_bytes)
                done_bytes = position

        match = _PREFIX.match(buf)
        if match is None:
            raise ExportError(f"{where}: not an X archive data file (no window.YTD prefix)")
        pos = match.end()
        lines = 0  # newlines in the text already dropped from the buffer

        def refill() -> bool:
            nonlocal buf, pos, eof, lines
            if eof:
                return False
            more = text.read(CHUNK)
            eof = len(more) < CHUNK
            lines += buf.count("\n", 0, pos)
            buf, pos = buf[pos:] + more, 0
            advance()
            return bool(more)

        def skip(chars: str) -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in chars:
                    pos += 1
                if pos < len(buf) or not refill():
                    return

        def broken(message: str, at: int) -> ExportError:
            line = lines + buf.count("\n", 0, at) + 1
            return ExportError(
                f"{where}: broken JSON at line {line} ({message}); the archive may be damaged or "
                "cut short: download it again"
            )

        skip(" \t\r\n")
        if pos >= len(buf) or buf[pos] != "[":
            raise broken("expected [ after the window.YTD prefix", pos)
        pos += 1
        first = True
        while True:
            skip(" \t\r\n")
            if pos >= len(buf):
                raise broken("the list never ends", pos)
            if buf[pos] == "]":
                advance()
                return
            if not first:
                if buf[pos] != ",":
                    raise broken("expected , between elements", pos)
                pos += 1
                skip(" \t\r\n")
            first = False
            while True:
                try:
                    item, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as exc:
                    # Ran out of text mid-element: read on. Anything else is damage.
                    # (an escape or a number cut by the chunk's end fails a few characters back)
                    short = exc.pos >= len(buf) - 16 or exc.msg.startswith("Unterminated string")
                    if len(buf) - pos > MAX_ELEMENT:
                        raise ExportError(
                            f"{where}: one record runs past {MAX_ELEMENT:,} characters; not an "
                            "archive file lopper can read"
                        ) from None
                    if not (short and refill()):
                        raise broken(exc.msg, exc.pos) from None
                except RecursionError:
                    raise ExportError(
                        f"{where}: JSON nested too deeply to be an archive file; refused"
                    ) from None
            pos = end
            yield item


def _parse_thar(export: Export, member: str) -> Mapping[str, Any]:
    if export.size(member) > MAX_MANIFEST:
        raise ExportError(f"{export.describe(member)}: too large to be an archive's manifest")
    with export.open(member) as raw, export.reading(member):
        text = raw.read(MAX_MANIFEST + 1).decode("utf-8-sig")
    match = _THAR.match(text)
    try:
        body = json.loads(text[match.end() :].rstrip().rstrip(";")) if match else None
    except json.JSONDecodeError as exc:
        raise ExportError(f"{export.describe(member)}: broken JSON ({exc.msg})") from None
    except RecursionError:
        raise ExportError(f"{export.describe(member)}: JSON nested too deeply; refused") from None
    return body if isinstance(body, Mapping) else {}


_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


def _post_time(value: str) -> datetime:
    """``Mon Nov 07 20:42:53 +0000 2022``, read by hand: ``strptime`` took a third of an import."""
    _day, month, day, clock, offset, year = value.split()
    hour, minute, second = clock.split(":")
    moment = datetime(
        int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
    )
    if offset != "+0000":
        sign = -1 if offset[0] == "-" else 1
        moment -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
    return moment


def _time(value: Any, where: str) -> datetime:
    """``Mon Nov 07 20:42:53 +0000 2022`` (posts) or ISO 8601 (everything else)."""
    if isinstance(value, str):
        try:
            if value[:3].isalpha():
                return _post_time(value)
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        except (ValueError, KeyError):
            pass
    raise ExportError(f"{where}: {value!r} is not a date")


@contextmanager
def _shaped(where: str) -> Iterator[None]:
    """A record of a shape the reader did not expect is damage too: say which file."""
    try:
        yield
    except ExportError:
        raise
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        raise ExportError(
            f"{where}: a record of an unexpected shape ({type(exc).__name__}: {exc})"
        ) from None


def _inner(item: Any, key: str, where: str) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        inner = item.get(key, item)  # the oldest archives list the objects bare
        if isinstance(inner, Mapping):
            return inner
    raise ExportError(f"{where}: an element that is not a {key!r} record")


# --- what the records say ------------------------------------------------------------------


def post_exchanges(tweet: Mapping[str, Any], me: str, where: str) -> list[Exchange]:
    """The people one post of the account's own addresses, as the API adapter reads them."""
    post_id = str(tweet.get("id_str") or tweet.get("id") or "")
    if not post_id:
        raise ExportError(f"{where}: a post without its id")
    at = _time(tweet.get("created_at"), where)
    entities = tweet.get("entities")
    if not isinstance(entities, Mapping):
        entities = {}
    mentioned = [
        str(m.get("id_str") or m.get("id"))
        for m in entities.get("user_mentions") or ()
        if isinstance(m, Mapping) and (m.get("id_str") or m.get("id"))
    ]
    text = str(tweet.get("full_text") or tweet.get("text") or "")
    if text.startswith("RT @") and mentioned:
        targets = {mentioned[0]: Kind.REPOST}  # the reposted author comes first
    else:
        targets = dict.fromkeys(mentioned, Kind.MENTION)
        replied = tweet.get("in_reply_to_user_id_str") or tweet.get("in_reply_to_user_id")
        if replied:
            targets[str(replied)] = Kind.REPLY
    targets.pop(me, None)
    return [Exchange(f"out:{post_id}:{who}", who, kind, _OUT, at) for who, kind in targets.items()]


def message_exchanges(conversation: Mapping[str, Any], me: str, where: str) -> list[Exchange]:
    messages = [m for m in conversation.get("messages") or () if isinstance(m, Mapping)]
    people: set[str] = set()
    for message in messages:
        for key in ("joinConversation", "participantsJoin"):
            event = message.get(key)
            if isinstance(event, Mapping):
                people.update(str(u) for u in event.get("participantsSnapshot") or ())
                people.update(str(u) for u in event.get("userIds") or ())
                if event.get("initiatingUserId"):
                    people.add(str(event["initiatingUserId"]))
        create = message.get("messageCreate")
        if isinstance(create, Mapping) and create.get("senderId"):
            people.add(str(create["senderId"]))
            if create.get("recipientId"):
                people.add(str(create["recipientId"]))
    people.discard(me)
    found: list[Exchange] = []
    for message in messages:
        create = message.get("messageCreate")
        if not isinstance(create, Mapping):
            continue
        sender, event = str(create.get("senderId") or ""), str(create.get("id") or "")
        if not sender or not event:
            raise ExportError(f"{where}: a message without its sender or id")
        at = _time(create.get("createdAt"), where)
        recipient = str(create.get("recipientId") or "")
        if sender != me:
            found.append(Exchange(f"dm:{event}", sender, Kind.MESSAGE, _IN, at))
        elif recipient and recipient != me:
            found.append(Exchange(f"dm:{event}", recipient, Kind.MESSAGE, _OUT, at))
        else:  # to a group: one exchange with each of its members
            found.extend(
                Exchange(f"dm:{event}:{who}", who, Kind.MESSAGE, _OUT, at) for who in sorted(people)
            )
    return found


# --- the import ----------------------------------------------------------------------------


@dataclass
class _Members:
    account: list[str]
    manifest: list[str]
    following: list[str]
    followers: list[str]
    posts: list[str]
    messages: list[str]
    likes: list[str]

    def data(self) -> list[str]:
        return self.following + self.followers + self.posts + self.messages + self.likes


def _members(export: Export) -> _Members:
    def parts(*names: str) -> list[str]:
        return export.find(*[p for n in names for p in (f"data/{n}.js", f"data/{n}-part*.js")])

    tweets = parts("tweets") or parts("tweet")  # renamed in 2022; one generation per archive
    return _Members(
        account=export.find("data/account.js"),
        manifest=export.find("data/manifest.js"),
        following=parts("following"),
        followers=parts("follower"),
        posts=tweets,
        messages=parts("direct-messages", "direct-messages-group"),
        likes=parts("like"),
    )


def _owner(export: Export, member: str) -> tuple[str, str, datetime | None]:
    where = export.describe(member)
    with _shaped(where):
        for item in records(export, member):
            account = _inner(item, "account", where)
            owner, username = account.get("accountId"), account.get("username")
            if owner and username:
                created = account.get("createdAt")
                return str(owner), str(username), _time(created, where) if created else None
    raise ExportError(f"{where}: names no account")


def _identify(
    export: Export, members: _Members, config: AccountConfig, path: Path
) -> tuple[Mapping[str, Any], str, datetime | None]:
    """The manifest, the owner's id and the account's creation date, once the archive is
    known to be the configured account's; ExportError otherwise."""
    manifest = _parse_thar(export, members.manifest[0]) if members.manifest else {}
    info = manifest.get("userInfo")
    if members.account:
        where = export.describe(members.account[0])
        owner, username, created = _owner(export, members.account[0])
    elif isinstance(info, Mapping) and info.get("accountId"):
        # Archives passed around without account.js: the manifest names the owner too.
        where = export.describe(members.manifest[0])
        owner, username, created = str(info["accountId"]), str(info.get("userName") or ""), None
    else:
        raise ExportError(
            f"{path}: not an X archive (it has neither data/account.js nor a data/manifest.js "
            "naming its owner)"
        )
    if username.lower() != config.handle.lstrip("@").lower():
        raise ExportError(
            f"{where}: the archive is @{username}'s, not {config.handle}'s; import it with "
            "--account naming that account"
        )
    return manifest, owner, created


def check_archive(config: AccountConfig, path: Path) -> None:
    """Refuse, before anything is written, a file that is not this account's X archive."""
    with open_export(path) as export:
        members = _members(export)
        _identify(export, members, config, path)
        export.check(members.data())


def import_archive(
    store: Store,
    config: AccountConfig,
    path: Path,
    now: datetime,
    *,
    lookup: Lookup | None = None,
    start: Callable[[int], None] | None = None,
    tick: Tick | None = None,
) -> ArchiveReport:
    """Read an X archive into the store, in one transaction; see the module's notes."""
    report = ArchiveReport(config.key)
    with open_export(path) as export:
        members = _members(export)
        manifest, owner, created = _identify(export, members, config, path)
        generated = None
        info = manifest.get("archiveInfo")
        if isinstance(info, Mapping) and info.get("generationDate"):
            generated = _time(info["generationDate"], export.describe(members.manifest[0]))
        generated = min(generated or now, now)
        report.generated = generated
        report.files = members.data()
        export.check(report.files)  # a compression bomb is refused before anything is read
        if start is not None:
            start(export.total_size(report.files))
        liked = _read_likes(export, members.likes, tick)
        with store.session() as session:
            account = ensure_account(session, config, now)
            if account.platform_user_id not in (None, owner):
                raise ExportError(f"{path}: the archive belongs to another X account ({owner})")
            account.platform_user_id = owner
            account_id = account.id
            authors = _attribute(session, account_id, liked, lookup, report)
            _import_people(session, account_id, export, members, generated, tick, report)
            _import_exchanges(
                session,
                account_id,
                export,
                members.posts,
                owner,
                post_exchanges,
                "tweet",
                tick,
                report,
            )
            _import_exchanges(
                session,
                account_id,
                export,
                members.messages,
                owner,
                message_exchanges,
                "dmConversation",
                tick,
                report,
            )
            likes = [
                Exchange(f"liked:{post}", authors[post], Kind.LIKE, _OUT, generated)
                for post in liked
                if post in authors and authors[post] != owner
            ]
            report.exchanges_read += len(likes)
            report.exchanges_new += save_exchanges(session, account_id, likes)
            # Without the account's creation date (no account.js), history is vouched for from
            # the oldest exchange the archive holds: never more than it shows.
            since = min(created or report.earliest or generated, generated)
            spans = {POSTS: bool(members.posts), MESSAGES: bool(members.messages)}
            spans[LIKES] = bool(members.likes) and report.likes_note is None
            for stream, held in spans.items():
                if held:
                    span = Span(since, generated)
                    extend_coverage(session, account_id, stream, "import", span)
                    report.covered[stream] = span
            record_import_run(
                session,
                account_id,
                now,
                path,
                report.likes_note,
                connections_new=report.connections_new,
                interactions_new=report.exchanges_new,
            )
    return report


def _read_likes(export: Export, members: list[str], tick: Tick | None) -> list[str]:
    liked: dict[str, None] = {}
    for member in members:
        where = export.describe(member)
        with _shaped(where):
            for item in records(export, member, tick):
                like = _inner(item, "like", where)
                post = like.get("tweetId")
                if not post:
                    raise ExportError(f"{where}: a like without its tweetId")
                liked[str(post)] = None
    return list(liked)


def _attribute(
    session: Session,
    account_id: int,
    liked: list[str],
    lookup: Lookup | None,
    report: ArchiveReport,
) -> dict[str, str]:
    """Authors of the liked posts: from the store where known, else looked up in batches."""
    report.likes = len(liked)
    authors: dict[str, str] = {}
    for i in range(0, len(liked), 500):
        chunk = [f"liked:{p}" for p in liked[i : i + 500]]
        for event, who in session.execute(
            select(Interaction.event_id, Interaction.counterpart_id).where(
                Interaction.account_id == account_id, Interaction.event_id.in_(chunk)
            )
        ):
            authors[event.removeprefix("liked:")] = who
    wanted = [p for p in liked if p not in authors]
    if wanted and lookup is None:
        report.likes_note = (
            f"{len(wanted):,} likes name no author in the archive: configure the X API for this "
            "account to attribute them (a post lookup each), or they stay uncounted"
        )
    elif wanted:
        assert lookup is not None
        for i in range(0, len(wanted), LOOKUP):
            try:
                authors.update(lookup(wanted[i : i + LOOKUP]))
            except PlatformError as exc:
                left = len(wanted) - i
                report.likes_note = f"{left:,} likes left unattributed: {exc}"
                break
    report.likes_attributed = sum(1 for p in liked if p in authors)
    report.likes_unattributed = report.likes - report.likes_attributed
    return authors


def _import_people(
    session: Session,
    account_id: int,
    export: Export,
    members: _Members,
    generated: datetime,
    tick: Tick | None,
    report: ArchiveReport,
) -> None:
    listing = f"archive-{int(generated.timestamp())}"
    known: set[str] | None = None
    for names, key, following in (
        (members.followers, "follower", False),
        (members.following, "following", True),
    ):
        for member in names:
            where = export.describe(member)
            batch: list[Person] = []
            with _shaped(where):
                for item in records(export, member, tick):
                    who = _inner(item, key, where).get("accountId")
                    if not who:
                        raise ExportError(f"{where}: an entry without its accountId")
                    batch.append(
                        Person(
                            user_id=str(who),
                            handle=f"x:{who}",
                            profile_url=f"https://x.com/intent/user?user_id={who}",
                            following=following,
                            followed_by=not following,
                        )
                    )
            if known is None:
                known = set(
                    session.scalars(
                        select(Connection.platform_user_id).where(
                            Connection.account_id == account_id,
                            (Connection.last_listing.is_(None))
                            | (Connection.last_listing != listing),
                        )
                    )
                )
            # People the store knows already stay as the API last listed them: it is newer.
            fresh = [p for p in batch if p.user_id not in known]
            report.connections_new += save_people(session, account_id, fresh, listing, generated)


def _import_exchanges(
    session: Session,
    account_id: int,
    export: Export,
    names: list[str],
    owner: str,
    read: Callable[[Mapping[str, Any], str, str], list[Exchange]],
    key: str,
    tick: Tick | None,
    report: ArchiveReport,
) -> None:
    for member in names:
        where = export.describe(member)
        batch: list[Exchange] = []
        with _shaped(where):
            for item in records(export, member, tick):
                batch.extend(read(_inner(item, key, where), owner, where))
                if len(batch) >= BATCH:
                    _save(session, account_id, batch, report)
                    batch = []
        _save(session, account_id, batch, report)


def _save(session: Session, account_id: int, batch: list[Exchange], report: ArchiveReport) -> None:
    if batch:
        first = min(e.occurred_at for e in batch)
        report.earliest = first if report.earliest is None else min(report.earliest, first)
    report.exchanges_read += len(batch)
    report.exchanges_new += save_exchanges(session, account_id, batch)


def record_lookup_cost(store: Store, config: AccountConfig, usage: Usage, now: datetime) -> None:
    """The posts looked up to attribute likes are billed like any read: keep the record."""
    if not usage:
        return
    with store.session() as session:
        account = ensure_account(session, config, now)
        record_usage(session, account.id, usage, now, source="import")
