"""The command line on an 80-column terminal: every table fits, and ids stay whole."""

from __future__ import annotations

import io
import itertools
import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from service import cli
from service.terminal import Column, fitted_table

runner = CliRunner()


def lopper(*args: str) -> str:
    result = runner.invoke(cli.app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


@pytest.fixture
def eighty(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's console is 80 columns wide, as a default terminal."""
    monkeypatch.setattr(cli.out, "_width", 80)


def test_a_kept_column_stays_whole_and_the_least_needed_go_first() -> None:
    console = Console(width=40, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    columns = [
        Column("id", justify="right", keep=True),
        Column("who", least=8),
        Column("since", drop=2),
        Column("value", drop=1),
    ]
    rows = [["12345", "@a-rather-long-handle", "2024-01-01", "0.25"]]
    table, dropped = fitted_table(console, columns, rows)
    console.print(table)
    text = console.export_text()
    assert dropped == ["since", "value"]
    assert "12345" in text and "@a-rather-long-handle" in text
    assert max(len(line) for line in text.splitlines()) <= 40


def test_suggestions_at_80_columns_show_every_id_whole(home, eighty) -> None:
    lopper("demo", "--size", "600", "--no-run")
    lopper("plan", "--keep", "10%", "--queue", "--show", "0")  # ids into the hundreds
    listed = json.loads(lopper("suggestions", "--all", "--json"))
    assert max(s["id"] for s in listed) >= 100
    output = lopper("suggestions", "--all")
    lines = output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in output
    for suggestion in listed:
        row = next(line for line in lines if re.match(rf"^\s*{suggestion['id']}\s", line))
        assert suggestion["handle"] in row
        assert suggestion["state"] in row
    assert "left out at this width; `--json` has everything" in output


def test_plan_and_the_demo_fit_80_columns_and_the_plan_says_it_is_cut(home, eighty) -> None:
    demo = lopper("demo", "--size", "600", "--no-run")
    assert max(len(line) for line in demo.splitlines() if "│" in line or "┃" in line) <= 80
    output = lopper("plan", "--keep", "50%", "--show", "5")
    assert max(len(line) for line in output.splitlines()) <= 80
    ranks = [
        m.group(1) for m in (re.match(r"^│\s*(\d+)\s*│", line) for line in output.splitlines()) if m
    ]
    assert ranks == ["1", "2", "3", "4", "5"]
    total = re.search(r"means ([\d,]+) go", output)
    assert total is not None
    assert f"the first 5 of {total.group(1)}; `--show N` lists more" in output


def test_status_fits_80_columns(home, eighty) -> None:
    lopper("demo", "--size", "200", "--no-run")
    output = lopper("status")
    assert max(len(line) for line in output.splitlines() if "│" in line) <= 80


def _commands(command, path):  # type: ignore[no-untyped-def]
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, [*path, name])


def test_every_help_text_shows_whole_at_80_columns() -> None:
    """Brackets ([r]emove) are text, not markup; no flag shows a <bool> placeholder."""
    from typer.main import get_command

    for path, command in _commands(get_command(cli.app), []):
        result = runner.invoke(cli.app, [*path, "--help"], terminal_width=80, env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
        assert max(len(line) for line in result.output.splitlines()) <= 80, path
        shown = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in texts:
            for word in text.replace("`", "").split():
                assert word in shown, (path, word)
        # The description is wrapped to the width, not at the line breaks of the source.
        description = result.output.split("╭")[0].splitlines()[3:]
        for line, after in itertools.pairwise(description):
            if line.strip() and after.strip():
                assert len(line.rstrip()) > 80 - 20, (path, line)


def test_a_sync_on_a_terminal_shows_the_listings_total_once_it_is_known(
    home, monkeypatch: pytest.MonkeyPatch
) -> None:
    lopper("demo", "--size", "300", "--no-run")
    connections = json.loads(lopper("status", "--json"))["accounts"][0]["connections"]
    terminal = Console(
        record=True, force_terminal=True, width=120, file=io.StringIO(), color_system=None
    )
    monkeypatch.setattr(cli, "err", terminal)
    lopper("sync", "--full")  # lists every connection again: as many as the last listing
    drawn = terminal.export_text()
    assert f"of {connections:,}" in drawn
    assert "sandbox:@you connections" in drawn


def test_evaluation_on_a_terminal_says_it_is_at_work(home, monkeypatch: pytest.MonkeyPatch) -> None:
    lopper("demo", "--size", "100", "--no-run")
    terminal = Console(
        record=True, force_terminal=True, width=120, file=io.StringIO(), color_system=None
    )
    monkeypatch.setattr(cli, "err", terminal)
    lopper("evaluate")
    assert "evaluating sandbox:@you" in terminal.export_text()


def test_log_lines_during_a_sync_print_above_the_progress_not_through_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    from service.logs import configure_logging

    terminal = Console(
        record=True, force_terminal=True, width=100, file=io.StringIO(), color_system=None
    )
    monkeypatch.setattr(cli, "err", terminal)
    configure_logging(json=False, level="WARNING")  # as every command does
    with cli._sync_progress("sandbox:@you") as tick:
        tick("connections", 10)
        logging.getLogger("lopper.test").warning("a line logged mid-sync")
    assert "a line logged mid-sync" in terminal.export_text()


def test_a_handle_with_markup_shows_as_written_at_80_columns(home, eighty) -> None:
    import sqlite3

    lopper("demo", "--size", "200", "--no-run")
    database = home / "state" / "lopper" / "demo.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute(
            "UPDATE connections SET handle = '@ana[/]' WHERE id IN (SELECT connection_id FROM suggestions)"
        )
    db.close()
    for args in (["suggestions"], ["plan", "--keep", "50%"]):
        output = lopper(*args)
        assert "@ana[/]" in output, args
