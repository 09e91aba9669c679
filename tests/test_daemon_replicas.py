"""Two daemons on one PostgreSQL database: no job runs twice at once, no removal twice."""

from __future__ import annotations

import itertools
import signal
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from daemon_helpers import Running, environment, prepared_store, runs, wait_for, write_config
from sqlalchemy import func, select

from service.app import App
from service.model import Channel, RemovalState, SuggestionState
from service.store.models import AuditEntry, JobRun, Removal, Suggestion
from service.suggestions import decide

ACCOUNTS = ["@a", "@b", "@c"]


def _overlaps(rows: list[JobRun]) -> list[tuple[int, int]]:
    spans = sorted((r.started_at, r.finished_at, r.id) for r in rows if r.started_at is not None)
    found = []
    for (_s1, end1, id1), (start2, _e2, id2) in itertools.pairwise(spans):
        if end1 is None or start2 < end1:
            found.append((id1, id2))
    return found


@pytest.mark.postgres
def test_two_daemons_share_the_work_and_never_double_it(
    tmp_path: Path, postgres_schemas, monkeypatch: pytest.MonkeyPatch
) -> None:
    if postgres_schemas is None:
        pytest.skip("LOPPER_TEST_DATABASE_URL is not set")
    url = postgres_schemas.fresh(0)
    config = write_config(
        tmp_path / "config.yaml",
        url,
        tmp_path / "outbox",
        accounts=ACCOUNTS,
        size=150,
        schedule={"sync_every": "0.5s", "execute_every": "0.2s"},
    )
    store = prepared_store(url)

    # The person's decisions, made before the daemons start: eight removals per account.
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "setup"))
    app = App.load(config)
    for account in app.accounts():
        app.sync(account)
        app.evaluate(account)
    with store.session() as session:
        pending = [
            suggestion_id
            for account_id in (1, 2, 3)
            for suggestion_id in session.scalars(
                select(Suggestion.id)
                .where(
                    Suggestion.state == SuggestionState.PENDING,
                    Suggestion.account_id == account_id,
                )
                .order_by(Suggestion.id)
                .limit(8)
            )
        ]
    assert len(pending) == 24
    decide(store, pending, SuggestionState.CONFIRMED, via=Channel.CLI, now=app.clock())
    app.close()

    # Two machines: each its own state folder, one database.
    daemons = [
        Running(config, environment(tmp_path / name), tmp_path / f"{name}.log")
        for name in ("one", "two")
    ]

    def removed() -> int:
        with store.session() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(Suggestion)
                    .where(Suggestion.state == SuggestionState.REMOVED)
                )
                or 0
            )

    for daemon in daemons:
        wait_for(
            lambda d=daemon: d.process.poll() is None and "daemon started" in d.text(),
            "start",
            process=daemon,
        )
    wait_for(
        lambda: removed() == len(pending), "every confirmed removal", timeout=60, process=daemons[0]
    )
    synced = lambda: all(  # noqa: E731
        sum(1 for r in runs(store, "sync", None) if r.account == f"sandbox:{h}" and r.finished_at)
        >= 3
        for h in ACCOUNTS
    )
    wait_for(synced, "a few syncs of every account", timeout=60, process=daemons[1])
    for daemon in daemons:
        daemon.signal(signal.SIGTERM)
    codes = [daemon.stop() for daemon in daemons]
    assert codes == [0, 0], "\n".join(daemon.text()[-3000:] for daemon in daemons)

    every = runs(store)
    by_account: dict[str, list[JobRun]] = defaultdict(list)
    for row in every:
        by_account[row.account or row.job].append(row)
    for key, rows in by_account.items():
        assert _overlaps(rows) == [], f"{key}: two jobs ran at once"
    # Both daemons took work.
    assert len({r.instance for r in every if r.instance}) == 2
    assert sum(1 for r in every if r.job == "execute" and r.state.value == "done") >= 2

    with store.session() as session:
        done = Counter(
            session.scalars(select(Removal.suggestion_id).where(Removal.state == RemovalState.DONE))
        )
        audited = Counter(
            session.scalars(
                select(AuditEntry.entity_id).where(
                    AuditEntry.entity == "suggestion", AuditEntry.to_state == "removed"
                )
            )
        )
    assert set(done) == set(pending) and set(done.values()) == {1}
    assert set(audited) == set(pending) and set(audited.values()) == {1}
    store.dispose()
