"""The digest: composed once per slot, sent through a real SMTP server, kept until delivered."""

from __future__ import annotations

import email
import email.policy
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from digest_site import (
    database,
    decisions,
    free_port,
    make_site,
    parse,
    parts,
    pending,
    review_links,
)
from helpers import NOW
from sqlalchemy import select
from typer.testing import CliRunner

from service.cli import app as cli
from service.digest import deliver_outbox, outbox_summary, queue_digest
from service.digest.compose import AccountDigest, Bucket, DigestData, Person, count_buckets
from service.digest.links import SECRET_FILE, Signer, signing_key
from service.digest.outbox import backoff, prune_sent, release_claims
from service.digest.render import render
from service.model import Channel, SuggestionState
from service.removals import restore
from service.store.models import Account, Digest, DigestState, ReviewLink, Suggestion, SyncRun
from service.suggestions import LOPPER, decide, transition

S = SuggestionState


class Mailbox:
    """An SMTP handler that refuses the first ``refuse`` messages with a temporary error."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.attempts = 0
        self.accepted: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.attempts += 1
        if self.attempts <= self.refuse:
            return "451 4.3.0 mailbox busy, try again later"
        self.accepted.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def test_a_digest_sent_through_smtp_lists_every_suggestion_with_its_evidence(home, tmp_path, smtp):
    mailbox, port = smtp
    site = make_site(tmp_path / "site", delivery="smtp", smtp_port=port)
    application = site.app()
    waiting = pending(application)
    assert len(waiting) >= 5

    assert queue_digest(application, NOW) is True
    assert deliver_outbox(application, NOW) == 1

    assert len(mailbox.accepted) == 1
    envelope = mailbox.accepted[0]
    assert envelope.mail_from == "lopper@example.org"
    assert envelope.rcpt_tos == ["harry@example.org"]
    message = parse(envelope.original_content)
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == "lopper <lopper@example.org>"
    assert "harry@example.org" in message["To"]
    assert f"{len(waiting)} to review" in message["Subject"]
    text, html = parts(message)
    assert 'style="' in html and "<style" in html  # inlined, @media kept for clients that read it

    for suggestion in waiting:
        e = suggestion.evidence
        c = suggestion.connection
        for body in (text, html):
            assert c.handle in body
            assert c.profile_url in body
        # name and handle are linked to the profile
        assert f'href="{c.profile_url}"' in html
        assert f"#{suggestion.id}" in text
        since = e.get("connected_since") or e.get("first_seen")
        assert since[:10] in text or since is None
    gone = [w for w in waiting if w.reason.value == "gone"]
    assert gone, "the sandbox has gone or moved accounts"
    lane = text.split("New: gone or moved")[1].split("New suggestions")[0]
    assert all(g.connection.handle in lane for g in gone)
    assert not any(w.connection.handle + "\n" in lane for w in waiting if w not in gone)
    first = waiting[0].evidence
    assert f"{first['inbound_in_window']} from them, {first['outbound_in_window']} from you" in text
    assert f"value {first['value']:.2f}" in text

    # the one review link is the same in both parts, and verifies
    links = set(review_links(text)) | set(review_links(html))
    assert len(links) == 1
    link = links.pop()
    assert link.startswith(application.settings.web.url + "/review/")
    nonce, expires = Signer(signing_key(application.settings)).read_link(link.rsplit("/", 1)[1])
    assert expires == NOW + timedelta(days=14)
    with application.store.session() as session:
        row = session.scalar(select(ReviewLink).where(ReviewLink.nonce == nonce))
        assert row is not None and row.used_at is None
        digest = session.get_one(Digest, row.digest_id)
        assert digest.state is DigestState.SENT and digest.sent_at == NOW
        assert sorted(digest.suggestion_ids) == sorted(s.id for s in waiting)
        assert message["Message-ID"].strip() == digest.message_id

    # invariant 7: the signing key never travels in the digest
    key = (home / "state" / "lopper" / SECRET_FILE).read_text().strip()
    assert key not in envelope.original_content.decode()
    # nothing is delivered twice
    assert deliver_outbox(application, NOW + timedelta(days=1)) == 0
    assert len(mailbox.accepted) == 1
    site.close()


def test_a_refused_first_attempt_leads_to_exactly_one_digest_after_the_retry(home, tmp_path, smtp):
    mailbox, port = smtp
    mailbox.refuse = 1
    site = make_site(tmp_path / "site", delivery="smtp", smtp_port=port)
    application = site.app()
    assert queue_digest(application, NOW)

    assert deliver_outbox(application, NOW) == 0
    assert mailbox.attempts == 1 and mailbox.accepted == []
    with application.store.session() as session:
        digest = session.scalars(select(Digest)).one()
        assert digest.state is DigestState.QUEUED
        assert digest.attempts == 1
        assert digest.next_attempt_at == NOW + backoff(1)
        assert "451" in (digest.last_error or "")
    # status shows the waiting digest and why
    result = CliRunner().invoke(cli, ["--config", str(site.config), "status"])
    assert result.exit_code == 0, result.output
    assert "outbox" in result.output and "1 waiting" in result.output
    assert "451" in result.output
    result = CliRunner().invoke(cli, ["--config", str(site.config), "status", "--json"])
    outbox = json.loads(result.stdout)["outbox"]
    assert outbox["waiting"] == 1 and "451" in outbox["last_error"]

    # not due yet: the server is not asked again
    assert deliver_outbox(application, NOW + timedelta(minutes=1)) == 0
    assert mailbox.attempts == 1
    assert deliver_outbox(application, NOW + backoff(1)) == 1
    assert deliver_outbox(application, NOW + timedelta(days=3)) == 0
    assert mailbox.attempts == 2
    assert len(mailbox.accepted) == 1
    summary = outbox_summary(application)
    assert (summary.waiting, summary.sent) == (0, 1)
    site.close()


def test_a_server_that_is_down_keeps_the_digest_and_backs_off(home, tmp_path):
    site = make_site(tmp_path / "site", delivery="smtp", smtp_port=free_port(), size=60)
    application = site.app()
    assert queue_digest(application, NOW)
    now = NOW
    waits = []
    for _ in range(4):
        assert deliver_outbox(application, now) == 0
        with application.store.session() as session:
            digest = session.scalars(select(Digest)).one()
            assert digest.state is DigestState.QUEUED
            assert "refused" in (digest.last_error or "").lower()
            assert digest.next_attempt_at is not None
            waits.append(digest.next_attempt_at - now)
            now = digest.next_attempt_at
    assert waits == [timedelta(minutes=m) for m in (5, 10, 20, 40)]
    assert backoff(30) == timedelta(hours=6)
    site.close()


def test_the_first_wait_after_a_failure_is_digest_retry_after(home, tmp_path):
    site = make_site(
        tmp_path / "site",
        delivery="smtp",
        smtp_port=free_port(),
        size=60,
        digest="  retry_after: 30s\n",
    )
    application = site.app()
    assert queue_digest(application, NOW)
    now, waits = NOW, []
    for _ in range(3):
        assert deliver_outbox(application, now) == 0
        with application.store.session() as session:
            digest = session.scalars(select(Digest)).one()
            assert digest.next_attempt_at is not None
            waits.append(digest.next_attempt_at - now)
            now = digest.next_attempt_at
    assert waits == [timedelta(seconds=s) for s in (30, 60, 120)]
    site.close()


def test_a_claim_left_by_a_dead_sender_is_released_and_sent_with_its_message_id(
    home, tmp_path, smtp
):
    """A daemon killed while sending leaves its digest claimed; the next daemon that knows
    it is alone on the database (SQLite's lock) puts it back at once instead of waiting for
    the claim to lapse, and the digest goes out with the Message-ID it always had."""
    mailbox, port = smtp
    site = make_site(tmp_path / "site", delivery="smtp", smtp_port=port, size=60)
    application = site.app()
    assert queue_digest(application, NOW)
    with application.store.session() as session:
        digest = session.scalars(select(Digest)).one()
        digest.state, digest.claimed_at = DigestState.SENDING, NOW
        message_id = digest.message_id
    assert deliver_outbox(application, NOW + timedelta(minutes=1)) == 0  # the claim holds
    assert release_claims(application.store) == 1
    assert release_claims(application.store) == 0
    assert deliver_outbox(application, NOW + timedelta(minutes=1)) == 1
    assert len(mailbox.accepted) == 1
    sent = email.message_from_bytes(mailbox.accepted[0].content, policy=email.policy.default)
    assert str(sent["Message-ID"]).strip() == message_id
    site.close()


def test_old_sent_digests_keep_their_row_but_not_their_message(home, tmp_path):
    site = make_site(tmp_path / "site", size=60)
    application = site.app()
    old, recent = NOW - timedelta(days=120), NOW - timedelta(days=10)
    assert queue_digest(application, old) and queue_digest(application, recent)
    unsent = NOW - timedelta(days=200)
    assert queue_digest(application, unsent)
    with application.store.session() as session:
        for digest in session.scalars(select(Digest)):
            if digest.slot != unsent:
                digest.state, digest.sent_at = DigestState.SENT, digest.slot
    assert prune_sent(application.store, NOW - timedelta(days=90)) == 1
    assert prune_sent(application.store, NOW - timedelta(days=90)) == 0
    with application.store.session() as session:
        kept = {d.slot: (d.state, len(d.message) > 0) for d in session.scalars(select(Digest))}
    assert kept == {
        old: (DigestState.SENT, False),  # the row stays: one digest per slot
        recent: (DigestState.SENT, True),
        unsent: (DigestState.QUEUED, True),  # never cleared before it is delivered
    }
    site.close()


def test_one_digest_per_slot(home, tmp_path, backend, postgres_schemas):
    site = make_site(tmp_path / "site", size=60, database_url=database(backend, postgres_schemas))
    application = site.app()
    assert queue_digest(application, NOW) is True
    assert queue_digest(application, NOW) is False
    assert queue_digest(application, NOW + timedelta(microseconds=5)) is False
    assert queue_digest(application, NOW + timedelta(days=7)) is True
    with pytest.raises(ValueError, match="aware"):
        queue_digest(application, NOW.replace(tzinfo=None))
    with application.store.session() as session:
        assert sorted(session.scalars(select(Digest.slot))) == [NOW, NOW + timedelta(days=7)]
    site.close()


def test_files_are_written_once_and_a_lapsed_claim_is_sent_again(home, tmp_path):
    site = make_site(tmp_path / "site", size=60)
    application = site.app()
    queue_digest(application, NOW)
    assert deliver_outbox(application, NOW) == 1
    files = list((site.root / "outbox").glob("*.eml"))
    assert len(files) == 1
    text, html = parts(parse(files[0].read_bytes()))
    assert "sandbox:@you" in text and "sandbox:@you" in html

    # A sender that died between handing the message over and recording it: the claim
    # is held for a while, then the digest goes again (same file, same Message-ID).
    with application.store.session() as session:
        digest = session.scalars(select(Digest)).one()
        digest.state, digest.claimed_at, digest.sent_at = DigestState.SENDING, NOW, None
        message_id = digest.message_id
    assert deliver_outbox(application, NOW + timedelta(minutes=5)) == 0
    assert deliver_outbox(application, NOW + timedelta(minutes=16)) == 1
    assert [f.name for f in (site.root / "outbox").glob("*.eml")] == [files[0].name]
    assert parse(files[0].read_bytes())["Message-ID"].strip() == message_id
    site.close()


def test_the_next_digest_reports_what_happened_since_the_last(home, tmp_path):
    accounts = (
        '  - platform: sandbox\n    handle: "@you"\n    sandbox: {seed: 7, size: 200}\n'
        '  - platform: sandbox\n    handle: "@new"\n    sandbox: {seed: 3, size: 60, history_days: 40}\n'
    )
    site = make_site(tmp_path / "site", accounts=accounts)
    application = site.app()
    queue_digest(application, NOW)
    deliver_outbox(application, NOW)
    you = application.accounts()[0]
    with application.store.session() as session:
        ids = [
            s.id
            for s in session.scalars(
                select(Suggestion)
                .join(Account)
                .where(Account.key == you.key, Suggestion.state == S.PENDING)
                .order_by(Suggestion.id)
            )
        ]
    later = site.clock.advance(timedelta(days=1))
    decide(application.store, ids[:3], S.CONFIRMED, via=Channel.CLI, now=later)
    report = application.execute(you, sleep=lambda _s: None)
    assert len(report.removed) == 3
    restore(application.store, ids[0], application.adapter(you), via=Channel.CLI, now=later)
    decide(application.store, ids[3:5], S.CONFIRMED, via=Channel.CLI, now=later)
    with application.store.session() as session:
        manual = session.get_one(Suggestion, ids[3])
        transition(session, manual, S.MANUAL, actor=LOPPER, via=Channel.SYSTEM, now=later)
        failed = session.get_one(Suggestion, ids[4])
        transition(
            session,
            failed,
            S.FAILED,
            actor=LOPPER,
            via=Channel.SYSTEM,
            now=later,
            detail="the platform answered 503",
        )
        account = session.scalar(select(Account).where(Account.key == you.key))
        assert account is not None
        account.brake_engaged_at, account.brake_vanished, account.brake_total = later, 40, 200
        for outcome, detail in (("failed", "the platform answered 502"), ("partial", None)):
            session.add(
                SyncRun(
                    account_id=account.id,
                    run_id=outcome,
                    started_at=later,
                    finished_at=later,
                    outcome=outcome,
                    detail=detail,
                )
            )
        manual_handle = manual.connection.handle
        manual_url = manual.connection.profile_url
        failed_handle = failed.connection.handle

    assert queue_digest(application, NOW + timedelta(days=7))
    assert deliver_outbox(application, later) == 1
    newest = max((site.root / "outbox").glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    text, html = parts(parse(newest.read_bytes()))
    assert "Removed since last time (2)" in text  # the third was undone
    assert "-2 since the last digest" in text
    assert "sync failed on" in text and "the platform answered 502" in text
    assert "sync partial" not in text  # deferred by a rate limit: routine
    assert "To remove by hand (1)" in text and manual_handle in text and manual_url in text
    assert f'href="{manual_url}"' in html
    assert "Removals that failed (1)" in text and failed_handle in text
    assert "the platform answered 503" in text
    assert "Sanity brake" in text and "40 of 200" in text and "Sanity brake" in html
    # invariant 3: the young account cannot be judged yet, and the digest says so
    young = text.split("== sandbox:@new")[1]
    assert "Not enough history yet" in young
    assert "Last exchange, by age" in text
    assert "under 1 month" in html
    site.close()


def test_render_alone_is_pure_and_fits_a_phone() -> None:
    person = Person(
        id=9,
        account="x:@me",
        handle="@ana<script>",
        name="Ana & Bo",
        profile_url="https://x.example/ana",
        why="0 exchanges in the last 180 days",
        reason="quiet",
        connected_since=NOW - timedelta(days=400),
        last_exchange=NOW - timedelta(days=300),
        last_inbound=NOW - timedelta(days=300),
        last_outbound=None,
        inbound=0,
        outbound=0,
        window_days=180,
        value=0.125,
        mutual=True,
        created_at=NOW,
    )
    buckets = count_buckets(
        [
            (NOW - timedelta(days=3), False, False),
            (NOW - timedelta(days=300), True, False),
            (NOW - timedelta(days=300), False, True),
            (None, False, False),
        ],
        NOW,
    )
    assert [b for b in buckets if b.total] == [
        Bucket("under 1 month", 1, 0),
        Bucket("6–12 months", 0, 1, 1),
        Bucket("never", 1, 0),
    ]
    data = DigestData(
        generated_at=NOW,
        since=None,
        accounts=[
            AccountDigest("x:@me", following=120, connections=150, new=[person], buckets=buckets)
        ],
        review_url="http://127.0.0.1:8470/review/abc.def",
        link_expires=NOW + timedelta(days=14),
    )
    from zoneinfo import ZoneInfo

    rendered = render(data, ZoneInfo("Pacific/Auckland"))
    assert "@ana&lt;script&gt;" in rendered.html and "<script>" not in rendered.html
    assert "Ana &amp; Bo" in rendered.html
    assert "value 0.12" in rendered.html or "value 0.13" in rendered.html
    assert "2025-06-02 00:00 (Pacific/Auckland)" in rendered.text  # the person's time zone
    assert 'href="http://127.0.0.1:8470/review/abc.def"' in rendered.html
    assert 'name="viewport"' in rendered.html and "max-width: 640px" in rendered.html
    # the bars are table cells with colours, no images
    assert 'bgcolor="#f97316"' in rendered.html and "<img" not in rendered.html
    assert "1 new suggestion, 1 suggestion" in rendered.text


def test_the_link_key_is_made_once_and_kept_private(home, tmp_path):
    site = make_site(tmp_path / "site", size=40, sync=False)
    settings = site.app().settings
    first = signing_key(settings)
    assert signing_key(settings) == first
    path = home / "state" / "lopper" / SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    signer = Signer(first)
    token = signer.link_token("n1", NOW)
    assert signer.read_link(token) == ("n1", NOW)
    site.close()


def test_preview_writes_the_eml_and_the_html_and_says_where(home, tmp_path):
    site = make_site(tmp_path / "site", size=100)
    result = CliRunner().invoke(cli, ["--config", str(site.config), "digest", "--preview"])
    assert result.exit_code == 0, result.output
    said = dict(line.split(":", 1) for line in result.output.splitlines() if ":" in line)
    eml, page = Path(said["message"].strip()), Path(said["html"].strip())
    text, html = parts(parse(eml.read_bytes()))
    assert page.read_text(encoding="utf-8").strip() == html.replace("\r\n", "\n").strip()
    assert review_links(text)
    assert urlsplit(review_links(text)[0]).port == site.app().settings.web.port
    # a preview is not sent, and is not "the last digest"
    application = site.app()
    assert deliver_outbox(application, NOW + timedelta(days=1)) == 0
    with application.store.session() as session:
        assert session.scalars(select(Digest.state)).all() == [DigestState.PREVIEW]
    assert all(state == "pending" for state, _ in decisions(application).values())
    site.close()


def test_send_command_queues_for_now_and_delivers(home, tmp_path):
    site = make_site(tmp_path / "site", size=60)
    result = CliRunner().invoke(cli, ["--config", str(site.config), "digest", "--send"])
    assert result.exit_code == 0, result.output
    assert "1 digest(s) delivered" in result.output
    assert len(list((site.root / "outbox").glob("*.eml"))) == 1
    result = CliRunner().invoke(cli, ["--config", str(site.config), "status"])
    assert "1 sent" in result.output
    site.close()


def test_the_demo_writes_a_digest_preview_and_says_where_the_review_page_is(home):
    result = CliRunner().invoke(cli, ["demo", "--size", "150"])
    assert result.exit_code == 0, result.output
    said = result.output
    assert "review page at http://127.0.0.1:8470" in said
    html = Path(said.split("The digest as it would arrive: ")[1].split()[0])
    eml = Path(said.split("(the email itself: ")[1].split(")")[0])
    text, body = parts(parse(eml.read_bytes()))
    assert html.read_text(encoding="utf-8").strip() == body.replace("\r\n", "\n").strip()
    assert review_links(text)[0].startswith("http://127.0.0.1:8470/review/")


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, to stand in for a mail server's."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.parametrize("password", ["s3cret-pw", "wrong-pw"])
def test_tls_and_login(home, tmp_path, monkeypatch, security, password):
    import ssl

    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = _certificate(tmp_path)
    # The client verifies the server against the system's trust store; trust ours instead.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("LOPPER_TEST_SMTP_PASSWORD", password)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        # handled=False: the server answers 535 itself on a refusal
        return AuthResult(success=data.password == b"s3cret-pw", handled=False)

    mailbox, port = Mailbox(), free_port()
    options: dict[str, Any] = {
        "authenticator": authenticator,
        "auth_required": True,
        # smtplib falls back from PLAIN to LOGIN after a refusal; one refusal is enough here.
        "auth_exclude_mechanism": ["LOGIN"],
    }
    if security == "starttls":
        options.update(tls_context=server_side, require_starttls=True)
    else:
        options.update(ssl_context=server_side, auth_require_tls=False)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        site = make_site(
            tmp_path / "site",
            delivery="smtp",
            smtp_port=port,
            size=60,
            smtp=f"    security: {security}\n    username: harry\n"
            "    password: ${LOPPER_TEST_SMTP_PASSWORD}\n",
        )
        application = site.app()
        queue_digest(application, NOW)
        delivered = deliver_outbox(application, NOW)
    finally:
        controller.stop()
    assert logins == [(b"harry", password.encode())]  # only over TLS: the server requires it
    with application.store.session() as session:
        digest = session.scalars(select(Digest)).one()
        stored = f"{digest.message} {digest.last_error} {digest.recipients}"
    assert password not in stored  # invariant 7
    if password == "s3cret-pw":
        assert delivered == 1 and len(mailbox.accepted) == 1
    else:
        assert delivered == 0 and mailbox.accepted == []
        assert digest.state is DigestState.QUEUED and "535" in (digest.last_error or "")
    site.close()


def test_without_the_review_page_the_digest_carries_no_link(home, tmp_path):
    site = make_site(tmp_path / "site", size=60, web="  enabled: false\n")
    application = site.app()
    assert application.settings.web.enabled is False
    queue_digest(application, NOW)
    deliver_outbox(application, NOW)
    (eml,) = (site.root / "outbox").glob("*.eml")
    text, html = parts(parse(eml.read_bytes()))
    assert review_links(text) == review_links(html) == []
    assert "lopper review" in text and "lopper review" in html
    with application.store.session() as session:
        assert session.scalars(select(ReviewLink)).all() == []
    site.close()


def test_two_senders_at_once_deliver_a_digest_once(home, tmp_path, smtp, backend, postgres_schemas):
    import threading

    mailbox, port = smtp
    site = make_site(
        tmp_path / "site",
        delivery="smtp",
        smtp_port=port,
        size=60,
        database_url=database(backend, postgres_schemas),
    )
    first, second = site.app(), site.app()  # two processes' worth: own engines
    assert queue_digest(first, NOW)
    assert queue_digest(second, NOW) is False
    counts: list[int] = []
    start = threading.Barrier(2)

    def deliver(application: Any) -> None:
        start.wait()
        counts.append(deliver_outbox(application, NOW))

    threads = [threading.Thread(target=deliver, args=(a,)) for a in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(counts) == [0, 1]
    assert len(mailbox.accepted) == 1
    site.close()


def test_an_account_without_its_secret_is_reported(home, tmp_path, monkeypatch):
    monkeypatch.delenv("LOPPER_TEST_MISSING_TOKEN", raising=False)
    accounts = (
        '  - platform: sandbox\n    handle: "@you"\n    sandbox: {seed: 7, size: 40}\n'
        '  - platform: mastodon\n    handle: "@me@example.social"\n'
        '    credentials: {access_token: "${LOPPER_TEST_MISSING_TOKEN}"}\n'
    )
    site = make_site(tmp_path / "site", accounts=accounts, sync=False)
    application = site.app()
    application.sync(application.accounts()[0])
    queue_digest(application, NOW)
    deliver_outbox(application, NOW)
    (eml,) = (site.root / "outbox").glob("*.eml")
    text, _ = parts(parse(eml.read_bytes()))
    section = text.split("== mastodon:@me@example.social")[1]
    assert "${LOPPER_TEST_MISSING_TOKEN} is not set" in section
    site.close()


def test_an_x_account_shows_the_months_estimated_cost_against_its_budget(store) -> None:
    from service.config import Account as AccountConfig
    from service.config import Rules
    from service.digest.compose import gather_account
    from service.store.models import CostRecord

    config = AccountConfig.model_validate(
        {"platform": "x", "handle": "@me", "x": {"monthly_budget": 20}}
    )
    with store.session() as session:
        account = Account(key=config.key, platform="x", handle="@me", streams=[], created_at=NOW)
        session.add(account)
        session.flush()
        for at, micros in ((NOW - timedelta(days=40), 9_000_000), (NOW, 1_234_000)):
            session.add(
                CostRecord(
                    account_id=account.id,
                    at=at,
                    source="sync",
                    reads={},
                    writes={},
                    micros=micros,
                    listing_micros=0,
                )
            )
    with store.session() as session:
        digest = gather_account(session, config, Rules(), NOW, None, None)
    assert digest.cost_month == pytest.approx(1.234)  # last month's 9 dollars are not in it
    assert digest.budget == 20
    data = DigestData(generated_at=NOW, since=None, accounts=[digest])
    rendered = render(data, UTC)
    assert "Estimated API cost this month: $1.23 of a $20.00 budget." in rendered.text
    assert "$1.23" in rendered.html


def test_data_older_than_stale_after_is_said_to_judge_nobody(store) -> None:
    from helpers import ACCOUNT, Clock, make_rules, scripted

    from service.digest.compose import gather_account
    from service.sync import sync_account

    rules = make_rules(stale_after=timedelta(days=7))
    clock = Clock(NOW - timedelta(days=10))
    sync_account(store, ACCOUNT, scripted(clock, people=1), rules, clock)

    with store.session() as session:
        fresh = gather_account(session, ACCOUNT, rules, NOW - timedelta(days=9), None, None)
        stale = gather_account(session, ACCOUNT, rules, NOW, None, None)

    # A day after the sync, its data judges: the window ends where the data ends.
    assert fresh.history_gap is None and fresh.too_early == 0
    assert stale.history_gap == "no complete sync since 2025-05-22"
    assert stale.too_early == 1


def test_the_age_histogram_tells_flagged_people_waiting_behind_the_cap_from_kept_ones(
    tmp_path: Path,
) -> None:
    """Ten quiet people, a cap of three suggestions a digest: seven wait, and are not "kept"."""
    from helpers import ACCOUNT, Clock, make_rules, scripted

    from service.digest.compose import gather
    from service.store import open_store
    from service.suggestions import evaluate_account
    from service.sync import sync_account

    clock = Clock(NOW)
    store = open_store(f"sqlite:///{tmp_path / 'lopper.sqlite3'}")
    rules = make_rules(per_digest_cap=3)
    platform = scripted(clock, people=12)
    platform.add_exchange("u1", NOW - timedelta(days=3))
    platform.add_exchange("u2", NOW - timedelta(days=5))
    sync_account(store, ACCOUNT, platform, rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())

    with store.session() as session:
        data = gather(session, [ACCOUNT], rules, clock(), None, None)
    buckets = data.accounts[0].buckets
    assert sum(b.suggested for b in buckets) == 3
    assert sum(b.waiting for b in buckets) == 7
    assert sum(b.kept for b in buckets) == 2
    rendered = render(data, UTC)
    assert "waiting behind the per-digest cap" in rendered.text
    assert "waiting behind the per-digest cap" in rendered.html
    assert "0 / 3 / 7" in rendered.text
    store.dispose()
