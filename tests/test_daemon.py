"""The real daemon (``lopper run``) as a subprocess on a sandbox account, fast schedule."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemon_helpers import (
    ROOT,
    Running,
    environment,
    prepared_store,
    runs,
    wait_for,
    write_config,
)
from digest_site import free_port
from sqlalchemy import func, select
from typer.testing import CliRunner

from service.app import App
from service.cli import app as cli_app
from service.store import Store
from service.store.models import (
    Account,
    Connection,
    Digest,
    Interaction,
    JobState,
    SyncCursor,
    SyncRun,
)

DONE = JobState.DONE


def done(store: Store, job: str, after: int = 0) -> bool:
    return any(r.id > after for r in runs(store, job, DONE))


def digests(store: Store) -> int:
    with store.session() as session:
        return (
            session.scalar(select(func.count()).select_from(Digest).where(Digest.slot.is_not(None)))
            or 0
        )


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, str, Path, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'state' / 'lopper.sqlite3'}"
    outbox = tmp_path / "outbox"
    config = write_config(tmp_path / "config.yaml", url, outbox, failing=True)
    return config, url, outbox, environment(tmp_path)


def test_syncs_evaluates_mails_one_overdue_digest_refuses_a_second_and_stops_on_sigterm(
    setup, tmp_path
):
    config, url, outbox, env = setup
    # Installed a month ago: the last weekly slots passed while it was off.
    store = prepared_store(url, first_start=datetime.now(UTC) - timedelta(days=30))
    daemon = Running(config, env, tmp_path / "run-1.log")
    wait_for(
        lambda: done(store, "sync") and done(store, "evaluate"),
        "a sync and an evaluation",
        process=daemon,
    )
    wait_for(lambda: done(store, "digest"), "the digest", process=daemon)
    wait_for(lambda: list(outbox.glob("*.eml")), "the digest file", process=daemon)
    # With SQLite, a second daemon on the same database refuses to start.
    second = subprocess.run(
        [sys.executable, "-m", "service", "--config", str(config), "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 75
    assert "already using" in second.stderr and "PostgreSQL" in second.stderr
    assert daemon.process.poll() is None
    assert daemon.stop() == 0

    with store.session() as session:
        account = session.scalar(select(Account))
        assert account is not None and account.last_evaluated_at is not None
    # Each evaluation follows a sync it had not seen.
    first_sync = min(r.finished_at for r in runs(store, "sync", DONE))
    assert all(r.started_at >= first_sync for r in runs(store, "evaluate", DONE))
    # Four weekly slots were missed; only the latest is made, once.
    assert digests(store) == 1
    assert len(list(outbox.glob("*.eml"))) == 1

    lines = daemon.lines()
    started = [line for line in lines if line.get("event") == "job started"]
    finished = [line for line in lines if line.get("event") == "job finished"]
    assert {line["job"] for line in started} >= {"sync", "evaluate", "execute", "digest"}
    sync_end = next(
        line for line in finished if line["job"] == "sync" and line["account"] == "sandbox:@you"
    )
    assert sync_end["account"] == "sandbox:@you" and sync_end["outcome"] == "done"
    assert isinstance(sync_end["duration_s"], float) and sync_end["run_id"]
    assert sync_end["run_id"] in {line["run_id"] for line in started if line["job"] == "sync"}
    # One line per job start and end, no per-item lines at INFO.
    assert len(lines) < 12 * len(started) + 10

    # The account that cannot run failed on its own; the other went on. `lopper status`
    # says so, with the next runs and the digest made.
    failed = [
        r
        for r in runs(store, "sync")
        if r.account == "mastodon:@you@example.social" and r.state is JobState.FAILED
    ]
    assert failed
    assert not [
        r for r in runs(store, "sync") if r.state is JobState.DONE and "mastodon" in r.account
    ]
    assert "LOPPER_TEST_UNSET_TOKEN" in (failed[0].detail or "")
    shown = CliRunner().invoke(cli_app, ["--config", str(config), "status", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    report = {entry["account"]: entry for entry in json.loads(shown.stdout)["accounts"]}
    broken, working = report["mastodon:@you@example.social"], report["sandbox:@you"]
    assert broken["last_error"]["job"] in ("sync", "execute")
    assert "LOPPER_TEST_UNSET_TOKEN" in broken["last_error"]["detail"]
    assert working["last_error"] is None
    assert set(working["next_runs"]) == {"sync", "evaluate", "execute"}
    next_sync = datetime.fromisoformat(working["next_runs"]["sync"])
    assert next_sync <= datetime.now(UTC) + timedelta(seconds=2)  # sync_every: 1s
    assert working["last_digest"]["slot"] and working["next_digest"]

    # A restart after the digest went out sends no second one.
    last = max(r.id for r in runs(store))
    again = Running(config, env, tmp_path / "run-2.log")
    wait_for(lambda: done(store, "execute", after=last), "a run after the restart", process=again)
    wait_for(lambda: done(store, "deliver", after=last), "a delivery round", process=again)
    assert again.stop() == 0
    assert digests(store) == 1
    assert len(list(outbox.glob("*.eml"))) == 1
    store.dispose()


def _counts(store: Store, cutoff: datetime) -> dict[str, object]:
    with store.session() as session:
        events = set(
            session.scalars(select(Interaction.event_id).where(Interaction.occurred_at <= cutoff))
        )
        connections = session.scalar(select(func.count()).select_from(Connection)) or 0
        following = session.scalar(
            select(func.count()).select_from(Connection).where(Connection.following)
        )
    return {"events": events, "connections": connections, "following": following}


def test_sigterm_and_sigkill_in_the_middle_of_a_sync_then_a_restart_equal_an_uninterrupted_run(
    tmp_path, monkeypatch
):
    url = f"sqlite:///{tmp_path / 'state' / 'lopper.sqlite3'}"
    config = write_config(
        tmp_path / "config.yaml",
        url,
        tmp_path / "outbox",
        # About 140,000 exchanges: a sync writes them in seven batches or more
        # (service.sync.BATCH_EXCHANGES), so each daemon is caught with some written.
        size=1200,
        events=480.0,
        schedule={"sync_every": "1h"},
    )
    env = environment(tmp_path)
    store = prepared_store(url)

    def cursor() -> str | None:
        with store.session() as session:
            return session.scalar(select(SyncCursor.cursor).where(SyncCursor.stream == "activity"))

    def mid_sync(after: str | None = None) -> bool:
        with store.session() as session:
            running = session.scalar(select(SyncRun).where(SyncRun.outcome == "running"))
        now_at = cursor()
        return running is not None and now_at is not None and now_at != after

    # SIGTERM half-way: the page in hand is committed or rolled back, and the process
    # leaves at once with status 0.
    daemon = Running(config, env, tmp_path / "stopped.log")
    wait_for(mid_sync, "a sync half-way through", process=daemon)
    assert daemon.stop(timeout=10) == 0
    stopped_at = cursor()
    with store.session() as session:
        run = session.scalar(select(SyncRun))
        assert run is not None and run.outcome == "failed" and "interrupted" in (run.detail or "")
    assert [r.state for r in runs(store, "sync")] == [JobState.INTERRUPTED]

    # SIGKILL half-way through the resumed sync.
    daemon = Running(config, env, tmp_path / "killed.log")
    wait_for(lambda: mid_sync(stopped_at), "the resumed sync half-way through", process=daemon)
    daemon.kill()
    with store.session() as session:
        assert session.scalars(select(SyncRun.outcome)).all()[-1] == "running"  # killed mid-sync

    again = Running(config, env, tmp_path / "restarted.log")
    wait_for(
        lambda: done(store, "sync") and done(store, "evaluate"), "the resumed sync", process=again
    )
    assert again.stop() == 0
    states = [r.state for r in runs(store, "sync")]
    assert states[:3] == [JobState.INTERRUPTED, JobState.INTERRUPTED, JobState.DONE]

    # The same network synced in one go, into a store of its own.
    other = tmp_path / "reference"
    other.mkdir()
    reference_url = f"sqlite:///{other / 'state' / 'lopper.sqlite3'}"
    reference_config = write_config(
        other / "config.yaml", reference_url, other / "outbox", size=1200, events=480.0
    )
    monkeypatch.setenv("STATE_DIRECTORY", str(other / "state"))
    reference_app = App.load(reference_config)
    assert reference_app.sync(reference_app.accounts()[0]).outcome == "ok"
    reference_app.close()
    reference = prepared_store(reference_url)
    with store.session() as session, reference.session() as ref_session:
        cutoff = min(
            session.scalar(select(Account.last_sync_at)),
            ref_session.scalar(select(Account.last_sync_at)),
        )
    cutoff -= timedelta(seconds=1)  # both runs hold every event up to here
    resumed, uninterrupted = _counts(store, cutoff), _counts(reference, cutoff)
    assert len(resumed["events"]) > 10_000
    assert resumed == uninterrupted
    store.dispose()
    reference.dispose()


def test_a_bad_configuration_exits_78_and_a_bad_reload_keeps_the_old_one(setup, tmp_path):
    config, url, outbox, env = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nschedule: {sync_every: soon}\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "service", "--config", str(bad), "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 78
    assert "sync_every" in result.stderr

    store = prepared_store(url)
    daemon = Running(config, env, tmp_path / "reload.log")
    wait_for(lambda: done(store, "sync"), "a first sync", process=daemon)
    good = config.read_text(encoding="utf-8")
    config.write_text(good.replace('sync_every: "1s"', 'sync_every: "whenever"'), encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "configuration refused" in daemon.text(), "the refusal", process=daemon)
    last = max(r.id for r in runs(store))
    wait_for(lambda: done(store, "sync", after=last), "syncs going on", process=daemon)

    write_config(config, url, outbox, accounts=["@you", "@other"])
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in daemon.text(), "the reload", process=daemon)
    wait_for(
        lambda: any(r.account == "sandbox:@other" for r in runs(store, "sync", DONE)),
        "the new account's sync",
        process=daemon,
    )
    assert daemon.stop() == 0
    refused = next(
        line for line in daemon.lines() if line.get("event", "").startswith("configuration refused")
    )
    assert refused["level"] == "error" and "sync_every" in refused["problem"]
    store.dispose()


def test_the_demo_ends_with_the_daemon_at_work_until_ctrl_c(tmp_path):
    env = environment(tmp_path)
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        # A free port for the review page: 8470 may be in use on the machine.
        [
            sys.executable,
            "-m",
            "service",
            "demo",
            "--size",
            "200",
            "--run",
            "--port",
            str(free_port()),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    text = lambda: (tmp_path / "demo.log").read_text(errors="replace")  # noqa: E731
    try:
        wait_for(
            lambda: "job finished" in text() and "execute" in text(), "the demo's daemon at work"
        )
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(timeout=10)
        log.close()
    assert code == 0, text()[-2000:]
    assert "Ctrl-C" in text()
    # The demo's own evaluation ran in the same process: its run is not the daemon's.
    started = [json.loads(line) for line in text().splitlines() if '"daemon started"' in line]
    assert len(started) == 1 and "run_id" not in started[0] and "job" not in started[0]


def test_a_database_server_that_is_away_at_start_is_worth_a_restart(tmp_path):
    """Not 78 (a bad configuration, which systemd must not restart) but 69: try again later."""
    away = "postgresql+psycopg://lopper@127.0.0.1:1/lopper"
    config = write_config(tmp_path / "config.yaml", away, tmp_path / "outbox")
    result = CliRunner().invoke(
        cli_app, ["--config", str(config), "run"], env=environment(tmp_path)
    )
    assert result.exit_code == 69
    assert "cannot open the database" in result.stderr
