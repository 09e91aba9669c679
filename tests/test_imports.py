"""Imports of Facebook, LinkedIn and Instagram exports that the tests write in each real
format generation, read through the real runner into the store, and then judged."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import NOW, Clock, make_rules, snapshot
from sqlalchemy import select

from service.config import Account as AccountConfig
from service.imports.common import ImportReport, run_import
from service.imports.export import ExportError
from service.imports.facebook import FacebookReader
from service.imports.instagram import InstagramReader, username
from service.imports.linkedin import LinkedInReader
from service.imports.names import ANONYMOUS, name_key, repair
from service.model import Direction, Kind
from service.store import Store
from service.store.models import Account, Connection, Interaction, SyncRun
from service.store.queries import account_coverage
from service.suggestions import evaluate_account

FB = AccountConfig(platform="facebook", handle="harriet.vane")
LI = AccountConfig(platform="linkedin", handle="harriet-vane")
IG = AccountConfig(platform="instagram", handle="harriet_v")
ME = "Harriet Vane"
OLD = NOW - timedelta(days=400)


def mojibake(text: str) -> str:
    """What Facebook writes: the UTF-8 bytes of the text, each as a \\u00XX character."""
    return text.encode("utf-8").decode("latin-1")


def ts(at: datetime) -> int:
    return int(at.timestamp())


def write_export(root: Path, files: dict[str, Any], as_zip: bool) -> Path:
    """Write members (JSON-able values, or text) as a folder or a zip with a top folder."""
    if as_zip:
        path = root.with_suffix(".zip")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, value in files.items():
                data = value if isinstance(value, str) else json.dumps(value)
                archive.writestr(f"{root.name}/{name}", data)
        return path
    for name, value in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(value if isinstance(value, str) else json.dumps(value), "utf-8")
    return root


def run(
    store: Store, account: AccountConfig, reader: Any, path: Path, **rules: Any
) -> ImportReport:
    return run_import(store, account, reader, path, make_rules(**rules), NOW)


def exchanges(store: Store) -> list[tuple[str, str, str]]:
    with store.session() as session:
        rows = session.execute(
            select(Interaction.counterpart_id, Interaction.kind, Interaction.direction)
        ).all()
    return sorted((c, k.value, d.value) for c, k, d in rows)


def connections(store: Store) -> dict[str, tuple[str, bool, bool, datetime | None]]:
    with store.session() as session:
        return {
            c.platform_user_id: (c.handle, c.following, c.followed_by, c.connected_since)
            for c in session.scalars(select(Connection))
        }


# --- Facebook --------------------------------------------------------------------------------

# path generations: (friends path, friends key, following path, following key, messages root)
GENERATIONS = {
    "2018": ("friends/friends.json", "friends", "following/following.json", "following", ""),
    "2020": (
        "friends_and_followers/friends.json",
        "friends_v2",
        "friends_and_followers/following.json",
        "following_v2",
        "",
    ),
    "2023": (
        "connections/friends/your_friends.json",
        "friends_v2",
        "connections/followers/who_you've_followed.json",
        "following_v3",
        "your_activity_across_facebook/",
    ),
    "2024": (
        "connections/friends/your_friends.json",
        "friends_v2",
        "connections/followers/who_you've_followed.json",
        "following_v3",
        "your_facebook_activity/",
    ),
    "2025": (
        "connections/friends/your_friends.json",
        "friends_v2",
        "connections/followers/who_you've_followed.json",
        "following_v3",
        "this_profile's_activity_across_facebook/",
    ),
}


def thread(participants: list[str], messages: list[tuple[str, datetime]], **extra: Any) -> Any:
    """A message_N.json: newest first, every string as Facebook escapes it."""
    ordered = sorted(messages, key=lambda m: m[1], reverse=True)
    return {
        "participants": [{"name": mojibake(p)} for p in participants],
        "messages": [
            {
                "sender_name": mojibake(sender),
                "timestamp_ms": int(at.timestamp() * 1000),
                "content": mojibake("Olá!"),
                "type": "Generic",
                **extra,
            }
            for sender, at in ordered
        ],
        "title": mojibake(participants[0]),
        "is_still_participant": True,
    }


def facebook_files(
    generation: str = "2024",
    friends: list[tuple[str, datetime]] | None = None,
    threads: dict[str, Any] | None = None,
    with_profile: bool = True,
) -> dict[str, Any]:
    friends_path, friends_key, following_path, following_key, root = GENERATIONS[generation]
    friends = (
        friends
        if friends is not None
        else [
            ("José Ñúñez", OLD),
            ("Ana Lima", OLD),
            ("Bo Chen", OLD),
            ("Quiet Quentin", OLD),
            ("New Nadia", NOW - timedelta(days=3)),
        ]
    )
    files: dict[str, Any] = {
        friends_path: {
            friends_key: [{"name": mojibake(n), "timestamp": ts(t)} for n, t in friends]
        },
        following_path: {
            following_key: [
                {"name": "Page Person", "timestamp": ts(NOW - timedelta(days=4))},  # just followed
                {"name": mojibake(friends[0][0]), "timestamp": ts(OLD)},  # a friend, followed
            ]
        },
    }
    if with_profile:
        files["profile_information/profile_information.json"] = {
            "profile_v2": {"name": {"full_name": ME}}
        }
    if threads is None:
        threads = {
            "josenunez_1234": [
                thread(["José Ñúñez", ME], [("José Ñúñez", NOW - timedelta(days=2)), (ME, OLD)])
            ],
            "group_987": [thread(["Ana Lima", "Bo Chen", ME], [(ME, NOW - timedelta(days=10))])],
        }
    for name, parts in threads.items():
        for n, part in enumerate(parts, 1):
            files[f"{root}messages/inbox/{name}/message_{n}.json"] = part
    files[f"{root}comments_and_reactions/comments.json"] = {
        "comments_v2": [
            {
                "timestamp": ts(NOW - timedelta(days=20)),
                "data": [{"comment": {"comment": "nice", "author": ME}}],
                "title": mojibake(f"{ME} commented on José Ñúñez's post."),
            },
            {
                "timestamp": ts(NOW - timedelta(days=21)),
                "title": f"{ME} replied to her own comment.",
            },
        ]
    }
    reactions = [
        {
            "timestamp": ts(NOW - timedelta(days=30)),
            "data": [{"reaction": {"reaction": "LIKE", "actor": ME}}],
            "title": f"{ME} likes Bo Chen's photo.",
        }
    ]
    if generation in ("2024", "2025"):  # a plain list, beside the comments
        files[f"{root}comments_and_reactions/likes_and_reactions_1.json"] = reactions
    else:
        files[f"{root}likes_and_reactions/posts_and_comments.json"] = {"reactions_v2": reactions}
    return files


def test_mojibake_is_repaired_only_where_it_round_trips() -> None:
    assert repair(mojibake("José Ñúñez")) == "José Ñúñez"
    assert repair("Zoë") == "Zoë"  # already text: its latin-1 bytes are no UTF-8
    assert repair("Łukasz") == "Łukasz"  # above U+00FF: never mangled this way
    assert repair("plain") == "plain"


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_every_facebook_generation_reads_the_same(
    store: Store, tmp_path: Path, generation: str, as_zip: bool
) -> None:
    path = write_export(tmp_path / "facebook-harriet", facebook_files(generation), as_zip)

    report = run(store, FB, FacebookReader(), path)

    jose = name_key("José Ñúñez")
    people = connections(store)
    assert people[jose] == ("José Ñúñez", True, True, OLD)
    assert people[name_key("Page Person")][1:3] == (True, False)  # followed, not a friend
    assert report.connections_seen == 6
    assert exchanges(store) == sorted(
        [
            (jose, "message", "inbound"),
            (jose, "message", "outbound"),
            (jose, "comment", "outbound"),
            # a message to a group counts for each other participant
            (name_key("Ana Lima"), "message", "outbound"),
            (name_key("Bo Chen"), "message", "outbound"),
            (name_key("Bo Chen"), "reaction", "outbound"),
        ]
    )
    assert report.coverage is not None
    assert (report.coverage.start, report.coverage.end) == (OLD, NOW - timedelta(days=2))


def test_reimporting_an_export_changes_nothing(store: Store, tmp_path: Path) -> None:
    path = write_export(tmp_path / "fb", facebook_files(), as_zip=True)
    run(store, FB, FacebookReader(), path)
    before = snapshot(store)

    again = run(store, FB, FacebookReader(), path)

    assert (again.connections_new, again.exchanges_new) == (0, 0)
    assert again.exchanges_read > 0
    assert snapshot(store) == before


def test_the_owner_is_found_without_the_profile_file(store: Store, tmp_path: Path) -> None:
    path = write_export(tmp_path / "fb", facebook_files(with_profile=False), as_zip=False)

    report = run(store, FB, FacebookReader(), path)

    assert report.notes == []
    assert (name_key("José Ñúñez"), "message", "outbound") in exchanges(store)
    assert (name_key(ME), "message", "inbound") not in exchanges(store)


def test_without_a_way_to_tell_who_you_are_the_messages_are_refused(
    store: Store, tmp_path: Path
) -> None:
    # One thread, two people, no profile file, a handle like neither name: either could be you.
    threads = {
        "josenunez_1": [
            thread(
                ["José Ñúñez", ME],
                [("José Ñúñez", OLD), (ME, OLD + timedelta(days=1)), (ME, NOW - timedelta(days=5))],
            )
        ]
    }
    files = facebook_files(threads=threads, with_profile=False)
    path = write_export(tmp_path / "fb", files, as_zip=False)

    other = AccountConfig(platform="facebook", handle="hv1923")  # no hint in the handle
    report = run(store, other, FacebookReader(), path)

    assert report.refused is not None
    assert "messages not imported" in report.refused and "--me" in report.refused
    assert "'Harriet Vane'" in report.refused and "'José Ñúñez'" in report.refused
    # No message stored in either direction, none as if the owner had written to themselves.
    assert all(kind != "message" for _who, kind, _direction in exchanges(store))
    assert report.coverage is None  # nobody is judged on the comments alone
    assert report.connections_seen == 6  # the connections still import

    # Settled with --me: the owner's messages are outbound.
    settled = run_import(store, other, FacebookReader(), path, make_rules(), NOW, me="harriet vane")
    assert settled.refused is None
    assert [e for e in exchanges(store) if e[1] == "message"] == [
        (name_key("José Ñúñez"), "message", "inbound"),
        (name_key("José Ñúñez"), "message", "outbound"),
        (name_key("José Ñúñez"), "message", "outbound"),
    ]


def test_two_friends_with_one_name_stay_apart_and_the_evidence_says_so(
    store: Store, tmp_path: Path
) -> None:
    first, second = NOW - timedelta(days=900), NOW - timedelta(days=800)
    friends = [("Sam Park", first), ("Sam Park", second), ("Ana Lima", OLD)]
    threads = {
        "sampark_1": [thread(["Sam Park", ME], [("Sam Park", NOW - timedelta(days=1))])],
        "analima_2": [thread(["Ana Lima", ME], [(ME, OLD)])],
    }
    path = write_export(tmp_path / "fb", facebook_files(friends=friends, threads=threads), True)

    report = run(store, FB, FacebookReader(), path)

    people = connections(store)
    sams = sorted(k for k in people if k.startswith(name_key("Sam Park")))
    assert sams == [f"{name_key('Sam Park')}#{ts(first)}", f"{name_key('Sam Park')}#{ts(second)}"]
    assert people[sams[0]][0] == "Sam Park (2 share this name; friends since 2022-12-14)"
    assert report.shared_names == 2
    # The message names only "Sam Park": it counts for both, so neither is flagged for it.
    assert [e for e in exchanges(store) if e[0] in sams] == [
        (sams[0], "message", "inbound"),
        (sams[1], "message", "inbound"),
    ]
    evaluation = evaluate_account(store, FB.key, make_rules(), NOW)
    assert evaluation.verdicts == {"keep": 2, "flag": 1, "new": 1}  # new: the page just followed

    # A later export: the keys stay with each friendship even once the name is unique.
    friends = [("Sam Park", second), ("Ana Lima", OLD)]
    path = write_export(tmp_path / "fb2", facebook_files(friends=friends, threads=threads), True)
    later = run(store, FB, FacebookReader(), path)
    assert later.connections_new == 0
    assert later.connections_vanished == 1


# --- bad input ----------------------------------------------------------------------------


def imported_once(store: Store, tmp_path: Path) -> dict[str, Any]:
    run(store, FB, FacebookReader(), write_export(tmp_path / "good", facebook_files(), True))
    return snapshot(store)


def test_a_zip_of_something_else_is_refused_by_name(store: Store, tmp_path: Path) -> None:
    before = imported_once(store, tmp_path)
    other = tmp_path / "holiday.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("photos/beach.jpg", b"\xff\xd8\xff")
        archive.writestr("notes.txt", "hello")

    with pytest.raises(ExportError, match=re.escape("holiday.zip: no Facebook data found")):
        run(store, FB, FacebookReader(), other)
    with pytest.raises(
        ExportError, match=re.escape("holiday.zip: no Connections.csv or messages.csv")
    ):
        run(store, LI, LinkedInReader(), other)

    assert snapshot(store) == before


def test_a_truncated_member_names_the_file_and_leaves_the_store_unchanged(
    store: Store, tmp_path: Path
) -> None:
    before = imported_once(store, tmp_path)
    files = facebook_files(friends=[("José Ñúñez", OLD), ("Zed New", OLD)])
    member = "your_facebook_activity/messages/inbox/group_987/message_1.json"
    files[member] = json.dumps(files[member])[:60]
    path = write_export(tmp_path / "cut", files, as_zip=True)

    with pytest.raises(ExportError) as caught:
        run(store, FB, FacebookReader(), path)

    assert f"cut.zip:cut/{member}: not valid JSON" in str(caught.value)
    assert snapshot(store) == before  # not even the friends read before the bad file


def test_a_truncated_zip_is_refused(store: Store, tmp_path: Path) -> None:
    path = write_export(tmp_path / "fb", facebook_files(), as_zip=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ExportError, match=re.escape("fb.zip: not a zip file")):
        run(store, FB, FacebookReader(), path)
    assert snapshot(store)["connections"] == 0


def test_an_import_for_another_platform_is_refused(store: Store, tmp_path: Path) -> None:
    path = write_export(tmp_path / "fb", facebook_files(), as_zip=True)
    with pytest.raises(ExportError, match="facebook account; this is the linkedin import"):
        run(store, FB, LinkedInReader(), path)


# --- LinkedIn -----------------------------------------------------------------------------

NOTES = (
    'Notes:\n"When exporting your connection data, you may notice that some of the email '
    "addresses are missing. You will only see email addresses for connections who have "
    'allowed their connections to see or download their email address."\n\n'
)


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def linkedin_recent() -> dict[str, Any]:
    connections_csv = NOTES + csv_text(
        ["First Name", "Last Name", "URL", "Email Address", "Company", "Position", "Connected On"],
        [
            [
                "Ana",
                "Lima",
                "https://www.linkedin.com/in/ana-lima",
                "",
                "Acme",
                "CTO",
                "22 Dec 2023",
            ],
            ["Bo", "Chen", "https://www.linkedin.com/in/bochen/", "", "", "", "03 Jan 2024"],
            ["", "", "", "", "", "", "05 Jan 2024"],  # a member who hides their name
        ],
    )
    messages_csv = csv_text(
        [
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
            "ATTACHMENTS",
        ],
        [
            [
                "c1",
                "",
                "Ana Lima",
                "https://www.linkedin.com/in/ana-lima",
                ME,
                "https://www.linkedin.com/in/harriet-vane",
                "2025-05-30 16:35:35 UTC",
                "",
                "Hello,\nit spans\nlines",
                "INBOX",
                "",
            ],
            [
                "c1",
                "",
                ME,
                "https://www.linkedin.com/in/harriet-vane",
                "Ana Lima",
                "https://www.linkedin.com/in/ana-lima",
                "2024-04-06 16:35:35 UTC",
                "",
                "hi",
                "INBOX",
                "",
            ],
        ],
    )
    profile = csv_text(["First Name", "Last Name", "Headline"], [["Harriet", "Vane", "Writer"]])
    return {
        "Connections.csv": connections_csv,
        "messages.csv": messages_csv,
        "Profile.csv": profile,
    }


def linkedin_2018() -> dict[str, Any]:
    connections_csv = csv_text(
        ["First Name", "Last Name", "Email Address", "Company", "Position", "Connected On"],
        [
            ["Ana", "Lima", "", "Acme", "CTO", "12/22/17, 6:14 PM"],
            ["Cy", "Dee", "", "", "", "1/8/18, 6:14 PM"],
        ],
    )
    messages_csv = csv_text(
        ["From", "To", "Date", "Subject", "Content", "Direction", "Folder"],
        [
            ["Cy Dee", ME, "5/30/18, 4:35 PM", "", "hey", "INCOMING", "INBOX"],
            [ME, "Cy Dee", "1/9/18, 4:35 PM", "", "yo", "OUTGOING", "INBOX"],
        ],
    )
    return {"Connections.csv": connections_csv, "messages.csv": messages_csv}


def test_linkedin_with_the_notes_preamble_and_profile_links(store: Store, tmp_path: Path) -> None:
    path = write_export(tmp_path / "Basic_LinkedInDataExport", linkedin_recent(), as_zip=True)

    report = run(store, LI, LinkedInReader(), path)

    ana = "https://www.linkedin.com/in/ana-lima"
    bo = "https://www.linkedin.com/in/bochen"
    people = connections(store)
    assert set(people) == {ana, bo}
    assert people[ana][0] == "Ana Lima" and people[ana][3] == datetime(
        2023, 12, 22, tzinfo=NOW.tzinfo
    )
    assert exchanges(store) == [(ana, "message", "inbound"), (ana, "message", "outbound")]
    with store.session() as session:
        assert (
            session.scalars(select(Connection.profile_url))
            .all()
            .count("https://www.linkedin.com/in/bochen/")
            == 1
        )
    assert report.coverage is not None


def test_linkedin_2018_without_preamble_urls_or_iso_dates(store: Store, tmp_path: Path) -> None:
    path = write_export(tmp_path / "li2018", linkedin_2018(), as_zip=False)

    run(store, LI, LinkedInReader(), path)

    people = connections(store)
    assert set(people) == {name_key("Ana Lima"), name_key("Cy Dee")}
    assert people[name_key("Cy Dee")][3] == datetime(2018, 1, 8, 18, 14, tzinfo=NOW.tzinfo)
    assert people[name_key("Ana Lima")][0] == "Ana Lima"
    assert exchanges(store) == [
        (name_key("Cy Dee"), "message", "inbound"),
        (name_key("Cy Dee"), "message", "outbound"),
    ]


def test_a_linkedin_2018_export_after_a_recent_one_matches_by_name(
    store: Store, tmp_path: Path
) -> None:
    run(store, LI, LinkedInReader(), write_export(tmp_path / "new", linkedin_recent(), True))

    run(store, LI, LinkedInReader(), write_export(tmp_path / "old", linkedin_2018(), True))

    assert "https://www.linkedin.com/in/ana-lima" in connections(store)
    assert name_key("Ana Lima") not in connections(store)


@pytest.mark.parametrize(
    ("member", "text", "problem"),
    [
        (
            "Connections.csv",
            NOTES + "First Name,Last Name,URL,Company\r\nAna,Lima,,Acme\r\n",
            "Connections.csv: missing column(s) 'connected on'",
        ),
        (
            "messages.csv",
            "CONVERSATION ID,FROM,SUBJECT\r\nc1,Ana Lima,hi\r\n",
            "messages.csv: missing column(s) 'to', 'date'",
        ),
        (
            "Connections.csv",
            "Name,Company\r\nAna Lima,Acme\r\n",
            "Connections.csv: no header row starting with 'first name'",
        ),
        (
            "Connections.csv",
            "First Name,Last Name,URL,Email Address,Company,Position,Connected On\r\nAna,Lima,",
            "Connections.csv: line 2 has 3 fields",
        ),
    ],
)
def test_a_bad_linkedin_csv_names_the_file_and_changes_nothing(
    store: Store, tmp_path: Path, member: str, text: str, problem: str
) -> None:
    run(store, LI, LinkedInReader(), write_export(tmp_path / "good", linkedin_recent(), True))
    before = snapshot(store)
    files = linkedin_recent()
    files[member] = text

    with pytest.raises(ExportError, match=re.escape(problem)):
        run(store, LI, LinkedInReader(), write_export(tmp_path / "bad", files, True))

    assert snapshot(store) == before


# --- Instagram ----------------------------------------------------------------------------


def ig_entry(user: str, at: datetime, generation: str) -> dict[str, Any]:
    if generation == "2026":
        return {
            "title": user,
            "media_list_data": [],
            "string_list_data": [
                {"href": f"https://www.instagram.com/_u/{user}", "timestamp": ts(at)}
            ],
        }
    return {
        "title": "",
        "media_list_data": [],
        "string_list_data": [
            {"href": f"https://www.instagram.com/{user}", "value": user, "timestamp": ts(at)}
        ],
    }


def instagram_files(generation: str) -> dict[str, Any]:
    base = "connections/followers_and_following/"
    followers = [ig_entry(u, OLD, "2024") for u in ("ana.lima", "bo_chen")]
    following = [ig_entry(u, OLD, generation) for u in ("ana.lima", "cy.dee")]
    return {
        f"{base}followers_1.json": followers,
        f"{base}following.json": {"relationships_following": following}
        if generation == "2024"
        else following,
        "your_instagram_activity/messages/inbox/analima_17/message_1.json": thread(
            ["ana.lima", "harriet_v"],
            [("ana.lima", NOW - timedelta(days=1)), ("harriet_v", OLD)],
        ),
    }


def test_instagram_user_names_from_value_title_or_link() -> None:
    assert username(ig_entry("ana", OLD, "2024")) == "ana"
    assert username(ig_entry("ana", OLD, "2026")) == "ana"
    assert username({"string_list_data": [{"href": "https://www.instagram.com/_u/bo"}]}) == "bo"


@pytest.mark.parametrize("generation", ["2024", "2026"])
def test_instagram_followers_following_and_messages(
    store: Store, tmp_path: Path, generation: str
) -> None:
    path = write_export(tmp_path / "instagram-harriet", instagram_files(generation), True)

    report = run(store, IG, InstagramReader(), path)

    people = connections(store)
    assert {k: v[1:3] for k, v in people.items()} == {
        "ana.lima": (True, True),
        "bo_chen": (False, True),
        "cy.dee": (True, False),
    }
    assert exchanges(store) == [
        ("ana.lima", "message", "inbound"),
        ("ana.lima", "message", "outbound"),
    ]
    assert report.connections_seen == 3


# --- coverage and export-only accounts ------------------------------------------------------


def test_an_import_extends_coverage_and_keeps_it_across_syncs(store: Store, tmp_path: Path) -> None:
    run(store, FB, FacebookReader(), write_export(tmp_path / "fb", facebook_files(), True))

    with store.session() as session:
        account = session.scalars(select(Account)).one()
        assert account.streams == ["export"]
        coverage = account_coverage(session, account)
        # Recorded as a run: the daemon evaluates after it, `lopper status` shows it.
        assert account.last_sync_at == NOW
        record = session.scalars(select(SyncRun)).one()
        assert (record.outcome, record.detail, record.connections_new) == (
            "ok",
            "import of fb.zip",
            6,
        )
    assert coverage is not None and coverage.start == OLD


def test_anonymous_exchanges_count_for_nobody(store: Store, tmp_path: Path) -> None:
    run(store, FB, FacebookReader(), write_export(tmp_path / "fb", facebook_files(), True))
    assert all(e[0] != ANONYMOUS for e in exchanges(store))
    assert Kind.MESSAGE.value == "message" and Direction.INBOUND.value == "inbound"


def test_the_reduction_plan_judges_imported_accounts(
    store: Store, tmp_path: Path, clock: Clock
) -> None:
    run(store, FB, FacebookReader(), write_export(tmp_path / "fb", facebook_files(), True))

    report = evaluate_account(store, FB.key, make_rules(), NOW)

    # José, Ana and Bo exchanged; Quiet Quentin did not; Nadia is a new friend, and the page
    # was followed four days ago (the follow's date in the export).
    assert report.verdicts == {"keep": 3, "flag": 1, "new": 2}
    assert report.queued == 1


# --- damaged in ways a fuzzer finds ---------------------------------------------------------


def test_a_linkedin_row_cut_before_its_date_names_the_line(store: Store, tmp_path: Path) -> None:
    files = linkedin_2018()
    text = files["Connections.csv"]
    files["Connections.csv"] = text[: text.rindex(',"1/8/18')] + "\r\n"

    with pytest.raises(ExportError, match=r"Connections\.csv: line 3 has 5 fields"):
        run(store, LI, LinkedInReader(), write_export(tmp_path / "cut", files, as_zip=False))
    assert snapshot(store)["connections"] == 0


@pytest.mark.parametrize(
    ("member", "value", "problem"),
    [
        (
            "connections/friends/your_friends.json",
            {"friends_v2": [{"name": "A", "timestamp": 1e20}]},
            "is not a timestamp",
        ),
        (
            "your_facebook_activity/messages/inbox/josenunez_1234/message_1.json",
            {"participants": [], "messages": [{"sender_name": 7, "timestamp_ms": 1}]},
            "a message without a sender or a time",
        ),
        (
            "your_facebook_activity/messages/inbox/josenunez_1234/message_1.json",
            {"participants": [], "messages": [["not", "an", "object"]]},
            "a message without a sender or a time",
        ),
        (
            "your_facebook_activity/messages/inbox/josenunez_1234/message_1.json",
            {"participants": [], "messages": [{"sender_name": "A", "timestamp_ms": 10**20}]},
            "a message without a sender or a time",
        ),
    ],
)
def test_odd_values_in_a_facebook_export_are_refused_naming_the_file(
    store: Store, tmp_path: Path, member: str, value: Any, problem: str
) -> None:
    files = facebook_files("2024")
    files[member] = value

    with pytest.raises(ExportError, match=re.escape(f"{member}: ") + ".*" + re.escape(problem)):
        run(store, FB, FacebookReader(), write_export(tmp_path / "odd", files, as_zip=False))
    assert snapshot(store)["connections"] == 0


def test_odd_values_that_say_nothing_are_skipped(store: Store, tmp_path: Path) -> None:
    files = facebook_files("2024")
    files["profile_information/profile_information.json"] = {"profile_v2": {"name": [ME]}}
    run(store, FB, FacebookReader(), write_export(tmp_path / "fb", files, as_zip=False))
    assert (name_key("José Ñúñez"), "message", "outbound") in exchanges(store)

    ig = instagram_files("2024")
    followers = ig["connections/followers_and_following/followers_1.json"]
    followers[0]["string_list_data"] = 5  # no list: no link, no date, yet a title
    followers[0]["title"] = "ana.lima"
    followers[1]["string_list_data"][0]["timestamp"] = 10**20  # a date that cannot be
    run(store, IG, InstagramReader(), write_export(tmp_path / "ig", ig, as_zip=False))
    assert connections(store)["bo_chen"][3] is None


def test_instagram_messages_from_display_names_find_their_follower(
    store: Store, tmp_path: Path
) -> None:
    files = instagram_files("2026")
    inbox = "your_instagram_activity/messages/inbox/"
    del files[f"{inbox}analima_17/message_1.json"]
    # Threads name people as they show themselves, not by user name.
    files[f"{inbox}analima_17/message_1.json"] = thread(
        ["Ana ✨", "Harriet V"], [("Ana ✨", NOW - timedelta(days=1)), ("Harriet V", OLD)]
    )
    files[f"{inbox}bochen_18/message_1.json"] = thread(
        ["Bo Chen", "Harriet V"], [("Bo Chen", NOW - timedelta(days=2))]
    )

    run(store, IG, InstagramReader(), write_export(tmp_path / "ig", files, as_zip=True))

    assert exchanges(store) == [
        ("ana.lima", "message", "inbound"),  # by the thread's folder
        ("ana.lima", "message", "outbound"),
        ("bo_chen", "message", "inbound"),  # by the name, punctuation aside
    ]
