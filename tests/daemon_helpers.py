"""Running the real ``lopper run`` as a subprocess against a store the test can read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import select

from service.daemon import queue as q
from service.store import Store, open_store
from service.store.models import JobRun, JobState

ROOT = Path(__file__).resolve().parent.parent

FAST = {
    "sync_every": "1s",
    "sync_jitter": "0s",
    "execute_every": "0.3s",
    "deliver_every": "0.5s",
    "retry_after": "1s",
    "poll_every": "0.1s",
    "lease": "1s",
    "digest": "0 8 * * mon",
}


def write_config(
    path: Path,
    url: str,
    outbox: Path,
    *,
    size: int = 300,
    events: float = 12.0,
    accounts: list[str] | None = None,
    schedule: dict[str, str] | None = None,
    extra: str = "",
    failing: bool = False,
    mastodon: list[tuple[str, str, str]] | None = None,
    removal_spacing: str | None = None,
    request_timeout: str | None = None,
    smtp_port: int | None = None,
    rules: dict[str, str] | None = None,
    digest_retry: str | None = None,
) -> Path:
    """A configuration for ``lopper run``: sandbox accounts (``accounts``; none if it is an
    empty list and ``mastodon`` is given) and Mastodon accounts served by fakes of the test
    process (``mastodon``: handle, server URL, access token). The digest is written to files
    in ``outbox``, or sent to the SMTP server on 127.0.0.1:``smtp_port``."""
    handles = accounts if accounts is not None else ([] if mastodon else ["@you"])
    lines = ["version: 1", "accounts:"]
    for handle, server, token in mastodon or []:
        lines += [
            "  - platform: mastodon",
            f'    handle: "{handle}"',
            f"    credentials: {{access_token: '{token}', api_base_url: '{server}'}}",
        ]
        if removal_spacing is not None:
            lines.append(f'    removal_spacing: ["{removal_spacing}", "{removal_spacing}"]')
        if request_timeout is not None:
            lines.append(f'    request_timeout: "{request_timeout}"')
    for handle in handles:
        lines += [
            "  - platform: sandbox",
            f'    handle: "{handle}"',
            f"    sandbox: {{seed: 7, size: {size}, events_per_active_person: {events}}}",
        ]
    if failing:  # an account that cannot run: its secret is not set anywhere
        lines += [
            "  - platform: mastodon",
            '    handle: "@you@example.social"',
            "    credentials: {access_token: '${LOPPER_TEST_UNSET_TOKEN}'}",
        ]
    lines += ["rules:"]
    lines += [f'  {k}: "{v}"' for k, v in {"daily_removal_cap": 1000, **(rules or {})}.items()]
    lines += ["schedule:"]
    lines += [f'  {k}: "{v}"' for k, v in {**FAST, **(schedule or {})}.items()]
    lines += ["digest:"]
    if smtp_port is None:
        lines += ["  delivery: files"]
    else:
        lines += [
            "  delivery: smtp",
            f"  smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none}}",
        ]
    if digest_retry is not None:
        lines += [f'  retry_after: "{digest_retry}"']
    lines += [
        f"  folder: {outbox}",
        '  recipients: ["you@example.org"]',
        "web: {enabled: false}",
        f"storage: {{url: '{url}'}}",
    ]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def environment(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "LOPPER_CONFIG",
            "CONFIGURATION_DIRECTORY",
            "CREDENTIALS_DIRECTORY",
            "JOURNAL_STREAM",
        )
    }
    env.update(
        STATE_DIRECTORY=str(home / "state"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_STATE_HOME=str(home / "xdg-state"),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


class Running:
    """One ``lopper run`` process; its log lines are kept in a file."""

    started: ClassVar[list[Running]] = []  # every one, so that a failed test leaves none running

    def __init__(
        self,
        config: Path,
        env: dict[str, str],
        log: Path,
        *args: str,
        launcher: list[str] | None = None,
    ) -> None:
        self.log = log
        self.terminated = False
        self._out = log.open("ab")
        command = [*(launcher or [sys.executable]), "-m", "service", "--config", str(config)]
        self.process = subprocess.Popen(
            [*command, "--json-logs", *args, "run"],
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        Running.started.append(self)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)
        self.terminated = self.terminated or signum == signal.SIGTERM

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, and the exit status (the test fails if it takes longer than ``timeout``)."""
        if self.process.poll() is None and not self.terminated:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self._out.close()

    @classmethod
    def kill_leftovers(cls) -> None:
        """Kill those a test left running (it failed before stopping them)."""
        while cls.started:
            running = cls.started.pop()
            if running.process.poll() is None:
                running.process.kill()
                running.process.wait(timeout=10)
            running._out.close()

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                found.append(json.loads(raw))
            except ValueError:
                continue
        return found

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = 30.0, process: Running | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.process.poll() is not None:
            raise AssertionError(
                f"the daemon exited ({process.process.returncode}) before {what}:\n{process.text()[-3000:]}"
            )
        time.sleep(0.05)
    tail = process.text()[-3000:] if process is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def runs(store: Store, job: str | None = None, state: JobState | None = None) -> list[JobRun]:
    with store.session() as session:
        query = select(JobRun).order_by(JobRun.id)
        if job is not None:
            query = query.where(JobRun.job == job)
        if state is not None:
            query = query.where(JobRun.state == state)
        return list(session.scalars(query))


def prepared_store(url: str, first_start: datetime | None = None) -> Store:
    store = open_store(url)
    if first_start is not None:
        q.set_fact(store, q.FIRST_START, first_start.isoformat(), first_start, only_once=False)
    return store
