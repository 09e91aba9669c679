"""Exports whose owner is not obvious, re-imported, or imported out of order: the owner is
never guessed, a corrected export replaces the earlier reading, and an older export never
rolls the connection list back. Every export is written by the test in the real layout."""

from __future__ import annotations

import sqlite3
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import NOW, make_rules, snapshot
from test_imports import (
    FB,
    IG,
    LI,
    ME,
    OLD,
    connections,
    csv_text,
    exchanges,
    facebook_files,
    ig_entry,
    instagram_files,
    run,
    thread,
    write_export,
)
from typer.testing import CliRunner

from service.cli import app
from service.config import Account as AccountConfig
from service.imports.common import run_import
from service.imports.facebook import FacebookReader
from service.imports.instagram import InstagramReader
from service.imports.linkedin import LinkedInReader
from service.imports.names import name_key
from service.store import Store

JOSE = name_key("José Ñúñez")
STRANGER = AccountConfig(platform="facebook", handle="hv1923")  # a handle like no name


def one_thread_export(tmp_path: Path, label: str, with_profile: bool) -> Path:
    """The owner wrote 4 messages in the one thread there is; José wrote 1."""
    sent = [(ME, NOW - timedelta(days=d)) for d in (3, 20, 90, 150)]
    threads = {"josenunez_1": [thread(["José Ñúñez", ME], [("José Ñúñez", OLD), *sent])]}
    files = facebook_files(threads=threads, with_profile=with_profile)
    return write_export(tmp_path / label, files, as_zip=True)


def messages(store: Store) -> list[tuple[str, str, str]]:
    return [e for e in exchanges(store) if e[1] == "message"]


# --- Facebook: the owner --------------------------------------------------------------------


