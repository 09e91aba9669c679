"""Commands for X: ``lopper auth x`` and ``lopper import x-archive PATH``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import typer

from service.cli import _account_on, _app, auth_app, err, import_app, out
from service.text import shown

AccountOption = typer.Option(None, "--account", "-a", help="Which X account, if there are several.")


@auth_app.command("x")
def auth_x(account: str | None = AccountOption) -> None:
    """Let lopper read your X account and unfollow/follow for you (OAuth 2.0 with PKCE)."""
    from service import config as cfg
    from service.platforms import require_sdk

    require_sdk("x")
    from service.platforms import x

    with _app() as application:
        chosen = _account_on(application, "x", account)

        def ask(link: str) -> str:
            out.print(
                "Open this page, approve lopper, then paste the address your browser was sent "
                f"back to (it starts with {(chosen.x or cfg.XOptions()).redirect_uri}):\n{link}",
                highlight=False,
            )
            return str(typer.prompt("address")).strip()

        result = x.authorize(chosen, cfg.state_dir(), ask, clock=application.clock)
        out.print(
            f"authorized as {result.handle}; tokens kept in {result.token_file} and renewed "
            "from then on",
            highlight=False,
        )


@import_app.command("x-archive")
def import_x_archive(
    path: Path = typer.Argument(
        ..., help="The X archive: the zip as downloaded, or the folder it was unpacked into."
    ),
    account: str | None = AccountOption,
    lookup: bool = typer.Option(
        True,
        "--lookup/--no-lookup",
        help="Attribute likes through the X API (one billed post read each), when configured.",
    ),
) -> None:
    """Read your X archive: follows, your posts, messages and likes, with their dates."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from service.app import AccountSkipped
    from service.costs import OverBudget, dollars, meter_of, spend_allowed
    from service.imports.x_archive import check_archive, import_archive, record_lookup_cost
    from service.sync import ensure_account

    with _app() as application:
        chosen = _account_on(application, "x", account)
        now = application.clock()
        adapter = None
        if lookup:
            try:
                adapter = application.adapter(chosen)
            except AccountSkipped as exc:
                err.print(f"[yellow]{shown(exc)}: likes are not attributed[/yellow]")
            except ImportError as exc:
                # A plain install has no X client library: the archive reads without it.
                err.print(
                    f"[yellow]likes are not attributed: looking them up needs the X API client "
                    f"({exc.name or exc}), which lopper's x extra installs "
                    "(pip install 'lopper\\[x]'); or import with --no-lookup[/yellow]",
                    highlight=False,
                )
        meter = meter_of(adapter)
        check_archive(chosen, path)  # a refused archive writes nothing, not even the account
        with application.store.session() as session:
            account_id = ensure_account(session, chosen, now).id

        def authors(post_ids: Sequence[str]) -> Mapping[str, str]:
            assert adapter is not None and meter is not None
            refusal = spend_allowed(
                application.store,
                account_id,
                meter,
                len(post_ids) * meter.price("post_read"),
                now,
            )
            if refusal:
                raise OverBudget(refusal)
            found: dict[str, str] = adapter.post_authors(post_ids)  # type: ignore[attr-defined]
            return found

        progress = Progress(
            TextColumn(f"importing {chosen.key}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        )
        task = progress.add_task("archive", total=None)
        usage = None
        try:
            with progress:
                report = import_archive(
                    application.store,
                    chosen,
                    path,
                    now,
                    lookup=authors if adapter is not None else None,
                    start=lambda total: progress.update(task, total=total),
                    tick=lambda done: progress.advance(task, done),
                )
        finally:
            if meter is not None:
                usage = meter.drain()
                record_lookup_cost(application.store, chosen, usage, now)
        out.print(
            f"[green]{chosen.key}[/green]: archive of "
            f"{report.generated:%Y-%m-%d} — {report.connections_new:,} new connections, "
            f"{report.exchanges_read:,} exchanges read ({report.exchanges_new:,} new), "
            f"{report.likes_attributed:,} of {report.likes:,} likes attributed"
            + (f", {dollars(usage.micros)} of X reads" if usage else ""),
            highlight=False,
        )
        for stream, span in sorted(report.covered.items()):
            out.print(f"  {stream}: history from {span.start:%Y-%m-%d} to {span.end:%Y-%m-%d}")
        if report.likes_note:
            err.print(f"[yellow]{shown(report.likes_note)}[/yellow]", highlight=False)
