"""Facebook's "Download Your Information" export (JSON), every path generation of it.

What is read (people are named, never identified otherwise):

- friends, with the time the friendship began (which starts the grace):
  ``connections/friends/your_friends.json`` (``friends_v2``), earlier ``friends/friends.json``
  and ``friends_and_followers/friends.json`` (``friends``);
- who you follow: ``connections/followers/who_you've_followed.json`` (``following_v3``),
  earlier ``friends_and_followers/following.json`` / ``followers_and_following/following.json``;
- messages, both ways, per thread: ``messages/{inbox,archived_threads,e2ee_cutover}/<thread>/
  message_N.json`` under whichever top folder the generation used (``your_activity_across_
  facebook/``, ``your_facebook_activity/``, ``this_profile's_activity_across_facebook/``).
  A message you sent to a group counts for each other participant; reactions to messages
  count too;
- your comments and reactions (outbound), the other person taken from the ``title``
  ("… commented on Ana Lima's post."), the only place the export names them.

Every string is repaired of Facebook's mojibake (``names.repair``). Event ids come from the
content (thread, time, sender, and an ordinal among identical ones), so importing the same
export, or a later one that overlaps it, adds nothing twice.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any

from service.imports.common import ListedPerson, Listing, Named, Tick, owner_unknown
from service.imports.export import Export, ExportError
from service.imports.jsonstream import LIST, Batch, document, records, walk, walk_batches
from service.imports.names import clean_name, facebook_search_link, repair
from service.model import Direction, Kind

FRIENDS = (
    "connections/friends/your_friends.json",
    "friends_and_followers/friends.json",
    "friends/friends.json",
)
FOLLOWING = (
    "connections/followers/who_you've_followed.json",
    "friends_and_followers/following.json",
    "followers_and_following/following.json",
    "following/following.json",
)
PROFILE = ("profile_information/profile_information.json",)
# What only an Instagram export holds: given to the Facebook import, it is refused by name.
INSTAGRAM_SIGNS = (
    "your_instagram_activity/*",
    "followers_and_following/*",
    "personal_information/personal_information.json",
)
# What only a Facebook export holds.
FACEBOOK_SIGNS = (
    FRIENDS
    + PROFILE
    + (
        "your_facebook_activity/*",
        "your_activity_across_facebook/*",
        "this_profile's_activity_across_facebook/*",
        "*facebook*",
    )
)
MESSAGE_BOXES = ("inbox", "archived_threads", "e2ee_cutover")
MESSAGES = tuple(f"messages/{box}/*/message_*.json" for box in MESSAGE_BOXES)
COMMENTS = ("comments_and_reactions/comments.json", "comments/comments.json")
REACTIONS = (
    "comments_and_reactions/posts_and_comments.json",
    "likes_and_reactions/posts_and_comments.json",
    "likes_and_reactions/likes_and_reactions*.json",
    "comments_and_reactions/likes_and_reactions*.json",
)
ALL = FRIENDS + FOLLOWING + PROFILE + MESSAGES + COMMENTS + REACTIONS
BATCH = 5000
_OTHER = re.compile(
    r"(?:commented on|replied to|likes|liked|loves|reacted to|reacted \S+ to) (.+?)['’]s \w"
)
_OWN = re.compile(r"\b(?:his|her|their|your) own\b")

_IN, _OUT = Direction.INBOUND, Direction.OUTBOUND


@lru_cache(maxsize=32)
def _tails(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """The patterns as ``Export.find`` applies them: to the whole path or any tail of it."""
    return re.compile("(?:^|/)(?:" + "|".join(fnmatch.translate(p) for p in patterns) + ")")


def _squash(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def _digest(*parts: object) -> str:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()


@lru_cache(maxsize=65536)
def _short(text: str) -> str:
    """A short stable stand-in for a name or a thread in event ids (they have a length cap)."""
    return _digest(text)[:16]


@lru_cache(maxsize=65536)
def _name(raw: str) -> str:
    return clean_name(repair(raw))


def _seconds(value: Any, member: str, export: Export) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExportError(f"{export.describe(member)}: {value!r} is not a timestamp")
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, ValueError, OSError):
        raise ExportError(f"{export.describe(member)}: {value!r} is not a timestamp") from None


class FacebookReader:
    platform = "facebook"

    def __init__(self) -> None:
        self.owner: str | None = None
        self.handle: str | None = None
        self.me: str | None = None  # the owner's name as given on the command line (--me)
        self.refused: str | None = None  # why the messages were not read, when they were not
        self._found: dict[tuple[int, tuple[str, ...]], list[str]] = {}
        self.notes: list[str] = []
        self.nameless = 0  # exchanges with deleted or nameless accounts, left out
        # Instagram's threads name people by display name: a reader that knows better maps a
        # thread's other participants to connection keys (see instagram.py).
        self.keys_for: Callable[[str, list[str]], dict[str, str]] | None = None
        # Names the export's own profile gives the owner (Instagram reads its own file).
        self.profile_names: Callable[[Export, Tick], list[str]] = self._profile_names

    def _find(self, export: Export, patterns: tuple[str, ...]) -> list[str]:
        """The members of one kind: ``export.find`` walks every member of the export once,
        for all kinds together, and each kind is then picked out of what it found."""
        if (id(export), ()) not in self._found:
            self._found[(id(export), ())] = export.find(*ALL)
        key = (id(export), patterns)
        if key not in self._found:
            wanted = _tails(patterns)
            self._found[key] = [m for m in self._found[(id(export), ())] if wanted.search(m)]
        return self._found[key]

    def members(self, export: Export) -> list[str]:
        self._found.clear()  # a new import: what an earlier export held says nothing
        instagram, facebook = _tails(INSTAGRAM_SIGNS), _tails(FACEBOOK_SIGNS)
        names = export.names()
        if any(map(instagram.search, names)) and not any(map(facebook.search, names)):
            raise ExportError(
                f"{export.describe()}: this is an Instagram export, not a Facebook one; import "
                "it with `lopper import instagram`"
            )
        found = self._friends(export) + self._following(export) + self._messages(export)
        found += self._find(export, COMMENTS) + self._find(export, REACTIONS)
        if not found:
            raise ExportError(
                f"{export.describe()}: no Facebook data found (friends, messages, comments or "
                "reactions in JSON); download your information from Facebook in JSON format"
            )
        return found + self._find(export, PROFILE)

    def _friends(self, export: Export) -> list[str]:
        return self._find(export, FRIENDS)

    def _following(self, export: Export) -> list[str]:
        return self._find(export, FOLLOWING)

    def _messages(self, export: Export) -> list[str]:
        return self._find(export, MESSAGES)

    # -- people -------------------------------------------------------------------------

    def listing(self, export: Export, tick: Tick) -> Listing | None:
        friends_files = self._friends(export)
        following_files = self._following(export)
        if not friends_files and not following_files:
            return None
        people: list[ListedPerson] = []
        for member in friends_files:
            for row in records(export, member, tick, "friends_v2", "friends"):
                people.append(self._person(row, member, export, friend=True))
        for member in following_files:
            for row in records(export, member, tick, "following_v3", "following"):
                people.append(self._person(row, member, export, friend=False))
        # A friends file lists every friend; a following file alone is only part of the picture.
        return Listing(people, complete=bool(friends_files))

    def _person(
        self, row: dict[str, Any], member: str, export: Export, friend: bool
    ) -> ListedPerson:
        raw = row.get("name")
        if not isinstance(raw, str) or not raw.strip():
            raise ExportError(f"{export.describe(member)}: an entry without a name")
        name = _name(raw)
        # A friendship's date starts its grace; a follow's date is when you followed.
        since = _seconds(row["timestamp"], member, export) if "timestamp" in row else None
        return ListedPerson(
            name=name,
            following=True,
            followed_by=friend,
            since=since,
            profile_url=facebook_search_link(name),
        )

    # -- exchanges ----------------------------------------------------------------------

    def exchanges(self, export: Export, tick: Tick) -> Iterator[Sequence[Named]]:
        self.owner = self._owner(export, tick)
        if self.owner is not None:
            yield from self._read_messages(export, tick)
        if self.nameless:
            self.notes.append(
                f"{self.nameless:,} messages with deleted or nameless accounts are left out: "
                "nobody can tell who they were"
            )
        for member in self._find(export, COMMENTS):
            rows = records(export, member, tick, "comments_v2", "comments")
            yield from self._titled(rows, member, export, Kind.COMMENT)
        for member in self._find(export, REACTIONS):
            rows = records(export, member, tick, "reactions_v2", "reactions", "likes")
            yield from self._titled(rows, member, export, Kind.REACTION)

    def _profile_names(self, export: Export, tick: Tick) -> list[str]:
        names = []
        for member in self._find(export, PROFILE):
            data = document(export, member, tick)
            profile = (
                (data.get("profile_v2") or data.get("profile")) if isinstance(data, dict) else None
            )
            name = profile.get("name") if isinstance(profile, dict) else None
            full = name.get("full_name") if isinstance(name, dict) else None
            if isinstance(full, str) and full.strip():
                names.append(_name(full))
        return names

    def _participants_of(self, export: Export, member: str) -> list[str]:
        """The participants of one thread file; reading stops once they are read."""
        names: list[str] = []
        started = False
        for key, value in walk(export, member):
            if key == "participants":
                started = True
                if isinstance(value, dict) and isinstance(value.get("name"), str):
                    name = _name(value["name"])
                    if name and name not in names:
                        names.append(name)
            elif started:
                break
        return names

    def _threads(self, export: Export) -> Iterator[list[str]]:
        """The participants of each thread (from its first file)."""
        seen: set[str] = set()
        for member in self._messages(export):
            thread = PurePosixPath(member).parent.as_posix()
            if thread not in seen:
                seen.add(thread)
                yield self._participants_of(export, member)

    def _owner(self, export: Export, tick: Tick) -> str | None:
        """Which participant of the threads is the account's owner, or None (and ``refused``
        says why) when the export cannot tell. Signals, strongest first: ``--me``, the
        profile's name, the one person in every thread, the configured handle."""
        self.refused = None
        if not self._messages(export):
            return None
        if self.me:
            wanted = clean_name(self.me).casefold()
            for people in self._threads(export):
                for name in people:
                    if name.casefold() == wanted:
                        return name
            raise ExportError(
                f"{export.describe()}: --me {self.me!r} is no participant of any thread; "
                "the names that appear most are "
                + ", ".join(repr(n) for n in _most_common(self._threads(export)))
            )
        for profile in self.profile_names(export, tick):
            for people in self._threads(export):
                for name in people:
                    if _squash(name) == _squash(profile):
                        return name
        common: set[str] | None = None
        count = 0
        for people in self._threads(export):
            count += 1
            common = set(people) if common is None else common & set(people)
            if len(common) <= 1 and count > 1:
                break
        if common and len(common) == 1 and count > 1:
            return next(iter(common))
        # Too few threads to tell: the participant whose name is the account's handle.
        wanted = _squash(self.handle or "")
        matches = [name for name in common or () if wanted and _squash(name) == wanted]
        if len(matches) == 1:
            return matches[0]
        candidates = sorted(common) if common else None
        self.refused = owner_unknown(
            "the threads",
            candidates or _most_common(self._threads(export)),
            "include Personal information (profile_information.json) in the export",
        )
        return None

    def _read_messages(self, export: Export, tick: Tick) -> Iterator[list[Named]]:
        owner = self.owner
        batch: list[Named] = []
        ordinals: dict[str, int] | None = None  # senders at the current millisecond, when several
        last_ms: int | None = None
        first = ""
        last_thread = None
        message_kind = Kind.MESSAGE
        senders: dict[str, tuple[str, str]] = {}  # as written -> (repaired name, id part)
        fromtimestamp, utc, inbound, outbound = datetime.fromtimestamp, UTC, _IN, _OUT
        # A tuple made directly: the named tuple's own constructor is a Python call per message.
        new, named = tuple.__new__, Named
        for member in self._messages(export):
            thread = PurePosixPath(member).parent.name
            if thread != last_thread:
                last_ms = None
                last_thread = thread
                tid = _short(thread)
            participants: list[str] | None = None
            listed: list[str] = []
            others: list[tuple[str, str]] = []
            keyed: dict[str, str] = {}
            has_messages = False
            for key, value in walk_batches(export, member, tick):
                if key != "messages" or type(value) is not Batch:
                    if key == "participants" and type(value) is Batch:
                        for person in value:
                            if isinstance(person, dict) and isinstance(person.get("name"), str):
                                name = _name(person["name"])
                                if name and name not in listed:
                                    listed.append(name)
                    elif key == "messages" and value is LIST:
                        has_messages = True
                    continue
                if participants is None:
                    # The participants come first in every export seen; read them if not.
                    participants = listed or self._participants_of(export, member)
                    others = [(p, _short(p)) for p in participants if p != owner]
                    keyed = self.keys_for(thread, [p for p, _ in others]) if self.keys_for else {}
                for message in value:
                    try:
                        raw = message["sender_name"]
                        known = senders.get(raw)
                        if known is None:
                            name = _name(raw)
                            known = senders[raw] = (name, _short(name))
                        sender, sid = known
                        ms = message["timestamp_ms"]
                        at = fromtimestamp(ms / 1000, utc)
                    except (
                        KeyError,
                        TypeError,
                        ValueError,
                        OverflowError,
                        OSError,
                        AttributeError,
                    ):
                        # A message that is not an object, or lacks a sender (text) or a time (a
                        # number of milliseconds that can be a date).
                        raise ExportError(
                            f"{export.describe(member)}: a message without a sender or a time"
                        ) from None
                    if not sender:
                        self.nameless += 1  # a deleted account: nobody to count it for
                        continue
                    if ms != last_ms:
                        # Identical messages are neighbours (a thread is in time order): only the
                        # current millisecond's are counted, so memory stays flat in a long thread.
                        last_ms, first, ordinals, n = ms, sender, None, 1
                    else:
                        if ordinals is None:
                            ordinals = {first: 1}
                        n = ordinals[sender] = ordinals.get(sender, 0) + 1
                    # Thread, time, sender and an ordinal among identical ones: the same message
                    # gets the same id in every export that holds it.
                    base = f"fbm:{tid}:{ms}:{sid}:{n}"
                    if sender == owner:
                        for other, oid in others:
                            item = (
                                f"{base}:{oid}",
                                other,
                                message_kind,
                                outbound,
                                at,
                                keyed.get(other),
                            )
                            batch.append(new(named, item))
                    else:
                        item = (base, sender, message_kind, inbound, at, keyed.get(sender))
                        batch.append(new(named, item))
                    reactions = message.get("reactions")
                    if reactions:
                        try:
                            batch.extend(
                                self._message_reactions(reactions, base, sender, at, keyed)
                            )
                        except (KeyError, TypeError, AttributeError):
                            raise ExportError(
                                f"{export.describe(member)}: a reaction without its actor"
                            ) from None
                    if len(batch) >= BATCH:
                        yield batch
                        batch = []
            if not has_messages:
                raise ExportError(
                    f"{export.describe(member)}: no messages list in this thread file"
                )
        if batch:
            yield batch

    def _message_reactions(
        self,
        reactions: list[dict[str, Any]],
        base: str,
        sender: str,
        at: datetime,
        keyed: dict[str, str],
    ) -> list[Named]:
        found = []
        for reaction in reactions:
            actor = _name(reaction["actor"])
            if actor == sender or not actor:
                continue
            rid = f"{base}:r:{_short(actor)}"
            if actor == self.owner:
                found.append(Named(rid, sender, Kind.REACTION, _OUT, at, keyed.get(sender)))
            elif sender == self.owner:
                found.append(Named(rid, actor, Kind.REACTION, _IN, at, keyed.get(actor)))
        return found

    def _titled(
        self, rows: Iterable[dict[str, Any]], member: str, export: Export, kind: Kind
    ) -> Iterator[list[Named]]:
        """Your comments or reactions: the other person is in the title, nowhere else."""
        out: list[Named] = []
        counts: dict[str, int] = {}
        for row in rows:
            title = row.get("title")
            if not isinstance(title, str) or "timestamp" not in row:
                continue
            title = repair(title)
            if _OWN.search(title):
                continue
            match = _OTHER.search(title)
            if match is None:
                continue
            other = clean_name(match[1])
            if not other or other == self.owner:
                continue
            at = _seconds(row["timestamp"], member, export)
            slot = _digest(kind.value, row["timestamp"], title)
            n = counts[slot] = counts.get(slot, 0) + 1
            out.append(Named(f"fb{kind.value[0]}:{slot}:{n}", other, kind, _OUT, at))
            if len(out) >= BATCH:
                yield out
                out = []
        if out:
            yield out


def _most_common(threads: Iterable[list[str]]) -> list[str]:
    """The names in the most threads: the candidates for the owner when nothing settles it."""
    counts: dict[str, int] = {}
    for people in threads:
        for name in people:
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda n: (-counts[n], n))[:5]
