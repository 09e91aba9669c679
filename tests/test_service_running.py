"""`lopper status` knows whether the service runs on the database: SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from service.daemon.queue import PostgresLeader, SqliteLock, service_running
from service.store import Store


def test_the_running_service_is_seen_through_its_own_lock(store: Store) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    assert service_running(store, url) is None
    if store.dialect == "sqlite":
        database = store.engine.url.database or ""
        lock = SqliteLock(Path(f"{database}.lock"))  # what `lopper run` takes at start
        lock.acquire(database)
    else:
        lock = PostgresLeader(store)  # the replica that leads
        assert lock.try_lead()
    try:
        assert service_running(store, url) is not None
    finally:
        lock.release()
    assert service_running(store, url) is None
