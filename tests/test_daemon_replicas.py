"""Replicas on one PostgreSQL database: no job runs twice at once, no removal twice, and a
killed replica's job runs again on another one about a lease later."""

from __future__ import annotations

import itertools
import signal
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import Running, environment, prepared_store, runs, wait_for, write_config
from fakes.mastodon_server import TOKEN, FakeMastodon, NetworkSize, generate
from sqlalchemy import func, select

from service.app import App
from service.daemon import queue as q
from service.daemon.runner import Daemon
from service.model import Channel, RemovalState, SuggestionState
from service.store.models import AuditEntry, JobRun, JobState, Removal, Suggestion
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


LEASE, POLL = 2.0, 0.2  # seconds: schedule.lease and schedule.poll_every of the tests below
TAKEOVER_SLACK = 6.0  # seconds beyond a lease and two polls, for a loaded 2-core machine
HOURLY = {
    "sync_every": "1h",
    "execute_every": "1h",
    "deliver_every": "1h",
    "lease": f"{LEASE}s",
    "poll_every": f"{POLL}s",
}


def _instance(daemon: Running) -> str | None:
    for line in daemon.lines():
        if line.get("event") == "daemon started":
            return str(line["instance"])
    return None


def _mastodon(seed: int, size: NetworkSize, latency: float) -> FakeMastodon:
    fake = FakeMastodon(lambda: datetime.now(UTC), rate_limit=100_000)
    generate(fake, size, now=datetime.now(UTC), seed=seed)
    fake.latency = latency
    return fake.start()


def test_the_leader_plans_again_when_a_lease_lapses(tmp_path: Path) -> None:
    """However far off the next due work, the leader plans (and reaps) when a lease lapses."""
    url = f"sqlite:///{tmp_path / 'lopper.sqlite3'}"
    config = write_config(tmp_path / "config.yaml", url, tmp_path / "outbox", schedule=HOURLY)
    app = App.load(config)
    daemon = Daemon(app, instance="here:1")
    now = datetime.now(UTC).replace(microsecond=0)  # the store keeps whole seconds on SQLite
    daemon._first_start = now
    assert q.enqueue(app.store, "sync", "sandbox:@you", now, None)
    work = q.claim(app.store, "elsewhere:2", lambda: now, timedelta(seconds=LEASE))
    assert work is not None and work.job == "sync"
    # Leases are kept in whole seconds: one has lapsed once the clock is a second past it.
    lapse = now + timedelta(seconds=LEASE + 1)

    assert daemon._plan(now) == lapse  # not the next digest, days away
    assert daemon._plan(lapse - timedelta(milliseconds=1)) == lapse  # held still

    daemon._plan(lapse)  # lapsed: the sync is released and queued again
    with app.store.session() as session:
        rows = list(session.scalars(select(JobRun).where(JobRun.job == "sync")))
    assert [(r.state, r.instance) for r in rows] == [
        (JobState.INTERRUPTED, "elsewhere:2"),
        (JobState.QUEUED, None),
    ]
    app.close()


