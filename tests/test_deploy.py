"""deploy/: the systemd unit is clean and hardened; its sysusers/tmpfiles entries work."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from daemon_helpers import ROOT, Running, environment, prepared_store, runs, wait_for, write_config

from service.store.models import JobState

DEPLOY = ROOT / "deploy"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


class NotifySocket:
    """systemd's side of the notify protocol: an abstract datagram socket, read by a thread."""

    def __init__(self) -> None:
        name = f"lopper-test-notify-{os.getpid()}-{id(self)}"
        self.address = "@" + name  # systemd's abstract namespace
        self.received: list[str] = []
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind("\0" + name)
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                self.received.extend(self._socket.recv(4096).decode().splitlines())
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


def unit_here(folder: Path) -> Path:
    """The unit as installed, with ExecStart= pointing at this checkout's lopper."""
    lopper = Path(sys.executable).parent / "lopper"
    text = (DEPLOY / "lopper.service").read_text(encoding="utf-8")
    assert "/opt/lopper/venv/bin/lopper run" in text
    unit = folder / "lopper.service"
    unit.write_text(text.replace("/opt/lopper/venv/bin/lopper", str(lopper)), encoding="utf-8")
    return unit


def settings(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_analyze
def test_the_unit_verifies_clean_with_its_credentials_drop_in(tmp_path: Path) -> None:
    unit = unit_here(tmp_path)
    (tmp_path / "lopper.service.d").mkdir()
    shutil.copy(DEPLOY / "credentials.conf", tmp_path / "lopper.service.d" / "credentials.conf")
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


@needs_analyze
def test_the_units_exposure_is_ok(tmp_path: Path) -> None:
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit_here(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(
        r"Overall exposure level for lopper\.service: (\d+\.\d+)", result.stdout + result.stderr
    )
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= 2.0


def test_the_unit_speaks_the_daemons_protocol() -> None:
    unit = settings(DEPLOY / "lopper.service")
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["RestartPreventExitStatus"] == ["78"]  # lopper's exit code on a bad config
    assert unit["Restart"] == ["on-failure"]
    assert "-HUP" in unit["ExecReload"][0]  # SIGHUP reloads the configuration
    stop = unit["TimeoutStopSec"][0]
    assert stop.endswith("s") and int(stop[:-1]) > 10  # lopper stops within 10 s
    for key in ("StateDirectory", "ConfigurationDirectory"):
        assert unit[key] == ["lopper"]  # $STATE_DIRECTORY, $CONFIGURATION_DIRECTORY
    assert unit["CapabilityBoundingSet"] == [""]
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


@pytest.mark.skipif(
    not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")),
    reason="systemd-sysusers / systemd-tmpfiles are not installed",
)
def test_sysusers_and_tmpfiles_make_the_user_and_the_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    made = subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(DEPLOY / "lopper.sysusers.conf")],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0 and os.geteuid() != 0:
        pytest.skip(f"systemd-sysusers needs root here: {made.stderr.strip()}")
    assert made.returncode == 0, made.stderr
    passwd = (root / "etc" / "passwd").read_text(encoding="utf-8")
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("lopper:"))
    assert user[5] == "/var/lib/lopper" and user[6].endswith("nologin")
    group = next(
        line.split(":")
        for line in (root / "etc" / "group").read_text(encoding="utf-8").splitlines()
        if line.startswith("lopper:")
    )
    created = subprocess.run(
        ["systemd-tmpfiles", "--create", f"--root={root}", str(DEPLOY / "lopper.tmpfiles.conf")],
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr
    config, secrets = (
        (root / "etc" / "lopper").stat(),
        (root / "etc" / "lopper" / "credentials").stat(),
    )
    assert oct(config.st_mode & 0o777) == "0o750" and config.st_gid == int(group[2])
    assert oct(secrets.st_mode & 0o777) == "0o700" and secrets.st_uid == 0
    state = (root / "var" / "lib" / "lopper").stat()
    assert oct(state.st_mode & 0o777) == "0o700" and state.st_uid == int(user[2])


def _mdwe_available() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(66, 0, 0, 0, 0) >= 0)  # PR_GET_MDWE (Linux 6.3+)


