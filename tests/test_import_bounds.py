"""Hostile or odd export files: members outside the export, compression bombs, deep nesting,
huge values, and X archives without account.js; each refused early with a message that
names the file, or read right, and the store left as it was."""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import NOW, snapshot
from test_imports import FB, LI, facebook_files, linkedin_recent, run, write_export
from test_x_archive import CONFIG, CREATED, HANDLE, Archive, tweet
from typer.testing import CliRunner

from service.cli import app
from service.imports import jsonstream
from service.imports.export import ExportError, open_export
from service.imports.facebook import FacebookReader
from service.imports.linkedin import LinkedInReader
from service.imports.x_archive import import_archive
from service.store import Store
from service.store.models import Coverage


def zip_with(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, (2025, 5, 1, 0, 0, 0))
            info.compress_type = method
            archive.writestr(info, data)
    return path


def facebook_members() -> dict[str, bytes]:
    return {
        f"fb/{name}": (value if isinstance(value, str) else json.dumps(value)).encode()
        for name, value in facebook_files().items()
    }


# --- members outside the export --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../../evil/connections/friends/your_friends.json",
        "fb/../../evil/connections/friends/your_friends.json",
        "/etc/connections/friends/your_friends.json",
        "C:/evil/connections/friends/your_friends.json",
    ],
)
def test_a_member_outside_the_export_is_refused(store: Store, tmp_path: Path, name: str) -> None:
    members = facebook_members()
    members[name] = json.dumps({"friends_v2": [{"name": "Eve Evil", "timestamp": 1}]}).encode()
    path = zip_with(tmp_path / "fb.zip", members)

    with pytest.raises(ExportError, match="outside the export"):
        run(store, FB, FacebookReader(), path)
    assert snapshot(store)["connections"] == 0


# --- compression bombs and nesting -----------------------------------------------------------


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
def test_a_compression_bomb_in_a_facebook_export_is_refused_before_it_is_read(
    store: Store, tmp_path: Path, method: int
) -> None:
    members = facebook_members()
    # 24 MiB of white space inside a valid friends file: a few kilobytes once compressed.
    bomb = b'{"friends_v2": [' + b" " * (24 << 20) + b"]}"
    members["fb/connections/friends/your_friends.json"] = bomb
    path = zip_with(tmp_path / "bomb.zip", members, method)

    with pytest.raises(ExportError, match="compression bomb"):
        run(store, FB, FacebookReader(), path)
    assert snapshot(store)["connections"] == 0


def test_a_compression_bomb_in_a_linkedin_export_is_refused(store: Store, tmp_path: Path) -> None:
    files = linkedin_recent()
    members = {f"li/{k}": v.encode() for k, v in files.items()}
    members["li/messages.csv"] += b"c9,,Ana Lima,," + b"A" * (24 << 20) + b"\r\n"
    path = zip_with(tmp_path / "li.zip", members)

    with pytest.raises(ExportError, match=r"li/messages\.csv: .*compression bomb"):
        run(store, LI, LinkedInReader(), path)
    assert snapshot(store)["connections"] == 0


def test_a_compression_bomb_in_an_x_archive_is_refused(store: Store, tmp_path: Path) -> None:
    archive = Archive().posts([tweet("1", NOW - timedelta(days=3))])
    archive.files["data/like.js"] = "window.YTD.like.part0 = [" + " " * (24 << 20) + "]"
    path = archive.write_zip(tmp_path / "x.zip")

    with pytest.raises(ExportError, match=r"data/like\.js: .*compression bomb"):
        import_archive(store, CONFIG, path, NOW)
    assert snapshot(store)["connections"] == 0


def test_deep_nesting_is_refused_with_a_message_not_a_traceback(
    store: Store, tmp_path: Path
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    files = facebook_files()
    files["connections/friends/your_friends.json"] = '{"friends_v2": [' + deep + "]}"
    with pytest.raises(ExportError, match=r"your_friends\.json: JSON nested too deeply"):
        # A folder: in a zip, this compresses so well that it is refused as a bomb first.
        run(store, FB, FacebookReader(), write_export(tmp_path / "fb", files, as_zip=False))

    archive = Archive().posts([tweet("1", NOW - timedelta(days=3))])
    archive.files["data/tweets.js"] = "window.YTD.tweets.part0 = [" + deep + "]"
    with pytest.raises(ExportError, match=r"tweets\.js: JSON nested too deeply"):
        import_archive(store, CONFIG, archive.write_folder(tmp_path / "x"), NOW)
    archive.files["data/manifest.js"] = "window.__THAR_CONFIG = " + deep
    with pytest.raises(ExportError, match=r"manifest\.js: JSON nested too deeply"):
        import_archive(store, CONFIG, archive.write_folder(tmp_path / "x2"), NOW)
    assert snapshot(store)["connections"] == 0


# --- reading JSON element by element ---------------------------------------------------------


def documents() -> list[Any]:
    rng = random.Random(7)
    thread = {
        "participants": [{"name": "Jos\u00c3\u00a9"}, {"name": 'Ana \\ "quoted"'}],
        "messages": [
            {"sender_name": "Ana", "timestamp_ms": 1_600_000_000_000 + i, "content": "é" * i}
            for i in range(300)
        ],
        "title": "x",
        "is_still_participant": True,
        "magic_words": [],
    }
    return [
        thread,
        [
            {"title": "", "string_list_data": [{"value": f"u{i}", "timestamp": i}]}
            for i in range(50)
        ],
        {"friends_v2": [{"name": f"F {rng.random()}", "timestamp": i} for i in range(200)]},
        {},
        [],
        {"profile_v2": {"name": {"full_name": "Harriet Vane"}, "emails": {"emails": []}}},
        "plain",
        12.5,
    ]


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_walking_a_document_gives_what_json_loads_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(jsonstream, "CHUNK", chunk)  # element boundaries fall mid-buffer
    monkeypatch.setattr(jsonstream, "WHOLE", -1)  # every member read element by element
    for n, value in enumerate(documents()):
        member = tmp_path / f"doc{n}"
        member.mkdir()
        (member / "data.json").write_text(json.dumps(value, indent=n % 3 or None), "utf-8")
        with open_export(member) as export:
            assert jsonstream.document(export, "data.json") == value


def test_one_value_past_the_element_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonstream, "MAX_ELEMENT", 4096)
    monkeypatch.setattr(jsonstream, "WHOLE", -1)
    monkeypatch.setattr(jsonstream, "CHUNK", 1024)
    (tmp_path / "big.json").write_text(json.dumps({"friends_v2": [{"name": "a" * 10_000}]}))
    with open_export(tmp_path) as export, pytest.raises(ExportError, match="runs past 4,096"):
        list(jsonstream.walk(export, "big.json"))


