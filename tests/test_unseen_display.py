"""What the person reads when lopper cannot see a kind of exchange, or cannot judge yet.

The command line runs against the Mastodon fake (the real Mastodon.py client, over HTTP)
with a configuration a person would write; the fake's clock is the real one, as lopper's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from digest_site import make_site, parse, parts, review_links
from fakes.mastodon_server import TOKEN, FakeMastodon
from helpers import NOW, Clock
from typer.testing import CliRunner
from werkzeug.test import Client

from service.cli import app
from service.digest import deliver_outbox, queue_digest
from service.web.review import ReviewApp

runner = CliRunner()
KEY = "mastodon:@me@example.social"


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def server() -> Iterator[FakeMastodon]:
    with FakeMastodon(now) as fake:
        # A server of unknown software that hides the owner's direct messages from their own
        # statuses and answers conversations with an empty list.
        fake.version = "1.0.0 (compatible; Unknown 0.1)"
        fake.hide_direct_in_statuses = True
        fake.conversations_hollow = True
        people = [fake.add_account(f"p{i}") for i in range(14)]
        for person in people:
            fake.follow(person)
        fake.add_follower(people[0])
        fake.add_follower(fake.add_account("fan"))
        fake.post(now() - timedelta(days=400))
        fake.reblog(people[2], now() - timedelta(days=30))  # boosts are listed
        fake.write(now() - timedelta(days=14), mentions=[people[1]], direct=True)
        yield fake


def configure(home: Path, fake: FakeMastodon, extra: str = "") -> Path:
    config = home / "config.yaml"
    config.write_text(
        "version: 1\n"
        f"storage: {{url: 'sqlite:///{home}/db.sqlite3'}}\n"
        "accounts:\n"
        "  - platform: mastodon\n"
        '    handle: "@me@example.social"\n'
        "    credentials:\n"
        f"      access_token: {TOKEN}\n"
        f"      api_base_url: {fake.url}\n"
        f"{extra}"
    )
    return config


def lopper(config: Path, *args: str) -> str:
    result = runner.invoke(app, ["--config", str(config), *args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_sync_status_and_evaluate_name_the_unseen_kind_and_the_way_out(
    home: Path, server: FakeMastodon
) -> None:
    config = configure(home, server)

    synced = lopper(config, "sync")
    status = lopper(config, "status")
    evaluated = lopper(config, "evaluate")
    as_json = json.loads(lopper(config, "status", "--json"))

    # People, not listing rows: 14 followed and one more follower (p0 is in both lists).
    assert "15 connections" in synced
    for output in (synced, status, evaluated):
        flat = " ".join(output.split())
        assert "unseen: message (outbound)" in flat
        assert "direct messages are not visible" in flat
        assert "accept_unseen: [message]" in flat
    (entry,) = as_json["accounts"]
    assert [(u["kind"], u["direction"], u["accepted"]) for u in entry["unseen"]] == [
        ("message", "outbound", False)
    ]
    assert any("nobody on this account is flagged" in line for line in entry["waiting"])


def test_an_accepted_unseen_kind_is_shown_as_accepted(home: Path, server: FakeMastodon) -> None:
    config = configure(home, server, "    accept_unseen: [message]\n")

    lopper(config, "sync")
    status = " ".join(lopper(config, "status").split())

    assert "unseen (accepted): message (outbound)" in status
    assert "nobody on this account is flagged" not in status


def test_execute_says_how_far_it_is_and_when_the_next_removal_comes(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["demo", "--size", "600"]).exit_code == 0
    config = home / "config" / "lopper" / "config.yaml"
    text = config.read_text()
    config.write_text(
        text.replace('    handle: "@you"\n', '    handle: "@you"\n    removal_spacing: [7s, 7s]\n')
    )
    listed = json.loads(lopper(config, "suggestions", "--json"))
    lopper(config, "confirm", *[str(s["id"]) for s in listed[:3]], "--yes")
    pauses: list[float] = []
    monkeypatch.setattr("time.sleep", pauses.append)  # the spacing pause, without the wait

    output = " ".join(lopper(config, "execute").split())

    assert pauses == [7.0, 7.0]
    assert "1 of 3 carried out; next removal at" in output
    assert "2 of 3 carried out; next removal at" in output
    assert "(in 7 s)" in output
    assert "3 removed" in output


def test_the_digest_and_the_review_page_show_what_is_unseen_and_each_caveat(
    home: Path, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    with FakeMastodon(clock) as fake:
        fake.hide_direct_in_statuses = True
        fake.conversations_hollow = True
        people = [fake.add_account(f"p{i}") for i in range(14)]
        for person in people:
            fake.follow(person)  # p0..p3 established at the first sync, the rest in grace
        fake.post(NOW - timedelta(days=400))
        fake.reblog(people[5], NOW - timedelta(days=30))
        fake.write(NOW - timedelta(days=14), mentions=[people[1]], direct=True)
        account = (
            "  - platform: mastodon\n"
            '    handle: "@me@example.social"\n'
            "    accept_unseen: [message]\n"
            f"    credentials: {{access_token: {TOKEN}, api_base_url: '{fake.url}'}}\n"
        )
        site = make_site(tmp_path / "site", accounts=account)
        application = site.app()
        assert queue_digest(application, NOW)
        assert deliver_outbox(application, NOW) == 1
        (eml,) = (site.root / "outbox").glob("*.eml")
        text, html = parts(parse(eml.read_bytes()))
        (link,) = set(review_links(text))
        body = Client(ReviewApp(application)).get(urlsplit(link).path).get_data(as_text=True)
        site.close()

    for raw in (text, html, body):
        page = " ".join(unescape(re.sub(r"<[^>]+>", "", raw)).split())
        # The account: which kind, why, and that it was accepted.
        assert "Not seen: message (outbound) cannot be seen (the server lists" in page
        assert "you accepted it" in page
        # Each suggestion: the caveat, and a follow date that is not known.
        assert page.count("direct messages are not visible") >= 1 + 4
        assert "(the date is unknown)" in page
