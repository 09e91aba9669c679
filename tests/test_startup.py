"""Start-up: the command line loads what a command uses when that command runs.

`import service.cli` and `lopper --help` must not load SQLAlchemy's ORM (the store's models),
Jinja2 (the digest's and the review page's templates), APScheduler (the daemon) or a
platform's SDK: they are what made every command, even `--help`, take a second to start.
`bench/startup.py` measures the time; this holds the line without timing anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Modules (and their submodules) that only some commands need.
HEAVY = (
    "sqlalchemy.orm",
    "jinja2",
    "apscheduler",
    "tweepy",
    "facebook",
    "mastodon",
    "atproto",
)

# Runs the given code, then prints which of HEAVY got imported along the way.
PROBE = """
import json, sys
{code}
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if m in heavy or m.startswith(tuple(h + "." for h in heavy)))))
"""


def loaded_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    found: list[str] = json.loads(last)
    return found


def test_importing_the_command_line_loads_no_heavy_module() -> None:
    assert loaded_after("import service.cli") == []


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["confirm", "--help"],
        ["status", "--help"],
        ["run", "--help"],
        ["import", "x-archive", "--help"],
    ],
)
def test_help_loads_no_heavy_module(home: Path, args: list[str]) -> None:
    # As `lopper ARGS` runs: the entry point, with Typer's own exit at the end of the help.
    code = (
        "import sys\n"
        f"sys.argv = ['lopper', *{args!r}]\n"
        "from service.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
    )
    found = loaded_after(code, env={**os.environ, "COLUMNS": "100"})
    assert found == []


def test_the_probe_sees_a_heavy_import() -> None:
    # The check above can fail: a module that imports the models is seen.
    assert "sqlalchemy.orm" in loaded_after("import service.store.models")


def test_the_review_page_loads_its_templates_when_it_first_serves() -> None:
    # An idle daemon serves the page; Jinja2 comes with the first page served.
    found = loaded_after("import service.web, service.web.review")
    assert "jinja2" not in found


def test_an_idle_sqlite_store_closes_its_pooled_connections(tmp_path: Path) -> None:
    from sqlalchemy import text

    from service.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'lopper.sqlite3'}")
    try:
        with store.session() as session:
            session.execute(text("SELECT 1"))
        assert store.engine.pool.checkedin() == 1  # kept, with its page cache
        store.release_idle()
        assert store.engine.pool.checkedin() == 0
        with store.session() as session:  # and the next unit of work opens another
            assert session.execute(text("SELECT 1")).scalar() == 1
    finally:
        store.dispose()


def test_an_in_memory_store_is_left_open(tmp_path: Path) -> None:
    from sqlalchemy import text

    from service.store import open_store

    store = open_store("sqlite://")
    try:
        with store.session() as session:
            session.execute(text("CREATE TABLE kept (x INTEGER)"))
        store.release_idle()
        with store.session() as session:  # closing it would have dropped the database
            assert session.execute(text("SELECT count(*) FROM kept")).scalar() == 0
    finally:
        store.dispose()


def test_a_platform_error_still_ends_the_command_with_its_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command line names PlatformError without importing the platforms up front.
    from service import cli
    from service.errors import EX_UNAVAILABLE
    from service.platforms.base import PlatformError

    def failing() -> None:
        raise PlatformError("the server said 503")

    monkeypatch.setattr(os, "umask", lambda mask: 0o022)  # main() sets the process's own
    monkeypatch.setattr(cli, "app", failing)
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == EX_UNAVAILABLE
    assert "the platform answered: the server said 503" in capsys.readouterr().err

    def other() -> None:
        raise RuntimeError("not a platform's")

    monkeypatch.setattr(cli, "app", other)
    with pytest.raises(RuntimeError):
        cli.main()


def test_a_sqlite_daemon_does_not_load_the_postgresql_dialect(tmp_path: Path) -> None:
    """The daemon's modules and a SQLite store at the head leave SQLAlchemy's PostgreSQL
    dialect out (about 2 MiB of an idle service that never speaks to PostgreSQL). Only a
    migration, run once when the store is behind, loads it."""
    from service.store import open_store

    url = f"sqlite:///{tmp_path / 'lopper.sqlite3'}"
    open_store(url).dispose()  # migrated here: the daemon finds it at the head
    code = (
        "import json, sys\n"
        "import service.daemon.runner, service.sync, service.imports.common, service.app\n"
        "import service.web.review, service.store.models, service.suggestions, service.removals\n"
        "from service.store import open_store\n"
        f"open_store({url!r}).dispose()\n"
        "print(json.dumps([m for m in sys.modules if m.startswith('sqlalchemy.dialects.postgresql')]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_daemon_leaves_out_rich_tracebacks_and_pygments() -> None:
    """structlog imports Rich's traceback and pretty-printing modules, and Pygments with them,
    when Rich is installed (about 2.7 MiB of an idle service); lopper formats exceptions as
    plain text, so its one import of structlog hides them, and only while it runs."""
    code = (
        "import json, sys\n"
        "import service.daemon.runner, service.sync, service.imports.common, service.app\n"
        "import service.web.review, service.suggestions, service.removals, service.logs\n"
        "left_out = [m for m in sys.modules if m.startswith(('pygments', 'rich.traceback', "
        "'rich.pretty'))]\n"
        "import rich.traceback\n"  # still importable for anything that asks afterwards
        "print(json.dumps([left_out, rich.traceback.Traceback.__name__]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [[], "Traceback"]
