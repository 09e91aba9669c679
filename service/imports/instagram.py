"""Instagram's data export (JSON): followers, following and messages.

- ``connections/followers_and_following/followers_1.json`` (``_2`` … when split): a list of
  ``{title, media_list_data, string_list_data: [{href, value, timestamp}]}``;
- ``following.json``: until 2024 ``{"relationships_following": [… same entries …]}``; by 2026
  the entries carry the user name in ``title``, no ``value``, and links like
  ``https://www.instagram.com/_u/<user>``. The user name is taken from ``value``, then
  ``title``, then the link;
- messages: ``messages/inbox/<thread>/message_N.json``, the same shape as Facebook's (read by
  the same code); senders are display names, matched to user names where they agree;
- ``personal_information/personal_information.json``: the owner's name and user name, the
  surest sign of which participant of the threads is the owner.

A Facebook export is refused by name: its messages have the same shape, and would otherwise
land in the Instagram account.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from service.imports.common import ListedPerson, Listing, Named, Tick
from service.imports.export import Export, ExportError
from service.imports.facebook import FacebookReader
from service.imports.jsonstream import records
from service.imports.names import clean_name, instagram_link, repair

FOLLOWERS = ("followers_and_following/followers_*.json", "followers_and_following/followers.json")
FOLLOWING = ("followers_and_following/following.json", "followers_and_following/following_*.json")
PROFILE = ("personal_information/personal_information.json",)
# Paths only a Facebook export has (Instagram's own never name Facebook).
FACEBOOK_SIGNS = (
    "connections/friends/*",
    "friends_and_followers/*",
    "friends/friends.json",
    "profile_information/profile_information.json",
    "your_facebook_activity/*",
    "your_activity_across_facebook/*",
    "this_profile's_activity_across_facebook/*",
)
INSTAGRAM_SIGNS = ("followers_and_following/*", "your_instagram_activity/*", *PROFILE)


def _squash(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def username(entry: dict[str, Any]) -> str | None:
    """``value``, else ``title``, else the last part of the link (``/_u/<user>``)."""
    items = entry.get("string_list_data") or [{}]
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    for candidate in (first.get("value"), entry.get("title")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip().lstrip("@")
    href = first.get("href")
    if isinstance(href, str) and href.strip():
        tail = [p for p in href.split("?")[0].split("/") if p and p != "_u"]
        if tail and "instagram.com" not in tail[-1]:
            return tail[-1]
    return None


def _since(entry: dict[str, Any]) -> datetime | None:
    """When the follow began, where the entry says (an unreadable date is no date)."""
    items = entry.get("string_list_data")
    first = items[0] if isinstance(items, list) and items else None
    stamp = first.get("timestamp") if isinstance(first, dict) else None
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp > 0:
        try:
            return datetime.fromtimestamp(stamp, tz=UTC)
        except (OverflowError, ValueError, OSError):
            return None
    return None


class InstagramReader:
    platform = "instagram"

    def __init__(self) -> None:
        self._messages = FacebookReader()
        self.handle: str | None = None
        self.me: str | None = None
        self.refused: str | None = None
        self.notes = self._messages.notes
        self._users: dict[str, str] = {}  # user name without punctuation -> key

    def members(self, export: Export) -> list[str]:
        if export.find(*FACEBOOK_SIGNS) and not export.find(*INSTAGRAM_SIGNS):
            raise ExportError(
                f"{export.describe()}: this is a Facebook export, not an Instagram one; import "
                "it with `lopper import facebook`"
            )
        found = export.find(*FOLLOWERS) + export.find(*FOLLOWING) + self._messages._messages(export)
        if not found:
            raise ExportError(
                f"{export.describe()}: no Instagram followers, following or messages (JSON) "
                "found; request your information from Instagram in JSON format"
            )
        return found + export.find(*PROFILE)

    def listing(self, export: Export, tick: Tick) -> Listing | None:
        followers = export.find(*FOLLOWERS)
        following = export.find(*FOLLOWING)
        if not followers and not following:
            return None
        people: list[ListedPerson] = []
        for member, follows_me in [(m, True) for m in followers] + [(m, False) for m in following]:
            keys = ("relationships_followers",) if follows_me else ("relationships_following",)
            for entry in records(export, member, tick, *keys):
                user = username(entry)
                if user is None:
                    raise ExportError(f"{export.describe(member)}: an entry without a user name")
                self._users.setdefault(_squash(user), user.casefold())
                people.append(
                    ListedPerson(
                        name=user,
                        key=user.casefold(),
                        following=not follows_me,
                        followed_by=follows_me,
                        since=_since(entry),
                        profile_url=instagram_link(user),
                    )
                )
        # Complete only with both lists: someone missing from one half is not gone.
        return Listing(people, complete=bool(followers and following))

    def exchanges(self, export: Export, tick: Tick) -> Iterator[Sequence[Named]]:
        reader = self._messages
        reader.handle, reader.me = self.handle, self.me
        reader.keys_for = self._keys_for
        reader.profile_names = self._profile_names
        reader.owner = reader._owner(export, tick)
        self.refused = reader.refused
        if reader.owner is None:
            return
        for batch in reader._read_messages(export, tick):
            yield [
                Named(
                    f"ig{n.event_id[2:]}",
                    n.name,
                    n.kind,
                    n.direction,
                    n.at,
                    n.key or n.name.casefold(),
                )
                for n in batch
            ]
        if reader.nameless:
            self.notes.append(
                f"{reader.nameless:,} messages with deleted or nameless accounts are left out: "
                "nobody can tell who they were"
            )

    def _keys_for(self, thread: str, others: list[str]) -> dict[str, str]:
        """Which follower each display name in a thread is.

        A name that is a user name (punctuation aside) is that user; in a thread with one
        other person, the thread's folder (``analima_1234567890``) is their user name without
        its dots and underscores.
        """
        keys: dict[str, str] = {}
        for name in others:
            user = self._users.get(_squash(name))
            if user is not None:
                keys[name] = user
        prefix, _, number = thread.rpartition("_")
        if len(others) == 1 and others[0] not in keys and number.isdigit():
            user = self._users.get(_squash(prefix))
            if user is not None:
                keys[others[0]] = user
        return keys

    def _profile_names(self, export: Export, tick: Tick) -> list[str]:
        """The owner's names in ``personal_information.json`` that a thread may use: the
        display name and the user name."""
        names: list[str] = []
        for member in export.find(*PROFILE):
            for entry in records(export, member, tick, "profile_user"):
                fields = entry.get("string_map_data")
                if not isinstance(fields, dict):
                    continue
                for label in ("Name", "Username"):
                    value = fields.get(label)
                    text = value.get("value") if isinstance(value, dict) else None
                    if isinstance(text, str) and text.strip():
                        names.append(clean_name(repair(text)))
        return names
