"""Mastodon sync at scale: 20,000 following, 20,000 followers, 100,000 notifications.

The real Mastodon.py client talks HTTP to the fake server of the tests (its rate limit
lifted), through the adapter, driven by the real sync into a real store. Prints the requests
made against the least a client could make (one request per ``limit`` items of each list),
and the seconds a first and an incremental sync take here. On a real server the rate limit
(300 requests per 5 minutes) sets the pace instead: the figure for that is printed too.

    python bench/mastodon_sync.py
    python bench/mastodon_sync.py --following 2000 --followers 2000 --notifications 10000
    python bench/mastodon_sync.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes.mastodon_server import (
    TOKEN,
    FakeMastodon,
    NetworkSize,
    expected_pages,
    generate,
)
from measure import Clock, n, rss_mb, timed
from pydantic import SecretStr

from service.config import Account, Rules
from service.platforms import build_adapter
from service.store import Store, open_store
from service.sync import sync_account

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = {
    "verify_credentials": 1,
    "following": 80,
    "followers": 80,
    "notifications": 80,
    "statuses": 40,
    "favourites": 40,
    "conversations": 40,
}
WINDOW_REQUESTS, WINDOW_MINUTES = 300, 5


def listed(fake: FakeMastodon) -> dict[str, int]:
    """How many items each endpoint lists, from the fake's ground truth."""
    kinds = {"mention", "favourite", "reblog", "quote"}
    return {
        "verify_credentials": 1,
        "following": len(fake.following),
        "followers": len(fake.followers),
        "notifications": sum(1 for x in fake.notifications.values.values() if x.type in kinds),
        "statuses": len(fake.own),
        "favourites": len(fake.favourites),
        "conversations": len(fake.conversations()),
    }


def report(title: str, made: dict[str, int], counts: dict[str, int]) -> None:
    """Requests made per endpoint, against one request per ``limit`` items (at least one)."""
    print(f"\n{title}")
    print(f"  {'endpoint':<20}{'items':>10}{'requests':>10}{'minimum':>10}")
    total_made = total_min = 0
    for route in LIMITS:
        requests = made.get(route, 0)
        items = n(counts[route])
        least = max(1, -(-counts[route] // LIMITS[route]))
        total_made += requests
        total_min += least
        print(f"  {route:<20}{items:>10}{n(requests):>10}{n(least):>10}")
    print(f"  {'total':<20}{'':>10}{n(total_made):>10}{n(total_min):>10}")
    windows = -(-total_made // WINDOW_REQUESTS)
    print(
        f"  at {WINDOW_REQUESTS} requests per {WINDOW_MINUTES} min: "
        f"{windows} window(s), at least {n((windows - 1) * WINDOW_MINUTES)} min on a real server"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--following", type=int, default=20_000)
    parser.add_argument("--followers", type=int, default=20_000)
    parser.add_argument("--mutual", type=int, default=8_000)
    parser.add_argument("--notifications", type=int, default=100_000)
    parser.add_argument("--statuses", type=int, default=0, help="own posts addressing people")
    parser.add_argument("--favourites", type=int, default=0)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

    clock = Clock(NOW)
    fake = FakeMastodon(clock, rate_limit=10**9)
    size = NetworkSize(
        args.following,
        args.followers,
        args.mutual,
        args.notifications,
        args.statuses,
        args.favourites,
    )
    seconds, _ = timed(lambda: generate(fake, size, now=NOW - timedelta(minutes=1)))
    print(f"network: {size}")
    print(f"generated in {seconds:.1f} s ({n(len(fake.truth))} exchanges of ground truth)")

    with tempfile.TemporaryDirectory() as folder, fake:
        url = args.database_url or f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
        store: Store = open_store(url)
        account = Account(
            platform="mastodon",
            handle="@me@example.social",
            credentials={"access_token": SecretStr(TOKEN), "api_base_url": SecretStr(fake.url)},
        )
        adapter = build_adapter(account, Path(folder), clock)
        rules = Rules()

        seconds, first = timed(lambda: sync_account(store, account, adapter, rules, clock))
        made = dict(fake.requests)
        counts = listed(fake)
        report(f"first sync: {first.outcome}, {seconds:.1f} s", made, counts)
        expected = {
            route: expected_pages(
                counts[route], LIMITS[route], next_unless_empty=route == "notifications"
            )
            if route != "verify_credentials"
            else 1
            for route in LIMITS
        }
        print(f"  requests as Mastodon's Link rules predict: {made == expected}")
        print(
            f"  {n(first.interactions_new)} exchanges stored "
            f"(ground truth {n(len(fake.truth))}), {n(first.connections_seen)} listed"
        )
        print(
            f"  {sum(made.values()) / seconds:,.0f} requests/s, {seconds / sum(made.values()) * 1000:.1f} ms each"
        )

        clock.now += timedelta(hours=6)
        people = sorted(fake.following_ids())
        post = fake.post(clock.now - timedelta(hours=2))
        for i in range(1_000):
            fake.favourite_mine(
                people[i % len(people)], clock.now - timedelta(minutes=60 - i * 0.05), post
            )
        fake.requests.clear()
        seconds, again = timed(lambda: sync_account(store, account, adapter, rules, clock))
        fresh = {route: 0 for route in LIMITS} | {
            "verify_credentials": 1,
            "following": counts["following"],
            "followers": counts["followers"],
            "notifications": 1_000,
            "statuses": 1,
        }
        report(
            f"incremental sync (1,000 new notifications): {again.outcome}, {seconds:.1f} s",
            dict(fake.requests),
            fresh,
        )
        store.dispose()
    print(f"\npeak memory: {rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
