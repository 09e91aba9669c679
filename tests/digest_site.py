"""A small installation for the digest and review-page tests: a synced sandbox account,
a configuration on disk, and the App the daemon and the commands would open."""

from __future__ import annotations

import re
import shutil
import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from helpers import NOW, Clock

from service.app import App
from service.store.models import Suggestion

LINK = re.compile(r"https?://[^\s\"'<>]+")


def database(backend: str, schemas: Any) -> str | None:
    """None on SQLite (a file in the site's folder), else a fresh PostgreSQL schema."""
    if backend == "sqlite":
        return None
    assert schemas is not None
    return str(schemas.fresh(0))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Site:
    root: Path
    config: Path
    clock: Clock
    opened: list[App] = field(default_factory=list)

    def app(self) -> App:
        application = App.load(self.config, clock=self.clock)
        self.opened.append(application)
        return application

    def close(self) -> None:
        for application in self.opened:
            application.close()


def make_site(
    root: Path,
    *,
    delivery: str = "files",
    smtp_port: int = 25,
    smtp: str = "    security: none\n",
    web_port: int | None = None,
    size: int = 200,
    extra: str = "",
    web: str = "",
    accounts: str | None = None,
    sync: bool = True,
    database_url: str | None = None,
    digest: str = "",
) -> Site:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    accounts = accounts or (
        f'  - platform: sandbox\n    handle: "@you"\n    sandbox: {{seed: 7, size: {size}}}\n'
    )
    config.write_text(
        f"""version: 1
accounts:
{accounts}digest:
  recipients: ["Harry <harry@example.org>"]
  timezone: Europe/Paris
  delivery: {delivery}
  folder: {root / "outbox"}
{digest}  smtp:
    host: 127.0.0.1
    port: {smtp_port}
{smtp}    sender: "lopper <lopper@example.org>"
web:
  port: {web_port or free_port()}
{web}storage:
  url: "{database_url or f"sqlite:///{root / 'lopper.sqlite3'}"}"
{extra}""",
        encoding="utf-8",
    )
    site = Site(root, config, Clock(NOW))
    if sync:
        application = site.app()
        for account in application.accounts():
            application.sync(account)
            application.evaluate(account)
    return site


def clone_site(template: Site, root: Path) -> Site:
    """A copy of a synced SQLite site: the same store and configuration, its own folder."""
    root.mkdir(parents=True)
    shutil.copyfile(template.root / "lopper.sqlite3", root / "lopper.sqlite3")
    config = root / "config.yaml"
    text = template.config.read_text(encoding="utf-8").replace(str(template.root), str(root))
    config.write_text(re.sub(r"\n  port: \d+\n", f"\n  port: {free_port()}\n", text))
    return Site(root, config, Clock(NOW))


def parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None, "both parts are present"
    return str(text.get_content()), str(html.get_content())


def review_links(text: str) -> list[str]:
    return [link for link in LINK.findall(text) if "/review/" in link]


def pending(application: App) -> list[Suggestion]:
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from service.model import SuggestionState

    with application.store.session() as session:
        return list(
            session.scalars(
                select(Suggestion)
                .where(Suggestion.state == SuggestionState.PENDING)
                .options(selectinload(Suggestion.connection))
                .order_by(Suggestion.id)
            )
        )


def decisions(application: App) -> dict[int, tuple[str, Any]]:
    """Every suggestion's state and the channel that decided it."""
    from sqlalchemy import select

    with application.store.session() as session:
        return {
            s.id: (s.state.value, s.decided_via.value if s.decided_via else None)
            for s in session.scalars(select(Suggestion))
        }
