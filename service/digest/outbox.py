"""The outbox: digests wait here until delivered, by SMTP or as .eml files.

A digest is claimed (``sending``) in its own committed step, delivered, then marked
``sent`` in the step that records the success. A failure puts it back in the queue with a
later ``next_attempt_at`` (doubling, capped), for ever: a digest is never dropped.

The window between the server accepting the message and the commit that records it cannot
be closed with SMTP: if the process dies exactly there, the claim lapses after
``CLAIM_LAPSE`` and the digest is sent again, with the same Message-ID. We chose a possible
duplicate (recognisable as such) over a possible loss, since a digest carries the review
link. Delivery to files cannot double: the file name is the digest's own, written atomically.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from service import config as cfg
from service.config import Settings
from service.files import write_private
from service.logs import get_logger, scrub
from service.store import Store
from service.store.models import Digest, DigestState

log = get_logger("lopper.digest")

BACKOFF_BASE = timedelta(minutes=5)
BACKOFF_CAP = timedelta(hours=6)
CLAIM_LAPSE = timedelta(minutes=15)
SMTP_TIMEOUT = 30.0


class DeliveryError(Exception):
    """The digest could not be handed over; it stays in the outbox."""


def backoff(attempts: int, base: timedelta = BACKOFF_BASE) -> timedelta:
    """Wait after the n-th failed attempt: 5 min, 10, 20, ... (from ``base``) at most 6 h."""
    return min(BACKOFF_CAP, base * (1 << max(0, min(attempts - 1, 16))))


def outbox_folder(settings: Settings) -> Path:
    return settings.digest.folder or cfg.state_dir() / "outbox"


def eml_name(digest: Digest) -> str:
    when = digest.slot or digest.created_at
    return f"digest-{when:%Y%m%dT%H%M%SZ}-{digest.id}.eml"


def write_atomically(path: Path, data: bytes, *, tighten_folder: bool = False) -> None:
    """Write a digest file atomically, 0600 in a 0700 folder: it carries the review link."""
    write_private(path, data, tighten_folder=tighten_folder)


def send_smtp(settings: Settings, recipients: list[str], data: bytes) -> dict[str, Any]:
    """Hand the message to the configured server; DeliveryError says why it would not take it."""
    from service.digest.render import envelope_sender

    smtp = settings.digest.smtp
    if not recipients:
        raise DeliveryError("digest.recipients is empty: add an address to send the digest to")
    context = ssl.create_default_context()
    try:
        client: smtplib.SMTP
        if smtp.security == "tls":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=SMTP_TIMEOUT, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT)
        with client:
            client.ehlo()
            if smtp.security == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if smtp.username:
                password = smtp.password.get_secret_value() if smtp.password else ""
                client.login(smtp.username, password)
            refused = client.sendmail(envelope_sender(smtp.sender), recipients, data)
    except smtplib.SMTPResponseException as exc:
        said = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        raise DeliveryError(f"{smtp.host}:{smtp.port} answered {exc.smtp_code} {said}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(
            f"{smtp.host}:{smtp.port} refused every recipient: {', '.join(exc.recipients)}"
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{smtp.host}:{smtp.port}: {exc or type(exc).__name__}") from None
    return {
        address: f"{code} {text.decode('utf-8', 'replace')}"
        for address, (code, text) in refused.items()
    }


def _due(now: datetime) -> Any:
    waiting = and_(
        Digest.state == DigestState.QUEUED,
        or_(Digest.next_attempt_at.is_(None), Digest.next_attempt_at <= now),
    )
    lapsed = and_(Digest.state == DigestState.SENDING, Digest.claimed_at <= now - CLAIM_LAPSE)
    return or_(waiting, lapsed)


def _claim(store: Store, digest_id: int, now: datetime) -> bool:
    """Take the digest for this sender; False if another sender has it or it is done."""
    with store.session() as session:
        result = session.execute(
            update(Digest)
            .where(Digest.id == digest_id, _due(now))
            .values(state=DigestState.SENDING, claimed_at=now)
        )
        return bool(getattr(result, "rowcount", 0) == 1)


def prune_sent(store: Store, before: datetime) -> int:
    """Clear the message of every digest sent (or previewed) before ``before``.

    The row stays (its slot, subject, summary and when it went: one digest per slot, and
    the history), only the message itself, up to a megabyte each, goes.
    """
    with store.session() as session:
        result = session.execute(
            update(Digest)
            .where(
                or_(
                    and_(Digest.state == DigestState.SENT, Digest.sent_at < before),
                    and_(Digest.preview.is_(True), Digest.created_at < before),
                ),
                Digest.message != "",
            )
            .values(message="")
        )
        return int(getattr(result, "rowcount", 0) or 0)


def release_claims(store: Store) -> int:
    """Put back every digest claimed for sending, at once: only for a daemon that knows it is
    the database's only one (SQLite's lock), so any claim is a dead process's. The digest
    goes out again with its Message-ID; the server may have taken it already."""
    with store.session() as session:
        result = session.execute(
            update(Digest)
            .where(Digest.state == DigestState.SENDING)
            .values(state=DigestState.QUEUED, claimed_at=None)
        )
        count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        log.warning("digest claims of a stopped daemon released", count=count)
    return count


def deliver_due(store: Store, settings: Settings, now: datetime) -> int:
    with store.session() as session:
        due = list(session.scalars(select(Digest.id).where(_due(now)).order_by(Digest.id)))
    delivered = 0
    for digest_id in due:
        if not _claim(store, digest_id, now):
            continue
        with store.session() as session:
            digest = session.get_one(Digest, digest_id)
            data = digest.message.encode("utf-8")
            recipients = list(digest.recipients)
            name = eml_name(digest)
        try:
            if settings.digest.delivery == "smtp":
                refused = send_smtp(settings, recipients, data)
                where = f"{settings.digest.smtp.host}:{settings.digest.smtp.port}"
            else:
                path = outbox_folder(settings) / name
                write_atomically(path, data, tighten_folder=settings.digest.folder is None)
                refused, where = {}, str(path)
        except (DeliveryError, OSError) as exc:
            said = scrub(str(exc)) or type(exc).__name__
            with store.session() as session:
                digest = session.get_one(Digest, digest_id)
                digest.attempts += 1
                digest.state = DigestState.QUEUED
                digest.claimed_at = None
                digest.next_attempt_at = now + backoff(digest.attempts, settings.digest.retry_after)
                digest.last_error = said
                log.warning(
                    "digest not delivered",
                    digest=digest_id,
                    attempt=digest.attempts,
                    retry_at=digest.next_attempt_at.isoformat(),
                    error=said,
                )
            continue
        with store.session() as session:
            digest = session.get_one(Digest, digest_id)
            digest.attempts += 1
            digest.state = DigestState.SENT
            digest.sent_at = now
            digest.next_attempt_at = None
            digest.last_error = (
                "refused: " + "; ".join(f"{a} {why}" for a, why in refused.items())
                if refused
                else None
            )
        delivered += 1
        log.info("digest delivered", digest=digest_id, to=where)
    return delivered


@dataclass(frozen=True)
class OutboxSummary:
    waiting: int
    sent: int
    last_sent_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None
    attempts: int  # of the oldest waiting digest

    def as_json(self) -> dict[str, Any]:
        return {
            "waiting": self.waiting,
            "sent": self.sent,
            "last_sent_at": self.last_sent_at.isoformat() if self.last_sent_at else None,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
            "last_error": self.last_error,
            "attempts": self.attempts,
        }


def summarize(session: Session) -> OutboxSummary:
    waiting_states = [DigestState.QUEUED, DigestState.SENDING]
    waiting = (
        session.scalar(
            select(func.count()).select_from(Digest).where(Digest.state.in_(waiting_states))
        )
        or 0
    )
    sent = (
        session.scalar(
            select(func.count()).select_from(Digest).where(Digest.state == DigestState.SENT)
        )
        or 0
    )
    last_sent = session.scalar(select(func.max(Digest.sent_at)))
    oldest = session.scalar(
        select(Digest).where(Digest.state.in_(waiting_states)).order_by(Digest.id).limit(1)
    )
    return OutboxSummary(
        waiting=waiting,
        sent=sent,
        last_sent_at=last_sent,
        next_attempt_at=oldest.next_attempt_at if oldest else None,
        last_error=oldest.last_error if oldest else None,
        attempts=oldest.attempts if oldest else 0,
    )
