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
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any

from service.imports.common import ListedPerson, Listing, Named, Tick, load_json, records
from service.imports.export import Export, ExportError
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
        self._found: dict[tuple[int, tuple[str, ...]], list[str]] = {}
        self.notes: list[str] = []
        # Instagram's threads name people by display name: a reader that knows better maps a
        # thread's other participants to connection keys (see instagram.py).
        self.keys_for: Callable[[str, list[str]], dict[str, str]] | None = None

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
            data = load_json(export, member, tick)
            for row in records(data, member, export, "friends_v2", "friends"):
                people.append(self._person(row, member, export, friend=True))
        for member in following_files:
            data = load_json(export, member, tick)
            for row in records(data, member, export, "following_v3", "following"):
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
        since = _seconds(row["timestamp"], member, export) if "timestamp" in row else None
        return ListedPerson(
            name=name,
            following=True,
            followed_by=friend,
            since=since if friend else None,
            profile_url=facebook_search_link(name),
        )

    # -- exchanges ----------------------------------------------------------------------

    def exchanges(self, export: Export, tick: Tick) -> Iterator[Sequence[Named]]:
        self.owner = self._owner(export, tick)
        if self.owner is None and self._messages(export):
            self.notes.append(
                "could not tell which participant of the threads is you (no "
                "profile_information.json, and no name on every thread): your own messages "
                "are not counted; include Personal information in the export"
            )
        yield from self._read_messages(export, tick)
        for member in self._find(export, COMMENTS):
            data = load_json(export, member, tick)
            yield self._titled(
                records(data, member, export, "comments_v2", "comments"),
                member,
                export,
                Kind.COMMENT,
            )
        for member in self._find(export, REACTIONS):
            data = load_json(export, member, tick)
            rows = records(data, member, export, "reactions_v2", "reactions", "likes")
            yield self._titled(rows, member, export, Kind.REACTION)

    def _owner(self, export: Export, tick: Tick) -> str | None:
        """The account's own name: from the profile, else the one person in every thread."""
        for member in self._find(export, PROFILE):
            data = load_json(export, member, tick)
            profile = (
                (data.get("profile_v2") or data.get("profile")) if isinstance(data, dict) else None
            )
            name = profile.get("name") if isinstance(profile, dict) else None
            full = name.get("full_name") if isinstance(name, dict) else None
            if isinstance(full, str) and full.strip():
                return _name(full)
        common: set[str] | None = None
        seen: set[str] = set()
        for member in self._messages(export):
            thread = PurePosixPath(member).parent.as_posix()
            if thread in seen:
                continue
            seen.add(thread)
            data = load_json(export, member, lambda _n: None)
            names = {
                _name(p["name"])
                for p in (data.get("participants") or [] if isinstance(data, dict) else [])
                if isinstance(p, dict) and isinstance(p.get("name"), str)
            }
            common = names if common is None else common & names
            if common is not None and len(common) <= 1 and len(seen) > 1:
                break
        if common and len(common) == 1:
            return next(iter(common))
        # Too few threads to tell: the participant whose name is the account's handle.
        wanted = _squash(self.handle or "")
        matches = [name for name in common or () if wanted and _squash(name) == wanted]
        return matches[0] if len(matches) == 1 else None

    def _read_messages(self, export: Export, tick: Tick) -> Iterator[list[Named]]:
        owner = self.owner
        batch: list[Named] = []
        ordinals: dict[tuple[int, str], int] = {}
        last_thread = None
        message_kind = Kind.MESSAGE
        senders: dict[str, tuple[str, str]] = {}  # as written -> (repaired name, id part)
        fromtimestamp = datetime.fromtimestamp
        for member in self._messages(export):
            thread = PurePosixPath(member).parent.name
            if thread != last_thread:
                ordinals.clear()
                last_thread = thread
                tid = _short(thread)
            data = load_json(export, member, tick)
            if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
                raise ExportError(
                    f"{export.describe(member)}: no messages list in this thread file"
                )
            participants = [
                _name(p["name"])
                for p in data.get("participants") or ()
                if isinstance(p, dict) and isinstance(p.get("name"), str)
            ]
            others = [(p, _short(p)) for p in participants if p != owner]
            keyed = self.keys_for(thread, [p for p, _ in others]) if self.keys_for else {}
            append = batch.append
            try:
                for message in data["messages"]:
                    raw = message["sender_name"]
                    known = senders.get(raw)
                    if known is None:
                        name = _name(raw)
                        known = senders[raw] = (name, _short(name))
                    sender, sid = known
                    ms = message["timestamp_ms"]
                    at = fromtimestamp(ms / 1000, UTC)
                    slot = (ms, sender)
                    n = ordinals[slot] = ordinals.get(slot, 0) + 1
                    # Thread, time, sender and an ordinal among identical ones: the same
                    # message gets the same id in every export that holds it.
                    base = f"fbm:{tid}:{ms}:{sid}:{n}"
                    if sender == owner:
                        for other, oid in others:
                            append(
                                Named(
                                    f"{base}:{oid}", other, message_kind, _OUT, at, keyed.get(other)
                                )
                            )
                    else:
                        append(Named(base, sender, message_kind, _IN, at, keyed.get(sender)))
                    reactions = message.get("reactions")
                    if reactions:
                        batch.extend(self._message_reactions(reactions, base, sender, at, keyed))
            except (KeyError, TypeError, ValueError, OverflowError, OSError, AttributeError):
                # A message that is not an object, or lacks a sender (text) or a time (a number
                # of milliseconds that can be a date).
                raise ExportError(
                    f"{export.describe(member)}: a message without a sender or a time"
                ) from None
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def _message_reactions(
        self,
        reactions: list[dict[str, Any]],
        base: str,
        sender: str,
        at: datetime,
        keyed: dict[str, str],
    ) -> Iterator[Named]:
        for reaction in reactions:
            actor = _name(reaction["actor"])
            if actor == sender:
                continue
            rid = f"{base}:r:{_short(actor)}"
            if actor == self.owner:
                yield Named(rid, sender, Kind.REACTION, _OUT, at, keyed.get(sender))
            elif sender == self.owner:
                yield Named(rid, actor, Kind.REACTION, _IN, at, keyed.get(actor))

    def _titled(
        self, rows: list[dict[str, Any]], member: str, export: Export, kind: Kind
    ) -> list[Named]:
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
        return out
