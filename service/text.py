"""Text and links that come from platforms, servers and exports, made safe where they go.

A display name, a handle, a server's error message or a profile link is written by someone
else. On a terminal it is printed as text: Rich markup in it is escaped and control
characters (escape sequences that clear the screen or hide a link, bidi overrides that
reorder a line) are removed. As a link, only an ``http(s)`` address is kept: a
``javascript:`` or ``data:`` link in a digest would run when clicked.
"""

from __future__ import annotations

import re

from rich.markup import RE_TAGS, escape

# C0 and C1 control characters (ESC starts ANSI and OSC-8 sequences), DEL, and the Unicode
# marks that reorder or hide what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_SPACES = re.compile("[\t\n\r\x0b\x0c]+")
_BACKSLASHED = re.compile(r"(?<=\\)\[")
_WEB_LINK = re.compile(r"https?://[^\s\x00-\x1f\x7f<>\"'`\\]+", re.IGNORECASE)


def plain(value: object) -> str:
    """Platform text without control characters (line breaks and tabs become a space)."""
    text = "" if value is None else str(value)
    return _CONTROL.sub("", _SPACES.sub(" ", text))


def shown(value: object) -> str:
    """Platform text for a Rich console or table: printed as it reads, never as markup."""
    marked = escape(plain(value))  # every tag-like [...] escaped
    # Rich also reads a backslash before any other "[" as an escape and drops it: one more
    # backslash keeps the text's own.
    pieces, position = [], 0
    for tag in RE_TAGS.finditer(marked):
        pieces += [_BACKSLASHED.sub(r"\\[", marked[position : tag.start()]), tag[0]]
        position = tag.end()
    pieces.append(_BACKSLASHED.sub(r"\\[", marked[position:]))
    return "".join(pieces)


# OWASP's CSV injection rule: a cell that begins with one of these is a formula to a
# spreadsheet. A handle such as @ana (or @ana@example.social) holds no formula and is kept
# as the platform spells it.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_PLAIN_HANDLE = re.compile(r"@[\w.-]+(@[\w.-]+)?")


def spreadsheet_cell(value: object) -> str:
    """A CSV cell no spreadsheet runs: a leading formula character gets a ``'`` before it."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) and not _PLAIN_HANDLE.fullmatch(text):
        return "'" + text
    return text


def web_link(url: str | None) -> str | None:
    """``url`` when it is an ``http(s)`` address, else None: what may go into an ``href``."""
    if url is None:
        return None
    return url if _WEB_LINK.fullmatch(url) else None


def href(url: str | None) -> str:
    """A template's ``href`` for a link from elsewhere: the link, or ``#`` when it is not one."""
    return web_link(url) or "#"
