"""The daemon's idle cost: resident memory after start-up, CPU seconds over an idle minute.

Starts the real ``lopper run`` (a subprocess, default schedule) on a sandbox account, waits
until systemd would hear READY=1 and the work due at start is done (first sync, evaluation,
executor, outbox round), then reads the process's own counters from /proc: resident memory
(VmRSS, and the peak VmHWM) and user+system CPU time at the start and the end of the idle
window. Linux only.

    python bench/idle_cost.py                     # SQLite, review page on, one minute
    python bench/idle_cost.py --no-web --minutes 3
    python bench/idle_cost.py --restarted         # a second start, on the store a first one synced
    python bench/idle_cost.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from service.store import open_store
from service.store.models import JobRun, JobState

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def memory(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    return values


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=1.0, help="idle window (default 1)")
    parser.add_argument("--size", type=int, default=3000, help="sandbox connections (default 3000)")
    parser.add_argument("--no-web", action="store_true", help="without the review page")
    parser.add_argument("--database-url", help="PostgreSQL URL (schema lopper_idle, dropped after)")
    parser.add_argument(
        "--restarted",
        action="store_true",
        help="measure a second start: a first one does the start-up work and is stopped, so "
        "nothing is due when the measured one starts (what a sync leaves behind shows as the "
        "difference)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lopper-idle-"))
    url = f"sqlite:///{work / 'state' / 'lopper.sqlite3'}"
    admin = None
    if args.database_url:
        admin = create_engine(args.database_url)
        with admin.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS lopper_idle CASCADE"))
            connection.execute(text("CREATE SCHEMA lopper_idle"))
        url = (
            make_url(args.database_url)
            .update_query_dict({"options": "-csearch_path=lopper_idle"})
            .render_as_string(hide_password=False)
        )
    config = work / "config.yaml"
    config.write_text(
        "version: 1\n"
        "accounts:\n"
        "  - platform: sandbox\n"
        '    handle: "@you"\n'
        f"    sandbox: {{size: {args.size}}}\n"
        f"web: {{enabled: {'false' if args.no_web else 'true'}, port: 0}}\n"
        f"storage: {{url: '{url}'}}\n",
        encoding="utf-8",
    )
    store = open_store(url)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"lopper-idle-{os.getpid()}"
    listener.bind("\0" + name)
    heard: list[str] = []

    def listen() -> None:
        while True:
            try:
                heard.extend(listener.recv(4096).decode().splitlines())
            except OSError:
                return

    threading.Thread(target=listen, daemon=True).start()
    env = {
        **os.environ,
        "STATE_DIRECTORY": str(work / "state"),
        "NOTIFY_SOCKET": "@" + name,
        "WATCHDOG_USEC": str(10 * 60 * 1_000_000),  # a ping every 5 minutes, as in the unit
    }
    command = [sys.executable, "-m", "service", "--config", str(config), "--json-logs", "run"]
    wanted = {"sync", "evaluate", "execute", "deliver"}

    def start_up_work_done() -> bool:
        with store.session() as session:
            done = set(session.scalars(select(JobRun.job).where(JobRun.state == JobState.DONE)))
        return wanted <= done

    if args.restarted:
        with (work / "first-start.log").open("wb") as first_log:
            first = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=first_log, stderr=subprocess.STDOUT
            )
            while not start_up_work_done():
                if first.poll() is not None:
                    sys.exit(f"the first daemon exited: see {work / 'first-start.log'}")
                time.sleep(0.2)
            first.send_signal(signal.SIGTERM)
            first.wait(timeout=30)
        heard.clear()
    started = time.monotonic()
    log = (work / "daemon.log").open("wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while "READY=1" not in heard:
            if process.poll() is not None:
                sys.exit(f"the daemon exited: see {work / 'daemon.log'}")
            time.sleep(0.05)
        ready = time.monotonic() - started
        while not start_up_work_done():
            time.sleep(0.2)
        if args.restarted:
            time.sleep(3)  # its first look at the queue: nothing is due, the work was done
        settled = time.monotonic() - started
        time.sleep(2)  # let the last job's thread go back to sleep
        pid = process.pid
        after_start = memory(pid)
        cpu_start, window_start = cpu_seconds(pid), time.monotonic()
        time.sleep(args.minutes * 60)
        cpu_used, window = cpu_seconds(pid) - cpu_start, time.monotonic() - window_start
        after_idle = memory(pid)
        with store.session() as session:
            during = session.scalar(
                select(JobRun.id).where(JobRun.state == JobState.DONE).order_by(JobRun.id.desc())
            )
        count_threads = threads(pid)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        log.close()
        store.dispose()
    per_minute = cpu_used / (window / 60)
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"lopper run, {backend}, sandbox of {args.size:,} connections, review page {'off' if args.no_web else 'on'}"
        + (", a second start (the first did the start-up work)" if args.restarted else "")
    )
    print(f"| READY=1 after start | {ready:.1f} s |")
    print(f"| start-up work done (first sync, evaluation, executor, outbox) | {settled:.1f} s |")
    print(f"| resident memory after start-up (VmRSS) | {after_start['VmRSS']:.1f} MiB |")
    print(f"| peak resident memory during start-up (VmHWM) | {after_start['VmHWM']:.1f} MiB |")
    print(f"| resident memory after the idle window | {after_idle['VmRSS']:.1f} MiB |")
    print(
        f"| CPU over {window:.0f} s idle | {cpu_used:.2f} s = **{per_minute:.3f} s per minute** |"
    )
    print(f"| threads | {count_threads} |")
    print(f"(last job run id {during}; exit status after SIGTERM {code})")
    if admin is not None:
        with admin.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS lopper_idle CASCADE"))
        admin.dispose()


if __name__ == "__main__":
    main()
