"""Replicas: accounts synced per minute by 1 and by 3 ``lopper run`` on one PostgreSQL database.

Each account is a Mastodon account on a fake server of its own, served from this process
(tests/fakes/mastodon_server.py, its rate limit lifted), every answer held back ``--latency``
seconds to stand in for the network. The real daemons run as subprocesses on a fresh schema,
each with ``schedule.workers`` workers, syncing every account again ``--sync-every`` after its
last sync. For each replica count the bench starts the daemons, counts over ``--seconds``
from the start the syncs and evaluations they finish, and stops them with SIGTERM. It prints:

- first round: seconds until every account had its first (full) sync, and the accounts per
  minute that makes;
- the window: syncs and evaluations finished in it, per minute (the first syncs and the
  incremental ones after them);
- the replicas' CPU seconds, how many jobs each replica ran, and the invariant that no two
  jobs of one account overlapped in time.

    python bench/replicas.py                                 # 12 accounts, 1 and 3 replicas
    python bench/replicas.py --accounts 24 --seconds 120 --latency 0.2
    python bench/replicas.py --replicas 1,2,3 --workers 4
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from daemon_helpers import Running, environment, prepared_store, runs, wait_for, write_config  # noqa: E402
from fakes.mastodon_server import TOKEN, FakeMastodon, NetworkSize, generate  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from service.store.models import JobRun, JobState  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = "lopper_bench_replicas"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def overlapping(rows: list[JobRun]) -> int:
    """Pairs of one account's jobs that ran at the same time (must be 0)."""
    found = 0
    by_account: dict[str, list[JobRun]] = defaultdict(list)
    for row in rows:
        if row.account and row.started_at is not None:
            by_account[row.account].append(row)
    for group in by_account.values():
        spans = sorted((r.started_at, r.finished_at) for r in group)
        for (_s1, end1), (start2, _e2) in itertools.pairwise(spans):
            if end1 is None or start2 < end1:
                found += 1
    return found


def fresh_schema(admin_url: str) -> str:
    admin = create_engine(admin_url)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    admin.dispose()
    return (
        make_url(admin_url)
        .update_query_dict({"options": f"-csearch_path={SCHEMA}"})
        .render_as_string(hide_password=False)
    )


def drop_schema(admin_url: str) -> None:
    admin = create_engine(admin_url)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    admin.dispose()


