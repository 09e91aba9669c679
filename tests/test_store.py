"""The store: migrations agree with the models, errors are StoreErrors, times are aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from helpers import NOW
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from service.errors import StoreError
from service.store import Store, open_store
from service.store.db import HEAD
from service.store.models import Account, Base
from service.store.types import to_epoch


def test_migrations_at_head_match_the_models(store: Store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []
    assert store.current_revision() == store.head_revision() == HEAD


def test_a_store_at_head_opens_without_alembic_and_an_older_one_is_migrated(
    tmp_path: Path,
) -> None:
    """The daemon does not carry Alembic when there is nothing to migrate; a store one
    migration behind is still brought to the head."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'lopper.sqlite3'}"
    open_store(url).dispose()
    probe = (
        "import sys\n"
        "from service.store import open_store\n"
        f"store = open_store({url!r})\n"
        "print(store.current_revision() if 'alembic' in sys.modules else 'no alembic')\n"
    )

    def opened() -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    assert opened() == "no alembic"
    store = open_store(url, migrate=False)
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0008'"))
        connection.execute(text("DROP TABLE exchange_periods"))
    store.dispose()
    assert opened() == HEAD


def test_opening_a_migrated_store_again_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'again.sqlite3'}"
    first = open_store(url)
    with first.session() as session:
        session.add(Account(key="x:@a", platform="x", handle="@a", streams=[], created_at=NOW))
    first.dispose()

    second = open_store(url)
    try:
        with second.session() as session:
            assert session.scalars(select(Account.key)).all() == ["x:@a"]
        assert second.current_revision() == second.head_revision()
    finally:
        second.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "not a database url",
        "://nothing",
        "mysql://root@localhost/lopper",
        "postgresql+nosuchdriver://u@h/db",
    ],
)
def test_a_wrong_url_is_a_store_error(url: str) -> None:
    with pytest.raises(StoreError):
        open_store(url)


def test_an_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        open_store("postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2")


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite3"
    path.write_bytes(b"these are my notes, not a database\n" * 200)

    with pytest.raises(StoreError, match="not an SQLite database"):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes().startswith(b"these are my notes")


def test_a_state_directory_that_cannot_be_made_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{blocker / 'sub' / 'lopper.sqlite3'}")


# --- invariant 8: aware UTC only ---------------------------------------------------------


def test_a_naive_datetime_is_refused(store: Store) -> None:
    naive = datetime(2025, 6, 1, 12, 0)
    with pytest.raises(StatementError, match="naive"), store.session() as session:
        session.add(Account(key="x:@a", platform="x", handle="@a", streams=[], created_at=naive))
    with store.session() as session:
        assert session.scalars(select(Account)).all() == []
        with pytest.raises(StatementError, match="naive"):
            session.scalars(select(Account).where(Account.created_at > naive)).all()
    with pytest.raises(ValueError, match="naive"):
        to_epoch(naive)


def test_times_read_back_are_aware_utc_and_the_same_instant(store: Store) -> None:
    paris = timezone(timedelta(hours=2))
    written = datetime(2025, 6, 1, 14, 30, 5, tzinfo=paris)
    with store.session() as session:
        session.add(
            Account(
                key="x:@a",
                platform="x",
                handle="@a",
                streams=[],
                created_at=written,
                paused_at=None,
            )
        )

    with store.session() as session:
        account = session.scalars(select(Account)).one()
        raw = session.execute(text("SELECT created_at FROM accounts")).scalar_one()

    assert account.created_at == written
    assert account.created_at.utcoffset() == timedelta(0)
    assert account.created_at.tzinfo is UTC
    assert account.paused_at is None
    assert raw == int(written.timestamp())
