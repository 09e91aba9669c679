"""``lopper run``: the scheduler in the foreground, its signals, and systemd's protocol.

One APScheduler 3 ``BackgroundScheduler`` with an in-memory job store and three jobs of
its own (nothing of it is persisted, so nothing of it can go stale):

- ``tick`` (every ``poll_every``, and sooner when something comes due or a job ends): the
  leader reads from the store what is due and queues it; every daemon renews its leases
  and claims queued work for its free workers;
- one one-shot job per claimed unit of work, on the worker pool;
- ``watchdog``: ``WATCHDOG=1`` from an executor of its own, so that a long sync never
  starves it; it is withheld while a tick hangs (longer than four polls, and at least
  ``TICK_HANG`` seconds), and a scheduler that hangs as a whole stops it too: either way
  systemd restarts the service.

SIGTERM and SIGINT stop it: a running sync stops after the page in hand, once the pages it
has read are written (a few per transaction), removals stop between two, and the process
exits 0. SIGHUP reloads the configuration; a bad new one is refused and the old one stays in
force.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import make_url

from service.app import AccountSkipped, App
from service.daemon import due as d
from service.daemon import queue as q
from service.daemon.notify import Notifier, watchdog_interval
from service.digest import deliver_outbox, queue_digest
from service.digest.outbox import prune_sent, release_claims
from service.errors import ConfigError, LopperError
from service.logs import bind_run, clear_context, get_logger, scrub
from service.store.models import JobState

if TYPE_CHECKING:
    from service.web import ReviewServer

log = get_logger("lopper.daemon")

STOP_TIMEOUT = 8.0  # seconds a job has to stop after SIGTERM (systemd waits TimeoutStopSec)
PRUNE_AFTER = timedelta(days=30)
KEEP_SENT_DIGESTS = timedelta(days=90)  # then only their message is cleared
TICK_HANG = 5.0  # seconds: a tick running longer than this (and four polls) has hung
PLAN_EVERY = timedelta(minutes=1)


class Stopping(Exception):
    """Raised inside a job (between two pages or two removals) once the daemon stops."""


def _start_web(app: App) -> ReviewServer | None:
    """The review page, when the configuration enables it; the daemon runs on without it."""
    if not app.settings.web.enabled:
        return None
    # Imported here: Werkzeug is only loaded where the page is served.
    from service import web

    try:
        return web.start(app)
    except (web.WebUnavailable, OSError) as exc:
        log.error(
            "review page not started",
            error=scrub(str(exc)),
            detail="the daemon runs on without it: syncs, removals and digests go on; the "
            "digest's links open nothing until the page is served",
        )
        return None


def _give_back_memory() -> None:
    """Between jobs, hand freed heap back to the system (an idle daemon stays small).

    A sync leaves many freed small blocks inside glibc's heap, which keeps them as resident
    memory until told otherwise; ``malloc_trim`` does that. Elsewhere it does nothing.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _quiet_tick_overlap(record: logging.LogRecord) -> bool:
    """Drop "skipped: maximum number of running instances" for the tick: it is by design.

    A tick that is still running when the next one comes round needs no second copy; the
    running one looks again before it ends (see ``_kick``).
    """
    return not (
        "Daemon._tick" in record.getMessage() and "maximum number of running" in record.getMessage()
    )


