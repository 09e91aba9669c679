"""Rendering a digest: Jinja2 templates to plain text and HTML, CSS inlined, one message.

Pure: plain values in (``DigestData``, a time zone), a message out. The HTML is laid out
with tables and inline styles because that is what common mail clients show as meant;
the picture of the network is made of table cells, so it shows without images.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr
from functools import cache
from typing import Any

import css_inline
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from service.digest.compose import DigestData
from service.text import href


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("service.digest", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["plural"] = lambda n, word, many=None: (
        f"{n:,} {word}" if n == 1 else f"{n:,} {many or word + 's'}"
    )
    env.filters["href"] = href  # a link from elsewhere: http(s) only
    env.filters["signed"] = lambda n: f"+{n:,}" if n > 0 else f"{n:,}" if n < 0 else "no change"
    return env


@cache
def _inliner() -> css_inline.CSSInliner:
    # @media rules cannot be inlined; keeping them lets clients that read <style> narrow
    # the layout further, while the inline styles alone already fit a phone.
    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def _context(data: DigestData, zone: tzinfo) -> dict[str, Any]:
    days: dict[datetime, str] = {}

    def day(value: datetime | None) -> str:
        # Both parts show the same few thousand dates: format each once.
        if value is None:
            return "never"
        shown = days.get(value)
        if shown is None:
            shown = days[value] = value.astimezone(zone).strftime("%Y-%m-%d")
        return shown

    def moment(value: datetime | None) -> str:
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else "never"

    widest = max((b.total for a in data.accounts for b in a.buckets), default=0)
    return {
        "d": data,
        "day": day,
        "moment": moment,
        "zone": getattr(zone, "key", str(zone)),
        "widest": widest or 1,
    }


def subject_of(data: DigestData, zone: tzinfo) -> str:
    when = data.generated_at.astimezone(zone).strftime("%Y-%m-%d")
    new, pending = data.new_count, data.pending_count
    if pending:
        what = f"{new} new suggestion{'s' if new != 1 else ''}, {pending} to review"
    else:
        what = "nothing to review"
    return f"lopper digest {when}: {what}"


def render(data: DigestData, zone: tzinfo) -> Rendered:
    env = environment()
    context = _context(data, zone)
    text = env.get_template("digest.txt").render(context)
    html = _inliner().inline(env.get_template("digest.html").render(context))
    return Rendered(subject_of(data, zone), text, html)


def envelope_sender(sender: str) -> str:
    return parseaddr(sender)[1] or "lopper@localhost"


def build_message(
    rendered: Rendered, sender: str, recipients: list[str], now: datetime
) -> EmailMessage:
    """A multipart/alternative message: the plain text first, the HTML preferred."""
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients) if recipients else sender
    message["Date"] = format_datetime(now)
    domain = envelope_sender(sender).rpartition("@")[2] or "localhost"
    # Fixed when the digest is queued: a resend after a crash carries the same id, so mail
    # clients can tell it is the same message.
    message["Message-ID"] = make_msgid("lopper-digest", domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    # Quoted-printable keeps the stored message 7-bit ASCII and readable in a .eml file.
    message.set_content(rendered.text, cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return message


def recipients_of(value: list[str]) -> list[str]:
    return [address for _, address in getaddresses(value) if address]
