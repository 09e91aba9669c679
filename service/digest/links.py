"""Signed review links: who may open the review page for which digest, until when, once.

A link carries a random nonce and its expiry, signed with a key that never reaches the
database, a log or the digest (invariant 7): ``web.secret`` when configured, else a random
key kept in ``link-secret`` (0600) in the state directory. The store records each link's
nonce, digest, expiry and whether it was used; a link that verifies but is unknown, expired
or used changes nothing.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service import config as cfg
from service.config import Settings
from service.store.models import ReviewLink

SECRET_FILE = "link-secret"
_LINK_SALT = "lopper.review-link"
_CSRF_SALT = "lopper.review-csrf"


class LinkInvalid(Exception):
    """The link was altered, or was never issued by this installation."""


def signing_key(settings: Settings, state: Path | None = None) -> str:
    """The configured key, else the one kept in the state directory (made on first use)."""
    if settings.web.secret is not None and settings.web.secret.get_secret_value():
        return settings.web.secret.get_secret_value()
    path = (state or cfg.state_dir()) / SECRET_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_hex(32)
    temporary = path.with_name(f".{SECRET_FILE}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    try:
        # Two processes making the key at once: the first one written wins for both.
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class Signer:
    key: str

    def _link(self) -> URLSafeSerializer:
        return URLSafeSerializer(self.key, salt=_LINK_SALT)

    def _csrf(self) -> URLSafeSerializer:
        return URLSafeSerializer(self.key, salt=_CSRF_SALT)

    def link_token(self, nonce: str, expires_at: datetime) -> str:
        return str(self._link().dumps({"n": nonce, "e": int(expires_at.timestamp())}))

    def read_link(self, token: str) -> tuple[str, datetime]:
        """The nonce and expiry a token carries; LinkInvalid if it was altered."""
        try:
            data: Any = self._link().loads(token)
        except (BadSignature, UnicodeError, ValueError):
            raise LinkInvalid("the link's signature does not match") from None
        if not isinstance(data, dict) or not isinstance(data.get("n"), str):
            raise LinkInvalid("the link does not carry what a review link carries")
        try:
            expires = datetime.fromtimestamp(int(data["e"]), tz=UTC)
        except (KeyError, TypeError, ValueError, OverflowError):
            raise LinkInvalid("the link carries no valid expiry") from None
        return data["n"], expires

    def csrf_token(self, nonce: str, seed: str) -> str:
        """The form's token: bound to this link and to the browser's cookie ``seed``."""
        return str(self._csrf().dumps([nonce, seed]))

    def csrf_ok(self, token: str, nonce: str, seed: str | None) -> bool:
        if not token or not seed:
            return False
        try:
            data: Any = self._csrf().loads(token)
        except (BadSignature, UnicodeError, ValueError):
            return False
        return (
            isinstance(data, list)
            and len(data) == 2
            and secrets.compare_digest(str(data[0]), nonce)
            and secrets.compare_digest(str(data[1]), seed)
        )


def issue_link(
    session: Session, signer: Signer, digest_id: int, now: datetime, ttl: timedelta
) -> str:
    """Record a new link for a digest and return its signed token."""
    nonce = secrets.token_urlsafe(18)
    expires = (now + ttl).replace(microsecond=0)
    session.add(ReviewLink(nonce=nonce, digest_id=digest_id, created_at=now, expires_at=expires))
    return signer.link_token(nonce, expires)


def find_link(session: Session, nonce: str) -> ReviewLink | None:
    return session.scalar(select(ReviewLink).where(ReviewLink.nonce == nonce))


def claim_link(session: Session, link_id: int, now: datetime) -> bool:
    """Mark a link used; False if another request used it first (a replay)."""
    result = session.execute(
        update(ReviewLink)
        .where(ReviewLink.id == link_id, ReviewLink.used_at.is_(None))
        .values(used_at=now)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
