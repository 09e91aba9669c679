"""The review page without a browser: what GET, POST, tampering, replay and expiry change."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from digest_site import (
    LINK,
    Site,
    clone_site,
    database,
    decisions,
    make_site,
    parse,
    parts,
    pending,
    review_links,
)
from helpers import DAY, NOW
from sqlalchemy import delete, func, select
from werkzeug.test import Client, TestResponse

from service.app import App
from service.digest import deliver_outbox, queue_digest
from service.model import Channel, SuggestionState
from service.store.models import AuditEntry, ReviewLink, Suggestion
from service.suggestions import LOPPER, decide, transition
from service.web import start
from service.web.review import CSRF_COOKIE, ReviewApp

S = SuggestionState
PG_URL = os.environ.get("LOPPER_TEST_DATABASE_URL")


@dataclass
class Page:
    site: Site
    app: App
    client: Client
    path: str  # /review/<token>
    text: str  # the digest's plain text part
    html: str

    def get(self, path: str | None = None) -> TestResponse:
        return self.client.get(path or self.path)

    def form(self) -> dict[str, str]:
        body = self.get().get_data(as_text=True)
        match = re.search(r'name="csrf" value="([^"]+)"', body)
        assert match, "the page carries a form token"
        # What a browser sends back with every row: the state the row was shown in.
        shown = dict(re.findall(r'type="hidden" name="(v-\d+)" value="([^"]+)"', body))
        return {"csrf": match[1], "snooze_days": "30", **shown}

    def audit_count(self) -> int:
        with self.app.store.session() as session:
            return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


PG = pytest.param(
    "postgresql",
    marks=pytest.mark.skipif(not PG_URL, reason="LOPPER_TEST_DATABASE_URL is not set"),
)
BOTH = pytest.mark.parametrize("web_backend", ["sqlite", PG])


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One synced and evaluated sandbox store; each test works on a copy of it."""
    root = tmp_path_factory.mktemp("web")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(root / "state"))
        site = make_site(root / "template", size=120)
        site.close()
    yield site


@pytest.fixture
def web_backend() -> str:
    return "sqlite"


@pytest.fixture
def page(home, tmp_path, synced, web_backend, postgres_schemas) -> Iterator[Page]:
    if web_backend == "sqlite":
        site = clone_site(synced, tmp_path / "site")
    else:
        site = make_site(
            tmp_path / "site", size=120, database_url=database("postgresql", postgres_schemas)
        )
    application = site.app()
    assert queue_digest(application, NOW)
    assert deliver_outbox(application, NOW) == 1
    (eml,) = (site.root / "outbox").glob("*.eml")
    text, html = parts(parse(eml.read_bytes()))
    (link,) = set(review_links(text))
    client = Client(ReviewApp(application))
    yield Page(site, application, client, urlsplit(link).path, text, html)
    site.close()


@BOTH
def test_get_shows_every_suggestion_and_changes_nothing(page: Page) -> None:
    before, audit = decisions(page.app), page.audit_count()
    response = page.get()
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    for suggestion in pending(page.app):
        assert suggestion.connection.handle in body
        assert f'name="d-{suggestion.id}"' in body
        row = body.split(f'id="s-{suggestion.id}"')[1].split("</li>")[0]
        assert ("gone or moved</span>" in row) == (suggestion.reason.value == "gone")
    # labelled controls: every radio sits in a label, every row's group is named
    assert body.count('<input type="radio"') == body.count('<label><input type="radio"')
    assert "Decision for" in body and "<legend" in body
    # GET again, and every link of the email: nothing changes, the link stays unused
    for link in set(LINK.findall(page.text) + LINK.findall(page.html)):
        if urlsplit(link).netloc == urlsplit(page.app.settings.web.url).netloc:
            assert page.get(urlsplit(link).path).status_code == 200
    assert decisions(page.app) == before
    assert page.audit_count() == audit
    with page.app.store.session() as session:
        assert session.scalars(select(ReviewLink.used_at)).one() is None


def test_secure_headers_and_cookie(page: Page) -> None:
    response = page.get()
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none'
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(CSRF_COOKIE) and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    for path in ("/", "/nothing", "/static/review.css"):
        assert page.get(path).headers["X-Frame-Options"] == "DENY"
    assert page.get("/static/review.css").mimetype == "text/css"


