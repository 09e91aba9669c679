"""LinkedIn's data export: ``Connections.csv`` and ``messages.csv``.

``Connections.csv`` starts, in recent exports, with a ``Notes:`` paragraph and a blank line
before the header ``First Name,Last Name,URL,Email Address,Company,Position,Connected On``
(dates like ``22 Dec 2025``); 2018 exports have no preamble, no URL and dates like
``1/8/18, 6:14 PM``. The header row is found by its first column. The profile URL, where
there is one, is the connection's key and the link for removing them by hand.

``messages.csv`` columns are mapped by name (``FROM``, ``SENDER PROFILE URL``, ``TO``,
``RECIPIENT PROFILE URLS``, ``DATE`` …; 2018: ``From, To, Date, …, Direction``); a message's
content may span lines, which the CSV reader handles.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from service.imports.common import ListedPerson, Listing, Named, Tick
from service.imports.export import Export, ExportError
from service.imports.names import clean_name, linkedin_search_link
from service.model import Direction, Kind

CONNECTIONS = ("Connections.csv",)
MESSAGES = ("messages.csv",)
PROFILE = ("Profile.csv",)
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
        self.owner_name: str | None = None
        self.owner_url: str | None = None

    def members(self, export: Export) -> list[str]:
        found = export.find(*CONNECTIONS) + export.find(*MESSAGES)
        if not found:
            raise ExportError(
                f"{export.describe()}: no Connections.csv or messages.csv; request LinkedIn's "
                "data export (Settings → Data privacy → Get a copy of your data)"
            )
        return found + export.find(*PROFILE)

    def _table(
        self, export: Export, member: str, firsts: tuple[str, ...], required: Sequence[str]
    ) -> Iterator[tuple[int, dict[str, str]]]:
        """Rows of a CSV as {lower-case column: value}, after any preamble before the header."""
        with export.open_text(member) as stream, export.reading(member):
            rows = csv.reader(stream)
            header: list[str] | None = None
            try:
                for row in rows:
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
                for row in rows:
                    if not any(cell.strip() for cell in row):
                        continue
                    values = dict(zip(header, row, strict=False))
                    if len(row) < len(header) and any(c not in values for c in required):
                        raise ExportError(
                            f"{export.describe(member)}: line {rows.line_num} has {len(row)} "
                            f"fields where the header has {len(header)}; the file may be cut short"
                        )
                    yield rows.line_num, values
            except csv.Error as exc:
                raise ExportError(
                    f"{export.describe(member)}: line {rows.line_num}: {exc}"
                ) from None

    def _owner(self, export: Export) -> None:
        for member in export.find(*PROFILE):
            for _line, row in self._table(export, member, ("first name",), ("first name",)):
                self.owner_name = clean_name(
                    f"{row.get('first name', '')} {row.get('last name', '')}"
                )
                break

    def listing(self, export: Export, tick: Tick) -> Listing | None:
        self._owner(export)
        members = export.find(*CONNECTIONS)
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
        for member in export.find(*MESSAGES):
            yield from self._messages(export, member)
            tick(export.size(member))

    def _messages(self, export: Export, member: str) -> Iterator[list[Named]]:
        # The owner is guessed from all the rows when there is no Profile.csv: read them first.
        rows = list(self._table(export, member, ("conversation id", "from"), _MESSAGE_COLUMNS))
        owner = self.owner_name or self._guess_owner(rows)
        batch: list[Named] = []
        seen: dict[str, int] = {}
        for line, row in rows:
            at = _date(row["date"], _MESSAGE_DATE_FORMATS)
            if at is None:
                raise ExportError(
                    f"{export.describe(member)}: line {line}: {row['date']!r} is not a date"
                )
            sender = clean_name(row.get("from") or "")
            sender_url = (row.get("sender profile url") or "").strip()
            recipients = [clean_name(n) for n in (row.get("to") or "").split(",") if n.strip()]
            urls = [
                u.strip() for u in (row.get("recipient profile urls") or "").split(",") if u.strip()
            ]
            direction = (row.get("direction") or "").strip().upper()
            outgoing = direction == "OUTGOING" if direction else sender == owner
            slot = hashlib.blake2b(
                "\x1f".join((row.get("conversation id", ""), row["date"], sender)).encode(),
                digest_size=12,
            ).hexdigest()
            n = seen[slot] = seen.get(slot, 0) + 1
            event = f"lim:{slot}:{n}"
            if outgoing:
                for i, name in enumerate(recipients):
                    url = urls[i] if len(urls) == len(recipients) else ""
                    batch.append(
                        Named(
                            f"{event}:{i}",
                            name,
                            Kind.MESSAGE,
                            Direction.OUTBOUND,
                            at,
                            key=profile_key(url) if url else None,
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

    @staticmethod
    def _guess_owner(rows: list[tuple[int, dict[str, str]]]) -> str | None:
        """Without Profile.csv: the name on every message, as sender or recipient."""
        counts: dict[str, int] = {}
        for _line, row in rows:
            names = {clean_name(row.get("from") or "")} | {
                clean_name(n) for n in (row.get("to") or "").split(",")
            }
            for name in names - {""}:
                counts[name] = counts.get(name, 0) + 1
        if not counts:
            return None
        best = max(counts, key=lambda k: counts[k])
        return best if counts[best] == len(rows) else None