@dataclass
class Daemon:
    app: App
    notifier: Notifier = field(default_factory=Notifier)
    instance: str = field(default_factory=q.instance_name)

    def __post_init__(self) -> None:
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._reload = False
        self._lock = threading.Lock()
        self._running: dict[int, q.Work] = {}
        self._started: set[int] = set()
        self._idle = threading.Condition(self._lock)
        self._leadership: q.Leadership | None = None
        self._sqlite_lock: q.SqliteLock | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._web: ReviewServer | None = None
        self._first_start: datetime | None = None
        self._last_prune: datetime | None = None
        self._status = ""
        self._ticking = False
        self._tick_since: float | None = None  # when the running tick began (monotonic)
        self._withheld = False  # watchdog pings withheld: a tick has hung
        self._again = False
        self._upcoming: d.Due | None = None
        self._replan = True
        self._plan_at: datetime | None = None

    # -- time ------------------------------------------------------------------------------

    def now(self) -> datetime:
        now: datetime = self.app.clock()
        return now

    # -- start and stop --------------------------------------------------------------------

    def start(self) -> None:
        """Open the store, take the lock or join the replicas, load the schedule."""
        # What ran before in this thread (the demo's own sync and evaluation) bound its run
        # to the log context; the daemon's own lines belong to no run.
        clear_context()
        # APScheduler logs every run of every job at INFO; the job lines below replace that.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        logging.getLogger("apscheduler.scheduler").addFilter(_quiet_tick_overlap)
        store = self.app.store  # migrates; a StoreError ends the start with exit code 78
        url = make_url(self.app.database_url)
        if store.dialect == "sqlite":
            database = url.database or ":memory:"
            self._sqlite_lock = q.SqliteLock(Path(f"{database}.lock"))
            self._sqlite_lock.acquire(database)
            self._leadership = self._sqlite_lock
            # Alone on this database: whatever was running died with its process.
            q.reap(store, self.now(), everything=True)
            release_claims(store)
        else:
            self._leadership = q.PostgresLeader(store)
            self._leadership.try_lead()
        now = self.now()
        stored = q.set_fact(store, q.FIRST_START, now.isoformat(), now, only_once=True)
        self._first_start = datetime.fromisoformat(stored)
        self._web = _start_web(self.app)
        schedule = self.app.settings.schedule
        self._scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(schedule.workers),
                "control": ThreadPoolExecutor(1),
                "watchdog": ThreadPoolExecutor(1),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._scheduler.add_job(
            self._tick,
            "interval",
            seconds=schedule.poll_every.total_seconds(),
            id="tick",
            executor="control",
            next_run_time=datetime.now(UTC),
        )
        interval = watchdog_interval()
        if interval is not None and self.notifier.enabled:
            self._scheduler.add_job(
                self._watchdog,
                "interval",
                seconds=interval.total_seconds(),
                id="watchdog",
                executor="watchdog",
                next_run_time=datetime.now(UTC),
            )
        self._scheduler.start()
        role = "leading" if self._leadership.leading else "standing by"
        self._set_status(f"running, {role}: {len(self.app.accounts())} account(s)")
        self.notifier.ready(self._status)
        log.info(
            "daemon started",
            instance=self.instance,
            accounts=[a.key for a in self.app.accounts()],
            database=url.render_as_string(hide_password=True),
            leading=self._leadership.leading,
            web=self._web.url if self._web is not None else None,
            watchdog=interval.total_seconds() if interval else None,
        )

    def stop(self) -> bool:
        """Stop the schedule, let running jobs end their page, release everything.

        Returns False when a job did not stop in time (the caller exits anyway: what it had
        not committed rolls back, and the job runs again after the next start).
        """
        self.notifier.stopping()
        log.info("daemon stopping", running=len(self._running))
        self.stop_event.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        with self._idle:
            # Claimed, but the scheduler stopped before handing them to a worker.
            unstarted = [w for w in self._running.values() if w.id not in self._started]
        for work in unstarted:
            with contextlib.suppress(Exception):
                q.finish(
                    self.app.store,
                    work,
                    self.instance,
                    JobState.INTERRUPTED,
                    self.now(),
                    "stopped before it started",
                )
            with self._idle:
                self._running.pop(work.id, None)
        deadline = time.monotonic() + STOP_TIMEOUT
        with self._idle:
            while self._running and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            clean = not self._running
        if not clean:
            log.warning(
                "a job did not stop in time; it runs again after the next start",
                jobs=[f"{w.job} {w.account}".strip() for w in self._running.values()],
            )
        if self._web is not None:
            try:
                self._web.stop()
            except Exception as exc:
                log.warning("review page did not stop cleanly", error=scrub(str(exc)))
        if clean:
            if self._leadership is not None:
                self._leadership.release()
            self.app.close()
        self.notifier.close()
        log.info("daemon stopped", clean=clean)
        return clean

    def serve(self) -> bool:
        """Run until SIGTERM/SIGINT; returns whether every job stopped in time."""
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            self.start()
            while not self.stop_event.is_set():
                self._wake.wait(5.0)
                self._wake.clear()
                if self._reload:
                    self._reload = False
                    self.reload()
            # Our handlers stay while stopping: a second SIGTERM must not kill a stop half-way.
            return self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self.stop_event.set()
        self._wake.set()

    # -- configuration ---------------------------------------------------------------------

    def reload(self) -> bool:
        """Read and check the configuration again; a bad one leaves the old one in force."""
        self.notifier.reloading()
        path = self.app.loaded.path
        try:
            fresh = App.load(path)
            if fresh.database_url != self.app.database_url:
                raise LopperError("storage.url changed: that needs a restart, not a reload")
            if fresh.settings.schedule.workers != self.app.settings.schedule.workers:
                log.warning("schedule.workers takes effect at the next start")
        except (ConfigError, LopperError) as exc:
            log.error(
                "configuration refused; the previous one stays in force",
                config=str(path),
                problem=str(exc),
            )
            self.notifier.send("READY=1", f"STATUS={self._status} (last reload refused)")
            return False
        self.app.loaded = fresh.loaded
        self.app._adapters.clear()  # accounts may have new credentials or options
        if self._scheduler is not None:
            self._scheduler.reschedule_job(
                "tick",
                trigger="interval",
                seconds=fresh.settings.schedule.poll_every.total_seconds(),
            )
        self._set_status(f"running: {len(self.app.accounts())} account(s), configuration reloaded")
        self.notifier.send("READY=1", f"STATUS={self._status}")
        log.info("configuration reloaded", accounts=[a.key for a in self.app.accounts()])
        self._kick()
        return True

    # -- the tick: plan, renew, claim ------------------------------------------------------

    def _kick(self) -> None:
        """Run the tick now (a job ended, or new work may be due)."""
        scheduler = self._scheduler
        if scheduler is None or self.stop_event.is_set():
            return
        with self._lock:
            self._replan = True
            if self._ticking:
                self._again = True  # the running tick goes round once more
                return
        with contextlib.suppress(Exception):  # the scheduler is shutting down
            scheduler.modify_job("tick", next_run_time=datetime.now(UTC))

    def _tick(self) -> None:
        with self._lock:
            self._ticking = True
        try:
            while True:
                with self._lock:
                    self._tick_since = time.monotonic()
                self._tick_once()
                with self._lock:
                    self._tick_since = None
                    if not self._again or self.stop_event.is_set():
                        return
                    self._again = False
        finally:
            with self._lock:
                self._ticking = False
                self._tick_since = None

    def _tick_once(self) -> None:
        if self.stop_event.is_set():
            return
        store, settings = self.app.store, self.app.settings
        try:
            now = self.now()
            if self._running:
                q.renew(store, self.instance, now, settings.schedule.lease)
            assert self._leadership is not None
            following = None
            if self._leadership.try_lead() and (
                self._replan or self._plan_at is None or now >= self._plan_at
            ):
                self._replan = False
                following = self._plan(now)
                # Work can come due by other means too (a sync from the command line, a
                # decision on the review page): look at the store at least once a minute.
                self._plan_at = min(following or now + PLAN_EVERY, now + PLAN_EVERY)
            self._claim(now)
            self._show_idle()
        except Exception as exc:
            # The database may be away for a moment: the next tick tries again.
            log.error("schedule tick failed", error=scrub(str(exc)), exc_info=True)
            return
        if following is not None and self._scheduler is not None:
            wait = (following - self.now()).total_seconds()
            if wait < settings.schedule.poll_every.total_seconds():
                run_at = datetime.now(UTC) + timedelta(seconds=max(wait, 0.0))
                with contextlib.suppress(Exception):
                    self._scheduler.modify_job("tick", next_run_time=run_at)

    def _plan(self, now: datetime) -> datetime | None:
        """Queue what is due; return when the next thing comes due."""
        store, settings = self.app.store, self.app.settings
        q.reap(store, now)
        if self._last_prune is None or now - self._last_prune > timedelta(days=1):
            q.prune(store, now - PRUNE_AFTER)
            prune_sent(store, now - KEEP_SENT_DIGESTS)
            self._last_prune = now
        with store.session() as session:
            # Queued or running already: the database would refuse a copy (and, on
            # PostgreSQL, write the refusal to its log each time). Read before what is due:
            # a job records its effect before it finishes, so one that ends in between is
            # either still active here or already counted in the facts; read after, it
            # could be neither, and run twice.
            active = q.active_jobs(session)
            dues = d.all_dues(
                session,
                settings,
                now,
                first_start=self._first_start,
            )
            lapse = q.next_lapse(session)
        upcoming: d.Due | None = None
        for item in dues:
            if item.ready(now):
                if (item.job, item.account) not in active:
                    q.enqueue(store, item.job, item.account, now, item.slot)
            elif item.at is not None and (upcoming is None or item.at < (upcoming.at or item.at)):
                upcoming = item
        self._upcoming = upcoming
        following = upcoming.at if upcoming is not None else None
        # A lease that lapses unrenewed (its replica died) is reaped at the next plan: plan
        # then, rather than as late as the next due work or PLAN_EVERY.
        if lapse is not None and (following is None or lapse < following):
            following = lapse
        return following

    def _claim(self, now: datetime) -> None:
        assert self._scheduler is not None
        settings = self.app.settings
        while not self.stop_event.is_set():
            with self._lock:
                if len(self._running) >= settings.schedule.workers:
                    return
            work = q.claim(self.app.store, self.instance, self.now, settings.schedule.lease)
            if work is None:
                return
            with self._lock:
                self._running[work.id] = work
            self._scheduler.add_job(
                self._run, args=[work], id=f"work-{work.id}", executor="default"
            )

    # -- one unit of work ------------------------------------------------------------------

    def _run(self, work: q.Work) -> None:
        with self._idle:
            if self.stop_event.is_set() or work.id not in self._running:
                return  # the stop came first; stop() records it as interrupted
            self._started.add(work.id)
        bind_run(work.run_id, job=work.job, **({"account": work.account} if work.account else {}))
        started = time.monotonic()
        log.info("job started", slot=work.slot.isoformat() if work.slot else None)
        self._show_busy()
        state, detail = JobState.DONE, None
        try:
            detail = self._dispatch(work)
        except Stopping:
            state, detail = JobState.INTERRUPTED, "stopped by the daemon's shutdown"
        except (AccountSkipped, LopperError) as exc:
            state, detail = JobState.FAILED, str(exc)
        except Exception as exc:
            state, detail = JobState.FAILED, f"{type(exc).__name__}: {exc}"
            log.error("job failed", error=scrub(detail), exc_info=True)
        if detail and detail.startswith("failed:"):
            state, detail = JobState.FAILED, detail.removeprefix("failed:").strip()
        try:
            kept = q.finish(self.app.store, work, self.instance, state, self.now(), detail)
        except Exception as exc:
            kept = False
            log.error("job outcome not recorded", error=scrub(str(exc)))
        log.info(
            "job finished",
            outcome=state.value,
            duration_s=round(time.monotonic() - started, 3),
            detail=scrub(detail) if detail else None,
            **({} if kept else {"lease": "lapsed before the end"}),
        )
        with self._idle:
            self._running.pop(work.id, None)
            self._started.discard(work.id)
            idle = not self._running
            self._idle.notify_all()
        if idle:
            self.app.store.release_idle()
            _give_back_memory()
        self._kick()

    def _check_stop(self, _stream: str = "", _count: int = 0) -> None:
        if self.stop_event.is_set():
            raise Stopping()

    def _sleep(self, seconds: float) -> None:
        """The executor's spacing between removals, cut short by a stop."""
        if self.stop_event.wait(seconds):
            raise Stopping()

    def _dispatch(self, work: q.Work) -> str | None:
        """Run one job; returns a detail line ("failed: ..." when it did not succeed)."""
        app = self.app
        if work.job in d.ACCOUNT_JOBS:
            account = next((a for a in app.accounts() if a.key == work.account), None)
            if account is None:
                return "failed: the account is no longer in the configuration (or disabled)"
            if work.job == d.SYNC:
                report = app.sync(account, progress=self._check_stop, run_id=work.run_id)
                problems = "; ".join(report.problems + list(report.streams.values()))
                if report.outcome in ("failed", "paused"):
                    return f"failed: {report.outcome}: {problems}"
                return (
                    f"{report.outcome}: {report.connections_seen} connections, {report.interactions_new} new interactions"
                    + (f"; {problems}" if report.outcome == "partial" else "")
                )
            if work.job == d.EVALUATE:
                evaluation = app.evaluate(account, run_id=work.run_id)
                return f"{evaluation.queued} new suggestions, {evaluation.expired} expired"
            result = app.execute(account, sleep=self._sleep, run_id=work.run_id)
            line = (
                f"{len(result.removed)} removed, {len(result.manual)} manual, "
                f"{len(result.dropped)} dropped, {len(result.failed)} failed"
                + (f", {len(result.held)} waiting for data" if result.held else "")
            )
            return line + (f"; {result.stopped}" if result.stopped else "")
        if work.job == d.DIGEST:
            assert work.slot is not None
            made = queue_digest(app, work.slot)
            sent = deliver_outbox(app, self.now())
            return f"{'made' if made else 'already made'} for {work.slot:%Y-%m-%d %H:%M} UTC, {sent} delivered"
        if work.job == d.DELIVER:
            return f"{deliver_outbox(app, self.now())} delivered"
        return f"failed: unknown job {work.job!r}"

    # -- status ----------------------------------------------------------------------------

    def _watchdog(self) -> None:
        """WATCHDOG=1, unless the schedule's tick has hung: then systemd restarts us."""
        hang = max(TICK_HANG, 4 * self.app.settings.schedule.poll_every.total_seconds())
        with self._lock:
            since = self._tick_since
        stuck = since is not None and time.monotonic() - since > hang
        if stuck:
            if not self._withheld:
                log.error(
                    "schedule tick hung: watchdog ping withheld",
                    seconds=round(time.monotonic() - (since or 0.0), 1),
                )
            self._withheld = True
            return
        if self._withheld:
            log.warning("schedule tick moving again: watchdog ping resumed")
            self._withheld = False
        self.notifier.watchdog()

    def _set_status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self.notifier.status(text)

    def _show_busy(self) -> None:
        with self._lock:
            doing = [f"{w.job} {w.account}".strip() for w in self._running.values()]
        if doing:
            self._set_status("running: " + ", ".join(sorted(doing)))

    def _show_idle(self) -> None:
        with self._lock:
            if self._running:
                return
        item = self._upcoming
        if item is None or item.at is None:
            role = "idle" if self._leadership and self._leadership.leading else "standing by"
            self._set_status(f"{role}, waiting for work")
            return
        what = f"{item.job} {item.account}".strip()
        self._set_status(f"idle; next: {what} at {item.at:%Y-%m-%d %H:%M:%S} UTC")


def run(app: App, notifier: Notifier | None = None) -> NoReturn:
    """Serve until stopped, then leave the process at once with status 0.

    Everything is closed by then (store, lock, leadership); what is left is the interpreter's
    own teardown of every module and thread, which can take seconds on a busy machine and
    is skipped. A job that did not stop in time is left the same way: its open transaction
    rolls back and it runs again after the next start.
    """
    daemon = Daemon(app, notifier or Notifier())
    clean = daemon.serve()
    # Stopped: a late second SIGTERM or Ctrl-C must not turn a clean exit into a killed one.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not clean:
        log.warning("leaving with a job still running")
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)