def measure(args: argparse.Namespace, replicas: int, size: NetworkSize) -> dict[str, object]:
    """One run: ``replicas`` daemons on a fresh schema against fresh fakes."""
    fakes = []
    for seed in range(args.accounts):
        fake = FakeMastodon(lambda: datetime.now(UTC), rate_limit=10**9)
        generate(fake, size, now=datetime.now(UTC), seed=seed)
        fake.latency = args.latency
        fakes.append(fake.start())
    handles = [f"@me{seed}@example.social" for seed in range(args.accounts)]
    keys = {f"mastodon:{h}" for h in handles}
    url = fresh_schema(args.database_url)
    work = Path(tempfile.mkdtemp(prefix=f"lopper-replicas-{replicas}-"))
    config = write_config(
        work / "config.yaml",
        url,
        work / "outbox",
        mastodon=[(h, f.url, TOKEN) for h, f in zip(handles, fakes, strict=True)],
        removal_spacing="0s",
        schedule={
            "sync_every": args.sync_every,
            "execute_every": "1h",
            "deliver_every": "1h",
            "lease": "30s",
            "poll_every": "0.5s",
            "workers": str(args.workers),
        },
    )
    store = prepared_store(url)
    started = time.monotonic()
    t0 = datetime.now(UTC)
    daemons = [
        Running(config, environment(work / f"r{i}"), work / f"r{i}.log") for i in range(replicas)
    ]
    first_round: float | None = None
    try:
        for daemon in daemons:
            wait_for(lambda d=daemon: "daemon started" in d.text(), "start", process=daemon)
        deadline = started + args.seconds
        while time.monotonic() < deadline:
            if first_round is None:
                synced = {r.account for r in runs(store, "sync", JobState.DONE)}
                if synced >= keys:
                    first_round = time.monotonic() - started
            for daemon in daemons:
                if daemon.process.poll() is not None:
                    sys.exit(f"a replica exited: see {daemon.log}")
            time.sleep(0.25)
        window = time.monotonic() - started
        cpu = sum(cpu_seconds(d.process.pid) for d in daemons)
        end = datetime.now(UTC)
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.signal(signal.SIGTERM)
        codes = [daemon.stop(timeout=30) for daemon in daemons]
        for fake in fakes:
            fake.stop()
    every = runs(store)
    store.dispose()
    drop_schema(args.database_url)

    def finished(job: str) -> int:
        return sum(
            1
            for r in every
            if r.job == job
            and r.state is JobState.DONE
            and r.finished_at is not None
            and t0 <= r.finished_at <= end
        )

    per_replica = Counter(r.instance for r in every if r.instance and r.state is JobState.DONE)
    failed = sum(1 for r in every if r.state is JobState.FAILED)
    requests = sum(sum(f.requests.values()) for f in fakes)
    return {
        "replicas": replicas,
        "first_round": first_round,
        "window": window,
        "syncs": finished("sync"),
        "evaluations": finished("evaluate"),
        "failed": failed,
        "cpu": cpu,
        "per_replica": sorted(per_replica.values(), reverse=True),
        "overlaps": overlapping(every),
        "codes": codes,
        "requests": requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LOPPER_TEST_DATABASE_URL") or DEFAULT_URL,
        help=f"PostgreSQL (schema {SCHEMA}, dropped after; default $LOPPER_TEST_DATABASE_URL "
        f"or {DEFAULT_URL})",
    )
    parser.add_argument("--accounts", type=int, default=12, help="Mastodon accounts (default 12)")
    parser.add_argument(
        "--replicas", default="1,3", help="replica counts to run, in turn (default 1,3)"
    )
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="window from the start (default 60)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.1, help="seconds per request (default 0.1)"
    )
    parser.add_argument("--workers", type=int, default=2, help="schedule.workers (default 2)")
    parser.add_argument("--sync-every", default="5s", help="schedule.sync_every (default 5s)")
    parser.add_argument("--following", type=int, default=200)
    parser.add_argument("--followers", type=int, default=200)
    parser.add_argument("--notifications", type=int, default=400)
    args = parser.parse_args()
    size = NetworkSize(
        following=args.following,
        followers=args.followers,
        mutual=min(args.following, args.followers) // 2,
        notifications=args.notifications,
        statuses=args.following // 2,
        favourites=args.following // 2,
    )
    counts = [int(n) for n in args.replicas.split(",")]

    print("$ python bench/replicas.py " + shlex.join(sys.argv[1:]))
    print(
        f"{args.accounts} Mastodon accounts, each on its own fake server ({size.following} following, "
        f"{size.followers} followers, {size.notifications} notifications, {size.statuses} statuses, "
        f"{size.favourites} favourites; {args.latency * 1000:.0f} ms per request); PostgreSQL; "
        f"schedule.workers {args.workers}, sync_every {args.sync_every}; window {args.seconds:.0f} s "
        f"from the start; {os.cpu_count()} CPU cores shared by the daemons, the fakes and PostgreSQL"
    )
    results = []
    for count in counts:
        result = measure(args, count, size)
        results.append(result)
        print(f"  ... {count} replica(s) done", file=sys.stderr)
    print()
    print(
        "| replicas | first sync of every account | accounts per minute (first round) | "
        "syncs finished in the window | syncs per minute | evaluations per minute | "
        "replicas' CPU | jobs per replica | jobs of one account overlapping | exit codes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        window = float(r["window"])  # type: ignore[arg-type]
        first = r["first_round"]
        first_text = f"{first:.1f} s" if isinstance(first, float) else "not within the window"
        per_min = f"{args.accounts / first * 60:.1f}" if isinstance(first, float) else "-"
        syncs, evaluations = int(r["syncs"]), int(r["evaluations"])  # type: ignore[call-overload]
        print(
            f"| {r['replicas']} | {first_text} | **{per_min}** | {syncs} | "
            f"**{syncs / window * 60:.1f}** | {evaluations / window * 60:.1f} | "
            f"{float(r['cpu']):.1f} s | {r['per_replica']} | {r['overlaps']} | {r['codes']} |"  # type: ignore[arg-type]
        )
    bad = [r for r in results if r["overlaps"] or any(c != 0 for c in r["codes"])]  # type: ignore[attr-defined]
    if bad:
        sys.exit("an account ran two jobs at once, or a replica did not stop cleanly")


if __name__ == "__main__":
    main()
