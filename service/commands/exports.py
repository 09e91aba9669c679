"""Imports of the exports of networks with little or no API: Facebook, LinkedIn, Instagram.

``lopper import facebook|linkedin|instagram PATH [--account NAME] [--me NAME]`` reads a zip
or its unpacked folder into the store, with a progress bar over the bytes it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from service.cli import _app, err, import_app, out
from service.errors import LopperError
from service.text import shown

if TYPE_CHECKING:
    from service.config import Account as AccountConfig
    from service.imports.common import ImportReport, Reader

PathArgument = typer.Argument(
    ..., help="The export: the zip file as downloaded, or the folder it was unpacked into."
)
AccountOption = typer.Option(
    None,
    "--account",
    "-a",
    help="Which account, if the configuration has several of this platform.",
)

MeOption = typer.Option(
    None,
    "--me",
    help="Your name as your messages in the export write it (or, on LinkedIn, your profile "
    "link): settles which participant is you when the export cannot tell.",
)


def _account(accounts: list[AccountConfig], platform: str, wanted: str | None) -> AccountConfig:
    matches = [a for a in accounts if a.platform == platform and wanted in (None, a.key, a.handle)]
    if not matches:
        raise LopperError(
            f"no {platform} account{' ' + wanted if wanted else ''} in the configuration; add "
            f"one under accounts: (platform: {platform}, handle: your name there)"
        )
    if len(matches) > 1:
        raise LopperError(f"several {platform} accounts: choose one with --account")
    return matches[0]


@contextmanager
def _bar(label: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task(label, total=None)

    def start(total: int) -> None:
        progress.update(task, total=total)

    def tick(done: int) -> None:
        progress.advance(task, done)

    with progress:
        yield start, tick


def _print(report: ImportReport) -> None:
    out.print(
        f"[green]{report.account}[/green]: {report.connections_seen:,} connections "
        f"({report.connections_new:,} new, {report.connections_vanished:,} no longer there), "
        f"{report.exchanges_read:,} exchanges read ({report.exchanges_new:,} new)"
    )
    if report.coverage:
        out.print(f"  history: {report.coverage.start:%Y-%m-%d} → {report.coverage.end:%Y-%m-%d}")
    if report.shared_names:
        out.print(
            f"  {report.shared_names} connections share their name with another: kept apart, "
            "and an exchange that names only the name counts for each of them"
        )
    if report.unmatched:
        out.print(f"  {report.unmatched:,} exchanges with people who are not connections")
    if report.manual_closed:
        out.print(f"  {report.manual_closed} removal(s) you did by hand are now recorded as done")
    if report.asked_again:
        out.print(
            f"  [yellow]{report.asked_again} connection(s) you removed by hand are still there: "
            "see `lopper suggestions`[/yellow]"
        )
    if report.exchanges_replaced:
        out.print(
            f"  {report.exchanges_replaced:,} exchanges an earlier import read differently were "
            "replaced by this export's"
        )
    if report.refused:
        err.print(f"  [red]{shown(report.refused)}[/red]")
    if report.brake:
        err.print(f"  [yellow]{shown(report.brake)}[/yellow]")
    for note in report.notes:
        err.print(f"  [yellow]{shown(note)}[/yellow]")
    out.print("Next: `lopper evaluate` to judge every connection with this history.")


def _import(platform: str, reader: Reader, path: Path, account: str | None, me: str | None) -> None:
    from service.imports.common import run_import

    with _app() as application:
        chosen = _account(application.settings.accounts, platform, account)
        with _bar(f"{platform} export") as (start, tick):
            report = run_import(
                application.store,
                chosen,
                reader,
                path,
                application.settings.rules,
                application.clock(),
                me=me,
                start=start,
                tick=tick,
            )
        _print(report)


@import_app.command("facebook")
def import_facebook(
    path: Path = PathArgument, account: str | None = AccountOption, me: str | None = MeOption
) -> None:
    """Facebook's "Download Your Information" (JSON): friends, follows, messages, your
    comments and reactions."""
    from service.imports.facebook import FacebookReader

    _import("facebook", FacebookReader(), path, account, me)


@import_app.command("linkedin")
def import_linkedin(
    path: Path = PathArgument, account: str | None = AccountOption, me: str | None = MeOption
) -> None:
    """LinkedIn's data export: Connections.csv and messages.csv."""
    from service.imports.linkedin import LinkedInReader

    _import("linkedin", LinkedInReader(), path, account, me)


@import_app.command("instagram")
def import_instagram(
    path: Path = PathArgument, account: str | None = AccountOption, me: str | None = MeOption
) -> None:
    """Instagram's data export (JSON): followers, following and messages."""
    from service.imports.instagram import InstagramReader

    _import("instagram", InstagramReader(), path, account, me)
