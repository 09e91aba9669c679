"""X sync at scale: 50,000 following and 50,000 followers through tweepy against the fake X.

The real tweepy client talks HTTP to the fake X API v2 of the tests (its rate limits lifted),
through the adapter, driven by the real sync into a real store. Prints the requests made
against the fewest possible (one per 1,000 people listed, one per 100 posts or events), the
connections stored per second, how much of the time the fake itself spent answering (it runs
in this process: its share is time our side waited), the estimated X cost of the sync, and
what a second sync of the same day asks for, and what the adapter reports it cannot see.

    python bench/x_sync.py
    python bench/x_sync.py --following 5000 --followers 5000 --mutual 1000
    python bench/x_sync.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes.x_server import CLIENT_ID, REFRESH, TOKEN, USERNAME, FakeX, NetworkSize, generate
from measure import Clock, n, rss_mb

from service.config import Account, Rules, Schedule
from service.costs import dollars
from service.platforms import build_adapter
from service.platforms.tokens import save_token
from service.store import open_store
from service.sync import sync_account

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PAGES = {
    "me": 1,
    "followers": 1000,
    "following": 1000,
    "mentions": 100,
    "tweets": 100,
    "liked_tweets": 100,
    "dm_events": 100,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--following", type=int, default=50_000)
    parser.add_argument("--followers", type=int, default=50_000)
    parser.add_argument("--mutual", type=int, default=20_000)
    parser.add_argument("--mentions", type=int, default=800)
    parser.add_argument("--posts", type=int, default=2_000)
    parser.add_argument("--likes", type=int, default=2_000)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--reactions", type=int, default=1_000)
    parser.add_argument("--older-reactions", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

    clock = Clock(NOW)
    fake = FakeX(clock)
    fake.limits = dict.fromkeys(fake.limits, 10**9)
    size = NetworkSize(
        args.following,
        args.followers,
        args.mutual,
        mentions=args.mentions,
        posts=args.posts,
        likes=args.likes,
        messages=args.messages,
        reactions=args.reactions,
        older_reactions=args.older_reactions,
    )
    began = time.perf_counter()
    generate(fake, size, now=NOW)
    print(f"network: {size}")
    print(
        f"generated in {time.perf_counter() - began:.1f} s ({n(len(fake.truth))} exchanges of ground truth)"
    )

    with tempfile.TemporaryDirectory() as folder, fake:
        url = args.database_url or f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
        store = open_store(url)
        account = Account(
            platform="x",
            handle=f"@{USERNAME}",
            x={"api_base_url": fake.url, "client_id": CLIENT_ID},
        )
        save_token(
            Path(folder),
            account.key,
            {"access_token": TOKEN, "refresh_token": REFRESH, "expires_at": time.time() + 86400},
        )
        adapter = build_adapter(account, Path(folder), clock)
        rules = Rules()
        marks: dict[str, float] = {}

        def progress(stream: str, _count: int) -> None:
            marks[stream] = time.perf_counter()

        spent = {"adapter": 0.0}
        listed = adapter.connections

        def timed_listing(cursor: str | None) -> object:
            start = time.perf_counter()
            try:
                return listed(cursor)
            finally:
                spent["adapter"] += time.perf_counter() - start

        adapter.connections = timed_listing  # type: ignore[method-assign,assignment]
        began = time.perf_counter()
        first = sync_account(store, account, adapter, rules, clock, progress=progress)
        seconds = time.perf_counter() - began
        listing = marks["connections"] - began
        made = dict(fake.requests)
        counts = {
            "me": 1,
            "followers": len(fake.followers),
            "following": len(fake.following),
            "mentions": len(fake.mentioning),
            "tweets": len(fake.own),
            "liked_tweets": len(fake.liked),
            "dm_events": len(fake.dms),
        }
        print(f"\nfirst sync: {first.outcome}, {seconds:.1f} s")
        print(f"  {'endpoint':<16}{'items':>10}{'requests':>10}{'minimum':>10}")
        for route, size_ in PAGES.items():
            least = max(1, -(-counts[route] // size_))
            if route == "tweets":
                least += 1  # the latest posts, read once more with their counts
            print(f"  {route:<16}{n(counts[route]):>10}{n(made.get(route, 0)):>10}{n(least):>10}")
        scan = sum(made.get(r, 0) for r in ("liking_users", "retweeted_by", "quote_tweets"))
        print(f"  {'reactions':<16}{'':>10}{n(scan):>10}{'(one per post and kind with any)':>10}")
        lists = made["followers"] + made["following"]
        least = -(-counts["followers"] // 1000) + -(-counts["following"] // 1000)
        print(f"  listing: {n(lists)} requests for {n(least)} at least: ratio {lists / least:.2f}")
        print(
            f"  listing: {n(first.connections_seen)} people in {listing:.1f} s = "
            f"{n(first.connections_seen / listing)} connections/s "
            f"({n(first.connections_new)} stored)"
        )
        ours = spent["adapter"]
        print(
            f"  listing split: {ours:.1f} s in the adapter (tweepy over HTTP, the fake's answers "
            f"included), {listing - ours:.1f} s in the store (the core's sync writing the pages)"
        )
        print(
            f"  the fake answering: {fake.busy:.1f} s of {seconds:.1f} s "
            f"({fake.busy / seconds:.0%}); requests: {n(sum(made.values()))}, "
            f"{sum(made.values()) / seconds:,.0f}/s"
        )
        beyond = len(fake.reactions_beyond(20))
        print(
            f"  {n(first.interactions_new)} exchanges stored (ground truth {n(len(fake.truth))}, "
            f"{n(beyond)} of them reactions to older posts, beyond any affordable listing)"
        )
        print(f"  unseen: {', '.join(f'{u.describe()}' for u in first.unseen) or 'nothing'}")
        with store.session() as session:
            from sqlalchemy import select

            from service.store.models import CostRecord

            record = session.scalars(select(CostRecord)).one()
            print(
                f"  estimated X cost: {dollars(record.micros)} ({dollars(record.listing_micros)} the listing); reads {dict(record.reads)}"
            )

        fake.requests.clear()
        fake.busy = 0.0
        clock.now += timedelta(hours=2)
        began = time.perf_counter()
        again = sync_account(
            store, account, adapter, rules, clock, relist_after=Schedule().relist_every
        )
        seconds = time.perf_counter() - began
        print(
            f"\nsecond sync the same day: {again.outcome}, {seconds:.2f} s, requests {dict(fake.requests)}"
        )
        store.dispose()
    print(f"\npeak memory: {rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