@BOTH
def test_a_submit_decides_through_the_web_channel_and_once_only(page: Page) -> None:
    ids = [s.id for s in pending(page.app)]
    form = page.form()
    form.update({f"d-{ids[0]}": "remove", f"d-{ids[1]}": "keep", f"d-{ids[2]}": "snooze"})
    response = page.client.post(page.path, data=form)
    assert response.status_code == 303
    assert response.headers["Location"] == page.path
    after = decisions(page.app)
    assert after[ids[0]] == ("confirmed", "web")
    assert after[ids[1]] == ("kept", "web")
    assert after[ids[2]] == ("snoozed", "web")
    assert all(after[i] == ("pending", None) for i in ids[3:])
    with page.app.store.session() as session:
        via = {
            e.entity_id: e.via
            for e in session.scalars(select(AuditEntry).where(AuditEntry.to_state != "pending"))
        }
    assert via == {ids[0]: Channel.WEB, ids[1]: Channel.WEB, ids[2]: Channel.WEB}
    shown = page.get().get_data(as_text=True)
    assert "Your decisions were recorded" in shown and 'name="csrf"' not in shown

    # the same POST again (a replay): refused, nothing changes
    audit = page.audit_count()
    replay = dict(form)
    replay[f"d-{ids[3]}"] = "remove"
    response = page.client.post(page.path, data=replay)
    assert response.status_code == 409
    assert "already used" in response.get_data(as_text=True)
    assert decisions(page.app) == after
    assert page.audit_count() == audit


def test_select_all_applies_to_the_rows_left_for_later(page: Page) -> None:
    ids = [s.id for s in pending(page.app)]
    decide(page.app.store, [ids[-1]], S.CONFIRMED, via=Channel.CLI, now=NOW)
    body = page.get().get_data(as_text=True)
    # what a browser submits: every radio group offered, at its checked value
    form = {name: "later" for name in re.findall(r'name="(d-\d+)" value="later"', body)}
    assert f"d-{ids[-1]}" not in form and len(form) == len(ids) - 1
    form.update(page.form())
    form.update({f"d-{ids[0]}": "keep", "all": "snooze", "snooze_days": "7"})
    assert page.client.post(page.path, data=form).status_code == 303
    after = decisions(page.app)
    assert after[ids[0]] == ("kept", "web")
    assert {after[i] for i in ids[1:-1]} == {("snoozed", "web")}
    assert after[ids[-1]] == ("confirmed", "cli")
    assert "not changed" not in page.get().get_data(as_text=True)
    with page.app.store.session() as session:
        from service.store.models import Suggestion

        until = session.get_one(Suggestion, ids[1]).snoozed_until
    assert until == NOW + timedelta(days=7)


