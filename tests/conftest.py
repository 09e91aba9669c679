"""Fixtures shared by the core's tests: stores on both databases, a fixed clock, clean globals."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog
from helpers import NOW, Clock
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service import logs
from service.store import Store, open_store
from service.store.models import Base

# A shell that starts the suite in the background (`pytest &`) hands it SIGINT ignored, and
# every process it starts inherits that: Ctrl-C would reach no test's process. The tests of
# Ctrl-C need Python's own handler, which the processes they start then get too.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

PG_URL = os.environ.get("LOPPER_TEST_DATABASE_URL")

# No deadline: tests do not time things. Property tests share one test's store and wipe it
# per example themselves, hence the function-scoped fixture is fine.
settings.register_profile(
    "lopper",
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("lopper")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="LOPPER_TEST_DATABASE_URL is not set"),
        ],
    ),
]


def url_with_schema(url: str, schema: str) -> str:
    """The same server, with every unqualified name resolving into ``schema``."""
    parsed = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated once; each test opens a copy (open_store still checks it)."""
    path = tmp_path_factory.mktemp("template") / "lopper.sqlite3"
    open_store(f"sqlite:///{path}").dispose()
    return path


class PostgresSchemas:
    """Schemas migrated once per run and emptied for each test that uses them.

    Creating and migrating a schema costs more than most tests do; emptying one is cheap.
    The n-th store a test opens gets the n-th schema.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = create_engine(url)
        self.prefix = f"lopper_test_{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []
        self.migrated: set[str] = set()

    def fresh(self, index: int) -> str:
        while len(self.names) <= index:
            name = f"{self.prefix}_{len(self.names)}"
            with self.admin.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{name}"'))
            self.names.append(name)
        name = self.names[index]
        if name in self.migrated:
            tables = ", ".join(f'"{name}"."{t.name}"' for t in Base.metadata.sorted_tables)
            with self.admin.begin() as connection:
                # A store left open by a test would block this: fail instead of hanging.
                connection.execute(text("SET LOCAL lock_timeout = '5s'"))
                connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        self.migrated.add(name)
        return url_with_schema(self.url, name)

    def close(self) -> None:
        with self.admin.begin() as connection:
            for name in self.names:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_schemas() -> Iterator[PostgresSchemas | None]:
    if not PG_URL:
        yield None
        return
    schemas = PostgresSchemas(PG_URL)
    yield schemas
    schemas.close()


@pytest.fixture
def make_store(
    backend: str,
    tmp_path: Path,
    sqlite_template: Path,
    postgres_schemas: PostgresSchemas | None,
) -> Iterator[Callable[[], Store]]:
    """Open as many empty, migrated stores on the backend as a test needs."""
    opened: list[Store] = []

    def make() -> Store:
        if backend == "sqlite":
            path = tmp_path / f"lopper-{len(opened)}.sqlite3"
            shutil.copyfile(sqlite_template, path)
            url = f"sqlite:///{path}"
        else:
            assert postgres_schemas is not None
            url = postgres_schemas.fresh(len(opened))
        store = open_store(url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.dispose()


@pytest.fixture
def store(make_store: Callable[[], Store]) -> Store:
    return make_store()


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def _structlog_handlers() -> list[logging.Handler]:
    return [
        h
        for h in logging.getLogger().handlers
        if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
    ]


@pytest.fixture(autouse=True)
def _reset_global_state() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logs.forget_secrets()
    yield
    if "daemon_helpers" in sys.modules:  # daemons a failed test did not stop
        sys.modules["daemon_helpers"].Running.kill_leftovers()
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logs.forget_secrets()
    # configure_logging replaces the root handlers; leave pytest's own capture alone.
    for handler in _structlog_handlers():
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A person's own machine: XDG folders of their own, no systemd variables."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in (
        "CONFIGURATION_DIRECTORY",
        "STATE_DIRECTORY",
        "LOPPER_CONFIG",
        "CREDENTIALS_DIRECTORY",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path
