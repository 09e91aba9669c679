"""The review page: one digest's suggestions, keep / remove / snooze, one submit.

What keeps it safe to put behind a link in an email:
- a GET never changes anything (mail scanners open every link);
- the link is signed, expires, and is good for one submit: the submit claims it first;
- the form carries a token bound to the link and to a SameSite=Strict cookie (CSRF);
- every response forbids framing, scripts, referrers (the link is a bearer token) and caching;
- the only redirect goes to a path built here from a verified link, never from the request.
Decisions go through ``service.suggestions.decide`` with the web channel, like the
terminal's, so both show one truth; each row carries the state it was shown in, and a row
decided elsewhere since is left alone and reported back.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from service.digest.compose import Person, unseen_notes
from service.digest.links import LinkInvalid, Signer, claim_link, find_link, signing_key
from service.errors import ConfigError
from service.logs import get_logger
from service.model import Channel, SuggestionState
from service.store.models import Account, Digest, ReviewLink, Suggestion
from service.store.queries import account_unseen
from service.suggestions import Version, decide, version_of
from service.text import href

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from jinja2 import Environment

    from service.app import App

log = get_logger("lopper.web")
S = SuggestionState
CSRF_COOKIE = "lopper_csrf"
CHOICES = {"remove": S.CONFIRMED, "keep": S.KEPT, "snooze": S.SNOOZED}
SNOOZE_DAYS = (7, 30, 90)
_SEED = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass
class Row:
    person: Person
    decidable: bool
    decided: str | None = None  # how it was decided, when it is no longer open
    version: str = ""  # the state and last change shown, sent back with the decision


@dataclass
class Group:
    account: str
    rows: list[Row] = field(default_factory=list)
    unseen: list[str] = field(default_factory=list)  # kinds not seen: why, what to do


class ReviewApp:
    """A WSGI application; ``service.web.start`` serves it from a thread."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.signer = Signer(signing_key(app.settings))
        self.prefix = urlsplit(app.settings.web.url).path.rstrip("/")
        self.secure_cookie = app.settings.web.url.startswith("https://")
        rules = [
            Rule("/", endpoint="index", methods=["GET"]),
            Rule("/review/<token>", endpoint="review", methods=["GET", "POST"]),
            Rule("/static/review.css", endpoint="css", methods=["GET"]),
        ]
        if self.prefix:
            # Behind a proxy that passes the external path on unchanged.
            rules += [
                Rule(self.prefix + "/", endpoint="index", methods=["GET"]),
                Rule(self.prefix + "/review/<token>", endpoint="review", methods=["GET", "POST"]),
                Rule(self.prefix + "/static/review.css", endpoint="css", methods=["GET"]),
            ]
        # No merging of slashes: werkzeug would answer a 308 redirect to the merged path.
        self.urls = Map(rules, strict_slashes=False, merge_slashes=False)
        self.css_url = f"{self.prefix}/static/review.css"

    @cached_property
    def templates(self) -> Environment:
        """The page's templates, loaded at the first page served: a daemon whose page nobody
        opens does not hold Jinja2 (about 2 MiB)."""
        from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

        templates = Environment(
            loader=PackageLoader("service.web", "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        zone = self.app.settings.digest.zone
        templates.filters["href"] = href  # a link from elsewhere: http(s) only
        templates.filters["day"] = lambda v: (
            v.astimezone(zone).strftime("%Y-%m-%d") if v else "never"
        )
        templates.filters["moment"] = lambda v: (
            v.astimezone(zone).strftime("%Y-%m-%d %H:%M") if v else "never"
        )
        return templates

    # -- WSGI ---------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        request = Request(environ)
        request.max_content_length = 512 * 1024
        request.max_form_memory_size = 512 * 1024
        try:
            endpoint, values = self.urls.bind_to_environ(environ).match()
            response = getattr(self, f"on_{endpoint}")(request, **values)
        except MethodNotAllowed:
            response = self.page(
                "message.html",
                405,
                title="Not allowed",
                text="This page only shows and submits the review form.",
            )
        except NotFound:
            response = self.page(
                "message.html", 404, title="Not found", text="There is no such page."
            )
        except HTTPException as exc:
            response = self.page(
                "message.html", exc.code or 400, title="Not accepted", text=str(exc.description)
            )
        except Exception as exc:
            # Logged without the request: its path is a review link.
            log.error("review page failed", error=type(exc).__name__, exc_info=True)
            response = self.page(
                "message.html",
                500,
                title="Something went wrong",
                text="lopper could not answer this request. Check `lopper status` and the "
                "logs; decisions already recorded stay recorded.",
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        return response(environ, start_response)

    def page(self, template: str, status: int = 200, **context: Any) -> Response:
        html = self.templates.get_template(template).render(css_url=self.css_url, **context)
        return Response(html, status=status, mimetype="text/html")

    # -- endpoints ------------------------------------------------------------------------

    def on_index(self, request: Request) -> Response:
        return self.page(
            "message.html",
            title="lopper",
            text="This is lopper's review page. Open it from the link in your digest email.",
        )

    def on_css(self, request: Request) -> Response:
        from importlib.resources import files

        css = files("service.web").joinpath("static/review.css").read_text(encoding="utf-8")
        response = Response(css, mimetype="text/css")
        return response

    def on_review(self, request: Request, token: str) -> Response:
        now = self.app.clock()
        refusal = self._check_link(token, now, request.method == "POST")
        if isinstance(refusal, Response):
            return refusal
        link_id, nonce = refusal
        if request.method == "POST":
            return self._submit(request, token, link_id, nonce, now)
        return self._show(request, link_id, nonce)

    # -- helpers --------------------------------------------------------------------------

    def _refuse(self, status: int, title: str, text: str) -> Response:
        hint = (
            "Nothing was changed. Your suggestions are still there: the next digest brings "
            "a new link, or decide in a terminal with lopper review."
        )
        return self.page("message.html", status, title=title, text=text, hint=hint)

    def _check_link(self, token: str, now: datetime, posting: bool) -> Response | tuple[int, str]:
        try:
            nonce, expires = self.signer.read_link(token)
        except LinkInvalid:
            log.info("review link refused", why="signature")
            return self._refuse(
                400,
                "This link is not valid",
                "The link was changed or cut short on its way (some mail programs break long "
                "links), so lopper does not trust it.",
            )
        with self.app.store.session() as session:
            link = find_link(session, nonce)
            if link is None or link.expires_at != expires:
                log.info("review link refused", why="unknown")
                return self._refuse(
                    404,
                    "This link is not valid",
                    "lopper has no record of this link (was the database replaced?).",
                )
            if now >= link.expires_at:
                log.info("review link refused", why="expired")
                return self._refuse(
                    410,
                    "This link has expired",
                    f"It was good until {link.expires_at.astimezone(self.app.settings.digest.zone):%Y-%m-%d %H:%M}.",
                )
            if link.used_at is not None and posting:
                log.info("review link refused", why="replayed")
                return self._refuse(
                    409,
                    "This link was already used",
                    f"Its decisions were recorded on {link.used_at.astimezone(self.app.settings.digest.zone):%Y-%m-%d %H:%M}; "
                    "a link is good for one submit.",
                )
            return link.id, nonce

    def _rows(self, digest: Digest, ids: Iterable[int]) -> list[Group]:
        with self.app.store.session() as session:
            found = {
                s.id: s
                for s in session.scalars(
                    select(Suggestion)
                    .where(Suggestion.id.in_(list(ids)))
                    .options(selectinload(Suggestion.connection), selectinload(Suggestion.account))
                )
            }
            groups: dict[str, Group] = {}
            for suggestion_id in ids:
                s = found.get(suggestion_id)
                if s is None:
                    continue
                key = s.account.key
                decided = None
                if s.state is not S.PENDING:
                    how = f" {_VIA.get(s.decided_via, '')}" if s.decided_via else ""
                    when = (
                        f" on {s.decided_at.astimezone(self.app.settings.digest.zone):%Y-%m-%d}"
                        if s.decided_at
                        else ""
                    )
                    decided = f"{_said(s.state)}{how}{when}"
                row = Row(Person.of(s, key), s.state is S.PENDING, decided, _version(s))
                if key not in groups:
                    groups[key] = Group(key, unseen=self._unseen(s.account))
                groups[key].rows.append(row)
            return list(groups.values())

    def _unseen(self, account: Account) -> list[str]:
        try:
            config = self.app.settings.account(account.key)
        except ConfigError:
            return []
        return unseen_notes(account_unseen(account), config, self.app.settings.rules)

    def _show(
        self, request: Request, link_id: int, nonce: str, notice: str | None = None
    ) -> Response:
        with self.app.store.session() as session:
            link = session.get_one(ReviewLink, link_id)
            digest = link.digest
            ids = list(digest.suggestion_ids)
            used_at, outcome, expires = link.used_at, link.outcome, link.expires_at
            created = digest.created_at
        groups = self._rows(digest, ids)
        seed = request.cookies.get(CSRF_COOKIE, "")
        if not _SEED.match(seed):
            seed = secrets.token_urlsafe(24)
        open_rows = sum(1 for g in groups for r in g.rows if r.decidable)
        response = self.page(
            "review.html",
            groups=groups,
            used_at=used_at,
            outcome=_outcome_lines(outcome),
            expires=expires,
            created=created,
            open_rows=open_rows,
            total=sum(len(g.rows) for g in groups),
            csrf=self.signer.csrf_token(nonce, seed),
            snooze_days=SNOOZE_DAYS,
            notice=notice,
        )
        response.set_cookie(
            CSRF_COOKIE,
            seed,
            max_age=int(timedelta(days=1).total_seconds()),
            path=f"{self.prefix}/review/",
            secure=self.secure_cookie,
            httponly=True,
            samesite="Strict",
        )
        return response

    def _submit(
        self, request: Request, token: str, link_id: int, nonce: str, now: datetime
    ) -> Response:
        form = request.form
        if not self.signer.csrf_ok(form.get("csrf", ""), nonce, request.cookies.get(CSRF_COOKIE)):
            log.info("review submit refused", why="csrf")
            return self._refuse(
                403,
                "This form could not be verified",
                "It did not come from the page lopper showed you in this browser (or cookies "
                "are off). Open the link from your digest again and submit from there.",
            )
        with self.app.store.session() as session:
            link = session.get_one(ReviewLink, link_id)
            ids = list(link.digest.suggestion_ids)
        everyone = form.get("all", "")
        if everyone and everyone not in CHOICES:
            return self._refuse(400, "Not accepted", f"Unknown choice for every row: {everyone!r}.")
        try:
            days = int(form.get("snooze_days", "30"))
        except ValueError:
            days = 0
        if days not in SNOOZE_DAYS:
            return self._refuse(400, "Not accepted", "Snooze for 7, 30 or 90 days.")
        chosen: dict[S, list[int]] = {state: [] for state in CHOICES.values()}
        shown: dict[int, Version] = {}
        for suggestion_id in ids:
            value = form.get(f"d-{suggestion_id}")
            if value is None:
                continue  # not offered on the page: it was decided already
            if value == "later" and everyone:
                value = everyone
            if value == "later":
                continue
            if value not in CHOICES:
                return self._refuse(
                    400, "Not accepted", f"Unknown choice {value!r} for #{suggestion_id}."
                )
            # A page lopper rendered offers pending rows only: a form that does not say
            # when it saw the row (one rendered before the page said so) saw it pending.
            sent = form.get(f"v-{suggestion_id}")
            version = (S.PENDING, None) if sent is None else _read_version(sent)
            if version is None:
                return self._refuse(
                    400,
                    "Not accepted",
                    f"The form does not say what #{suggestion_id} looked like when it was "
                    "shown. Open the link from your digest again and submit from there.",
                )
            shown[suggestion_id] = version
            chosen[CHOICES[value]].append(suggestion_id)
        if not any(chosen.values()):
            return self._show(
                request,
                link_id,
                nonce,
                notice="Nothing was chosen, so nothing changed: pick remove, keep or snooze on a row first.",
            )
        with self.app.store.session() as session:
            if not claim_link(session, link_id, now):
                return self._refuse(
                    409, "This link was already used", "A link is good for one submit."
                )
        outcome: dict[str, Any] = {"refused": {}}
        for state, chosen_ids in chosen.items():
            until = now + timedelta(days=days) if state is S.SNOOZED else None
            # Only rows still as the page showed them change: a decision made elsewhere
            # since (the terminal, another page) stands and is reported back.
            result = decide(
                self.app.store,
                chosen_ids,
                state,
                via=Channel.WEB,
                now=now,
                until=until,
                shown=shown,
            )
            outcome[state.value] = result.changed
            outcome["refused"].update({str(k): v for k, v in result.refused.items()})
        with self.app.store.session() as session:
            session.get_one(ReviewLink, link_id).outcome = outcome
        log.info(
            "review submitted",
            confirmed=len(outcome[S.CONFIRMED.value]),
            kept=len(outcome[S.KEPT.value]),
            snoozed=len(outcome[S.SNOOZED.value]),
            refused=len(outcome["refused"]),
        )
        # Post/redirect/get: a reload shows the result instead of submitting again. The
        # target is this link's own path, built here; nothing from the request is echoed.
        response = Response(status=303)
        response.headers["Location"] = f"{self.prefix}/review/{token}"
        return response


def _version(suggestion: Suggestion) -> str:
    state, at = version_of(suggestion)
    return f"{state.value}:{int(at.timestamp())}"


def _read_version(value: str) -> Version | None:
    state, _, seconds = value.partition(":")
    try:
        return S(state), datetime.fromtimestamp(int(seconds), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


_VIA = {
    Channel.CLI: "in the terminal",
    Channel.REVIEW: "in the terminal (lopper review)",
    Channel.WEB: "on this page",
    Channel.DAEMON: "by the service",
    Channel.SYSTEM: "by lopper",
}


def _said(state: S) -> str:
    return {
        S.CONFIRMED: "confirmed for removal",
        S.REMOVED: "removed",
        S.MANUAL: "to remove by hand",
        S.FAILED: "removal failed, retrying",
        S.KEPT: "kept",
        S.SNOOZED: "snoozed",
        S.EXPIRED: "no longer suggested",
        S.RESTORED: "followed again",
        S.PENDING: "pending",
    }[state]


def _outcome_lines(outcome: dict[str, Any] | None) -> list[str]:
    if not outcome:
        return []
    lines = []
    for state, label in ((S.CONFIRMED, "to be removed"), (S.KEPT, "kept"), (S.SNOOZED, "snoozed")):
        ids = outcome.get(state.value) or []
        if ids:
            lines.append(f"{len(ids)} {label}: " + ", ".join(f"#{i}" for i in ids))
    for sid, why in (outcome.get("refused") or {}).items():
        lines.append(f"#{sid} not changed: {why}")
    return lines
