"""The daemon's pieces in-process: cron slots, what is due, the work queue, sd_notify."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import NOW

from service.config import Settings
from service.daemon import cron
from service.daemon import due as d
from service.daemon import queue as q
from service.daemon.notify import Notifier, watchdog_interval
from service.store import Store
from service.store.models import JobRun, JobState

LEASE = timedelta(seconds=30)


def settings(**schedule: object) -> Settings:
    return Settings.model_validate(
        {
            "version": 1,
            "accounts": [{"platform": "sandbox", "handle": "@a"}],
            "schedule": {"sync_jitter": "0s", **schedule},
        }
    )


# --- cron ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "weekday"),
    [("0 8 * * 0", 6), ("0 8 * * 7", 6), ("0 8 * * 1", 0), ("0 8 * * sun", 6), ("0 8 * * 5", 4)],
)
def test_weekday_numbers_mean_what_cron_means(expression: str, weekday: int) -> None:
    # APScheduler 3 reads 0 as Monday; cron reads 0 (and 7) as Sunday.
    fire = cron.next_fire(expression, "UTC", NOW)
    assert fire is not None and fire.weekday() == weekday


def test_weekday_ranges_starting_on_sunday() -> None:
    fires = []
    moment = NOW
    for _ in range(7):
        fire = cron.next_fire("0 8 * * 0-2", "UTC", moment)
        assert fire is not None
        fires.append(fire.weekday())
        moment = fire
    assert sorted(set(fires)) == [0, 1, 6]  # Sunday, Monday, Tuesday


def test_the_slot_is_the_last_fire_time_at_or_before_now_in_the_persons_zone() -> None:
    now = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)  # a Wednesday
    slot = cron.latest_fire("0 8 * * mon", "Europe/Paris", now)
    assert slot == datetime(2025, 6, 2, 6, 0, tzinfo=UTC)  # 08:00 in Paris (CEST)
    assert cron.latest_fire("0 8 * * mon", "Europe/Paris", slot) == slot
    assert cron.next_fire("0 8 * * mon", "Europe/Paris", slot) == slot + timedelta(days=7)
    assert cron.latest_fire("* * * * *", "UTC", now + timedelta(seconds=59)) == now
    assert cron.latest_fire("0 0 1 1 *", "UTC", now) == datetime(2025, 1, 1, tzinfo=UTC)


def test_a_bad_cron_expression_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="digest"):
        settings(digest="0 8 * * 9")
    with pytest.raises(ValueError):
        settings(digest="61 8 * * mon")


# --- what is due -------------------------------------------------------------------------------


def facts(
    runs: dict[str, d.LastRun | None] | None = None,
    last_sync: datetime | None = None,
    last_evaluated: datetime | None = None,
) -> d.AccountFacts:
    return d.AccountFacts("sandbox:@a", last_sync, last_evaluated, runs or {})


def due_of(job: str, dues: list[d.Due]) -> datetime | None:
    return next(item.at for item in dues if item.job == job)


def test_a_job_that_never_ran_is_due_now() -> None:
    dues = d.account_dues(facts(), settings(), NOW)
    assert due_of("sync", dues) == NOW
    assert due_of("execute", dues) == NOW
    assert due_of("evaluate", dues) is None  # nothing synced: nothing to evaluate


def test_the_next_sync_counts_from_the_last_start_and_a_sync_by_hand_postpones_it() -> None:
    started = NOW - timedelta(hours=1)
    done = d.LastRun(JobState.DONE, started, started + timedelta(minutes=5))
    dues = d.account_dues(facts({"sync": done}, last_sync=started), settings(), NOW)
    assert due_of("sync", dues) == started + timedelta(hours=6)
    by_hand = NOW - timedelta(minutes=10)
    dues = d.account_dues(facts({"sync": done}, last_sync=by_hand), settings(), NOW)
    assert due_of("sync", dues) == by_hand + timedelta(hours=6)


def test_a_week_off_makes_each_job_due_once_not_once_per_missed_interval() -> None:
    long_ago = NOW - timedelta(days=7)
    done = d.LastRun(JobState.DONE, long_ago, long_ago)
    dues = d.account_dues(
        facts({"sync": done, "execute": done}, last_sync=long_ago, last_evaluated=long_ago),
        settings(),
        NOW,
    )
    ready = [item for item in dues if item.ready(NOW)]
    assert sorted(item.job for item in ready) == ["execute", "sync"]


def test_an_interrupted_job_resumes_at_once_and_a_failed_one_waits_to_retry() -> None:
    started = NOW - timedelta(minutes=1)
    stopped = d.LastRun(JobState.INTERRUPTED, started, started)
    assert due_of("sync", d.account_dues(facts({"sync": stopped}), settings(), NOW)) == NOW
    failed = d.LastRun(JobState.FAILED, started, started)
    assert due_of("sync", d.account_dues(facts({"sync": failed}), settings(), NOW)) == (
        started + timedelta(minutes=15)
    )


def test_jitter_is_fixed_by_the_last_run_so_a_restart_rerolls_nothing() -> None:
    started = NOW - timedelta(hours=7)
    done = d.LastRun(JobState.DONE, started, started)
    config = settings(sync_jitter="30m")
    first = due_of("sync", d.account_dues(facts({"sync": done}), config, NOW))
    again = due_of("sync", d.account_dues(facts({"sync": done}), config, NOW))
    assert first == again
    assert first is not None
    assert started + timedelta(hours=6) <= first <= started + timedelta(hours=6, minutes=30)


def test_evaluation_follows_a_sync_it_has_not_seen() -> None:
    synced = NOW - timedelta(minutes=3)
    dues = d.account_dues(facts(last_sync=synced, last_evaluated=synced), settings(), NOW)
    assert due_of("evaluate", dues) is None
    dues = d.account_dues(
        facts(last_sync=synced, last_evaluated=synced - timedelta(hours=6)), settings(), NOW
    )
    assert due_of("evaluate", dues) == synced


def test_a_slot_before_the_first_start_is_not_mailed_and_a_made_one_not_again() -> None:
    config = settings(digest="0 8 * * mon")
    now = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
    monday = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
    fresh = d.digest_due(
        config, now, first_start=now - timedelta(hours=1), last=None, done_for_slot=False
    )
    assert not fresh.ready(now) and fresh.at == monday + timedelta(days=7)
    overdue = d.digest_due(
        config, now, first_start=now - timedelta(days=30), last=None, done_for_slot=False
    )
    assert overdue.ready(now) and overdue.slot == monday  # the latest slot only, once
    made = d.digest_due(
        config, now, first_start=now - timedelta(days=30), last=None, done_for_slot=True
    )
    assert not made.ready(now)


# --- the work queue, on both databases -----------------------------------------------------


@pytest.mark.postgres
def test_a_job_is_queued_once_and_an_account_runs_one_job_at_a_time(store: Store) -> None:
    assert q.enqueue(store, "sync", "sandbox:@a", NOW, None)
    assert not q.enqueue(store, "sync", "sandbox:@a", NOW, None)  # already queued
    assert q.enqueue(store, "execute", "sandbox:@a", NOW, None)
    assert q.enqueue(store, "sync", "sandbox:@b", NOW, None)
    first = q.claim(store, "one", lambda: NOW, LEASE)
    assert first is not None and (first.job, first.account) == ("sync", "sandbox:@a")
    assert not q.enqueue(store, "sync", "sandbox:@a", NOW, None)  # running
    second = q.claim(store, "two", lambda: NOW, LEASE)
    # @a is busy with its sync: its execute waits; @b's sync goes.
    assert second is not None and second.account == "sandbox:@b"
    assert q.claim(store, "two", lambda: NOW, LEASE) is None
    assert q.finish(store, first, "one", JobState.DONE, NOW, None)
    third = q.claim(store, "two", lambda: NOW, LEASE)
    assert third is not None and (third.job, third.account) == ("execute", "sandbox:@a")


@pytest.mark.postgres
def test_a_lapsed_lease_frees_the_job_and_its_late_worker_cannot_record_it(store: Store) -> None:
    q.enqueue(store, "sync", "sandbox:@a", NOW, None)
    work = q.claim(store, "dead", lambda: NOW, LEASE)
    assert work is not None
    assert q.renew(store, "dead", NOW + timedelta(seconds=20), LEASE) == 1
    assert q.reap(store, NOW + timedelta(seconds=40)) == 0  # renewed: still held
    assert q.reap(store, NOW + timedelta(seconds=51)) == 1
    assert not q.finish(store, work, "dead", JobState.DONE, NOW + timedelta(minutes=1), None)
    with store.session() as session:
        row = session.get_one(JobRun, work.id)
        assert row.state is JobState.INTERRUPTED
    assert q.enqueue(store, "sync", "sandbox:@a", NOW + timedelta(minutes=1), None)


@pytest.mark.postgres
def test_the_first_start_is_written_once(store: Store) -> None:
    first = q.set_fact(store, q.FIRST_START, NOW.isoformat(), NOW, only_once=True)
    later = NOW + timedelta(days=3)
    assert q.set_fact(store, q.FIRST_START, later.isoformat(), later, only_once=True) == first


def test_sqlite_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    first = q.SqliteLock(tmp_path / "db.sqlite3.lock")
    first.acquire("db.sqlite3")
    second = q.SqliteLock(tmp_path / "db.sqlite3.lock")
    with pytest.raises(q.AlreadyRunning, match=f"pid {os.getpid()}"):
        second.acquire("db.sqlite3")
    first.release()
    second.acquire("db.sqlite3")
    second.release()


@pytest.mark.postgres
def test_one_leader_per_database(backend: str, make_store: Callable[[], Store]) -> None:
    if backend != "postgresql":
        pytest.skip("leadership by advisory lock is PostgreSQL's")
    store = make_store()
    one, two = q.PostgresLeader(store), q.PostgresLeader(store)
    assert one.try_lead() and one.try_lead()
    assert not two.try_lead()
    one.release()
    assert two.try_lead()
    two.release()


# --- systemd's notify protocol -----------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifications_reach_the_socket(tmp_path: Path, abstract: bool) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"lopper-test-{os.getpid()}-{tmp_path.name}"
    address = "\0" + name if abstract else str(tmp_path / "notify")
    listener.bind(address)
    listener.settimeout(2)
    notifier = Notifier("@" + name if abstract else address)
    assert notifier.ready("loaded")
    assert listener.recv(4096).decode().splitlines()[:2] == ["READY=1", "STATUS=loaded"]
    notifier.watchdog()
    assert listener.recv(4096) == b"WATCHDOG=1"
    notifier.close()
    listener.close()


def test_without_a_socket_notifications_do_nothing() -> None:
    assert not Notifier("").ready("x")


def test_watchdog_interval_is_half_the_timeout_for_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == timedelta(seconds=2)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None
