"""A security review of lopper's own surface, as tests.

The review page: only a link signed with this installation's key opens it, a POST needs the
form token bound to that link and to the browser's cookie, a GET changes nothing whatever it
carries, no request can make it redirect elsewhere, and every response (error pages
included) carries the headers that keep it out of frames, caches and referrers.
(tests/test_web.py covers tampered, expired, replayed links and the form token itself.)

Secrets: a distinctive value planted in every credential of every platform, the SMTP
password and the link-signing key, while the accounts sync against the fakes, are evaluated,
the digest is sent, the review page is used and then every platform refuses: none of them
appears in a log line, a table, the digest or an error message.
(tests/test_secrets.py covers secrets inside platform errors, tests/test_cli.py one planted
through the command line.)

Files: the state directory is 0700, the database, token files and link key 0600.
The systemd unit's exposure score is checked by tests/test_deploy.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from digest_site import Site, decisions, free_port, make_site, parse, parts, review_links
from fakes.bluesky_server import FakeBluesky
from fakes.facebook_server import FakeGraph
from fakes.mastodon_server import FakeMastodon
from fakes.x_server import CLIENT_ID, USERNAME, FakeX
from helpers import NOW
from sqlalchemy import select
from werkzeug.test import Client

from service import logs
from service.app import App
from service.digest import deliver_outbox, queue_digest
from service.digest.links import SECRET_FILE, Signer
from service.platforms.tokens import save_token, token_path
from service.store.models import Base
from service.web.review import CSRF_COOKIE, SECURITY_HEADERS, ReviewApp

# --- the review page -------------------------------------------------------------------------


class Page:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.app = site.app()
        assert queue_digest(self.app, NOW)
        assert deliver_outbox(self.app, NOW) == 1
        (eml,) = (site.root / "outbox").glob("*.eml")
        text, _ = parts(parse(eml.read_bytes()))
        (link,) = set(review_links(text))
        self.path = urlsplit(link).path
        self.token = self.path.rsplit("/", 1)[1]
        self.client = Client(ReviewApp(self.app))

    def csrf(self, client: Client | None = None) -> str:
        body = (client or self.client).get(self.path).get_data(as_text=True)
        match = re.search(r'name="csrf" value="([^"]+)"', body)
        assert match
        return match[1]


@pytest.fixture
def page(home: Path, tmp_path: Path) -> Iterator[Page]:
    site = make_site(tmp_path / "site", size=60)
    yield Page(site)
    site.close()


def ids(page: Page) -> list[int]:
    return sorted(decisions(page.app))


def test_only_a_link_signed_with_this_installation_s_key_opens_the_page(page: Page) -> None:
    nonce, expires = ReviewApp(page.app).signer.read_link(page.token)
    before = decisions(page.app)
    # The same nonce and expiry, signed with another key: refused.
    forged = Signer("not-this-installation-s-key").link_token(nonce, expires)
    assert page.client.get(f"/review/{forged}").status_code == 400
    # The nonce alone, unsigned: refused.
    assert page.client.get(f"/review/{nonce}").status_code == 400
    form = {"csrf": page.csrf(), f"d-{ids(page)[0]}": "remove"}
    assert page.client.post(f"/review/{forged}", data=form).status_code == 400
    # A form token made for another link (with this browser's cookie): refused.
    seed = page.client.get_cookie(CSRF_COOKIE, path="/review/")
    assert seed is not None
    other = ReviewApp(page.app).signer.csrf_token("another-link-nonce", seed.value)
    response = page.client.post(page.path, data={**form, "csrf": other})
    assert response.status_code == 403
    # No other path takes a decision.
    for path in ("/", "/review", "/review/", "/static/review.css"):
        assert page.client.post(path, data=form).status_code in (404, 405)
    assert decisions(page.app) == before


def test_a_get_changes_nothing_whatever_it_carries(page: Page) -> None:
    first = ids(page)[0]
    csrf = page.csrf()
    before = decisions(page.app)
    query = f"csrf={csrf}&d-{first}=remove&all=remove&snooze_days=7&_method=POST"
    for method in ("GET", "HEAD"):
        response = page.client.open(f"{page.path}?{query}", method=method)
        assert response.status_code == 200
    assert decisions(page.app) == before
    with page.app.store.session() as session:
        from service.store.models import ReviewLink

        assert session.scalars(select(ReviewLink.used_at)).one() is None


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "http:evil.example",
        "javascript:alert(1)",
    ],
)
def test_no_request_makes_the_page_redirect_elsewhere(page: Page, target: str) -> None:
    from urllib.parse import quote

    params = "&".join(f"{k}={quote(target)}" for k in ("next", "redirect", "url", "return_to"))
    for path in (f"{page.path}?{params}", f"/?{params}", f"/review/{quote(target, safe='')}"):
        response = page.client.get(path)
        assert "Location" not in response.headers, (path, response.status_code)
    form = {"csrf": page.csrf(), f"d-{ids(page)[0]}": "keep", "next": target, "redirect": target}
    response = page.client.post(f"{page.path}?next={quote(target)}", data=form)
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location == page.path and location.startswith("/") and not location.startswith("//")


def test_a_path_with_doubled_slashes_gets_a_plain_answer(page: Page) -> None:
    response = page.client.get("/review///evil.example/")
    assert not 300 <= response.status_code < 400


def test_every_response_carries_the_secure_headers(page: Page, monkeypatch) -> None:
    form = {"csrf": page.csrf(), f"d-{ids(page)[0]}": "keep"}
    responses = {
        "page": page.client.get(page.path),
        "index": page.client.get("/"),
        "css": page.client.get("/static/review.css"),
        "404": page.client.get("/nothing"),
        "405": page.client.put(page.path),
        "400": page.client.get("/review/bad"),
        "403": Client(ReviewApp(page.app)).post(page.path, data=form),
    }
    # A failure inside the page: a 500 with the same headers, and the link not in the log.
    stream = io.StringIO()
    logs.configure_logging(json=True, stream=stream)

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(page.app.store, "session", broken)
    responses["500"] = page.client.get(page.path)
    monkeypatch.undo()
    assert responses["500"].status_code == 500
    assert "Traceback" not in responses["500"].get_data(as_text=True)
    assert page.token not in stream.getvalue() and "review page failed" in stream.getvalue()
    for name, response in responses.items():
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, (name, header)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "form-action 'self'" in csp and "base-uri 'none'" in csp
    assert SECURITY_HEADERS["Cache-Control"] == "no-store"  # the page carries the form token
    cookie = responses["page"].headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/review/" in cookie
    assert "Secure" not in cookie  # served over plain http on 127.0.0.1


def test_behind_https_the_cookie_is_secure(home: Path, tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", size=40, web="  base_url: https://lopper.example.net\n")
    try:
        page = Page(site)
        cookie = page.client.get(page.path).headers["Set-Cookie"]
        assert "; Secure" in cookie and "SameSite=Strict" in cookie
    finally:
        site.close()


# --- secrets ---------------------------------------------------------------------------------

PLANTED = {
    name: f"planted-{name.lower().replace('_', '-')}-{os.getpid()}-9c41e7"
    for name in (
        "SANDBOX_TOKEN",
        "MASTODON_TOKEN",
        "BLUESKY_PASSWORD",
        "FACEBOOK_TOKEN",
        "X_CONSUMER_SECRET",
        "SMTP_PASSWORD",
        "WEB_SECRET",
    )
}
# Handed out by a platform at run time: kept in token files, never in the configuration.
X_ACCESS = f"planted-x-access-{os.getpid()}-9c41e7"
X_REFRESH = f"planted-x-refresh-{os.getpid()}-9c41e7"
EVERY = [*PLANTED.values(), X_ACCESS, X_REFRESH]


class Mailbox:
    def __init__(self, password: str) -> None:
        self.password = password
        self.accepted: list[bytes] = []
        self.logins: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted.append(envelope.content)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
        assert isinstance(data, LoginPassword)
        self.logins.append(data.password)
        # handled=False: the server answers 535 itself on a refusal
        return AuthResult(success=data.password == self.password.encode(), handled=False)


def dump_tables(application: App) -> str:
    """Every value of every row of every table, as text."""
    lines: list[str] = []
    with application.store.session() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                lines.append(f"{table.name}: " + " | ".join(repr(v) for v in row))
    return "\n".join(lines)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_planted_secrets_reach_no_log_table_digest_or_message(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    site_root = tmp_path / "site"
    state = home / "state" / "lopper"
    mailbox, port = Mailbox(PLANTED["SMTP_PASSWORD"]), free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_required=True,
        auth_require_tls=False,
        # smtplib falls back from PLAIN to LOGIN after a refusal; one refusal is enough here.
        auth_exclude_mechanism=["LOGIN"],
    )
    stream = io.StringIO()
    said: list[str] = []  # every message lopper produced for a person
    with (
        FakeMastodon(lambda: NOW, token=PLANTED["MASTODON_TOKEN"]) as mastodon,
        FakeBluesky(handle="me.test", app_password=PLANTED["BLUESKY_PASSWORD"]) as bluesky,
        FakeX(lambda: NOW) as x,
        FakeGraph(lambda: NOW) as facebook,
    ):
        controller.start()
        try:
            facebook.token = PLANTED["FACEBOOK_TOKEN"]
            x.tokens = {X_ACCESS: float("inf")}
            save_token(
                state,
                f"x:@{USERNAME}",
                {
                    "access_token": X_ACCESS,
                    "refresh_token": X_REFRESH,
                    "expires_at": time.time() + 7200,
                    "client_id": CLIENT_ID,
                },
            )
            logs.forget_secrets()  # what the configuration and token files register, only
            accounts = (
                "  - platform: sandbox\n    handle: '@you'\n    sandbox: {seed: 7, size: 60}\n"
                "    credentials: {token: '${SANDBOX_TOKEN}'}\n"
                "  - platform: mastodon\n    handle: '@me@example.social'\n"
                f"    credentials: {{access_token: '${{MASTODON_TOKEN}}', api_base_url: '{mastodon.url}'}}\n"
                "  - platform: bluesky\n    handle: '@me.test'\n"
                f"    credentials: {{app_password: '${{BLUESKY_PASSWORD}}', base_url: '{bluesky.base_url}', plc_url: '{bluesky.base_url}'}}\n"
                "  - platform: facebook\n    handle: harriet.vane\n"
                "    credentials: {access_token: '${FACEBOOK_TOKEN}'}\n"
                f"    facebook: {{graph_url: '{facebook.url}'}}\n"
                f"  - platform: x\n    handle: '@{USERNAME}'\n"
                "    credentials: {client_secret: '${X_CONSUMER_SECRET}'}\n"
                f"    x: {{api_base_url: '{x.url}', client_id: {CLIENT_ID}, auth: oauth2}}\n"
            )
            site = make_site(
                site_root,
                delivery="smtp",
                smtp_port=port,
                smtp="    security: none\n    username: harry\n    password: ${SMTP_PASSWORD}\n",
                web="  secret: ${WEB_SECRET}\n",
                accounts=accounts,
                sync=False,
            )
            application = site.app()
            logs.configure_logging(json=True, level="DEBUG", stream=stream)
            for account in application.accounts():
                for _ in range(2):
                    report = application.sync(account)
                    said += [report.outcome, *report.problems, *map(str, report.streams.values())]
                    assert report.outcome == "ok", (account.key, report.problems)
                evaluation = application.evaluate(account)
                said.append(repr(evaluation))
            assert queue_digest(application, NOW)
            assert deliver_outbox(application, NOW) == 1
            assert mailbox.logins == [PLANTED["SMTP_PASSWORD"].encode()]  # it was really used
            (message,) = mailbox.accepted
            text, html = parts(parse(message))
            (link,) = set(review_links(text))
            client = Client(ReviewApp(application))
            path = urlsplit(link).path
            body = client.get(path).get_data(as_text=True)
            csrf = re.search(r'name="csrf" value="([^"]+)"', body)
            assert csrf
            first = min(decisions(application))
            response = client.post(path, data={"csrf": csrf[1], f"d-{first}": "remove"})
            assert response.status_code == 303
            said.append(client.get(path).get_data(as_text=True))

            # Then every platform refuses what it accepted, and the mail server the password.
            mastodon.revoke()
            bluesky.app_password = "changed-elsewhere"
            bluesky.revoke_sessions()
            facebook.token = "revoked"
            x.tokens = {}
            mailbox.password = "changed-elsewhere"
            for account in application.accounts():
                if account.platform == "sandbox":
                    continue
                report = application.sync(account)
                said += [report.outcome, *report.problems, *map(str, report.streams.values())]
                assert report.outcome != "ok", account.key
            site.clock.advance()
            queue_digest(application, site.clock())
            deliver_outbox(application, site.clock())
            assert len(mailbox.logins) == 2 and mailbox.accepted == [message]  # refused
            tables = dump_tables(application)
            site.close()
        finally:
            controller.stop()

    log = stream.getvalue()
    assert log.count("\n") > 20, "the runs logged"
    mail = b"\n".join(mailbox.accepted).decode("utf-8", "replace") + text + html
    for secret in EVERY:
        assert secret not in log, f"{secret} in the log"
        assert secret not in tables, f"{secret} in the database"
        assert secret not in mail, f"{secret} in a digest"
        assert not [m for m in said if secret in m], f"{secret} in a message"
    # The only files that hold a secret are the token files lopper keeps for X (0600).
    allowed = {token_path(state, f"x:@{USERNAME}")}
    for path in [*tmp_path.rglob("*"), *home.rglob("*")]:
        if path.is_file() and path not in allowed:
            data = path.read_bytes()
            for secret in EVERY:
                assert secret.encode() not in data, f"{secret} in {path}"
    assert "refus" in "\n".join(said).lower() or "401" in "\n".join(said)


# --- file permissions -------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _first_run(home: Path) -> Path:
    """A first run on a new machine with the common umask 022 (files 0644, folders 0755):
    sync, evaluate, a digest with its review link, and a token saved by `lopper auth`."""
    previous = os.umask(0o022)
    try:
        state = home / "state" / "lopper"
        site = make_site(home / "site", size=60, sync=False)
        config = site.config.read_text()
        site.config.write_text(
            re.sub(r'url: "sqlite:///[^"]+"', f'url: "sqlite:///{state}/lopper.sqlite3"', config)
        )
        application = site.app()
        for account in application.accounts():
            application.sync(account)
            application.evaluate(account)
        assert queue_digest(application, NOW)  # with a review link: the link key is made
        assert deliver_outbox(application, NOW) == 1
        save_token(state, "mastodon:@me@example.social", {"access_token": "t0ken-value"})
        site.close()
    finally:
        os.umask(previous)
    return state


def test_the_database_token_files_and_link_key_are_private(home: Path) -> None:
    state = _first_run(home)
    found = {
        "tokens directory": mode(state / "tokens"),
        "token file": mode(token_path(state, "mastodon:@me@example.social")),
        "link key": mode(state / SECRET_FILE),
        "database": mode(state / "lopper.sqlite3"),
    }
    for suffix in ("-wal", "-shm"):
        extra = Path(f"{state / 'lopper.sqlite3'}{suffix}")
        if extra.exists():
            found[f"database{suffix}"] = mode(extra)
    expected = {name: 0o700 if "directory" in name else 0o600 for name in found}
    assert found == expected, json.dumps({k: oct(v) for k, v in found.items()})


def test_the_state_directory_is_private_after_a_first_run(home: Path) -> None:
    state = _first_run(home)
    assert oct(mode(state)) == oct(0o700)


def test_every_file_lopper_writes_is_private_whatever_the_umask_and_the_folder(
    home: Path, tmp_path: Path
) -> None:
    """The state folder made loose by hand (0755) and the umask 022: digest previews, the
    outbox's .eml files, `--output` files carry a working review link or the names of
    people, and another local user could read them."""
    from service.digest import preview_digest

    previous = os.umask(0o022)
    try:
        state = home / "state" / "lopper"
        state.mkdir(parents=True, mode=0o755)
        os.chmod(state, 0o755)
        site = make_site(home / "site", size=60)
        application = site.app()
        written = preview_digest(application)  # into <state>/previews
        chosen = preview_digest(application, tmp_path / "elsewhere" / "deeper")
        assert queue_digest(application, NOW)
        assert deliver_outbox(application, NOW) == 1  # into digest.folder
        site.close()
        outbox = home / "site" / "outbox"
        found = {
            "preview .eml": mode(written.eml),
            "preview .html": mode(written.html),
            "previews folder": mode(written.eml.parent),
            "--output .eml": mode(chosen.eml),
            "--output folder": mode(chosen.eml.parent),
            "--output parent folder": mode(chosen.eml.parent.parent),
            "outbox .eml": mode(next(outbox.glob("*.eml"))),
            "outbox folder": mode(outbox),
        }
    finally:
        os.umask(previous)
    expected = {name: 0o700 if "folder" in name else 0o600 for name in found}
    assert found == expected, json.dumps({k: oct(v) for k, v in found.items()})


def test_an_export_written_to_a_file_is_private(home: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app as cli_app

    previous = os.umask(0o022)
    try:
        runner = CliRunner()
        assert runner.invoke(cli_app, ["demo", "--size", "60", "--no-run"]).exit_code == 0
        target = tmp_path / "removed.csv"
        result = runner.invoke(cli_app, ["export", "removed", "--output", str(target)])
        assert result.exit_code == 0, result.output
    finally:
        os.umask(previous)
    assert oct(mode(target)) == oct(0o600)


def test_status_warns_when_the_state_folder_is_readable_by_others(home: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app as cli_app
    from service.config import state_dir

    runner = CliRunner()
    assert runner.invoke(cli_app, ["demo", "--size", "60", "--no-run"]).exit_code == 0
    state = state_dir()
    quiet = runner.invoke(cli_app, ["status"])
    assert quiet.exit_code == 0 and "readable by others" not in quiet.output
    os.chmod(state, 0o755)
    loose = runner.invoke(cli_app, ["status"])
    assert loose.exit_code == 0
    assert "readable by others" in loose.output and f"chmod 700 {state}" in loose.output
    as_json = json.loads(runner.invoke(cli_app, ["status", "--json"]).output)
    assert "readable by others" in as_json["warnings"][0]


def test_the_command_writes_nothing_others_can_read_whatever_the_umask(home: Path) -> None:
    """Run as the command (umask 022 inherited from the shell): every file and folder in the
    state folder, the adapters' own files included, is the owner's only."""
    from test_cli import run_module

    previous = os.umask(0o022)
    try:
        result = run_module(home, "demo", "--size", "60", "--no-run")
        assert result.returncode == 0, result.stderr
        assert run_module(home, "digest", "--preview").returncode == 0
    finally:
        os.umask(previous)
    state = home / "state" / "lopper"
    found = {str(p.relative_to(state)): oct(mode(p)) for p in [state, *state.rglob("*")]}
    assert len(found) > 4, found
    loose = {
        name: value
        for name, value in found.items()
        if value != oct(0o700 if (state / name).is_dir() else 0o600)
    }
    assert loose == {}, found


# --- links from elsewhere -------------------------------------------------------------------

HOSTILE_LINKS = ["javascript:alert(document.domain)", "data:text/html,<script>x</script>"]


@pytest.mark.parametrize("link", HOSTILE_LINKS)
def test_a_profile_link_that_is_not_http_never_becomes_an_href(
    home: Path, tmp_path: Path, link: str
) -> None:
    """A Mastodon-API server sends `account.url`, exports carry URLs: whatever a stored row
    holds (rows written before links were checked included), the digest (an email: no CSP)
    and the review page link only to http(s) addresses."""
    from sqlalchemy import update

    from service.store.models import Connection

    site = make_site(tmp_path / "site", size=60)
    with site.app().store.session() as session:
        session.execute(update(Connection).values(profile_url=link))
    page = Page(site)
    try:
        (eml,) = (site.root / "outbox").glob("*.eml")
        text, html = parts(parse(eml.read_bytes()))
        body = page.client.get(page.path).get_data(as_text=True)
        for shown in (text, html, body):
            assert link.split(":")[0] + ":" not in shown
        assert 'href="#"' in html and 'href="#"' in body
    finally:
        site.close()


@pytest.mark.parametrize("link", [*HOSTILE_LINKS, " javascript:x", "//evil.example/"])
def test_a_listed_profile_link_that_is_not_http_is_not_kept(link: str) -> None:
    from service.platforms.base import Person

    assert Person(user_id="1", handle="@a", profile_url=link).profile_url is None
    kept = "https://example.social/@a"
    assert Person(user_id="1", handle="@a", profile_url=kept).profile_url == kept
