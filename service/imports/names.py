"""People known only by name: keys, repairs and links shared by the exports and the Graph API.

Facebook's export names people and nothing else, and its Graph API returns app-scoped ids
that appear nowhere in the export, so on Facebook a friend's key is their name. Two friends
can share a name: the export reader keeps them apart with the date the friendship began
(``name:ana lima#1600000000``) and says so in the evidence. This module imports no SDK, so
that reading an export never needs one.
"""

from __future__ import annotations

import re
from urllib.parse import quote

NAME_PREFIX = "name:"
ANONYMOUS = "anonymous"  # an exchange the platform did not attribute to anyone
_SPACES = re.compile(r"\s+")


def repair(text: str) -> str:
    """Undo Facebook's mojibake: UTF-8 bytes written as ``\\u00XX`` escapes.

    ``"Jos\\u00c3\\u00a9"`` reads as ``"JosÃ©"``; as latin-1 bytes it is the UTF-8 of
    ``"José"``. A string with a character above U+00FF was not mangled this way, and one
    whose bytes are not valid UTF-8 is left as it is.
    """
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def clean_name(name: str) -> str:
    return _SPACES.sub(" ", name).strip()


def name_key(name: str) -> str:
    """The key of a person known by name: case and spacing do not matter."""
    return NAME_PREFIX + clean_name(name).casefold()


def homonym_key(name: str, since_epoch: int) -> str:
    """The key of one of several friends with the same name: the day the friendship began."""
    return f"{name_key(name)}#{since_epoch}"


def base_key(key: str) -> str:
    """``name:ana lima#1600000000`` -> ``name:ana lima``."""
    return key.split("#", 1)[0] if key.startswith(NAME_PREFIX) else key


def facebook_search_link(name: str) -> str:
    return f"https://www.facebook.com/search/people/?q={quote(clean_name(name))}"


def linkedin_search_link(name: str) -> str:
    return f"https://www.linkedin.com/search/results/people/?keywords={quote(clean_name(name))}"


def instagram_link(username: str) -> str:
    return f"https://www.instagram.com/{quote(username.lstrip('@'))}/"
