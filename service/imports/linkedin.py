"""LinkedIn's data export: ``Connections.csv`` and ``messages.csv``.

``Connections.csv`` starts, in recent exports, with a ``Notes:`` paragraph and a blank line
before the header ``First Name,Last Name,URL,Email Address,Company,Position,Connected On``
(dates like ``22 Dec 2025``); 2018 exports have no preamble, no URL and dates like
``1/8/18, 6:14 PM``. The header row is found by its first column. The profile URL, where
there is one, is the connection's key and the link for removing them by hand.

``messages.csv`` columns are mapped by name (``FROM``, ``SENDER PROFILE URL``, ``TO``,
``RECIPIENT PROFILE URLS``, ``DATE`` …; 2018: ``From, To, Date, …, Direction``, in a file
named ``Messages.csv``: member names are matched without regard to case); a message's
content may span lines, which the CSV reader handles. A file cut inside a quoted field is
refused, not read as if it ended there.

Names are names: ``Jane Doe, CPHR`` is one person. ``TO`` lists several recipients only
where ``RECIPIENT PROFILE URLS`` does (links hold no commas); then the names are split so
that credentials after a comma stay with their name.

The owner (whose messages are outbound), strongest signal first: ``--me`` (a name or a
profile link), ``Profile.csv``'s name, the configured handle as the tail of a profile link
(``/in/<handle>``), the one person in every conversation, the handle as a name. A 2018 file
says each message's direction itself. When nothing settles it (one conversation of two
people and no profile), the messages are not read and the report names the candidates.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from service.imports.common import ListedPerson, Listing, Named, Tick, owner_unknown
from service.imports.export import Export, ExportError
from service.imports.names import clean_name, linkedin_search_link
from service.model import Direction, Kind

CONNECTIONS = ("connections.csv",)
MESSAGES = ("messages.csv",)
PROFILE = ("profile.csv",)
_CONNECTION_COLUMNS = ("first name", "last name", "connected on")
_MESSAGE_COLUMNS = ("from", "to", "date")
_DATE_FORMATS = ("%d %b %Y", "%m/%d/%y, %I:%M %p", "%m/%d/%Y", "%Y-%m-%d")
_MESSAGE_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S", "%m/%d/%y, %I:%M %p")


def profile_key(url: str) -> str:
    """One spelling of a profile link: https, no query, no trailing slash, lower case."""
    url = url.strip().split("?")[0].rstrip("/")
    if url.startswith("http://"):
        url = "https://" + url[len("http://") :]
    return url.lower()


def _date(value: str, formats: tuple[str, ...]) -> datetime | None:
    value = value.strip()
    for fmt in formats:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


class LinkedInReader:
    platform = "linkedin"

    def __init__(self) -> None:
        self.handle: str | None = None
        self.me: str | None = None
        self.refused: str | None = None
        self.owner_name: str | None = None
        self.owner_url: str | None = None

    def members(self, export: Export) -> list[str]:
        found = export.find(*CONNECTIONS, fold=True) + export.find(*MESSAGES, fold=True)
        if not found:
            raise ExportError(
                f"{export.describe()}: no Connections.csv or messages.csv; request LinkedIn's "
                "data export (Settings → Data privacy → Get a copy of your data)"
            )
        return found + export.find(*PROFILE, fold=True)

    def _table(
        self, export: Export, member: str, firsts: tuple[str, ...], required: Sequence[str]
    ) -> Iterator[tuple[int, dict[str, str]]]:
        """Rows of a CSV as {lower-case column: value}, after any preamble before the header."""
        with export.open_text(member) as stream, export.reading(member):
            record: list[str] = []  # the raw lines of the record being read

            def lines() -> Iterator[str]:
                for line in stream:
                    record.append(line)
                    yield line

            rows = csv.reader(lines())
            header: list[str] | None = None
            try:
                for row in rows:
                    record.clear()
                    if row and row[0].strip().lower() in firsts:
                        header = [c.strip().lower() for c in row]
                        break
                if header is None:
                    raise ExportError(
                        f"{export.describe(member)}: no header row starting with "
                        + " or ".join(repr(f) for f in firsts)
                    )
                missing = [c for c in required if c not in header]
                if missing:
                    raise ExportError(
                        f"{export.describe(member)}: missing column(s) "
                        + ", ".join(repr(m) for m in missing)
                        + f" (the header is: {', '.join(header)})"
                    )
                raw = ""
                for row in rows:
                    raw = "".join(record)
                    record.clear()
                    if not any(cell.strip() for cell in row):
                        continue
                    values = dict(zip(header, row, strict=False))
                    if len(row) < len(header) and any(c not in values for c in required):
                        raise ExportError(
                            f"{export.describe(member)}: line {rows.line_num} has {len(row)} "
                            f"fields where the header has {len(header)}; the file may be cut short"
                        )
                    yield rows.line_num, values
                if raw.count('"') % 2:
                    # The last record, cut inside a quoted field: the reader returned what it
                    # had as if the file ended there (the import is undone by this error).
                    raise ExportError(
                        f"{export.describe(member)}: line {rows.line_num}: the file ends inside "
                        "a quoted field; it is cut short: download the export again"
                    )
            except csv.Error as exc:
                raise ExportError(
                    f"{export.describe(member)}: line {rows.line_num}: {exc}"
                ) from None

    def _profile(self, export: Export) -> None:
        self.owner_name = None
        for member in export.find(*PROFILE, fold=True):
            for _line, row in self._table(export, member, ("first name",), ("first name",)):
                self.owner_name = (
                    clean_name(f"{row.get('first name', '')} {row.get('last name', '')}") or None
                )
                break

    def listing(self, export: Export, tick: Tick) -> Listing | None:
        self._profile(export)
        members = export.find(*CONNECTIONS, fold=True)
        if not members:
            return None
        people: list[ListedPerson] = []
        for member in members:
            for line, row in self._table(export, member, ("first name",), _CONNECTION_COLUMNS):
                name = clean_name(f"{row['first name']} {row['last name']}")
                if not name:
                    continue  # LinkedIn leaves members who hide their name blank
                since = _date(row["connected on"], _DATE_FORMATS)
                if since is None and row["connected on"].strip():
                    raise ExportError(
                        f"{export.describe(member)}: line {line}: {row['connected on']!r} is not "
                        "a date"
                    )
                url = (row.get("url") or "").strip()
                people.append(
                    ListedPerson(
                        name=name,
                        key=profile_key(url) if url else None,
                        following=True,
                        followed_by=True,
                        since=since,
                        profile_url=url or linkedin_search_link(name),
                    )
                )
            tick(export.size(member))
        return Listing(people, complete=True)

    def exchanges(self, export: Export, tick: Tick) -> Iterator[Sequence[Named]]:
        self.refused = None
        members = export.find(*MESSAGES, fold=True)
        if not members:
            return
        owner = self._owner(export, members)
        if owner is None:
            return
        for member in members:
            yield from self._messages(export, member, owner)
            tick(export.size(member))

    def _rows(self, export: Export, member: str) -> Iterator[tuple[int, dict[str, str]]]:
        return self._table(export, member, ("conversation id", "from"), _MESSAGE_COLUMNS)

    def _owner(self, export: Export, members: list[str]) -> _Owner | None:
        """Who the owner is in the messages; None (and ``refused``) when nothing settles it.

        A first pass over the rows gathers who takes part in each conversation; the second
        (``_messages``) reads them with the owner known."""
        people: dict[str, _Party] = {}  # identity -> the party
        conversations: dict[str, set[str]] = {}
        directed = True  # every row says its direction (2018)
        for member in members:
            for _line, row in self._rows(export, member):
                if not (row.get("direction") or "").strip():
                    directed = False
                parties = _parties(row)
                conversation = row.get("conversation id") or f"row:{len(conversations)}"
                here = conversations.setdefault(conversation, set())
                for party in parties:
                    known = people.setdefault(party.identity, party)
                    if known.url is None and party.url is not None:
                        people[party.identity] = party
                    here.add(party.identity)
        if not conversations:
            return None

        def named(wanted: str) -> list[_Party]:
            return [p for p in people.values() if p.name.casefold() == wanted.casefold()]

        if self.me:
            me = self.me.strip()
            found = (
                [p for p in people.values() if p.url == profile_key(me)]
                if me.startswith("http")
                else named(clean_name(me))
            )
            if not found:
                raise ExportError(
                    f"{export.describe()}: --me {self.me!r} sends or receives no message; the "
                    "names in the most conversations are "
                    + ", ".join(repr(n) for n in _ranked(people, conversations))
                )
            return _Owner(found)
        if self.owner_name and named(self.owner_name):
            return _Owner(named(self.owner_name))
        handle = (self.handle or "").strip().lstrip("@").casefold().rstrip("/")
        if handle:
            tail = handle.rsplit("/", 1)[-1]
            by_url = [p for p in people.values() if p.url and p.url.rsplit("/", 1)[-1] == tail]
            if by_url:
                return _Owner(by_url)
        common: set[str] | None = None
        for here in conversations.values():
            common = set(here) if common is None else common & here
        if common is not None and len(common) == 1 and len(conversations) > 1:
            return _Owner([people[next(iter(common))]])
        wanted = _squash(handle)
        candidates = [people[i] for i in sorted(common or ())]
        matches = [p for p in candidates if wanted and _squash(p.name) == wanted]
        if len(matches) == 1:
            return _Owner(matches)
        if directed:
            return _Owner([])  # each row says its direction: no owner needed
        self.refused = owner_unknown(
            "the conversations",
            [p.name for p in candidates] or _ranked(people, conversations),
            "include your profile (Profile.csv) in the export",
        )
        return None

    def _messages(self, export: Export, member: str, owner: _Owner) -> Iterator[list[Named]]:
        batch: list[Named] = []
        seen: dict[str, int] = {}
        for line, row in self._rows(export, member):
            at = _date(row["date"], _MESSAGE_DATE_FORMATS)
            if at is None:
                raise ExportError(
                    f"{export.describe(member)}: line {line}: {row['date']!r} is not a date"
                )
            sender = clean_name(row.get("from") or "")
            sender_url = (row.get("sender profile url") or "").strip()
            direction = (row.get("direction") or "").strip().upper()
            outgoing = direction == "OUTGOING" if direction else owner.is_(sender, sender_url)
            slot = hashlib.blake2b(
                "\x1f".join((row.get("conversation id", ""), row["date"], sender)).encode(),
                digest_size=12,
            ).hexdigest()
            n = seen[slot] = seen.get(slot, 0) + 1
            event = f"lim:{slot}:{n}"
            if outgoing:
                for i, party in enumerate(_recipients(row)):
                    if owner.is_(party.name, party.url or ""):
                        continue
                    batch.append(
                        Named(
                            f"{event}:{i}",
                            party.name,
                            Kind.MESSAGE,
                            Direction.OUTBOUND,
                            at,
                            key=party.url,
                        )
                    )
            elif sender:
                batch.append(
                    Named(
                        event,
                        sender,
                        Kind.MESSAGE,
                        Direction.INBOUND,
                        at,
                        key=profile_key(sender_url) if sender_url else None,
                    )
                )
            if len(batch) >= 5000:
                yield batch
                batch = []
        if batch:
            yield batch


@dataclass(frozen=True)
class _Party:
    name: str
    url: str | None  # profile_key of the link, where the row has one

    @property
    def identity(self) -> str:
        return self.url or "name:" + self.name.casefold()


@dataclass(frozen=True)
class _Owner:
    parties: list[_Party]

    def is_(self, name: str, url: str) -> bool:
        key = profile_key(url) if url else None
        for party in self.parties:
            if key is not None and party.url is not None:
                if key == party.url:
                    return True
            elif name and name.casefold() == party.name.casefold():
                return True
        return False


def _split_names(text: str, count: int) -> list[str]:
    """``TO`` as ``count`` names. A comma followed by a word without spaces (``CPHR``,
    ``PhD``) belongs to the name before it; with one link, the whole field is one name."""
    if count <= 1:
        return [clean_name(text)] if text.strip() else []
    pieces = [p.strip() for p in text.split(",")]
    names: list[str] = []
    for piece in pieces:
        if names and (" " not in piece or len(names) >= count):
            names[-1] = f"{names[-1]}, {piece}"
        else:
            names.append(piece)
    return [clean_name(n) for n in names if n]


def _recipients(row: dict[str, str]) -> list[_Party]:
    urls = [u.strip() for u in (row.get("recipient profile urls") or "").split(",") if u.strip()]
    names = _split_names(row.get("to") or "", max(len(urls), 1))
    if urls and len(names) != len(urls):
        return [_Party(names[0] if len(urls) == 1 and names else u, profile_key(u)) for u in urls]
    return [
        _Party(name, profile_key(urls[i]) if i < len(urls) else None)
        for i, name in enumerate(names)
    ]


def _parties(row: dict[str, str]) -> list[_Party]:
    sender = clean_name(row.get("from") or "")
    url = (row.get("sender profile url") or "").strip()
    parties = [_Party(sender, profile_key(url) if url else None)] if sender else []
    return parties + _recipients(row)


def _ranked(people: dict[str, _Party], conversations: dict[str, set[str]]) -> list[str]:
    counts: dict[str, int] = {}
    for here in conversations.values():
        for identity in here:
            counts[identity] = counts.get(identity, 0) + 1
    ranked = sorted(counts, key=lambda i: (-counts[i], people[i].name))[:5]
    return [people[i].name for i in ranked]


def _squash(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())
