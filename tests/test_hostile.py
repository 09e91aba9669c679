"""Hostile text from platforms on the command line: names, handles and links written by others.

A display name is whatever its owner typed. On a terminal it is printed as it reads: Rich
markup in it is not interpreted, control characters (escape sequences, OSC-8 links, bidi
overrides) never reach the terminal. In a CSV export a name that a spreadsheet would run as
a formula is neutralised (OWASP's CSV injection rule).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest
from test_cli import lopper, pending, run_module

from service.config import load_config
from service.errors import ConfigError
from service.text import href, plain, shown, web_link

ESC = "\x1b"
HOSTILE_NAME = (
    f"Ana [/] [link=https://evil.example]x[/link] {ESC}[2J{ESC}]8;;https://evil.example{ESC}\\y"
)
HOSTILE_HANDLE = "@ana[/]"


def _database(home: Path) -> Path:
    return next((home / "state").rglob("demo.sqlite3"))


def _plant(home: Path, name: str, handle: str, where: str = "1 = 1") -> None:
    """Every connection gets the name, and a handle made unique by its id."""
    with sqlite3.connect(_database(home)) as db:
        db.execute(
            f"UPDATE connections SET display_name = ?, handle = ? || id WHERE {where}",
            (name, handle),
        )


@pytest.fixture
def hostile(home: Path) -> Path:
    lopper("demo", "--size", "120", "--no-run")
    _plant(home, HOSTILE_NAME, HOSTILE_HANDLE)
    return home


def _clean(output: str) -> None:
    assert ESC not in output and "\x07" not in output, repr(output)


def test_review_prints_a_name_with_markup_as_text(hostile: Path) -> None:
    output = lopper("review", input="kkq")
    _clean(output)
    assert "Ana [/] [link=https://evil.example]x[/link]" in output
    assert "@ana[/]" in output
    assert "2 kept" in output


@pytest.mark.parametrize(
    "args",
    [
        ["suggestions"],
        ["suggestions", "--all"],
        ["plan", "--keep", "50%"],
        ["status"],
    ],
)
def test_listings_print_handles_with_markup_as_text(hostile: Path, args: list[str]) -> None:
    output = lopper(*args)
    _clean(output)
    if args[0] != "status":
        assert "@ana[/]" in output


def test_a_markup_handle_in_the_manual_list_is_text(hostile: Path) -> None:
    first = pending()[0]["id"]
    with sqlite3.connect(_database(hostile)) as db:
        db.execute("UPDATE suggestions SET state = 'manual' WHERE id = ?", (first,))
    output = lopper("suggestions", "--manual")
    _clean(output)
    assert "@ana[/]" in output


def test_the_json_output_keeps_the_name_as_it_is(hostile: Path) -> None:
    """Scripts get the data itself; only what a terminal shows is cleaned."""
    assert pending()[0]["name"] == HOSTILE_NAME


FORMULAS = ['=HYPERLINK("https://evil.example","x")', "+1+1", "-2+3", "@SUM(1+1)", "\tx", "\rx"]


@pytest.mark.parametrize("formula", FORMULAS)
def test_a_csv_export_neutralises_formulas(hostile: Path, formula: str) -> None:
    with sqlite3.connect(_database(hostile)) as db:
        db.execute("UPDATE connections SET display_name = ?, handle = ? || id", (formula, formula))
    ids = [str(s["id"]) for s in pending()[:2]]
    lopper("confirm", *ids)
    lopper("execute")
    rows = list(csv.DictReader(io.StringIO(lopper("export", "removed", "--csv"))))
    assert len(rows) == 2
    for row in rows:
        for value in row.values():
            assert not value or value[0] not in "=+-@\t\r", row
        assert row["name"] == "'" + formula
        assert row["handle"].startswith("'" + formula)


def test_a_csv_export_leaves_plain_handles_alone(home: Path) -> None:
    """A handle such as @ana is no formula: it stays as the platform spells it."""
    lopper("demo", "--size", "120", "--no-run")
    first = pending()[:1]
    lopper("confirm", str(first[0]["id"]))
    lopper("execute")
    rows = list(csv.DictReader(io.StringIO(lopper("export", "removed", "--csv"))))
    assert [r["handle"] for r in rows] == [first[0]["handle"]]
    assert first[0]["handle"].startswith("@")


# --- the helpers themselves -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "printed"),
    [
        ("Ana [/]", "Ana \\[/]"),
        ("[bold]x[/bold]", "\\[bold]x\\[/bold]"),
        (f"a{ESC}[2Jb", "a[2Jb"),
        ("a\u202eb", "ab"),
        ("line\nbreak\ttab", "line break tab"),
        ("back\\", "back\\\\"),
        (None, ""),
    ],
)
def test_shown_escapes_markup_and_drops_controls(raw: str | None, printed: str) -> None:
    assert shown(raw) == printed
    assert ESC not in plain(raw)


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://example.social/@ana", True),
        ("HTTP://example.social/@ana", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("data:text/html;base64,PHNjcmlwdD4=", False),
        ("vbscript:msgbox", False),
        ("https://x\njavascript:alert(1)", False),
        ("//evil.example/x", False),
        ("", False),
        (None, False),
    ],
)
def test_only_http_links_are_kept(url: str | None, kept: bool) -> None:
    assert web_link(url) == (url if kept else None)
    assert href(url) == (url if kept else "#")


# --- a malformed storage.url --------------------------------------------------------------

BAD_URLS = [
    "postgresql+psycopg://lopper@127.0.0.1:notaport/lopper",
    "postgresql+psycopg://lopper@127.0.0.1:1/lopper?unknown_option=1",
    "postgresql+psycopg://lopper@127.0.0.1:99999/lopper",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_database_url_exits_78_without_a_traceback(home: Path, url: str) -> None:
    """78 is the exit code systemd does not restart (RestartPreventExitStatus=78)."""
    config = home / "c.yaml"
    config.write_text(f"version: 1\nstorage: {{url: '{url}'}}\n")
    result = run_module(home, "--config", str(config), "status")
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    assert "storage.url" in result.stderr or "database" in result.stderr


def test_config_check_names_the_line_of_a_url_with_a_bad_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(text=f"version: 1\nstorage:\n  url: '{BAD_URLS[0]}'\n")
    assert [(p.key, p.line) for p in caught.value.problems] == [("storage.url", 3)]
    assert "port" in str(caught.value)
