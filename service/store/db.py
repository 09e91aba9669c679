"""Opening the store: engine, sessions, SQLite pragmas and migrations on start."""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import Session, sessionmaker

from service.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

_HERE = Path(__file__).parent
# The newest migration (tests/test_store.py holds it to Alembic's own head). A store already
# there is opened without importing Alembic, which a long-running daemon would carry for
# nothing: about 12 MiB of its resident memory.
HEAD = "0009"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; WAL keeps it safe
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # Exchanges land all over the (account, person, time) index: a larger page cache and
    # fewer checkpoints keep a big first sync from rewriting the same index pages page after
    # page. Both are upper bounds; an idle process uses none of it.
    cursor.execute("PRAGMA cache_size=-32768")  # KiB
    cursor.execute("PRAGMA wal_autocheckpoint=10000")  # pages
    cursor.close()
    try:
        dbapi_connection.execute("SELECT exp(0)")
    except sqlite3.OperationalError:
        # SQLite built without its math functions: the value score needs exp().
        dbapi_connection.create_function("exp", 1, math.exp, deterministic=True)


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        # ValueError: a port that is not a number. The URL itself is not repeated: it may
        # hold a password.
        said = "the port is not a number; " if "int()" in str(exc) else ""
        raise StoreError(
            f"storage.url is not a database URL ({said}expected e.g. sqlite:////var/lib/lopper/"
            "lopper.sqlite3 or postgresql+psycopg://user@host/db)"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"storage.url: unsupported database {parsed.get_backend_name()!r} "
            "(use sqlite or postgresql)"
        )
    return parsed


def alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(_HERE / "migrations"))
    config.attributes["url"] = url
    return config


@dataclass
class Store:
    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def upgrade(self) -> None:
        if self._stored_revision() == HEAD:
            return
        from alembic import command

        config = alembic_config(self.engine.url.render_as_string(hide_password=False))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def _stored_revision(self) -> str | None:
        """The revision the database records, read without Alembic (None: none yet)."""
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(text("SELECT version_num FROM alembic_version"))
                versions = [str(row[0]) for row in rows]
        except DBAPIError:
            return None  # no such table yet: a new database
        return versions[0] if len(versions) == 1 else None

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(alembic_config(str(self.engine.url)))
        return script.get_current_head()

    def dispose(self) -> None:
        self.engine.dispose()

    def release_idle(self) -> None:
        """Close the pooled connections nobody holds, when they are SQLite's.

        Each keeps its page cache (up to ``cache_size``, see ``_sqlite_pragmas``) and its
        prepared statements for as long as it stays in the pool: after a first sync, a few MiB
        that an idle daemon holds for nothing. The next unit of work opens a fresh connection
        (a file open and the pragmas). A connection in use is left alone and closed when it
        comes back. PostgreSQL's connections keep their cache in the server: kept open.
        """
        url = self.engine.url
        if self.dialect == "sqlite" and url.database not in (None, "", ":memory:"):
            self.engine.dispose()


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the database at ``url``; StoreError names what is wrong."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created here, 0600, before SQLite creates it with the umask's mode (often
            # 0644): it holds who you talk to. SQLite gives its -wal and -shm files the
            # database file's mode. An empty file is an empty database to SQLite.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot create the database file {path}: {exc}") from None
    try:
        engine = create_engine(parsed, future=True, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"storage.url: cannot use this database: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    store = Store(engine, sessionmaker(engine, expire_on_commit=False))
    try:
        if migrate:
            store.upgrade()
        else:
            with engine.connect():
                pass
    except ProgrammingError as exc:
        engine.dispose()
        if "connection option" not in str(exc.orig):
            raise
        # libpq refuses an option of the URL's query (?unknown=1) before it connects.
        reason = str(exc.orig).strip().splitlines()[0]
        raise StoreError(f"storage.url: {reason}") from None
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "cannot connect"
        raise StoreError(f"cannot open the database: {reason}") from None
    except Exception as exc:
        engine.dispose()
        if isinstance(exc, sqlite3.DatabaseError) or "file is not a database" in str(exc):
            raise StoreError(f"the database file is not an SQLite database: {exc}") from None
        raise
    return store
