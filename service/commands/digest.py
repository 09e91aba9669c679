"""Commands of the digest and the review page: ``lopper digest``, ``lopper web``."""

from __future__ import annotations

from pathlib import Path

import typer

from service.cli import _app, err, out
from service.cli import app as cli_app
from service.text import shown


@cli_app.command("digest")
def digest(
    send: bool = typer.Option(False, "--send", help="Compose the digest now and deliver it."),
    preview: bool = typer.Option(
        False, "--preview", help="Write the digest as .eml and .html files; send nothing."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="With --preview: write the files here."
    ),
) -> None:
    """Send the digest email now, or preview it (the daemon sends it on its schedule)."""
    if send == preview:
        raise typer.BadParameter("choose one of --send or --preview")
    from service.digest import deliver_outbox, outbox_summary, preview_digest, queue_digest

    with _app() as application:
        if preview:
            written = preview_digest(application, output)
            out.print(f"subject: {written.subject}", highlight=False, soft_wrap=True)
            out.print(f"message: {written.eml}", highlight=False, soft_wrap=True)
            out.print(f"html:    {written.html}", highlight=False, soft_wrap=True)
            if written.review_url:
                out.print(
                    "review:  the digest's link opens the review page while `lopper web` "
                    f"(or `lopper run`) serves it at {application.settings.web.url}",
                    highlight=False,
                    soft_wrap=True,
                )
            return
        now = application.clock()
        queued = queue_digest(application, now)
        delivered = deliver_outbox(application, now)
        where = (
            f"{application.settings.digest.smtp.host}:{application.settings.digest.smtp.port}"
            if application.settings.digest.delivery == "smtp"
            else str(application.settings.digest.folder or "the state directory's outbox/")
        )
        out.print(
            f"{'queued a digest; ' if queued else ''}{delivered} digest(s) delivered ({where})",
            highlight=False,
        )
        summary = outbox_summary(application)
        if summary.waiting:
            err.print(
                f"[yellow]{summary.waiting} digest(s) still waiting in the outbox"
                + (f": {shown(summary.last_error)}" if summary.last_error else "")
                + "; retried with backoff[/yellow]",
                highlight=False,
            )
            raise typer.Exit(1)


@cli_app.command("web")
def web() -> None:
    """Serve the review page the digest links to, in the foreground (Ctrl-C stops it)."""
    from service.web import serve

    with _app() as application:
        settings = application.settings.web
        out.print(
            f"review page on http://{settings.host}:{settings.port} "
            f"(links in digests point at {settings.url}); Ctrl-C stops it",
            highlight=False,
            soft_wrap=True,
        )
        try:
            serve(application)  # returns on Ctrl-C
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            err.print(
                f"[red]cannot serve on {settings.host}:{settings.port}: {exc.strerror or exc}[/red] "
                "(set web.host / web.port in the configuration)"
            )
            raise typer.Exit(69) from None
        out.print("stopped")
