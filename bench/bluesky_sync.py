"""Bluesky first and incremental sync at scale, through the real atproto SDK over HTTP.

A fake PDS (tests/fakes/bluesky_server.py) on 127.0.0.1 holds 20,000 follows, 20,000
followers and 100,000 notifications (plus the account's own posts, reposts and likes); the
real adapter and the real sync read it into a fresh store. Prints, per endpoint, the requests
made against the fewest that can read it, and the seconds each sync took (the fake serves
from the same process, so its own work is part of them).

The fewest: one request per 100 items (one for an empty list); listRecords reads the account's
follow records too (for followed accounts the appview no longer lists). listRecords answers a full
page with a cursor even when it is the last, so there a count that is a multiple of 100
needs one more request to see the end: ``n // 100 + 1``.

    python bench/bluesky_sync.py
    python bench/bluesky_sync.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

With --database-url the tables are created in a schema lopper_bench_bluesky (dropped first and
after). See bench/README.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.bluesky_server import FOLLOW, LIKE, POST, REPOST, FakeBluesky, did_for
from measure import Clock

from service.config import Account, Rules
from service.platforms import build_adapter
from service.store import open_store
from service.sync import sync_account

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def pages(items: int) -> int:
    return max(1, math.ceil(items / 100))


def record_pages(items: int) -> int:
    return items // 100 + 1


def report(title: str, made: dict[str, int], fewest: dict[str, int], seconds: float) -> None:
    print(f"{title}: {seconds:.2f} s, {sum(made.values()):,} requests")
    for nsid in sorted(set(made) | set(fewest)):
        least = fewest.get(nsid)
        floor = f"{least:,}" if least is not None else "-"
        print(f"  {nsid:<42} {made.get(nsid, 0):>6,} made, fewest {floor:>6}")


def store_url(args: argparse.Namespace, workdir: Path) -> tuple[str, Callable[[], None]]:
    if not args.database_url:
        return f"sqlite:///{workdir / 'lopper.sqlite3'}", lambda: None
    schema = "lopper_bench_bluesky"
    engine = create_engine(args.database_url)

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    drop()
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(args.database_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False), drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--follows", type=int, default=20_000)
    parser.add_argument("--followers", type=int, default=20_000)
    parser.add_argument("--mutual", type=int, default=8_000)
    parser.add_argument("--notifications", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=3_000)
    parser.add_argument("--reposts", type=int, default=800)
    parser.add_argument("--likes", type=int, default=12_000)
    parser.add_argument("--new", type=int, default=250, help="notifications before the 2nd sync")
    parser.add_argument("--database-url", help="PostgreSQL URL; default: SQLite in a temp dir")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    clock = Clock(NOW)
    fake = FakeBluesky(handle="bench.test", clock=clock)
    started = time.perf_counter()
    fake.populate(
        follows=args.follows,
        followers=args.followers,
        mutual=args.mutual,
        notifications=args.notifications,
        posts=args.posts,
        reposts=args.reposts,
        likes=args.likes,
        quiet=args.follows // 2,
    )
    built = time.perf_counter() - started
    exchanges = fake.exchange_notifications()
    print(
        f"network: {len(fake.follows):,} follows, {len(fake.followers):,} followers, "
        f"{len(fake.notifications):,} notifications ({exchanges:,} of them exchanges), "
        f"{len(fake.repo[POST]):,} posts, {len(fake.repo[REPOST]):,} reposts, "
        f"{len(fake.repo[LIKE]):,} likes; built in {built:.2f} s"
    )

    workdir = Path(tempfile.mkdtemp(prefix="lopper-bench-bluesky-"))
    url, drop = store_url(args, workdir)
    store = open_store(url)
    fake.start()
    try:
        account = Account(
            platform="bluesky",
            handle="@bench.test",
            credentials={
                "app_password": fake.app_password,
                "base_url": fake.base_url,
                "plc_url": fake.base_url,  # the fake serves the PLC audit log too
            },
        )
        rules = Rules()
        adapter = build_adapter(account, workdir / "state", clock)

        started = time.perf_counter()
        first = sync_account(store, account, adapter, rules, clock)
        seconds = time.perf_counter() - started
        # the account's follow records (for accounts gone from the appview), then its own
        # posts, reposts and likes
        records = sum(record_pages(len(fake.repo[c])) for c in (FOLLOW, POST, REPOST, LIKE))
        fewest: dict[str, Any] = {
            "com.atproto.server.createSession": 1,
            "com.atproto.server.getSession": 1,
            "plc.log.audit": 1,
            "app.bsky.graph.getFollows": pages(len(fake.follows)),
            "app.bsky.graph.getFollowers": pages(len(fake.followers)),
            "app.bsky.notification.listNotifications": pages(exchanges),
            "com.atproto.repo.listRecords": records,
        }
        report(f"first sync ({first.outcome})", dict(fake.requests), fewest, seconds)
        print(
            f"  stored {first.connections_seen:,} listed connections, "
            f"{first.interactions_new:,} exchanges ({sum(fake.truth.values()):,} in truth): "
            f"{first.interactions_new / seconds:,.0f} exchanges/s"
        )

        now = clock.now = NOW + timedelta(days=1)
        for index in range(args.new):
            author = did_for(f"f{args.follows - 1 - index % 100}")
            fake.notify(author, "like", now - timedelta(seconds=30 * index))
        fake.reset_counts()
        started = time.perf_counter()
        second = sync_account(store, account, adapter, rules, clock)
        seconds = time.perf_counter() - started
        fewest = {
            "com.atproto.server.getSession": 1,
            "app.bsky.graph.getFollows": pages(len(fake.follows)),
            "app.bsky.graph.getFollowers": pages(len(fake.followers)),
            "app.bsky.notification.listNotifications": pages(args.new),
            "com.atproto.repo.listRecords": record_pages(len(fake.follows)) + 3,
        }
        report(f"incremental sync ({second.outcome})", dict(fake.requests), fewest, seconds)
        print(f"  {second.interactions_new:,} new exchanges")
    finally:
        fake.stop()
        store.dispose()
        drop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