def test_the_command_refuses_messages_it_cannot_attribute_and_me_settles_it(
    home: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    db = tmp_path / "lopper.sqlite3"
    config.write_text(
        "version: 1\naccounts:\n  - platform: facebook\n    handle: hv1923\n"
        f"storage:\n  url: sqlite:///{db}\n",
        encoding="utf-8",
    )
    path = one_thread_export(tmp_path, "fb", with_profile=False)
    runner = CliRunner()

    refused = runner.invoke(app, ["--config", str(config), "import", "facebook", str(path)])

    assert refused.exit_code == 0, refused.output
    said = " ".join(refused.output.split())
    assert "messages not imported" in said and "--me" in said
    assert "'Harriet Vane'" in said and "'José Ñúñez'" in said
    assert "6 connections (6 new" in said  # the connections still import
    with sqlite3.connect(db) as conn:
        kinds = [k for (k,) in conn.execute("select kind from interactions")]
    assert "message" not in kinds

    settled = runner.invoke(
        app, ["--config", str(config), "import", "facebook", str(path), "--me", "Harriet Vane"]
    )

    assert settled.exit_code == 0, settled.output
    assert "messages not imported" not in settled.output
    with sqlite3.connect(db) as conn:
        rows = sorted(
            conn.execute(
                "select counterpart_id, direction from interactions where kind = 'message'"
            )
        )
    assert rows == [(JOSE, "inbound")] + [(JOSE, "outbound")] * 4


def test_me_that_names_nobody_in_the_threads_is_refused_with_the_names_there(
    store: Store, tmp_path: Path
) -> None:
    path = one_thread_export(tmp_path, "fb", with_profile=False)
    with pytest.raises(Exception, match="--me 'Harriet Vain' is no participant of any thread"):
        run_import(store, STRANGER, FacebookReader(), path, make_rules(), NOW, me="Harriet Vain")
    assert snapshot(store)["connections"] == 0


def test_a_corrected_export_replaces_what_the_earlier_import_wrote(
    store: Store, tmp_path: Path
) -> None:
    without = one_thread_export(tmp_path, "first", with_profile=False)
    corrected = one_thread_export(tmp_path, "second", with_profile=True)
    # The first import was told the wrong owner: José's message outbound, Harriet's inbound
    # from a "Harriet Vane" counterpart.
    run_import(store, STRANGER, FacebookReader(), without, make_rules(), NOW, me="José Ñúñez")
    assert (name_key(ME), "message", "inbound") in messages(store)

    report = run(store, STRANGER, FacebookReader(), corrected)

    assert messages(store) == [(JOSE, "message", "inbound")] + [(JOSE, "message", "outbound")] * 4
    assert report.exchanges_replaced == 5
    before = snapshot(store)
    again = run(store, STRANGER, FacebookReader(), corrected)
    assert (again.exchanges_new, again.exchanges_replaced) == (0, 0)
    assert snapshot(store) == before  # the same export again changes no count


def test_an_export_without_its_owner_then_with_it_leaves_only_the_right_rows(
    store: Store, tmp_path: Path
) -> None:
    run(store, STRANGER, FacebookReader(), one_thread_export(tmp_path, "a", with_profile=False))
    run(store, STRANGER, FacebookReader(), one_thread_export(tmp_path, "b", with_profile=True))

    assert messages(store) == [(JOSE, "message", "inbound")] + [(JOSE, "message", "outbound")] * 4


def test_an_export_split_over_two_zips_keeps_what_each_holds(store: Store, tmp_path: Path) -> None:
    # Facebook hands a large export over as several zips, each with some of the threads.
    jose = {"josenunez_1": [thread(["José Ñúñez", ME], [("José Ñúñez", OLD), (ME, NOW)])]}
    ana = {
        "analima_2": [thread(["Ana Lima", ME], [("Ana Lima", OLD + timedelta(days=1)), (ME, NOW)])]
    }
    first = facebook_files(threads=jose)
    second = {k: v for k, v in facebook_files(threads=ana).items() if "/messages/" in k}
    run(store, FB, FacebookReader(), write_export(tmp_path / "part1", first, True))

    report = run(store, FB, FacebookReader(), write_export(tmp_path / "part2", second, True))

    assert report.exchanges_replaced == 0
    assert messages(store) == sorted(
        [
            (JOSE, "message", "inbound"),
            (JOSE, "message", "outbound"),
            (name_key("Ana Lima"), "message", "inbound"),
            (name_key("Ana Lima"), "message", "outbound"),
        ]
    )
    assert (JOSE, "comment", "outbound") in exchanges(store)  # not in the second zip: kept


def test_identical_messages_in_one_millisecond_each_count_once_and_stay_so(
    store: Store, tmp_path: Path
) -> None:
    at = NOW - timedelta(days=2)
    sent = [("José Ñúñez", at), ("José Ñúñez", at), (ME, at), ("José Ñúñez", OLD)]
    threads = {"josenunez_1": [thread(["José Ñúñez", ME], sent)]}
    path = write_export(tmp_path / "fb", facebook_files(threads=threads), as_zip=True)

    run(store, FB, FacebookReader(), path)
    again = run(store, FB, FacebookReader(), path)

    assert messages(store) == [(JOSE, "message", "inbound")] * 3 + [(JOSE, "message", "outbound")]
    assert again.exchanges_new == 0


# --- Facebook: follows and nameless people ---------------------------------------------------


def test_facebook_follows_keep_their_date(store: Store, tmp_path: Path) -> None:
    followed = NOW - timedelta(days=250)
    files = facebook_files()
    files["connections/followers/who_you've_followed.json"] = {
        "following_v3": [{"name": "Page Person", "timestamp": int(followed.timestamp())}]
    }

    run(store, FB, FacebookReader(), write_export(tmp_path / "fb", files, as_zip=True))

    assert connections(store)[name_key("Page Person")] == ("Page Person", True, False, followed)


def test_deleted_participants_are_never_merged_into_one_person(
    store: Store, tmp_path: Path
) -> None:
    files = facebook_files()
    inbox = "your_facebook_activity/messages/inbox/"
    # Two unrelated deleted accounts: Facebook writes each with an empty name.
    for n in (1, 2):
        files[f"{inbox}deleted_{n}/message_1.json"] = thread(
            ["", ME], [("", NOW - timedelta(days=n)), (ME, NOW - timedelta(days=n + 1))]
        )

    report = run(store, FB, FacebookReader(), write_export(tmp_path / "fb", files, as_zip=True))

    assert all(who != name_key("") for who, _kind, _direction in exchanges(store))
    assert any("deleted or nameless" in note for note in report.notes)


def test_instagram_deleted_participants_are_left_out(store: Store, tmp_path: Path) -> None:
    files = instagram_files("2024")
    inbox = "your_instagram_activity/messages/inbox/"
    for n in (1, 2):
        files[f"{inbox}deleted_{n}/message_1.json"] = thread(
            ["", "harriet_v"], [("", NOW - timedelta(days=n)), ("harriet_v", OLD)]
        )

    report = run(store, IG, InstagramReader(), write_export(tmp_path / "ig", files, as_zip=True))

    assert {who for who, _kind, _direction in exchanges(store)} == {"ana.lima"}
    assert any("2 messages with deleted or nameless accounts" in n for n in report.notes)


# --- which platform's export ------------------------------------------------------------------


def test_a_facebook_export_is_refused_by_the_instagram_import(store: Store, tmp_path: Path) -> None:
    path = write_export(tmp_path / "facebook-harriet", facebook_files(), as_zip=True)

    with pytest.raises(Exception, match=r"this is a Facebook export.*lopper import facebook"):
        run(store, IG, InstagramReader(), path)
    assert snapshot(store)["connections"] == 0


def test_an_instagram_export_is_refused_by_the_facebook_import_naming_the_right_one(
    store: Store, tmp_path: Path
) -> None:
    path = write_export(tmp_path / "instagram-harriet", instagram_files("2026"), as_zip=True)

    with pytest.raises(Exception, match=r"this is an Instagram export.*lopper import instagram"):
        run(store, FB, FacebookReader(), path)
    assert snapshot(store)["connections"] == 0


def test_a_mutual_instagram_follow_dates_from_when_you_followed(
    store: Store, tmp_path: Path
) -> None:
    followed = NOW - timedelta(days=100)
    files = instagram_files("2024")
    base = "connections/followers_and_following/"
    files[f"{base}followers_1.json"] = [ig_entry("ana.lima", OLD, "2024")]
    files[f"{base}following.json"] = {
        "relationships_following": [ig_entry("ana.lima", followed, "2024")]
    }

    run(store, IG, InstagramReader(), write_export(tmp_path / "ig", files, as_zip=True))

    assert connections(store)["ana.lima"][1:] == (True, True, followed)


def test_instagram_profile_names_the_owner_of_a_single_thread(store: Store, tmp_path: Path) -> None:
    files = instagram_files("2026")
    inbox = "your_instagram_activity/messages/inbox/"
    files[f"{inbox}analima_17/message_1.json"] = thread(
        ["Ana ✨", "Hattie"], [("Ana ✨", NOW - timedelta(days=1)), ("Hattie", OLD)]
    )
    refused = run(store, IG, InstagramReader(), write_export(tmp_path / "a", files, True))
    assert refused.refused is not None and "'Hattie'" in refused.refused
    assert messages(store) == []

    files["personal_information/personal_information/personal_information.json"] = {
        "profile_user": [
            {
                "media_map_data": {},
                "string_map_data": {
                    "Name": {"href": "", "value": "Hattie", "timestamp": 0},
                    "Username": {"href": "", "value": "harriet_v", "timestamp": 0},
                },
            }
        ]
    }
    run(store, IG, InstagramReader(), write_export(tmp_path / "b", files, True))
    assert messages(store) == [
        ("ana.lima", "message", "inbound"),
        ("ana.lima", "message", "outbound"),
    ]


# --- an older export after a newer one ------------------------------------------------------


def dated_zip(root: Path, files: dict[str, Any], made: datetime) -> Path:
    """An export zip as downloaded: every member dated when the export was made."""
    plain = write_export(root, files, as_zip=False)
    path = root.with_suffix(".zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(plain.rglob("*")):
            if file.is_file():
                info = zipfile.ZipInfo(
                    f"{root.name}/{file.relative_to(plain).as_posix()}", made.timetuple()[:6]
                )
                archive.writestr(info, file.read_bytes())
    return path


def test_an_older_export_never_rolls_the_connection_list_back(
    store: Store, make_store: Callable[[], Store], tmp_path: Path
) -> None:
    quiet = {"josenunez_1": [thread(["José Ñúñez", ME], [("José Ñúñez", OLD), (ME, OLD)])]}
    old_made = OLD + timedelta(days=30)
    older = dated_zip(
        tmp_path / "older",
        facebook_files(friends=[("José Ñúñez", OLD), ("Cy Dropped", OLD)], threads=quiet),
        old_made,
    )
    newer = dated_zip(
        tmp_path / "newer",
        facebook_files(friends=[("José Ñúñez", OLD), ("Bo Chen", OLD)], threads=quiet),
        NOW - timedelta(days=1),
    )
    run(store, FB, FacebookReader(), newer)
    current = snapshot(store)["connection_states"]

    report = run(store, FB, FacebookReader(), older)

    assert report.older and report.connections_vanished == 0
    assert any("older than one imported before" in note for note in report.notes)
    assert snapshot(store)["connection_states"] == current  # Bo stays, Cy does not come back
    assert name_key("Cy Dropped") not in connections(store)

    # In the other order, the newer list applies: Cy is gone.
    other = make_store()
    run(other, FB, FacebookReader(), older)
    applied = run(other, FB, FacebookReader(), newer)
    assert not applied.older and applied.connections_vanished == 1


def test_an_export_dated_in_the_future_does_not_hold_back_later_lists(
    store: Store, tmp_path: Path
) -> None:
    quiet = {"josenunez_1": [thread(["José Ñúñez", ME], [("José Ñúñez", OLD), (ME, OLD)])]}
    friends = [("José Ñúñez", OLD), ("Cy Dropped", OLD)]
    skewed = dated_zip(
        tmp_path / "skewed",
        facebook_files(friends=friends, threads=quiet),
        NOW + timedelta(days=900),
    )
    run(store, FB, FacebookReader(), skewed)  # a zip whose clock was years ahead

    later = dated_zip(
        tmp_path / "later",
        facebook_files(friends=[("José Ñúñez", OLD)], threads=quiet),
        NOW,
    )
    report = run(store, FB, FacebookReader(), later)

    assert not report.older and report.connections_vanished == 1


# --- LinkedIn: names with commas, ties, capitals --------------------------------------------

HEADER = [
    "CONVERSATION ID",
    "CONVERSATION TITLE",
    "FROM",
    "SENDER PROFILE URL",
    "TO",
    "RECIPIENT PROFILE URLS",
    "DATE",
    "SUBJECT",
    "CONTENT",
    "FOLDER",
]
JANE, JANE_URL = "Jane Doe, CPHR", "https://www.linkedin.com/in/jane-doe-cphr"
ANA_URL, BO_URL = "https://www.linkedin.com/in/ana-lima", "https://www.linkedin.com/in/bochen"


def li_row(conv: str, who: str, url: str, to: str, to_urls: str, days: int) -> list[str]:
    at = (NOW - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S UTC")
    return [conv, "", who, url, to, to_urls, at, "", "hello", "INBOX"]


def li_connections() -> str:
    return csv_text(
        ["First Name", "Last Name", "URL", "Email Address", "Company", "Position", "Connected On"],
        [
            ["Ana", "Lima", ANA_URL, "", "", "", "22 Dec 2023"],
            ["Bo", "Chen", BO_URL, "", "", "", "03 Jan 2024"],
        ],
    )


def test_a_linkedin_owner_whose_name_holds_a_comma_is_recognised(
    store: Store, make_store: Callable[[], Store], tmp_path: Path
) -> None:
    rows = [
        li_row("c1", "Ana Lima", ANA_URL, JANE, JANE_URL, 1),
        li_row("c1", JANE, JANE_URL, "Ana Lima", ANA_URL, 2),
        li_row("c2", "Bo Chen", BO_URL, JANE, JANE_URL, 3),
        li_row("c3", JANE, JANE_URL, "Ana Lima,Bo Chen", f"{ANA_URL},{BO_URL}", 4),
        li_row("c3", "Bo Chen", BO_URL, f"{JANE},Ana Lima", f"{JANE_URL},{ANA_URL}", 5),
    ]
    files = {"Connections.csv": li_connections(), "messages.csv": csv_text(HEADER, rows)}
    account = AccountConfig(platform="linkedin", handle="jd")  # no hint in the handle

    report = run(store, account, LinkedInReader(), write_export(tmp_path / "li", files, True))

    assert report.refused is None
    assert messages(store) == sorted(
        [
            (ANA_URL, "message", "inbound"),
            (ANA_URL, "message", "outbound"),
            (BO_URL, "message", "inbound"),
            (ANA_URL, "message", "outbound"),
            (BO_URL, "message", "outbound"),
            (BO_URL, "message", "inbound"),
        ]
    )
    assert all(who != JANE_URL for who, _k, _d in exchanges(store))

    # With Profile.csv (the comma in the last name) the same.
    files["Profile.csv"] = csv_text(
        ["First Name", "Last Name", "Headline"], [["Jane", "Doe, CPHR", "HR"]]
    )
    other = make_store()
    run(other, account, LinkedInReader(), write_export(tmp_path / "li2", files, True))
    assert messages(other) == messages(store)


def test_a_linkedin_tie_is_refused_the_same_way_every_time(
    store: Store, make_store: Callable[[], Store], tmp_path: Path
) -> None:
    rows = [
        li_row("c1", "Ana Lima", ANA_URL, ME, "https://www.linkedin.com/in/harriet-vane", 1),
        li_row("c1", "Ana Lima", ANA_URL, ME, "https://www.linkedin.com/in/harriet-vane", 2),
        li_row("c1", ME, "https://www.linkedin.com/in/harriet-vane", "Ana Lima", ANA_URL, 3),
    ]
    files = {"Connections.csv": li_connections(), "messages.csv": csv_text(HEADER, rows)}
    path = write_export(tmp_path / "li", files, True)
    account = AccountConfig(platform="linkedin", handle="hv")

    for _ in range(3):
        report = run(store, account, LinkedInReader(), path)
        assert report.refused is not None
        assert "'Ana Lima'" in report.refused and f"'{ME}'" in report.refused
        assert messages(store) == []
    assert snapshot(store)["connections"] == 2  # the connections import

    # --me settles it, by name or by profile link; so does the handle as the tail of the
    # owner's profile link.
    for me in (ME, "https://www.linkedin.com/in/harriet-vane/"):
        other = make_store()
        run_import(other, account, LinkedInReader(), path, make_rules(), NOW, me=me)
        assert [d for _w, _k, d in messages(other)] == ["inbound", "inbound", "outbound"]
    run(store, LI, LinkedInReader(), path)
    assert messages(store) == [
        (ANA_URL, "message", "inbound"),
        (ANA_URL, "message", "inbound"),
        (ANA_URL, "message", "outbound"),
    ]
    before = snapshot(store)
    run(store, LI, LinkedInReader(), path)
    assert snapshot(store) == before


def test_the_2018_messages_csv_with_a_capital_m_is_read(store: Store, tmp_path: Path) -> None:
    files = {
        "Connections.csv": csv_text(
            ["First Name", "Last Name", "Email Address", "Company", "Position", "Connected On"],
            [["Cy", "Dee", "", "", "", "1/8/18, 6:14 PM"]],
        ),
        "Messages.csv": csv_text(
            ["From", "To", "Date", "Subject", "Content", "Direction", "Folder"],
            [
                ["Cy Dee", ME, "5/30/18, 4:35 PM", "", "hey", "INCOMING", "INBOX"],
                [ME, "Cy Dee", "1/9/18, 4:35 PM", "", "yo", "OUTGOING", "INBOX"],
            ],
        ),
    }

    report = run(store, LI, LinkedInReader(), write_export(tmp_path / "li", files, False))

    assert report.exchanges_read == 2
    assert messages(store) == [
        (name_key("Cy Dee"), "message", "inbound"),
        (name_key("Cy Dee"), "message", "outbound"),
    ]


def test_a_csv_cut_inside_a_quoted_field_is_refused(store: Store, tmp_path: Path) -> None:
    rows = [
        li_row("c1", "Ana Lima", ANA_URL, ME, "https://www.linkedin.com/in/harriet-vane", 1),
        li_row("c1", ME, "https://www.linkedin.com/in/harriet-vane", "Ana Lima", ANA_URL, 3),
    ]
    rows[1][8] = "a long message,\nover lines"
    text = csv_text(HEADER, rows)
    files = {"Connections.csv": li_connections(), "messages.csv": text[: text.index("over")]}

    with pytest.raises(Exception, match=r"messages\.csv: line .*ends inside a quoted field"):
        run(store, LI, LinkedInReader(), write_export(tmp_path / "li", files, True))
    assert snapshot(store)["connections"] == 0
