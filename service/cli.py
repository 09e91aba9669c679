"""The ``lopper`` command: parses, calls the library, prints. Nothing is decided here."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from service.errors import (
    EX_CONFIG,
    EX_INTERRUPTED,
    EX_UNAVAILABLE,
    ConfigError,
    LopperError,
    MissingExtra,
    NotFound,
)
from service.files import open_private, readable_by_others
from service.model import Channel, ConnectionState, RemovalState, Span, SuggestionState, Unseen
from service.text import plain, shown, spreadsheet_cell

if TYPE_CHECKING:
    from service import config as cfg
    from service.app import App
    from service.config import Account as AccountConfig
    from service.store.models import Suggestion

# What a command needs is imported when it runs: `lopper --help` and the light commands do
# not load the store's models, the digest's templates, the daemon or a platform's SDK
# (tests/test_startup.py holds the line; bench/startup.py measures it).

S = SuggestionState
out = Console()
err = Console(stderr=True, soft_wrap=True)  # whole lines: messages stay greppable

app = typer.Typer(
    name="lopper",
    help="Keep your social network worth having: find the connections you never exchange "
    "with, and remove them once you confirm.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check the configuration file.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database.", no_args_is_help=True)
export_app = typer.Typer(help="Export what lopper recorded.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
auth_app = typer.Typer(
    help="Sign in to a platform; its token is kept in a 0600 file in the state directory, "
    "never in the database or the configuration.",
    no_args_is_help=True,
)
import_app = typer.Typer(
    help="Read a platform's data export into the store (a zip or its unpacked folder).",
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")
app.add_typer(auth_app, name="auth")
app.add_typer(import_app, name="import")

_state: dict[str, Any] = {"config": None}


def _flags_without_placeholder() -> None:
    """A flag takes no value, so its help shows none (Typer would print ``<bool>``)."""
    from typer.core import TyperOption

    typed = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else typed(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_placeholder()

ConfigOption = typer.Option(
    None,
    "--config",
    "-c",
    help="Configuration file. Default: config.yaml in $CONFIGURATION_DIRECTORY (systemd), "
    "else in ~/.config/lopper/ (the XDG config directory).",
    envvar="LOPPER_CONFIG",
)


@app.callback()
def _main(
    config: Path | None = ConfigOption,
    json_logs: bool = typer.Option(
        None, "--json-logs/--console-logs", help="Log as JSON lines (default when not a terminal)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail."),
) -> None:
    from service.logs import configure_logging

    _state["config"] = config
    _state["json_logs"], _state["verbose"] = json_logs, verbose  # `lopper run` logs at INFO
    configure_logging(json=json_logs, level="DEBUG" if verbose else "WARNING")


def _app() -> AbstractContextManager[App]:
    from service.app import opened

    return opened(_state["config"])


def _zone(application: App) -> Any:
    return application.settings.digest.zone


def _when(value: datetime | str | None, zone: Any, with_time: bool = False) -> str:
    """A stored (UTC) time in the person's time zone."""
    if value is None:
        return "never"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


def _parse_percent(text: str) -> float | int:
    text = text.strip()
    if text.endswith("%"):
        share = float(text[:-1]) / 100
        if not 0 < share <= 1:
            raise typer.BadParameter("a share must be between 0% and 100%")
        return share
    if text.isdigit():
        return int(text)
    raise typer.BadParameter("expected a share such as 20% or a number of people such as 500")


def _counted() -> Any:
    """A progress column: "1,200 of 3,000" where the total is known, "1,200 items" where not."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class Counted(ProgressColumn):
        def render(self, task: Task) -> Text:
            done = int(task.completed)
            if task.total is None:
                return Text(f"{done:,} items")
            return Text(f"{done:,} of {int(task.total):,}")

    return Counted()


@contextmanager
def _sync_progress(
    label: str, expected: dict[str, int] | None = None
) -> Iterator[Callable[[str, int], None]]:
    """A progress line per stream while a sync pages through it (on a terminal only).

    Where the size of a stream is known beforehand (a listing of connections: as many as the
    last one held), the line has a bar, a percentage and the time left.
    """
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=20),
        _counted(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    tasks: dict[str, Any] = {}
    expected = expected or {}

    def tick(stream: str, count: int) -> None:
        if stream not in tasks:
            tasks[stream] = progress.add_task(
                escape(f"{label} {stream}"), total=expected.get(stream) or None
            )
        task = progress.tasks[tasks[stream]]
        if task.total is not None and task.completed + count > task.total:
            progress.update(tasks[stream], total=task.completed + count)  # the network grew
        progress.advance(tasks[stream], count)

    with progress:
        yield tick


@contextmanager
def _working(what: str) -> Iterator[None]:
    """A spinner with the elapsed time while a long step runs (on a terminal only)."""
    if not err.is_terminal:
        yield
        return
    with err.status(escape(f"{what} …")):
        yield


def _expected_sizes(application: App, account: AccountConfig) -> dict[str, int]:
    """What a sync of the account will likely page through: its last listing's size."""
    from sqlalchemy import func, select

    from service.model import CONNECTIONS
    from service.store.models import Account, Connection

    with application.store.session() as session:
        listed = session.scalar(
            select(func.count())
            .select_from(Connection)
            .join(Account, Connection.account_id == Account.id)
            .where(Account.key == account.key, Connection.state == ConnectionState.ACTIVE)
        )
    return {CONNECTIONS: int(listed)} if listed else {}


# --- demo ------------------------------------------------------------------------------

DEMO_MARK = "# lopper demo configuration"


def _demo_config(size: int, seed: int, database: Path, outbox: Path, port: int) -> str:
    return f"""{DEMO_MARK} (written by `lopper demo`; safe to delete)
version: 1
accounts:
  - platform: sandbox          # a simulated network: nobody in it is real
    handle: "@you"
    sandbox:
      seed: {seed}
      size: {size}
rules:
  window: 180d
  grace: 30d
  min_exchanges: 1
  protected_lists: ["Close friends"]
  per_digest_cap: 50
  daily_removal_cap: 25
schedule:                      # fast, for the demo: `lopper run` shows its work at once
  sync_every: 1m
  sync_jitter: 10s
  execute_every: 20s
  digest: "*/5 * * * *"
digest:
  delivery: files
  folder: {outbox}
storage:
  url: sqlite:///{database}
web:
  port: {port}
"""


