"""JSON export files read one element at a time: memory stays flat whatever the file's size.

Facebook and Instagram write each kind of data as one JSON document: a list
(``[{...}, ...]``), or an object whose values are lists (``{"participants": [...],
"messages": [...]}``) or small values. :func:`walk` goes through such a document and yields
``(key, value)``: ``key`` is the top-level key (``None`` for a top-level list), and each list
there is given element by element, announced first by ``(key, LIST)``; a top-level object is
announced by ``(None, OBJECT)``. Every element, and
every value that is not a list, is parsed by the standard library's C scanner
(``JSONDecoder.raw_decode``) from a buffer that is refilled as needed, as the X archive's
reader does; throughput stays close to ``json.loads`` of the whole file.

A member of up to :data:`WHOLE` bytes (a thread file of 10,000 messages is a few megabytes)
is parsed whole by ``json.loads`` and given the same way: peak memory is bounded by that
size, not by the file's.

Bounds: one element may not exceed :data:`MAX_ELEMENT` characters (a file of one huge value
is refused rather than held in memory), and nesting deeper than the parser's limit is refused
with a message rather than a traceback.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from json.scanner import make_scanner
from typing import IO, Any

from service.imports.export import Export, ExportError

CHUNK = 1 << 20  # characters read at a time
# A member up to this size is parsed whole by json.loads (faster, and its memory is bounded
# by this size); a larger one is read element by element.
WHOLE = 8 << 20
MAX_ELEMENT = 32 << 20  # characters of one element (a real record is a few kilobytes)
_SPACE = " \t\r\n"
_AFTER = re.compile(r"[ \t\r\n]*([,\]])[ \t\r\n]*")  # what follows an element of a list


class _List:
    """The marker announcing a list at the top level (its elements follow)."""

    def __repr__(self) -> str:
        return "LIST"


LIST: Any = _List()
OBJECT: Any = type("_Object", (), {"__repr__": lambda self: "OBJECT"})()


class Batch(list[Any]):
    """Elements of a top-level list, as many as one buffer held (see :func:`walk_batches`)."""


class _Scanner:
    def __init__(self, text: IO[str], where: str, advance: Callable[[], None]) -> None:
        self.text, self.where, self.advance = text, where, advance
        self.decoder = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.lines = 0  # newlines in the text already dropped from the buffer
        self.refill()

    def refill(self) -> bool:
        if self.eof:
            return False
        more = self.text.read(CHUNK)
        self.eof = len(more) < CHUNK
        self.lines += self.buf.count("\n", 0, self.pos)
        self.buf, self.pos = self.buf[self.pos :] + more, 0
        self.advance()
        return bool(more)

    def broken(self, message: str, at: int | None = None) -> ExportError:
        line = self.lines + self.buf.count("\n", 0, self.pos if at is None else at) + 1
        return ExportError(
            f"{self.where}: not valid JSON at line {line} ({message}); the file may be cut "
            "short: download the export again"
        )

    def peek(self) -> str:
        """The next character that is not white space ("" at the end)."""
        while True:
            buf, pos = self.buf, self.pos
            while pos < len(buf) and buf[pos] in _SPACE:
                pos += 1
            self.pos = pos
            if pos < len(buf) or not self.refill():
                return buf[pos] if pos < len(buf) else ""

    def take(self, char: str, what: str) -> None:
        if self.peek() != char:
            raise self.broken(f"expected {what}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                item, end = self.decoder.raw_decode(self.buf, self.pos)
                if end >= len(self.buf) and self.refill():
                    continue  # a number or a literal may go on in the next chunk
                break
            except json.JSONDecodeError as exc:
                # Ran out of text mid-value: read on. Anything else is damage (an escape or a
                # number cut by the chunk's end fails a few characters back).
                short = exc.pos >= len(self.buf) - 16 or exc.msg.startswith("Unterminated")
                if len(self.buf) - self.pos > MAX_ELEMENT:
                    raise ExportError(
                        f"{self.where}: one value runs past {MAX_ELEMENT:,} characters; not an "
                        "export file lopper can read"
                    ) from None
                if not (short and self.refill()):
                    raise self.broken(exc.msg, exc.pos) from None
            except RecursionError:
                raise ExportError(
                    f"{self.where}: JSON nested too deeply to be an export file; refused"
                ) from None
        self.pos = end
        return item

    def elements(self, key: str | None) -> Iterator[tuple[str | None, Batch]]:
        """``(key, batch)`` for the elements of the list that starts here, as many in each
        batch as the buffer holds whole.

        The fast path hands the buffer to the C scanner and finds the delimiter after each
        element with one regular expression; only where that fails (the buffer ends, the
        element is damaged) does the careful path of :meth:`value` take over, for one element.
        """
        self.take("[", "[")
        if self.peek() == "]":
            self.pos += 1
            return
        scan, after = make_scanner(self.decoder), _AFTER.match  # type: ignore[arg-type]
        while True:
            buf, pos = self.buf, self.pos
            size = len(buf)
            out = Batch()
            append = out.append
            while True:
                try:
                    item, end = scan(buf, pos)
                    found = after(buf, end)
                except (StopIteration, ValueError, RecursionError):
                    break
                if found is None or found.end() >= size:
                    break
                append(item)
                pos = found.end()
                if found.group(1) == "]":
                    self.pos = pos
                    yield key, out
                    return
            self.pos = pos
            if out:
                yield key, out
            item = self.value()
            char = self.peek()
            self.pos += 1
            yield key, Batch((item,))
            if char == "]":
                return
            if char != ",":
                raise self.broken("expected , or ] in a list" if char else "the list never ends")


def walk(export: Export, member: str, tick: Callable[[int], None] | None = None) -> Iterator[Any]:
    """``(key, value)`` of one JSON member, top-level lists element by element (see above)."""
    for key, value in walk_batches(export, member, tick):
        if type(value) is Batch:
            for item in value:
                yield key, item
        else:
            yield key, value


def walk_batches(
    export: Export, member: str, tick: Callable[[int], None] | None = None
) -> Iterator[Any]:
    """As :func:`walk`, but the elements of a top-level list come as :class:`Batch` lists:
    a reader with work to do for each element saves a generator step per element."""
    if export.size(member) <= WHOLE:
        yield from _whole(export, member, tick)
        return
    where = export.describe(member)
    with export.open(member) as raw, export.reading(member):
        done = 0

        def advance() -> None:
            nonlocal done
            if tick is not None:
                position = raw.tell()
                tick(position - done)
                done = position

        scanner = _Scanner(io.TextIOWrapper(raw, encoding="utf-8-sig"), where, advance)
        first = scanner.peek()
        if first == "[":
            yield None, LIST
            yield from scanner.elements(None)
        elif first == "{":
            yield None, OBJECT
            scanner.pos += 1
            if scanner.peek() == "}":
                scanner.pos += 1
            else:
                while True:
                    if scanner.peek() != '"':
                        raise scanner.broken("expected a key")
                    key = scanner.value()
                    scanner.take(":", ": after a key")
                    if scanner.peek() == "[":
                        yield key, LIST
                        yield from scanner.elements(key)
                    else:
                        yield key, scanner.value()
                    char = scanner.peek()
                    scanner.pos += 1
                    if char == "}":
                        break
                    if char != ",":
                        raise scanner.broken("expected , or } in an object")
        elif first:
            yield None, scanner.value()
        else:
            raise scanner.broken("the file is empty")
        if scanner.peek():
            raise scanner.broken("more after the end of the document")
        advance()


def _whole(export: Export, member: str, tick: Callable[[int], None] | None) -> Iterator[Any]:
    where = export.describe(member)
    with export.open(member) as stream, export.reading(member):
        data = stream.read(WHOLE + 1)
    if tick is not None:
        tick(len(data))
    try:
        text = data.decode("utf-8-sig")
        if not text.strip():
            raise ExportError(f"{where}: not valid JSON (the file is empty); download it again")
        value = json.loads(text)
    except UnicodeDecodeError as exc:
        raise ExportError(f"{where}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ExportError(
            f"{where}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); "
            "the file may be cut short: download the export again"
        ) from None
    except RecursionError:
        raise ExportError(
            f"{where}: JSON nested too deeply to be an export file; refused"
        ) from None
    if isinstance(value, list):
        yield None, LIST
        yield None, Batch(value)
    elif isinstance(value, dict):
        yield None, OBJECT
        for key, item in value.items():
            if isinstance(item, list):
                yield key, LIST
                yield key, Batch(item)
            else:
                yield key, item
    else:
        yield None, value


def document(export: Export, member: str, tick: Callable[[int], None] | None = None) -> Any:
    """A small member whole (a profile): built from :func:`walk`, so bounded the same way."""
    result: Any = None
    for key, value in walk(export, member, tick):
        if key is None:
            if value is OBJECT:
                result = {}
            elif value is LIST:
                result = []
            elif isinstance(result, list):
                result.append(value)
            else:
                result = value
            continue
        if value is LIST:
            result[key] = []
        elif isinstance(result.get(key), list) and key in result:
            result[key].append(value)
        else:
            result[key] = value
    return result


def records(
    export: Export, member: str, tick: Callable[[int], None] | None, *keys: str
) -> Iterator[dict[str, Any]]:
    """The records of a member, one at a time: the list under the first of ``keys`` the
    member has (or one whose key starts with one of them: names gain a suffix with each
    format generation, friends, friends_v2...), or the member itself when it is a list."""
    chosen: str | None = None
    found = False
    for key, value in walk_batches(export, member, tick):
        if value is OBJECT:
            continue
        if value is LIST:
            if found:
                continue
            if key is None or key in keys or key.startswith(keys):
                found, chosen = True, key
            continue
        if found and key == chosen and type(value) is Batch:
            for item in value:
                if isinstance(item, dict):
                    yield item
    if not found:
        wanted = " or ".join(keys)
        raise ExportError(f"{export.describe(member)}: expected a list under {wanted}")