@pytest.mark.postgres
def test_a_killed_replica_s_job_runs_again_on_another_within_a_lease(
    tmp_path: Path, postgres_schemas
) -> None:
    """Three replicas share six Mastodon accounts; the one in the long sync is SIGKILLed.

    Five small accounts sync and evaluate at once; the sixth has a network large enough to
    take many seconds. Its replica is killed once the rest is done: the sync stays "running"
    under the dead replica's lease until the lease lapses; then the leader (a survivor, or a
    new one if the dead replica led) reaps it and queues it again, and a survivor runs it to
    the end. Nothing else is due for an hour (sync, execute and outbox every hour), so only
    the lapse of the lease can bring the job back in time.
    """
    if postgres_schemas is None:
        pytest.skip("LOPPER_TEST_DATABASE_URL is not set")
    url = postgres_schemas.fresh(0)
    small = NetworkSize(
        following=40, followers=40, mutual=20, notifications=80, statuses=20, favourites=20
    )
    large = NetworkSize(
        following=640, followers=640, mutual=320, notifications=1280, statuses=320, favourites=320
    )
    # About 8 requests a small sync, 55 the large one: a second or two against ten or more.
    fakes = [_mastodon(seed, small, 0.05) for seed in range(5)] + [_mastodon(5, large, 0.1)]
    handles = [f"@me{seed}@example.social" for seed in range(len(fakes))]
    keys = [f"mastodon:{h}" for h in handles]
    config = write_config(
        tmp_path / "config.yaml",
        url,
        tmp_path / "outbox",
        mastodon=[(h, f.url, TOKEN) for h, f in zip(handles, fakes, strict=True)],
        removal_spacing="0s",
        schedule=HOURLY,
    )
    store = prepared_store(url)
    daemons = [
        Running(config, environment(tmp_path / name), tmp_path / f"{name}.log")
        for name in ("one", "two", "three")
    ]
    try:
        names = [wait_for(lambda d=d: _instance(d), "start", process=d) for d in daemons]
        by_instance = dict(zip(names, daemons, strict=True))
        assert len(by_instance) == 3

        def caught() -> JobRun | None:
            # The small accounts are synced and evaluated; the large one's sync runs under
            # a lease that its replica holds.
            evaluated = {r.account for r in runs(store, "evaluate", JobState.DONE)}
            if not set(keys[:-1]) <= evaluated:
                return None
            now = datetime.now(UTC)
            for row in runs(store, "sync", JobState.RUNNING):
                if (
                    row.account == keys[-1]
                    and row.instance in by_instance
                    and row.lease_until is not None
                    and row.lease_until > now
                ):
                    return row
            return None

        victim = wait_for(
            caught,
            "the small accounts done, the large one's sync running",
            timeout=60,
            process=daemons[0],
        )
        dead = by_instance[victim.instance]
        dead.kill()
        killed_at = datetime.now(UTC)
        leading = any(line.get("event", "").startswith("leading") for line in dead.lines())
        survivors = [d for d in daemons if d is not dead]
        (still,) = [r for r in runs(store, "sync") if r.id == victim.id]
        assert still.state is JobState.RUNNING, "the sync ended before the kill"
        lease_until = still.lease_until
        assert lease_until is not None and lease_until <= killed_at + timedelta(seconds=LEASE)

        def taken_over() -> JobRun | None:
            return next(
                (
                    r
                    for r in runs(store, "sync")
                    if r.account == victim.account and r.id > victim.id and r.finished_at
                ),
                None,
            )

        again = wait_for(
            taken_over, "the sync to run again and finish", timeout=90, process=survivors[0]
        )
        assert again.state is JobState.DONE, again.detail
        assert again.instance in by_instance and by_instance[again.instance] in survivors
        (reaped,) = [r for r in runs(store, "sync") if r.id == victim.id]
        assert reaped.state is JobState.INTERRUPTED and reaped.instance == victim.instance
        assert again.started_at is not None and again.started_at >= lease_until, (
            "the job ran again while the dead replica's lease still held"
        )
        bound = timedelta(seconds=LEASE + 2 * POLL + TAKEOVER_SLACK)
        delay = again.started_at - killed_at
        assert delay <= bound, (
            f"taken over {delay.total_seconds():.1f} s after the kill; the bound is a lease "
            f"({LEASE} s) + two polls ({2 * POLL} s) + {TAKEOVER_SLACK} s of slack "
            f"(the killed replica {'led' if leading else 'did not lead'})"
        )
        assert {r.account for r in runs(store, "sync", JobState.DONE)} == set(keys)

        for daemon in survivors:
            daemon.signal(signal.SIGTERM)
        codes = [daemon.stop(timeout=20) for daemon in survivors]
        assert codes == [0, 0], "\n".join(d.text()[-3000:] for d in survivors)
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.kill()
        for fake in fakes:
            fake.stop()

    by_account: dict[str, list[JobRun]] = defaultdict(list)
    for row in runs(store):
        by_account[row.account or row.job].append(row)
    for key, rows in by_account.items():
        assert _overlaps(rows) == [], f"{key}: two jobs ran at once"
    store.dispose()


def test_a_job_that_ends_while_the_leader_plans_is_not_queued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica's evaluation finishes between the leader's reads of what is due and
    of what is active: it must not be queued again at once (it was, with the reads the
    other way round: due by the facts read before, no longer active by the read after)."""
    from service.daemon import due as d

    url = f"sqlite:///{tmp_path / 'lopper.sqlite3'}"
    config = write_config(tmp_path / "config.yaml", url, tmp_path / "outbox", schedule=HOURLY)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    app = App.load(config)
    account = app.accounts()[0]
    app.sync(account)  # evaluation is now due
    daemon = Daemon(app, instance="here:1")
    now = datetime.now(UTC)
    daemon._first_start = now
    assert q.enqueue(app.store, "evaluate", account.key, now, None)
    work = q.claim(app.store, "elsewhere:2", lambda: now, timedelta(minutes=1))
    assert work is not None and work.job == "evaluate"
    read_dues = d.all_dues

    def evaluation_ends_meanwhile(*args: Any, **kwargs: Any) -> list[d.Due]:
        dues = read_dues(*args, **kwargs)
        app.evaluate(account)  # the other replica's run, recorded, then finished
        assert q.finish(app.store, work, "elsewhere:2", JobState.DONE, app.clock(), None)
        return dues

    monkeypatch.setattr(d, "all_dues", evaluation_ends_meanwhile)
    daemon._plan(now)
    with app.store.session() as session:
        evaluations = list(session.scalars(select(JobRun).where(JobRun.job == "evaluate")))
    assert [r.state for r in evaluations] == [JobState.DONE]
    app.close()