@pytest.mark.parametrize("whole", [-1, 8 << 20], ids=["streamed", "whole"])
def test_deep_nesting_is_refused_read_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole: int
) -> None:
    monkeypatch.setattr(jsonstream, "WHOLE", whole)
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "friends.json").write_text('{"friends_v2": [' + deep + "]}")
    with open_export(tmp_path) as export, pytest.raises(ExportError, match="nested too deeply"):
        list(jsonstream.walk(export, "friends.json"))


@pytest.mark.parametrize("whole", [-1, 8 << 20], ids=["streamed", "whole"])
@pytest.mark.parametrize(
    "text",
    ['{"friends_v2": [{"name": "a"}, {"name": "b"', '{"friends_v2": [1 2]}', "", '[1] "more"'],
)
def test_damaged_json_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, whole: int
) -> None:
    monkeypatch.setattr(jsonstream, "WHOLE", whole)
    (tmp_path / "friends.json").write_text(text)
    with (
        open_export(tmp_path) as export,
        pytest.raises(ExportError, match=r"friends\.json: not valid"),
    ):
        list(jsonstream.walk(export, "friends.json"))


# --- X archives ------------------------------------------------------------------------------


def test_an_x_archive_without_account_js_is_read_with_the_owner_from_the_manifest(
    store: Store, tmp_path: Path
) -> None:
    oldest = NOW - timedelta(days=700)
    archive = Archive().posts(
        [tweet("1", NOW - timedelta(days=3), mentions=("42",)), tweet("2", oldest, reply_to="43")]
    )
    del archive.files["data/account.js"]

    report = import_archive(store, CONFIG, archive.write_zip(tmp_path / "x.zip"), NOW)

    assert report.exchanges_new == 2
    # No creation date without account.js: history is vouched for from the oldest post only.
    assert report.covered["posts"].start == oldest
    assert oldest > CREATED


def test_an_x_archive_without_account_or_manifest_is_refused(store: Store, tmp_path: Path) -> None:
    archive = Archive().posts([tweet("1", NOW - timedelta(days=3))])
    del archive.files["data/account.js"], archive.files["data/manifest.js"]
    with pytest.raises(ExportError, match=r"neither data/account\.js nor a data/manifest\.js"):
        import_archive(store, CONFIG, archive.write_zip(tmp_path / "x.zip"), NOW)
    with store.session() as session:
        assert session.query(Coverage).count() == 0


def x_config(home: Path) -> Path:
    config = home / "config.yaml"
    config.write_text(
        "version: 1\naccounts:\n"
        f"  - {{platform: x, handle: '{HANDLE}', x: {{client_id: abc}}}}\n"
        f"storage: {{url: 'sqlite:///{home}/db.sqlite3'}}\n"
    )
    return config


def test_a_refused_x_import_writes_no_account(home: Path, tmp_path: Path) -> None:
    config = x_config(home)
    other = zip_with(tmp_path / "facebook.zip", facebook_members())

    result = CliRunner().invoke(
        app, ["--config", str(config), "import", "x-archive", str(other), "--no-lookup"]
    )

    assert getattr(result.exception, "exit_code", None) == 65
    with sqlite3.connect(home / "db.sqlite3") as conn:
        tables = {t for (t,) in conn.execute("select name from sqlite_master")}
        assert "accounts" not in tables or conn.execute(
            "select count(*) from accounts"
        ).fetchone() == (0,)


def test_x_archive_with_lookup_on_an_install_without_the_x_client_names_the_extra(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.platforms.tokens import save_token

    config = x_config(home)
    save_token(
        home / "state" / "lopper",
        f"x:{HANDLE}",
        {"access_token": "t", "refresh_token": "r", "client_id": "abc"},
    )
    # A plain install: neither requests nor tweepy can be imported.
    for name in [m for m in sys.modules if m.split(".")[0] in ("tweepy", "requests")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "service.platforms.x", raising=False)
    monkeypatch.setitem(sys.modules, "requests", None)
    monkeypatch.setitem(sys.modules, "tweepy", None)
    archive = Archive().posts([tweet("1", NOW - timedelta(days=3), mentions=("42",))])
    archive.likes(["77"])

    result = CliRunner().invoke(
        app,
        [
            "--config",
            str(config),
            "import",
            "x-archive",
            str(archive.write_zip(tmp_path / "a.zip")),
        ],
    )

    assert result.exit_code == 0, (result.output, result.exception)
    said = " ".join(result.output.split())
    assert "likes are not attributed" in said and "pip install 'lopper[x]'" in said