TAKEN_MARK = "was taken when the demo ran"


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _previous_demo_port(config: Path) -> int | None:
    """The review page's port in an earlier demo configuration (the person may have set it)."""
    import yaml

    try:
        text = config.read_text(encoding="utf-8")
        port = (yaml.safe_load(text) or {})["web"]["port"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    if TAKEN_MARK in text:
        return None  # the demo chose it, not the person
    return port if isinstance(port, int) and 0 < port < 65536 else None


def _keep_aside(state: Path, database: Path, config: Path) -> Path | None:
    """Move an earlier demo's database, simulated network and configuration into a folder."""
    import shutil

    earlier = [database, state / "sandbox"]
    if not any(path.exists() for path in earlier):
        return None
    stamp = datetime.fromtimestamp(database.stat().st_mtime) if database.exists() else None
    folder = state / f"demo-{(stamp or datetime.now()):%Y%m%d-%H%M%S}"
    n = 1
    while folder.exists():
        n += 1
        folder = folder.with_name(f"{folder.name.split('.')[0]}.{n}")
    folder.mkdir(parents=True)
    for path in [*earlier, Path(f"{database}-wal"), Path(f"{database}-shm")]:
        if path.exists():
            shutil.move(str(path), folder / path.name)
    if config.exists():
        shutil.copy2(config, folder / config.name)
    return folder


@app.command()
def demo(
    size: int = typer.Option(
        3000, min=10, max=200_000, help="Connections in the simulated network."
    ),
    seed: int = typer.Option(7, help="Seed of the simulation (same seed, same network)."),
    run: bool = typer.Option(
        None,
        "--run/--no-run",
        help="End by running the service on the simulated account until Ctrl-C (default: on a "
        "terminal).",
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        min=1,
        max=65535,
        help="The review page's port (default: the earlier demo's, else 8470; another free "
        "one when it is taken).",
    ),
) -> None:
    """Try lopper on a simulated network: set it up, sync, evaluate, and say what to try next."""
    from rich.panel import Panel

    from service import config as cfg
    from service.app import App
    from service.logs import configure_logging

    path = cfg.find_config(_state["config"])
    if path.exists() and not path.read_text(encoding="utf-8").startswith(DEMO_MARK):
        err.print(
            f"[red]A configuration already exists at {path}[/red] and it is not a demo; "
            "the demo will not touch it. Run it with --config pointing at another file."
        )
        raise typer.Exit(1)
    state = cfg.state_dir()
    database = state / "demo.sqlite3"
    wanted = port or (_previous_demo_port(path) if path.exists() else None) or 8470
    chosen = wanted if _port_free(wanted) else _free_port()
    aside = _keep_aside(state, database, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    demo_config = _demo_config(size, seed, database, state / "outbox", chosen)
    if chosen != wanted:
        demo_config = demo_config.replace(
            f"  port: {chosen}\n", f"  port: {chosen}  # {wanted} {TAKEN_MARK}\n"
        )
    path.write_text(demo_config, encoding="utf-8")
    _state["config"] = path
    out.print(
        Panel.fit(
            f"Setting up a [bold]simulated[/bold] network of {size:,} connections "
            "(nobody in it is real).\n"
            f"Configuration: {escape(str(path))}\nDatabase:      {escape(str(database))}",
            title="lopper demo",
        )
    )
    if aside is not None:
        out.print(
            f"The earlier demo's data is kept in {aside} (its database, network and "
            "configuration); delete the folder when you no longer need it.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if chosen != wanted:
        out.print(
            f"Port {wanted} is taken; the review page uses port {chosen} (web.port in {path}).",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    with _app() as application:
        account = application.accounts()[0]
        with _sync_progress("sync") as tick:
            report = application.sync(account, progress=tick)
        with _working(f"evaluating {account.key}"):
            evaluation = application.evaluate(account)
        out.print(
            f"Synced {report.connections_seen:,} connections and "
            f"{report.interactions_new:,} interactions."
        )
        _print_verdicts(evaluation.verdicts)
        out.print(
            f"\n[bold]{evaluation.queued}[/bold] suggestions are pending "
            f"({evaluation.capped:,} more wait for later digests). Nothing has been removed.\n"
        )
        from service.digest import preview_digest

        written = preview_digest(application)
        out.print(
            f"The digest as it would arrive: {written.html}\n(the email itself: {written.eml}). "
            f"Its link opens the review page at {application.settings.web.url} while "
            "`lopper web` or `lopper run` serves it.\n",
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        "Try next:\n"
        "  lopper suggestions        the suggestions, with their evidence\n"
        "  lopper review             decide one by one: remove, keep, snooze\n"
        "  lopper confirm ID...      confirm; then `lopper execute` removes\n"
        "  lopper plan --keep 20%    who goes first to keep a fifth\n"
        "  lopper status             the state of each account\n"
        "  lopper undo ID            follow someone again\n"
        "  lopper web                the review page the digest links to\n"
    )
    if run or (run is None and sys.stdin.isatty() and sys.stdout.isatty()):
        from service.daemon.runner import run as run_daemon

        out.print(
            "Now the service itself (`lopper run`) on the simulated account, with a fast "
            "schedule: it syncs, evaluates, carries out what you confirm (in another terminal) "
            "and writes a digest every five minutes. Ctrl-C stops it.\n"
        )
        configure_logging(json=_state.get("json_logs"), level="INFO")
        raise typer.Exit(run_daemon(App.load(path)))


def _print_verdicts(verdicts: dict[str, int]) -> None:
    from rich.table import Table

    labels = {
        "flag": "too few exchanges in the window",
        "gone": "gone or moved",
        "keep": "exchanged with recently",
        "protected": "protected",
        "new": "new (in grace)",
        "too-early": "not enough history yet",
        "held": "held by the sanity brake",
        "not-following": "follow you, you don't follow back",
    }
    table = Table(title="What lopper sees", show_header=True)
    table.add_column("verdict")
    table.add_column("connections", justify="right")
    for key, label in labels.items():
        if verdicts.get(key):
            table.add_row(label, f"{verdicts[key]:,}")
    out.print(table)


_IMPORTABLE = frozenset({"x", "facebook", "linkedin", "instagram"})


def _unseen_lines(unseen: list[Unseen], acc: AccountConfig, rules: cfg.Rules) -> list[str]:
    """Each counted kind lopper cannot see on the account: why, and what the person can do."""
    from service.rules import counted_unseen, unseen_todo

    lines = []
    for item in counted_unseen(unseen, rules):
        if item.kind in acc.accept_unseen:
            lines.append(
                f"unseen (accepted): {item.describe()}: {item.reason}; each suggestion says so"
            )
            continue
        lines.append(
            f"unseen: {item.describe()}: {item.reason}; nobody on this account is flagged "
            f"until you {unseen_todo(item)}"
        )
    return lines


def _waiting_lines(
    coverage: Any, unseen: list[Unseen], acc: AccountConfig, rules: cfg.Rules, now: datetime
) -> list[str]:
    """Why the account's connections cannot be judged yet, and what to do about it."""
    from service.rules import coverage_gap

    lines = []
    gap = coverage_gap(coverage, rules, now)
    if gap:
        todo = "wait for the next syncs"
        if acc.platform in _IMPORTABLE:
            todo += f", or import your data export (`lopper import {acc.platform} PATH`)"
        lines.append(f"cannot judge yet: {gap}; {todo}")
    return lines + _unseen_lines(unseen, acc, rules)


# --- config and db ---------------------------------------------------------------------


@config_app.command("check")
def config_check(
    file: Path | None = typer.Argument(None, help="The file to check (default: the one in use)."),
) -> None:
    """Validate a configuration file; every problem is named with its key and line."""
    from service import config as cfg

    path = file or cfg.find_config(_state["config"])
    try:
        loaded = cfg.load_config(path)
    except ConfigError as exc:
        err.print(f"[red]{path}: {len(exc.problems)} problem(s)[/red]")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(EX_CONFIG) from None
    for warning in loaded.warnings:
        err.print(f"[yellow]warning[/yellow] {path}: {warning}", highlight=False)
    from service.platforms import SDKS, missing_sdk

    unusable = False
    for acc in loaded.settings.accounts:
        if acc.platform in SDKS and missing_sdk(acc.platform):
            message = str(MissingExtra(acc.platform, missing_sdk(acc.platform)))
            if acc.enabled:
                err.print(
                    f"{path}: {acc.key}: {message}", style="red", markup=False, highlight=False
                )
                unusable = True
            else:
                err.print(
                    f"[yellow]warning[/yellow] {escape(f'{path}: {acc.key} (disabled): {message}')}",
                    highlight=False,
                )
    if unusable:
        err.print(f"{path}: valid, but not every enabled account can run here", highlight=False)
        raise typer.Exit(EX_CONFIG)
    accounts = ", ".join(a.key for a in loaded.settings.accounts) or "no accounts"
    out.print(f"{path}: valid ({accounts})", highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (also done on every start)."""
    with _app() as application:
        store = application.store
        out.print(f"database at revision {store.current_revision()} (head {store.head_revision()})")


# --- sync, evaluate, execute -----------------------------------------------------------


@app.command()
def sync(
    account: str | None = typer.Argument(None, help="Only this account (e.g. x:@you)."),
    full: bool = typer.Option(False, "--full", help="List every connection again, however fresh."),
) -> None:
    """Fetch connections and interactions from each account's platform."""
    from sqlalchemy import select

    from service.app import AccountSkipped
    from service.store.models import Account
    from service.store.queries import account_coverage

    failed = False
    with _app() as application:
        for acc in application.accounts(account):
            try:
                with _sync_progress(acc.key, _expected_sizes(application, acc)) as tick:
                    report = application.sync(acc, progress=tick, full=full)
            except KeyboardInterrupt as exc:
                said = getattr(exc, "__notes__", None) or ["interrupted"]
                err.print(f"{acc.key}: {said[-1]}", style="yellow", markup=False, highlight=False)
                raise typer.Exit(EX_INTERRUPTED) from None
            except AccountSkipped as exc:
                err.print(f"[red]{shown(exc)}[/red]")
                failed = True
                continue
            colour = {"ok": "green", "partial": "yellow", "skipped": "yellow"}.get(
                report.outcome, "red"
            )
            out.print(
                f"[{colour}]{acc.key}: {report.outcome}[/{colour}] — "
                f"{report.people_seen:,} connections ({report.connections_new:,} new, "
                f"{report.connections_vanished:,} gone), {report.interactions_new:,} new interactions"
            )
            with application.store.session() as session:
                row = session.scalar(select(Account).where(Account.key == acc.key))
                coverage = (
                    account_coverage(session, row, acc.accept_unseen) if row is not None else None
                )
            if report.outcome in ("ok", "partial"):
                rules = application.settings.rules
                for line in _waiting_lines(
                    coverage, report.unseen, acc, rules, application.clock()
                ):
                    err.print(f"  [yellow]{escape(line)}[/yellow]")
            for problem in report.problems:
                err.print(f"  [red]{shown(problem)}[/red]")
            for stream, state in report.streams.items():
                if state != "complete":
                    err.print(f"  [yellow]{shown(stream)}: {shown(state)}[/yellow]")
            if report.brake:
                err.print(f"  [yellow]{shown(report.brake)}[/yellow]")
            failed = failed or report.outcome in ("failed", "paused")
    if failed:
        raise typer.Exit(1)


@app.command()
def evaluate(account: str | None = typer.Argument(None, help="Only this account.")) -> None:
    """Judge every connection and queue removal suggestions (nothing is removed)."""
    from sqlalchemy import select

    from service.store.models import Account
    from service.store.queries import account_unseen

    with _app() as application:
        for acc in application.accounts(account):
            with _working(f"evaluating {acc.key}"):
                report = application.evaluate(acc)
            out.print(
                f"[bold]{acc.key}[/bold]: {report.queued} new suggestions, "
                f"{report.expired} expired, {report.capped:,} held back by the per-digest cap"
            )
            _print_verdicts(report.verdicts)
            if report.verdicts.get("too-early"):
                with application.store.session() as session:
                    row = session.scalar(select(Account).where(Account.key == acc.key))
                    unseen = account_unseen(row) if row is not None else []
                coverage = Span(*report.coverage) if report.coverage else None
                rules = application.settings.rules
                for line in _waiting_lines(coverage, unseen, acc, rules, application.clock()):
                    err.print(f"[yellow]{escape(line)}[/yellow]")
            if report.brake:
                err.print(
                    "[yellow]sanity brake engaged: nobody is flagged until a later sync agrees[/yellow]"
                )


@app.command()
def execute(account: str | None = typer.Argument(None, help="Only this account.")) -> None:
    """Carry out confirmed removals, within the daily cap and the platform's limits."""
    from sqlalchemy import func, select

    from service.app import AccountSkipped
    from service.store.models import Account, Suggestion

    with _app() as application:
        for acc in application.accounts(account):
            with application.store.session() as session:
                due = (
                    session.scalar(
                        select(func.count())
                        .select_from(Suggestion)
                        .join(Account, Suggestion.account_id == Account.id)
                        .where(Account.key == acc.key, Suggestion.state == S.CONFIRMED)
                    )
                    or 0
                )
            try:
                report = application.execute(acc, sleep=_spacing_pause(application, due))
            except AccountSkipped as exc:
                err.print(f"[red]{shown(exc)}[/red]")
                continue
            out.print(
                f"{acc.key}: {len(report.removed)} removed, {len(report.manual)} to remove by hand, "
                f"{len(report.dropped)} dropped, {len(report.failed)} failed"
            )
            for sid, why in report.dropped.items():
                out.print(f"  #{sid} dropped: {shown(why)}")
            for sid, why in report.held.items():
                out.print(f"  #{sid} waits: {shown(why)}")
            for sid, why in report.failed.items():
                err.print(f"  [red]#{sid} failed: {shown(why)}[/red]")
            if report.stopped:
                err.print(f"  [yellow]stopped: {shown(report.stopped)}[/yellow]")


def _spacing_pause(application: App, due: int) -> Callable[[float], None]:
    """The pause between two removals, saying how far the run is and when the next one comes."""
    import time

    done = 0

    def pause(seconds: float) -> None:
        nonlocal done
        done += 1
        at = application.clock() + timedelta(seconds=seconds)
        where = f"{done} of {due}" if due >= done else f"{done}"
        err.print(
            f"  {where} carried out; next removal at "
            f"{_when(at, _zone(application), True)} (in {seconds:.0f} s)"
        )
        time.sleep(seconds)

    return pause


# --- the queue -------------------------------------------------------------------------


def _rows(application: App, account: str | None, states: list[S]) -> list[Suggestion]:
    from sqlalchemy import select

    from service.store.models import Account, Suggestion

    with application.store.session() as session:
        query = select(Suggestion).join(Suggestion.connection).join(Suggestion.account)
        if account:
            acc = application.settings.account(account)
            query = query.where(Account.key == acc.key)
        if states:
            query = query.where(Suggestion.state.in_(states))
        rows = list(session.scalars(query.order_by(Suggestion.id)))
        for row in rows:
            _ = row.connection, row.account
        return rows


def _as_json(s: Suggestion) -> dict[str, Any]:
    return {
        "id": s.id,
        "account": s.account.key,
        "state": s.state.value,
        "reason": s.reason.value,
        "handle": s.connection.handle,
        "name": s.connection.display_name,
        "profile_url": s.connection.profile_url,
        "created_at": s.created_at.isoformat(),
        "decided_at": s.decided_at.isoformat() if s.decided_at else None,
        "decided_via": s.decided_via.value if s.decided_via else None,
        "snoozed_until": s.snoozed_until.isoformat() if s.snoozed_until else None,
        "note": s.note,
        "evidence": s.evidence,
    }


@app.command()
def suggestions(
    account: str | None = typer.Option(None, "--account", "-a", help="Only this account."),
    state: list[S] = typer.Option([], "--state", "-s", help="Only these states (repeatable)."),
    manual: bool = typer.Option(
        False, "--manual", help="Only removals waiting for your own click."
    ),
    all_states: bool = typer.Option(False, "--all", help="Every state, not only pending."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one array) for scripts."),
    limit: int = typer.Option(0, "--limit", "-n", min=0, help="At most this many (0: all)."),
) -> None:
    """List suggestions with their evidence (pending ones unless told otherwise)."""
    from rich import box

    from service.terminal import Column, fitted_table

    states = [S.MANUAL] if manual else state or ([] if all_states else [S.PENDING])
    with _app() as application:
        rows = _rows(application, account, states)
        if limit:
            rows = rows[:limit]
        if as_json:
            sys.stdout.write(json.dumps([_as_json(r) for r in rows], indent=1) + "\n")
            return
        zone = _zone(application)
        several = len({r.account_id for r in rows}) > 1
        columns = [
            Column("id", justify="right", keep=True),
            *([Column("account", drop=2, least=12)] if several else []),
            Column("who", least=14),
            Column("state", least=7),
            Column("last seen", drop=3),
            Column("in/out", justify="right", drop=4),
            Column("since", drop=6),
            Column("value", justify="right", drop=5),
        ]
        cells = []
        for r in rows:
            e = r.evidence
            cells.append(
                [str(r.id)]
                + ([shown(r.account.key)] if several else [])
                + [
                    shown(r.connection.handle),
                    r.state.value + ("" if r.reason.value == "quiet" else f" ({r.reason.value})"),
                    _when(e.get("last_exchange"), zone),
                    f"{e.get('inbound_in_window', 0)}/{e.get('outbound_in_window', 0)}",
                    _when(e.get("connected_since") or e.get("first_seen"), zone),
                    f"{e.get('value', 0):.2f}",
                ]
            )
        table, left_out = fitted_table(out, columns, cells, box=box.SIMPLE_HEAD, pad_edge=False)
        if "in/out" not in left_out:
            table.caption = "in/out: exchanges from them / from you in the window"
        out.print(table)
        if manual and rows:
            out.print("Remove each by hand at its profile link, then run `lopper done ID`.")
            for r in rows:
                out.print(
                    f"  #{r.id} {shown(r.connection.handle)}: {shown(r.connection.profile_url)}"
                )
        out.print(f"{len(rows)} suggestion(s)")
        if left_out and rows:
            out.print(
                f"({', '.join(left_out)} left out at this width; `--json` has everything)",
                highlight=False,
            )


def _ids_or_all(
    application: App, ids: list[int], all_pending: bool, account: str | None, verb: str, yes: bool
) -> list[int]:
    from sqlalchemy import select

    from service.store.models import Account
    from service.suggestions import pending_ids

    if all_pending:
        account_id = None
        if account:
            with application.store.session() as session:
                key = application.settings.account(account).key
                account_id = session.scalar(select(Account.id).where(Account.key == key))
        found = pending_ids(application.store, account_id)
        if not found:
            out.print("nothing is pending")
            raise typer.Exit(0)
        if not yes and not typer.confirm(f"{verb} all {len(found)} pending suggestions?"):
            raise typer.Exit(1)
        return found
    if not ids:
        raise typer.BadParameter("give suggestion ids, or --all-pending")
    return ids


def _report_decision(result: Any, verb: str) -> None:
    if result.changed:
        out.print(f"{verb}: {', '.join(f'#{i}' for i in result.changed)}")
    for sid, why in result.refused.items():
        err.print(f"[red]#{sid}: {shown(why)}[/red]")
    if result.refused:
        raise typer.Exit(65)


IdsArgument = typer.Argument(None, help="Suggestion ids.")
AllPending = typer.Option(False, "--all-pending", help="Every pending suggestion (asks first).")
AccountFilter = typer.Option(None, "--account", "-a", help="With --all-pending: only this account.")
Yes = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def _decide_from_cli(
    ids: list[int],
    all_pending: bool,
    account: str | None,
    yes: bool,
    to: SuggestionState,
    question: str,
    until: Callable[[App], datetime] | None = None,
) -> None:
    from service.suggestions import decide

    with _app() as application:
        chosen = _ids_or_all(application, ids or [], all_pending, account, question, yes)
        when = until(application) if until else None
        result = decide(
            application.store, chosen, to, via=Channel.CLI, now=application.clock(), until=when
        )
        _report_decision(result, to.value + (f" until {when:%Y-%m-%d}" if when else ""))


@app.command()
def confirm(
    ids: list[int] = IdsArgument,
    all_pending: bool = AllPending,
    account: str | None = AccountFilter,
    yes: bool = Yes,
) -> None:
    """Confirm removals; `lopper execute` (or the daemon) carries them out."""
    _decide_from_cli(ids, all_pending, account, yes, S.CONFIRMED, "Confirm removal of")


@app.command()
def keep(
    ids: list[int] = IdsArgument,
    all_pending: bool = AllPending,
    account: str | None = AccountFilter,
    yes: bool = Yes,
) -> None:
    """Keep these connections; they are never suggested again."""
    _decide_from_cli(ids, all_pending, account, yes, S.KEPT, "Keep")


def _until(for_: str | None, until: str | None, application: App) -> datetime:
    from service import config as cfg

    now = application.clock()
    if until:
        try:
            day = datetime.fromisoformat(until)
        except ValueError:
            raise typer.BadParameter(f"--until: {until!r} is not a date (YYYY-MM-DD)") from None
        # A date as the person means it: midnight where they live.
        return day if day.tzinfo else day.replace(tzinfo=_zone(application))
    try:
        return now + cfg.parse_duration(for_ or "30d")
    except ValueError as exc:
        raise typer.BadParameter(f"--for: {exc}") from None


@app.command()
def snooze(
    ids: list[int] = IdsArgument,
    all_pending: bool = AllPending,
    account: str | None = AccountFilter,
    yes: bool = Yes,
    for_: str | None = typer.Option(None, "--for", help="How long, e.g. 30d (default)."),
    until: str | None = typer.Option(None, "--until", help="Until this date (YYYY-MM-DD)."),
) -> None:
    """Ask again later."""
    _decide_from_cli(
        ids, all_pending, account, yes, S.SNOOZED, "Snooze", lambda a: _until(for_, until, a)
    )


def _read_key() -> str:
    """One key press on a terminal; one character of standard input otherwise (scripts)."""
    if sys.stdin.isatty():
        return typer.getchar().lower()
    while True:
        char = sys.stdin.read(1)
        if not char:
            return "q"
        if not char.isspace():
            return char.lower()


@app.command()
def review(
    account: str | None = typer.Option(None, "--account", "-a", help="Only this account."),
) -> None:
    """Go through pending suggestions one by one: [r]emove, [k]eep, [s]nooze, [n]ext, [q]uit."""
    from rich.panel import Panel

    from service.suggestions import decide

    with _app() as application:
        zone = _zone(application)
        rows = _rows(application, account, [S.PENDING])
        if not rows:
            out.print("nothing is pending")
            return
        counts = {"confirmed": 0, "kept": 0, "snoozed": 0}
        for index, r in enumerate(rows, 1):
            e = r.evidence
            body = (
                f"[bold]{shown(r.connection.display_name or r.connection.handle)}[/bold]  "
                f"{shown(r.connection.handle)}\n"
                f"{shown(r.connection.profile_url)}\n\n"
                f"why:             {shown(e.get('why', r.reason.value))}\n"
                f"connected since: {_when(e.get('connected_since') or e.get('first_seen'), zone)}\n"
                f"last exchange:   {_when(e.get('last_exchange'), zone)}"
                f"  (theirs {_when(e.get('last_inbound'), zone)}, yours {_when(e.get('last_outbound'), zone)})\n"
                f"in the window:   {e.get('inbound_in_window', 0)} from them, "
                f"{e.get('outbound_in_window', 0)} from you ({e.get('window_days')} days)\n"
                f"value:           {e.get('value', 0):.2f}"
                + ("\nmutual follow" if e.get("mutual") else "")
            )
            out.print(Panel(body, title=f"#{r.id}  {shown(r.account.key)}  ({index}/{len(rows)})"))
            out.print(r"\[r]emove  \[k]eep  \[s]nooze 30 days  \[n]ext  \[q]uit ", end="")
            key = _read_key()
            out.print(key)
            now = application.clock()
            if key == "q":
                break
            if key == "r":
                decide(application.store, [r.id], S.CONFIRMED, via=Channel.REVIEW, now=now)
                counts["confirmed"] += 1
            elif key == "k":
                decide(application.store, [r.id], S.KEPT, via=Channel.REVIEW, now=now)
                counts["kept"] += 1
            elif key == "s":
                decide(
                    application.store,
                    [r.id],
                    S.SNOOZED,
                    via=Channel.REVIEW,
                    now=now,
                    until=now + timedelta(days=30),
                )
                counts["snoozed"] += 1
        out.print(
            f"{counts['confirmed']} confirmed, {counts['kept']} kept, {counts['snoozed']} snoozed. "
            + ("Run `lopper execute` to carry out the removals." if counts["confirmed"] else "")
        )


@app.command()
def undo(suggestion_id: int = typer.Argument(..., help="The id of a removed suggestion.")) -> None:
    """Follow someone again that lopper removed (where the platform allows it)."""
    from service.removals import restore
    from service.store.models import Suggestion

    with _app() as application:
        with application.store.session() as session:
            suggestion = session.get(Suggestion, suggestion_id)
            if suggestion is None:
                raise NotFound(f"no suggestion with id {suggestion_id}")
            key = suggestion.account.key
            handle = suggestion.connection.handle
        adapter = application.adapter_for_key(key)
        restore(application.store, suggestion_id, adapter, via=Channel.CLI, now=application.clock())
        out.print(
            f"restored #{suggestion_id}: following {shown(handle)} again; they will not be "
            "suggested again"
        )


@app.command()
def done(
    ids: list[int] = typer.Argument(..., help="Ids of manual removals you carried out."),
) -> None:
    """Record that you removed these connections by hand."""
    from service.removals import manual_done

    with _app() as application:
        for suggestion_id in ids:
            manual_done(application.store, suggestion_id, via=Channel.CLI, now=application.clock())
            out.print(f"#{suggestion_id} recorded as removed")


@app.command()
def plan(
    keep_: str = typer.Option(..., "--keep", help="What to keep: a share (20%) or a number (500)."),
    account: str | None = typer.Option(None, "--account", "-a", help="Only this account."),
    queue: bool = typer.Option(False, "--queue", help="Queue the plan as pending suggestions."),
    show: int = typer.Option(20, "--show", min=0, help="How many of the plan to list."),
) -> None:
    """Who would go first to bring the network down to a target, lowest value first."""
    from sqlalchemy import select

    from service.rules import plan_reduction
    from service.store.models import Account
    from service.suggestions import collector_paused, judge_account, queue_plan
    from service.terminal import Column, fitted_table

    target = _parse_percent(keep_)
    # A short-lived process holding every connection's judgement: no cyclic collection.
    with _app() as application, collector_paused():
        zone = _zone(application)
        for acc in application.accounts(account):
            with application.store.session() as session:
                row = session.scalar(select(Account).where(Account.key == acc.key))
                if row is None:
                    err.print(f"[yellow]{acc.key}: not synced yet[/yellow]")
                    continue
                # Evidence is only stored when the plan is queued: building it for every
                # connection of a large network costs a third of the plan's time.
                evaluation = judge_account(
                    session,
                    row,
                    application.settings.rules,
                    application.clock(),
                    with_evidence=queue,
                    read_apart=True,
                )
            result = plan_reduction(evaluation.items, target)
            out.print(
                f"[bold]{acc.key}[/bold]: you follow {result.network:,}; keeping {result.keep_target:,} "
                f"means {len(result.remove):,} go ({result.untouchable:,} are protected, new or "
                "not judgeable yet and stay)"
            )
            if result.shortfall:
                err.print(
                    f"[yellow]the target is out of reach by {result.shortfall:,}: "
                    "protected and new connections are never planned[/yellow]"
                )
            columns = [
                Column("#", justify="right", keep=True),
                Column("who", least=14),
                Column("why", wrap=True),
                Column("last exchange", drop=1),
                Column("value", justify="right", keep=True),
            ]
            listed = [
                [
                    str(n),
                    shown(item.facts.handle),
                    shown(item.judgement.why),
                    _when(item.stats.last_exchange, zone),
                    f"{item.stats.value:.2f}",
                ]
                for n, item in enumerate(result.remove[:show], 1)
            ]
            table, _left_out = fitted_table(out, columns, listed)
            out.print(table)
            if len(listed) < len(result.remove):
                out.print(
                    f"the first {len(listed):,} of {len(result.remove):,}; "
                    "`--show N` lists more, `--queue` queues them all",
                    highlight=False,
                )
            if queue:
                queued = queue_plan(application.store, acc.key, result.remove, application.clock())
                out.print(f"queued {queued:,} pending suggestions; nothing goes until you confirm")


@app.command("link")
def link_people(
    refs: list[str] = typer.Argument(None, help="Connections as PLATFORM:HANDLE, e.g. x:@ana."),
    suggest: bool = typer.Option(False, "--suggest", help="List likely links (same user name)."),
) -> None:
    """Link one person's connections on several platforms: an exchange on one keeps all."""
    from service.people import link, suggest_links

    with _app() as application:
        if suggest or not refs:
            found = suggest_links(application.store)
            for item in found:
                out.print(f"lopper link {' '.join(item.refs)}", highlight=False)
            out.print(f"{len(found)} possible link(s); lopper links nobody on its own")
            return
        person = link(application.store, refs, now=application.clock())
        out.print(f"linked as person #{person}: {', '.join(refs)}", highlight=False)


@app.command("unlink")
def unlink_person(ref: str = typer.Argument(..., help="A connection as PLATFORM:HANDLE.")) -> None:
    """Undo a link made with `lopper link`."""
    from service.people import unlink

    with _app() as application:
        unlink(application.store, ref, now=application.clock())
        out.print(f"{ref} is no longer linked", highlight=False)


@app.command()
def resume(account: str = typer.Argument(..., help="The account, e.g. x:@you.")) -> None:
    """Let removals run again on an account they were stopped on (after you looked)."""
    from sqlalchemy import select

    from service.store.models import Account

    with _app() as application:
        key = application.settings.account(account).key
        with application.store.session() as session:
            row = session.scalar(select(Account).where(Account.key == key))
            if row is None:
                raise LopperError(f"{key} has not been synced yet")
            was = [r for r in (row.removals_blocked_reason, row.paused_reason) if r]
            row.removals_blocked_reason = row.removals_blocked_at = None
            row.paused_reason = row.paused_at = None
            row.next_removal_at = None
        out.print(
            f"{key}: resumed" + (f" (was: {'; '.join(was)})" if was else " (nothing was stopped)")
        )


def _account_on(application: App, platform: str, account: str | None) -> AccountConfig:
    matches = [
        a
        for a in application.settings.accounts
        if a.platform == platform and account in (None, a.key, a.handle)
    ]
    if not matches:
        raise LopperError(
            f"no {platform} account{' ' + account if account else ''} in the configuration; "
            "add it under accounts: (see config.example.yaml)"
        )
    if len(matches) > 1:
        raise LopperError(f"several {platform} accounts: choose one with --account")
    return matches[0]


AuthAccount = typer.Option(None, "--account", "-a", help="Which account, if there are several.")


@auth_app.command("mastodon")
def auth_mastodon(
    instance: str | None = typer.Option(
        None, "--instance", help="The server, e.g. https://example.social (default: the handle's)."
    ),
    account: str | None = AuthAccount,
) -> None:
    """Let lopper read your Mastodon account and unfollow/follow for you (nothing else)."""
    from service import config as cfg
    from service.platforms import require_sdk

    require_sdk("mastodon")
    from service.platforms import mastodon

    with _app() as application:
        chosen = _account_on(application, "mastodon", account)
        url = instance or mastodon.instance_url(chosen.handle)

        def ask(link: str) -> str:
            out.print(f"Open this page, approve lopper, and paste the code it shows:\n{link}")
            return str(typer.prompt("code")).strip()

        result = mastodon.authorize(url, cfg.state_dir(), chosen.key, ask)
        out.print(
            f"authorized as {result.handle}; token kept in {result.token_file}", highlight=False
        )


@auth_app.command("bluesky")
def auth_bluesky(account: str | None = AuthAccount) -> None:
    """Sign in to Bluesky with an app password (bsky.app → Settings → App passwords)."""
    from service import config as cfg
    from service.platforms import require_sdk

    require_sdk("bluesky")
    from service.platforms import bluesky

    with _app() as application:
        chosen = _account_on(application, "bluesky", account)
        secret = chosen.credentials.get("app_password")
        password = (
            secret.get_secret_value() if secret else typer.prompt("app password", hide_input=True)
        )
        base = chosen.credentials.get("base_url")
        who = bluesky.login(
            chosen.handle,
            password,
            cfg.state_dir(),
            chosen.key,
            base_url=base.get_secret_value() if base else None,
        )
        out.print(
            f"signed in as {who.handle}; the session is kept and refreshed from now on",
            highlight=False,
        )


@export_app.command("removed")
def export_removed(
    csv_: bool = typer.Option(True, "--csv", help="CSV (the only format for now)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write here instead of stdout."
    ),
) -> None:
    """Everyone lopper removed, so you can always find them again."""
    import csv

    from sqlalchemy import select

    from service.store.models import Removal, Suggestion

    with _app() as application:
        with application.store.session() as session:
            rows = session.execute(
                select(Suggestion, Removal.finished_at)
                .join(Removal, Removal.suggestion_id == Suggestion.id)
                .where(
                    Suggestion.state.in_([S.REMOVED, S.RESTORED]),
                    Removal.state == RemovalState.DONE,
                )
                .order_by(Removal.finished_at)
            ).all()
            records = [
                {
                    "suggestion_id": s.id,
                    "account": s.account.key,
                    "handle": s.connection.handle,
                    "name": s.connection.display_name or "",
                    "platform_user_id": s.connection.platform_user_id,
                    "profile_url": s.connection.profile_url or "",
                    "removed_at": finished.isoformat() if finished else "",
                    "reason": s.reason.value,
                    "state": s.state.value,
                }
                for s, finished in rows
            ]
        fields = [
            "suggestion_id",
            "account",
            "handle",
            "name",
            "platform_user_id",
            "profile_url",
            "removed_at",
            "reason",
            "state",
        ]
        handle = open_private(output) if output else sys.stdout
        try:
            # Every cell quoted, formulas neutralised: names come from the platforms.
            writer = csv.DictWriter(handle, fieldnames=fields, quoting=csv.QUOTE_ALL)
            writer.writeheader()
            writer.writerows(
                {key: spreadsheet_cell(value) for key, value in record.items()}
                for record in records
            )
        finally:
            if output:
                handle.close()
                err.print(f"{len(records)} removed connection(s) written to {output}")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """The state of each account: network, history, queue, removals, problems."""
    from rich.panel import Panel
    from sqlalchemy import func, select
    from sqlalchemy.engine import make_url

    from service import config as cfg
    from service.removals import removals_today
    from service.rules import counted_unseen
    from service.store.models import Account, Connection, Interaction, Suggestion, SyncRun
    from service.store.queries import account_coverage, account_unseen

    with _app() as application:
        now = application.clock()
        zone = _zone(application)
        report: list[dict[str, Any]] = []
        with application.store.session() as session:
            schedule = _schedule_status(session, application, now)
            for acc in application.settings.accounts:
                row = session.scalar(select(Account).where(Account.key == acc.key))
                entry: dict[str, Any] = {
                    "account": acc.key,
                    "enabled": acc.enabled,
                    "simulated": acc.platform == "sandbox",
                }
                missing = application.loaded.account_ready(acc.key)
                if missing:
                    entry["problem"] = f"secret {', '.join(missing)} not set: skipped"
                entry.update(_schedule_of(schedule, acc.key))
                if row is None:
                    entry["synced"] = False
                    report.append(entry)
                    continue
                active = Connection.state == ConnectionState.ACTIVE
                entry["connections"] = (
                    session.scalar(
                        select(func.count())
                        .select_from(Connection)
                        .where(Connection.account_id == row.id, active)
                    )
                    or 0
                )
                entry["following"] = (
                    session.scalar(
                        select(func.count())
                        .select_from(Connection)
                        .where(Connection.account_id == row.id, active, Connection.following)
                    )
                    or 0
                )
                entry["interactions"] = (
                    session.scalar(
                        select(func.count())
                        .select_from(Interaction)
                        .where(Interaction.account_id == row.id)
                    )
                    or 0
                )
                coverage = account_coverage(session, row, acc.accept_unseen)
                entry["coverage"] = (
                    [coverage.start.isoformat(), coverage.end.isoformat()] if coverage else None
                )
                entry["last_sync"] = row.last_sync_at.isoformat() if row.last_sync_at else None
                last_run = session.scalar(
                    select(SyncRun).where(SyncRun.account_id == row.id).order_by(SyncRun.id.desc())
                )
                if last_run is not None:
                    entry["last_sync_outcome"] = last_run.outcome
                    if last_run.detail:
                        entry["last_sync_detail"] = last_run.detail
                counts = dict(
                    session.execute(
                        select(Suggestion.state, func.count())
                        .where(Suggestion.account_id == row.id)
                        .group_by(Suggestion.state)
                    ).all()
                )
                entry["suggestions"] = {k.value: v for k, v in counts.items()}
                entry["removals_last_24h"] = removals_today(session, row.id, now)
                entry["daily_removal_cap"] = application.settings.rules.daily_removal_cap
                if acc.platform == "x":
                    from service.costs import month_costs

                    options = acc.x or cfg.XOptions()
                    spent = month_costs(session, now, {acc.key: options.prices}).get(acc.key, 0.0)
                    entry["x_cost_month"] = round(spent, 4)
                    entry["x_budget"] = options.monthly_budget
                for label, value in (
                    ("paused", row.paused_reason),
                    ("removals_blocked", row.removals_blocked_reason),
                ):
                    if value:
                        entry[label] = value
                if row.brake_engaged_at:
                    entry["brake"] = f"{row.brake_vanished} of {row.brake_total} vanished at once"
                unseen = account_unseen(row)
                entry["unseen"] = [
                    {**u.to_json(), "accepted": u.kind in acc.accept_unseen}
                    for u in counted_unseen(unseen, application.settings.rules)
                ]
                entry["waiting"] = _waiting_lines(
                    coverage, unseen, acc, application.settings.rules, now
                )
                report.append(entry)
        from service.daemon.queue import service_running
        from service.digest import outbox_lines, outbox_summary

        warnings = _state_warnings()
        holder = service_running(application.store, application.database_url)
        if as_json:
            document = {
                "accounts": report,
                "outbox": outbox_summary(application).as_json(),
                "warnings": warnings,
                "service": {"running": holder is not None, "by": holder},
            }
            sys.stdout.write(json.dumps(document, indent=1) + "\n")
            return
        url = make_url(application.database_url).render_as_string(hide_password=True)
        out.print(f"config:   {application.loaded.path}", highlight=False)
        out.print(f"database: {url}", highlight=False)
        for warning in warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
        out.print(
            f"service:  running ({holder})"
            if holder
            else "service:  not running: nothing runs on its own until `lopper run` (or its "
            "systemd unit) starts; what is due then runs at once",
            highlight=False,
            markup=False,
        )
        for entry in report:
            title = entry["account"] + (
                "  [dim](simulated network)[/dim]" if entry["simulated"] else ""
            )
            lines = []
            if not entry.get("synced", True):
                lines.append("not synced yet — run `lopper sync`")
            else:
                cov = entry["coverage"]
                lines += [
                    f"connections:  {entry['connections']:,} ({entry['following']:,} you follow)",
                    f"interactions: {entry['interactions']:,}",
                    "history:      "
                    + (
                        f"{_when(cov[0], zone)} → {_when(cov[1], zone, True)}"
                        if cov
                        else "none yet"
                    ),
                    f"last sync:    {_when(entry['last_sync'], zone, True)} ({entry.get('last_sync_outcome', '-')})",
                    "suggestions:  "
                    + (
                        ", ".join(f"{v} {k}" for k, v in sorted(entry["suggestions"].items()))
                        or "none"
                    ),
                    f"removals:     {entry['removals_last_24h']} in the last 24 h (cap {entry['daily_removal_cap']})",
                ]
                if "x_cost_month" in entry:
                    budget = entry["x_budget"]
                    from service.costs import MICROS, dollars

                    lines.append(
                        f"X cost:       {dollars(round(entry['x_cost_month'] * MICROS))} this month (estimate)"
                        + (
                            f", budget {dollars(round(budget * MICROS))}"
                            if budget is not None
                            else ""
                        )
                    )
            lines += _schedule_lines(entry, zone, now, running=holder is not None)
            lines += [f"[yellow]{escape(line)}[/yellow]" for line in entry.get("waiting", ())]
            for label in ("problem", "paused", "removals_blocked", "brake", "last_sync_detail"):
                if entry.get(label):
                    lines.append(
                        f"[yellow]{label.replace('_', ' ')}: {shown(entry[label])}[/yellow]"
                    )
            out.print(Panel("\n".join(lines), title=title, title_align="left"))
        for line in outbox_lines(application):
            out.print(line, highlight=False, markup=False)


def _state_warnings() -> list[str]:
    """What `lopper status` warns of in the state folder itself."""
    from service import config as cfg

    state = cfg.state_dir()
    if readable_by_others(state):
        return [
            f"the state folder {state} is readable by others: it holds the database, tokens "
            f"and the review links' key; run: chmod 700 {state}"
        ]
    return []


def _schedule_status(session: Any, application: App, now: datetime) -> dict[str, Any]:
    from service.daemon.report import schedule_status

    return schedule_status(session, application.settings, now)


def _schedule_of(status: dict[str, Any], key: str) -> dict[str, Any]:
    """Next runs, last digest and last error of an account, as `lopper run` plans them."""
    mine = status["accounts"].get(key, {})
    return {
        "next_runs": mine.get("next_runs", {}),
        "last_error": mine.get("last_error"),
        "last_digest": status["digest"]["last"],
        "next_digest": status["digest"]["next"],
    }


def _next_run(at: str | None, zone: Any, now: datetime, running: bool) -> str:
    """When a job runs next; one already due runs at the service's next look, or its start."""
    if at is not None and datetime.fromisoformat(at) <= now + timedelta(seconds=1):
        return "due now" if running else "due (when the service runs)"
    return _when(at, zone, True)


def _schedule_lines(entry: dict[str, Any], zone: Any, now: datetime, running: bool) -> list[str]:
    runs = entry.get("next_runs") or {}
    nexts = ", ".join(
        f"{job} {_next_run(at, zone, now, running)}" for job, at in runs.items() if at
    )
    digest = _next_run(entry.get("next_digest"), zone, now, running)
    lines = [f"next runs:    {nexts or 'none'}, digest {digest}"]
    last = entry.get("last_digest")
    lines.append(
        "last digest:  "
        + (
            f"{_when(last['slot'], zone, True)} (made {_when(last['at'], zone, True)})"
            if last
            else "none yet"
        )
    )
    error = entry.get("last_error")
    if error:
        lines.append(
            f"[yellow]last error:   {error['job']} at {_when(error['at'], zone, True)}: "
            f"{shown(error['detail'])}[/yellow]"
        )
    return lines


def _register_command_modules() -> None:
    from service import commands

    for name in commands.MODULES:
        importlib.import_module(f"service.commands.{name}")


_register_command_modules()


def main() -> None:
    # Whatever lopper or a library writes (databases, tokens, digests, lock files): the
    # owner's only, whatever umask the shell or the service manager left.
    os.umask(0o077)
    try:
        app()
    except ConfigError as exc:
        err.print("configuration problem", style="red")
        err.print(str(exc), highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except LopperError as exc:
        err.print(f"lopper: {plain(exc)}", highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except Exception as exc:
        # A platform's error can only come from a platform's module, imported by then.
        base = sys.modules.get("service.platforms.base")
        if base is None or not isinstance(exc, base.PlatformError):
            raise
        from service.logs import scrub

        err.print(
            f"lopper: the platform answered: {plain(scrub(str(exc)))}",
            highlight=False,
            markup=False,
        )
        sys.exit(EX_UNAVAILABLE)