def test_notify_socket_sees_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    """The real daemon speaks systemd's protocol, under the unit's memory rule where it can.

    MemoryDenyWriteExecute=yes is the kernel's PR_SET_MDWE: where the kernel has it, the
    daemon runs under it here (a dependency that needs writable executable memory fails).
    """
    launcher = None
    if _mdwe_available():
        wrapper = tmp_path / "mdwe.py"
        wrapper.write_text(
            "import ctypes, os, sys\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "assert libc.prctl(65, 1, 0, 0, 0) == 0  # PR_SET_MDWE: refuse write+execute\n"
            "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n",
            encoding="utf-8",
        )
        launcher = [sys.executable, str(wrapper)]
    url = f"sqlite:///{tmp_path / 'state' / 'lopper.sqlite3'}"
    config = write_config(tmp_path / "config.yaml", url, tmp_path / "outbox")
    store = prepared_store(url)
    notify = NotifySocket()
    received = notify.received
    env = environment(tmp_path, NOTIFY_SOCKET=notify.address, WATCHDOG_USEC="400000")
    daemon = Running(config, env, tmp_path / "notify.log", launcher=launcher)
    wait_for(lambda: "READY=1" in received, "READY=1", process=daemon)
    wait_for(lambda: received.count("WATCHDOG=1") >= 2, "WATCHDOG=1", process=daemon)
    wait_for(
        lambda: runs(store, "evaluate", JobState.DONE), "a sync and an evaluation", process=daemon
    )
    assert any(line.startswith("STATUS=") for line in received)
    assert f"MAINPID={daemon.process.pid}" in received
    assert daemon.stop() == 0
    wait_for(lambda: "STOPPING=1" in received, "STOPPING=1", timeout=2)
    notify.close()
    store.dispose()
    assert received.index("READY=1") < received.index("STOPPING=1")


@pytest.mark.postgres
def test_a_hung_schedule_withholds_the_watchdog_ping_until_it_moves_again(
    tmp_path: Path, postgres_schemas
) -> None:
    """WATCHDOG=1 comes from a thread of its own so that a long sync cannot starve it; but a
    tick of the schedule that hangs (here: a query waiting on a lock nobody releases) must
    stop the pings, so that systemd restarts the service."""
    if postgres_schemas is None:
        pytest.skip("LOPPER_TEST_DATABASE_URL is not set")
    from sqlalchemy import text

    url = postgres_schemas.fresh(0)
    config = write_config(
        tmp_path / "config.yaml", url, tmp_path / "outbox", size=40, schedule={"poll_every": "0.2s"}
    )
    store = prepared_store(url)
    notify = NotifySocket()
    env = environment(tmp_path, NOTIFY_SOCKET=notify.address, WATCHDOG_USEC="400000")
    daemon = Running(config, env, tmp_path / "watchdog.log")
    pings = lambda: notify.received.count("WATCHDOG=1")  # noqa: E731
    wait_for(lambda: pings() >= 3, "WATCHDOG=1", process=daemon)
    with store.engine.connect() as connection:
        # Another session takes the job table: the tick's next claim waits on it.
        connection.execute(text("LOCK TABLE job_runs IN ACCESS EXCLUSIVE MODE"))
        wait_for(
            lambda: "watchdog ping withheld" in daemon.text(), "the pings to stop", process=daemon
        )
        stopped_at = pings()
        time.sleep(1.5)  # seven watchdog intervals
        assert pings() == stopped_at, "pings went on while the tick hung"
        connection.rollback()
    wait_for(lambda: pings() > stopped_at, "the pings to resume", process=daemon)
    assert "watchdog ping resumed" in daemon.text()
    assert daemon.stop() == 0
    notify.close()
    store.dispose()
