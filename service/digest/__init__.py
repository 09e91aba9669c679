"""The digest: what happened to the network since the last one, with a link to decide.

``queue_digest`` composes the digest of one schedule slot and stores it in the outbox (once
per slot); ``deliver_outbox`` sends what is due. The daemon calls both on the digest's
schedule; ``lopper digest --send`` calls them for "now".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import config as cfg
from service.digest.outbox import (
    OutboxSummary,
    deliver_due,
    outbox_folder,
    summarize,
    write_atomically,
)
from service.store.models import Digest, DigestState

if TYPE_CHECKING:
    from service.app import App
    from service.digest.compose import DigestData

__all__ = [
    "Preview",
    "deliver_outbox",
    "outbox_lines",
    "outbox_summary",
    "preview_digest",
    "queue_digest",
    "review_url",
]


def _aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {moment.isoformat()}")


def review_url(settings: cfg.Settings, token: str) -> str:
    return f"{settings.web.url}/review/{token}"


def _compose(
    session: Session, app: App, now: datetime, slot: datetime | None
) -> tuple[Digest, DigestData, str]:
    """Gather, render and store one digest (in the caller's transaction)."""
    # Imported here: the templates (Jinja2, the CSS inliner) and the evaluation's queries
    # are needed when a digest is made, not by `lopper status` nor by an idle daemon.
    from service.digest.compose import gather
    from service.digest.links import Signer, issue_link, signing_key
    from service.digest.render import build_message, recipients_of, render

    settings = app.settings
    earlier = select(Digest).where(Digest.preview.is_(False))
    if slot is not None:
        earlier = earlier.where(Digest.slot < slot)
    previous = session.scalar(earlier.order_by(Digest.slot.desc(), Digest.id.desc()).limit(1))
    data = gather(
        session,
        app.accounts(),
        settings.rules,
        now,
        since=previous.created_at if previous else None,
        previous=previous.summary if previous else None,
    )
    data.schedule = settings.schedule.digest
    for account in data.accounts:
        missing = app.loaded.account_ready(account.key)
        if missing:
            names = ", ".join(f"${{{m}}}" for m in missing)
            account.problems.insert(0, f"skipped: its secret {names} is not set")
    data.preview = slot is None
    recipients = recipients_of(settings.digest.recipients)
    digest = Digest(
        slot=slot,
        preview=slot is None,
        created_at=now,
        since=data.since,
        subject="",
        recipients=recipients,
        message_id="",
        message="",
        summary=data.summary(),
        suggestion_ids=data.suggestion_ids,
        state=DigestState.PREVIEW if slot is None else DigestState.QUEUED,
        attempts=0,
    )
    session.add(digest)
    session.flush()
    if data.suggestion_ids and settings.web.enabled:
        signer = Signer(signing_key(settings))
        token = issue_link(session, signer, digest.id, now, settings.web.link_ttl)
        data.review_url = review_url(settings, token)
        data.link_expires = now + settings.web.link_ttl
    rendered = render(data, settings.digest.zone)
    message = build_message(rendered, settings.digest.smtp.sender, recipients, now)
    digest.subject = rendered.subject[:300]
    digest.message_id = str(message["Message-ID"])
    digest.message = message.as_bytes(policy=message.policy.clone(linesep="\r\n")).decode("utf-8")
    return digest, data, rendered.html


def queue_digest(app: App, slot: datetime) -> bool:
    """Compose the digest of schedule slot ``slot`` into the outbox; False if it already is."""
    _aware(slot, "slot")
    slot = slot.replace(microsecond=0)  # the store keeps whole seconds
    with app.store.session() as session:
        if session.scalar(select(Digest.id).where(Digest.slot == slot)) is not None:
            return False
    try:
        with app.store.session() as session:
            _compose(session, app, app.clock(), slot)
    except IntegrityError:
        return False  # another process queued this slot at the same moment
    return True


def deliver_outbox(app: App, now: datetime) -> int:
    """Send every digest that is due; return how many were delivered."""
    _aware(now, "now")
    return deliver_due(app.store, app.settings, now)


def outbox_summary(app: App) -> OutboxSummary:
    with app.store.session() as session:
        return summarize(session)


def outbox_lines(app: App) -> list[str]:
    """What `lopper status` says of the outbox."""
    box = outbox_summary(app)
    zone = app.settings.digest.zone

    def when(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else "never"

    where = (
        f"SMTP {app.settings.digest.smtp.host}:{app.settings.digest.smtp.port}"
        if app.settings.digest.delivery == "smtp"
        else f"files in {outbox_folder(app.settings)}"
    )
    lines = [
        f"outbox:   {box.waiting} waiting, {box.sent} sent (last {when(box.last_sent_at)}; "
        f"delivery: {where})"
    ]
    if box.waiting:
        lines.append(
            f"          next attempt {when(box.next_attempt_at)} after {box.attempts} failed "
            f"attempt(s): {box.last_error or 'not tried yet'}"
        )
    return lines


@dataclass(frozen=True)
class Preview:
    eml: Path
    html: Path
    review_url: str | None
    subject: str


def preview_digest(app: App, folder: Path | None = None) -> Preview:
    """Write the digest as it would go out now (.eml and .html); nothing is sent.

    Its review link works like a sent one.
    """
    now = app.clock()
    with app.store.session() as session:
        digest, data, html = _compose(session, app, now, None)
        stem = f"digest-preview-{now:%Y%m%dT%H%M%SZ}-{digest.id}"
        message = digest.message.encode("utf-8")
        subject = digest.subject
    target = folder or cfg.state_dir() / "previews"
    eml, page = target / f"{stem}.eml", target / f"{stem}.html"
    write_atomically(eml, message, tighten_folder=folder is None)
    write_atomically(page, html.encode("utf-8"), tighten_folder=folder is None)
    return Preview(eml, page, data.review_url, subject)


def default_folder(app: App) -> Path:
    return outbox_folder(app.settings)