@pytest.mark.parametrize("where", ["signature", "payload", "cut"])
def test_a_tampered_link_gets_a_clear_page_and_changes_nothing(page: Page, where: str) -> None:
    token = page.path.rsplit("/", 1)[1]
    payload, signature = token.split(".")
    flip = {"A": "B"}.get(signature[3], "A")
    tampered = {
        "signature": f"{payload}.{signature[:3]}{flip}{signature[4:]}",
        "payload": f"{payload[:-2]}{'xy' if payload[-2:] != 'xy' else 'zz'}.{signature}",
        "cut": token[: len(token) // 2],
    }[where]
    form = page.form()
    ids = [s.id for s in pending(page.app)]
    form[f"d-{ids[0]}"] = "remove"
    before, audit = decisions(page.app), page.audit_count()
    response = page.get(f"/review/{tampered}")
    assert response.status_code == 400
    assert "This link is not valid" in response.get_data(as_text=True)
    response = page.client.post(f"/review/{tampered}", data=form)
    assert response.status_code == 400
    assert decisions(page.app) == before
    assert page.audit_count() == audit


@BOTH
def test_a_form_without_its_token_changes_nothing(page: Page) -> None:
    ids = [s.id for s in pending(page.app)]
    page.get()
    before = decisions(page.app)
    for form in (
        {f"d-{ids[0]}": "remove"},  # no token
        {"csrf": "forged", f"d-{ids[0]}": "remove"},
    ):
        response = page.client.post(page.path, data=form)
        assert response.status_code == 403
    # a token from this page, but from another browser (no cookie): refused as well
    token = page.form()["csrf"]
    stranger = Client(ReviewApp(page.app))
    response = stranger.post(page.path, data={"csrf": token, f"d-{ids[0]}": "remove"})
    assert response.status_code == 403
    assert decisions(page.app) == before
    with page.app.store.session() as session:
        assert session.scalars(select(ReviewLink.used_at)).one() is None  # still usable


def test_an_expired_or_unknown_link_changes_nothing(page: Page) -> None:
    ids = [s.id for s in pending(page.app)]
    form = page.form()
    form[f"d-{ids[0]}"] = "remove"
    before = decisions(page.app)
    page.site.clock.advance(timedelta(days=14))
    response = page.client.post(page.path, data=form)
    assert response.status_code == 410
    assert "expired" in response.get_data(as_text=True)
    assert page.get().status_code == 410
    page.site.clock.now = NOW
    with page.app.store.session() as session:
        session.execute(delete(ReviewLink))
    assert page.get().status_code == 404
    assert page.client.post(page.path, data=form).status_code == 404
    assert decisions(page.app) == before


@BOTH
def test_one_truth_across_the_terminal_and_the_page(page: Page) -> None:
    ids = [s.id for s in pending(page.app)]
    form = page.form()
    decide(page.app.store, [ids[0]], S.KEPT, via=Channel.CLI, now=NOW)
    body = page.get().get_data(as_text=True)
    row = body.split(f'id="s-{ids[0]}"')[1].split("</li>")[0]
    assert "kept in the terminal" in row and 'type="radio"' not in row
    # a page opened before the terminal's decision cannot override it
    form.update({f"d-{ids[0]}": "remove", f"d-{ids[1]}": "remove"})
    assert page.client.post(page.path, data=form).status_code == 303
    after = decisions(page.app)
    assert after[ids[0]] == ("kept", "cli")
    assert after[ids[1]] == ("confirmed", "web")
    assert f"#{ids[0]} not changed" in page.get().get_data(as_text=True)


@BOTH
def test_a_page_opened_before_a_decision_elsewhere_cannot_override_it(page: Page) -> None:
    ids = [s.id for s in pending(page.app)]
    form = page.form()  # the page is open in a browser ...
    # ... while in the terminal: `lopper snooze` one row, `lopper keep` another
    decide(page.app.store, [ids[0]], S.SNOOZED, via=Channel.CLI, now=NOW, until=NOW + timedelta(5))
    decide(page.app.store, [ids[1]], S.KEPT, via=Channel.CLI, now=NOW)
    form.update({f"d-{i}": "later" for i in ids})
    form["all"] = "remove"  # "Remove all" on the stale page

    assert page.client.post(page.path, data=form).status_code == 303

    after = decisions(page.app)
    assert after[ids[0]] == ("snoozed", "cli")
    assert after[ids[1]] == ("kept", "cli")
    assert {after[i] for i in ids[2:]} == {("confirmed", "web")}
    shown = page.get().get_data(as_text=True)
    assert f"#{ids[0]} not changed: decided elsewhere since the page was shown: now snoozed" in (
        shown
    )
    assert f"#{ids[1]} not changed: decided elsewhere since the page was shown: now kept" in shown


def test_a_row_changed_and_changed_back_since_the_page_is_not_overridden(page: Page) -> None:
    ids = [s.id for s in pending(page.app)]
    form = page.form()
    # Snoozed in the terminal, and woken by lopper later: pending again, but not as shown.
    decide(page.app.store, [ids[0]], S.SNOOZED, via=Channel.CLI, now=NOW, until=NOW + DAY)
    with page.app.store.session() as session:
        suggestion = session.get_one(Suggestion, ids[0])
        transition(session, suggestion, S.PENDING, actor=LOPPER, via=Channel.SYSTEM, now=NOW + DAY)
    form[f"d-{ids[0]}"] = "remove"

    assert page.client.post(page.path, data=form).status_code == 303

    assert decisions(page.app)[ids[0]] == ("pending", "cli")


def test_a_form_that_does_not_say_what_it_showed_changes_nothing(page: Page) -> None:
    ids = [s.id for s in pending(page.app)]
    form = page.form()
    form[f"d-{ids[0]}"] = "remove"
    before = decisions(page.app)
    for version in ("", "pending", "pending:soon", "gone:1"):
        form[f"v-{ids[0]}"] = version
        response = page.client.post(page.path, data=form)
        assert response.status_code == 400
        assert "does not say what" in response.get_data(as_text=True)
    assert decisions(page.app) == before
    with page.app.store.session() as session:
        assert session.scalars(select(ReviewLink.used_at)).one() is None


def test_a_form_from_an_older_page_counts_as_showing_the_row_pending(page: Page) -> None:
    ids = [s.id for s in pending(page.app)]
    form = {k: v for k, v in page.form().items() if not k.startswith("v-")}
    decide(page.app.store, [ids[0]], S.SNOOZED, via=Channel.CLI, now=NOW, until=NOW + DAY)
    form.update({f"d-{ids[0]}": "remove", f"d-{ids[1]}": "remove"})

    assert page.client.post(page.path, data=form).status_code == 303

    after = decisions(page.app)
    assert (after[ids[0]], after[ids[1]]) == (("snoozed", "cli"), ("confirmed", "web"))


def test_no_redirect_leaves_the_site(page: Page) -> None:
    ids = [s.id for s in pending(page.app)]
    form = page.form()
    form.update(
        {f"d-{ids[0]}": "keep", "next": "https://evil.example/", "redirect": "//evil.example"}
    )
    response = page.client.post(page.path + "?next=https://evil.example/", data=form)
    assert response.status_code == 303
    assert response.headers["Location"] == page.path
    stray = page.get("//evil.example/review/x")
    assert stray.status_code == 400 and "Location" not in stray.headers
    assert page.client.put(page.path).status_code == 405


def test_nothing_chosen_keeps_the_link_usable(page: Page) -> None:
    response = page.client.post(page.path, data=page.form())
    assert response.status_code == 200
    assert "Nothing was chosen" in response.get_data(as_text=True)
    with page.app.store.session() as session:
        assert session.scalars(select(ReviewLink.used_at)).one() is None


def test_start_serves_from_a_thread_and_stops(page: Page) -> None:
    import urllib.request

    server = start(page.app)
    try:
        assert server.url == page.app.settings.web.url
        with urllib.request.urlopen(server.url + page.path, timeout=10) as answer:
            assert answer.status == 200
            assert "Review suggestions" in answer.read().decode()
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url + "/", timeout=2)


