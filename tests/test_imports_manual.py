"""Removal by hand on networks without a removal API, end to end: suggest → confirm → manual
→ the next import without the friend → removed; and the command line around it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from helpers import NOW, Clock, make_rules, states, suggestion_ids
from pydantic import SecretStr
from sqlalchemy import select
from test_imports import ME, OLD, facebook_files, linkedin_recent, thread, write_export
from typer.testing import CliRunner

from service.cli import app
from service.config import Account as AccountConfig
from service.config import Settings
from service.daemon.due import EVALUATE, account_dues, load_account_facts
from service.digest.compose import gather
from service.digest.render import render
from service.imports.common import run_import
from service.imports.facebook import FacebookReader
from service.imports.linkedin import LinkedInReader
from service.imports.names import name_key
from service.model import Channel, ConnectionState, SuggestionState
from service.platforms import build_adapter
from service.removals import execute_account, manual_done
from service.store import Store
from service.store.models import Connection, Suggestion
from service.suggestions import decide, evaluate_account

FB = AccountConfig(
    platform="facebook", handle="harriet.vane", credentials={"access_token": SecretStr("t0ken")}
)
QUENTIN, RITA, ANA = name_key("Quiet Quentin"), name_key("Rita Rare"), name_key("Ana Lima")


def export(tmp_path: Path, label: str, friends: list[str], until: Any) -> Path:
    threads = {
        "analima_1": [
            thread(["Ana Lima", ME], [(ME, OLD), ("Ana Lima", until - timedelta(days=1))])
        ]
    }
    files = facebook_files(friends=[(f, OLD) for f in friends], threads=threads)
    return write_export(tmp_path / label, files, as_zip=True)


def test_a_manual_removal_closes_itself_when_the_next_import_no_longer_lists_the_friend(
    store: Store, tmp_path: Path, clock: Clock
) -> None:
    rules = make_rules()
    everyone = ["Ana Lima", "Quiet Quentin", "Rita Rare"]
    run_import(store, FB, FacebookReader(), export(tmp_path, "e1", everyone, NOW), rules, NOW)
    assert evaluate_account(store, FB.key, rules, NOW).queued == 2
    ids = suggestion_ids(store)
    decide(store, [ids[QUENTIN], ids[RITA]], SuggestionState.CONFIRMED, via=Channel.CLI, now=NOW)

    adapter = build_adapter(FB, tmp_path, clock)  # no request: Facebook cannot unfriend
    report = execute_account(store, FB, adapter, rules, clock)

    assert sorted(report.manual) == sorted([ids[QUENTIN], ids[RITA]])
    assert states(store) == {QUENTIN: "manual", RITA: "manual"}
    with store.session() as session:
        links = set(
            session.scalars(select(Connection.profile_url).where(Connection.handle != "Ana Lima"))
        )
    assert "https://www.facebook.com/search/people/?q=Quiet%20Quentin" in links
    with store.session() as session:
        digest = render(gather(session, [FB], rules, clock(), None, None), UTC)
    assert "To remove by hand (2); then run `lopper done ID`" in digest.text
    assert "https://www.facebook.com/search/people/?q=Quiet%20Quentin" in digest.text
    assert 'href="https://www.facebook.com/search/people/?q=Rita%20Rare"' in digest.html

    # Rita: the person says they did it. Quentin: they did it and said nothing.
    manual_done(store, ids[RITA], via=Channel.CLI, now=clock.advance(timedelta(days=1)))
    assert states(store)[RITA] == "removed"

    # An export requested before the click still lists Rita; Quentin is gone from it.
    later = clock.advance(timedelta(days=2))
    second = export(tmp_path, "e2", ["Ana Lima", "Rita Rare"], later)
    result = run_import(store, FB, FacebookReader(), second, rules, later)

    assert (result.manual_closed, result.asked_again) == (1, 0)
    assert states(store) == {QUENTIN: "removed", RITA: "removed"}
    with store.session() as session:
        quentin = session.scalars(select(Suggestion).where(Suggestion.id == ids[QUENTIN])).one()
        assert quentin.note == f"no longer connected in the import of {later:%Y-%m-%d}"
        rita = session.scalars(select(Connection).where(Connection.platform_user_id == RITA)).one()
        assert rita.state is ConnectionState.REMOVED  # not judged again while it may be stale
    assert evaluate_account(store, FB.key, rules, later).queued == 0

    # Weeks after the click, Rita is still a friend: ask again.
    much_later = clock.advance(rules.manual_recheck_after)
    third = export(tmp_path, "e3", ["Ana Lima", "Rita Rare"], much_later)
    result = run_import(store, FB, FacebookReader(), third, rules, much_later)

    assert result.asked_again == 1
    with store.session() as session:
        rows = session.execute(
            select(Suggestion.state, Suggestion.evidence)
            .join(Connection, Suggestion.connection_id == Connection.id)
            .where(Connection.platform_user_id == RITA)
            .order_by(Suggestion.id)
        ).all()
    assert [r[0] for r in rows] == [SuggestionState.REMOVED, SuggestionState.PENDING]
    assert rows[1][1]["asked_again_after"] == ids[RITA]
    assert "still connected in the import" in rows[1][1]["why"]
    # And only once: the next import does not ask a second time.
    again = run_import(store, FB, FacebookReader(), third, rules, much_later)
    assert again.asked_again == 0


# --- the command line ------------------------------------------------------------------------

runner = CliRunner()


def cli(config: Path, *args: str) -> str:
    result = runner.invoke(app, ["--config", str(config), *args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_linkedin_from_the_command_line_without_any_api(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "version: 1\n"
        "accounts:\n"
        "  - platform: linkedin\n"
        "    handle: harriet-vane\n"
        "rules:\n"
        "  window: 180d\n"
        "  stale_after: 3650d\n"
        f"storage:\n  url: sqlite:///{tmp_path / 'lopper.sqlite3'}\n",
        encoding="utf-8",
    )
    files = linkedin_recent()
    files["Connections.csv"] = files["Connections.csv"].replace("22 Dec 2023", "22 Dec 2019")
    files["Connections.csv"] = files["Connections.csv"].replace("03 Jan 2024", "03 Jan 2019")
    recent = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S UTC")
    files["messages.csv"] = files["messages.csv"].replace("2025-05-30 16:35:35 UTC", recent)
    first = write_export(tmp_path / "li1", files, as_zip=True)

    shown = cli(config, "import", "linkedin", str(first))
    assert "linkedin:harriet-vane: 2 connections (2 new, 0 no longer there), 2 exchanges" in shown

    synced = cli(config, "sync")
    assert "read from its data export: lopper import linkedin PATH" in synced

    cli(config, "evaluate")
    listed = json.loads(cli(config, "suggestions", "--json"))
    assert [s["handle"] for s in listed] == ["Bo Chen"]  # Ana wrote; Bo never did
    cli(config, "confirm", str(listed[0]["id"]))
    assert "1 to remove by hand" in cli(config, "execute")
    manual = cli(config, "suggestions", "--manual")
    assert "https://www.linkedin.com/in/bochen/" in manual

    files["Connections.csv"] = "\r\n".join(
        line for line in files["Connections.csv"].split("\r\n") if "bochen" not in line
    )
    shown = cli(config, "import", "linkedin", str(write_export(tmp_path / "li2", files, True)))
    assert "1 removal(s) you did by hand are now recorded as done" in shown
    assert json.loads(cli(config, "suggestions", "--json", "--all"))[0]["state"] == "removed"


def test_a_bad_export_from_the_command_line_exits_65_naming_the_file(
    home: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "version: 1\naccounts:\n  - platform: facebook\n    handle: harriet.vane\n"
        f"storage:\n  url: sqlite:///{tmp_path / 'lopper.sqlite3'}\n",
        encoding="utf-8",
    )
    bad = tmp_path / "not-an-export.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")

    result = runner.invoke(app, ["--config", str(config), "import", "facebook", str(bad)])

    assert result.exit_code != 0
    assert "not-an-export.zip: not a zip file" in str(result.exception)
    assert getattr(result.exception, "exit_code", None) == 65


def test_the_daemon_evaluates_an_export_only_account_after_each_import(
    store: Store, tmp_path: Path
) -> None:
    linkedin = AccountConfig(platform="linkedin", handle="harriet-vane")
    settings = Settings(version=1, accounts=[linkedin])
    with store.session() as session:
        assert load_account_facts(session, linkedin.key).last_sync_at is None

    path = write_export(tmp_path / "li", linkedin_recent(), as_zip=True)
    run_import(store, linkedin, LinkedInReader(), path, make_rules(), NOW)

    with store.session() as session:
        facts = load_account_facts(session, linkedin.key)
    due = {d.job: d.at for d in account_dues(facts, settings, NOW)}
    assert due[EVALUATE] == NOW