def test_behind_a_proxy_the_links_and_the_cookie_follow_the_base_url(home, tmp_path):
    site = make_site(
        tmp_path / "site", size=60, web="  base_url: https://lopper.example.org/lop/\n"
    )
    application = site.app()
    assert application.settings.web.url == "https://lopper.example.org/lop"
    queue_digest(application, NOW)
    deliver_outbox(application, NOW)
    (eml,) = (site.root / "outbox").glob("*.eml")
    (link,) = set(review_links(parts(parse(eml.read_bytes()))[0]))
    assert link.startswith("https://lopper.example.org/lop/review/")
    path = urlsplit(link).path
    client = Client(ReviewApp(application))
    response = client.get(path)
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert "Path=/lop/review/" in cookie and "Secure" in cookie
    assert 'href="/lop/static/review.css"' in response.get_data(as_text=True)
    assert client.get("/lop/static/review.css").status_code == 200
    site.close()


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_lopper_web_serves_in_the_foreground_until_interrupted(home, tmp_path, stop):
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    site = make_site(tmp_path / "site", size=40, sync=False)
    url = site.app().settings.web.url
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--config", str(site.config), "web"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as answer:
                    assert "review page" in answer.read().decode()
                    break
            except OSError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "lopper web did not start serving"
                time.sleep(0.2)
        process.send_signal(getattr(signal, stop))
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert f"review page on {url}" in output and "stopped" in output
    site.close()
