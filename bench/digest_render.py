"""Rendering a digest with 1,000 suggestions: templates, CSS inlining, the MIME message.

Prints plain figure lines. Target: under 0.5 s to render a digest of 1,000 suggestions.

    python bench/digest_render.py
    python bench/digest_render.py --suggestions 1000 --repeat 9 --store-size 6000

Two measurements:
- render: ``DigestData`` built in memory (no database) -> text and HTML from the Jinja2
  templates, CSS inlined into the HTML, then the multipart message serialized. Cold (first
  call, templates compiled) and the median of the warm repeats.
- queue_digest: the whole job as the daemon runs it, on a sandbox account synced into a
  fresh SQLite store with 1,000 pending suggestions: reading the store (the evaluation's
  aggregate for the picture included), rendering, signing the link, storing the message.

See bench/README.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from service.digest.compose import AccountDigest, DigestData, Person, count_buckets
from service.digest.render import build_message, render

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def synthetic(count: int) -> DigestData:
    people = []
    for i in range(count):
        last = NOW - timedelta(days=200 + i % 400) if i % 3 else None
        people.append(
            Person(
                id=i + 1,
                account="mastodon:@me@example.social",
                handle=f"@person{i}@server{i % 37}.example",
                name=f"Person Number {i} ✨",
                profile_url=f"https://server{i % 37}.example/@person{i}",
                why="0 exchanges in the last 180 days (fewer than 1)",
                reason="quiet",
                connected_since=NOW - timedelta(days=300 + i),
                last_exchange=last,
                last_inbound=last,
                last_outbound=None,
                inbound=0,
                outbound=0,
                window_days=180,
                value=0.01 * (i % 7),
                mutual=i % 5 == 0,
                created_at=NOW,
            )
        )
    rows = [(NOW - timedelta(days=(i * 7) % 800), i % 4 == 0, i % 4 == 1) for i in range(20_000)]
    account = AccountDigest(
        "mastodon:@me@example.social",
        connections=20_000,
        following=18_500,
        change=-42,
        new=people[: count // 2],
        pending=people[count // 2 :],
        buckets=count_buckets(rows, NOW),
    )
    return DigestData(
        generated_at=NOW,
        since=NOW - timedelta(days=7),
        accounts=[account],
        review_url="http://127.0.0.1:8470/review/eyJuIjoiYWJjIiwiZSI6MX0.c2lnbmF0dXJl",
        schedule="0 8 * * mon",
        link_expires=NOW + timedelta(days=14),
    )


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_render(count: int, repeat: int) -> None:
    data = synthetic(count)
    zone = ZoneInfo("Europe/Paris")
    cold = timed(lambda: render(data, zone))
    warm = [timed(lambda: render(data, zone)) for _ in range(repeat)]
    rendered = render(data, zone)

    def whole() -> bytes:
        message = build_message(rendered, "lopper <lopper@example.org>", ["me@example.org"], NOW)
        return message.as_bytes()

    mime = [timed(whole) for _ in range(repeat)]
    full = [timed(lambda: whole() if render(data, zone) else b"") for _ in range(repeat)]
    print(f"suggestions: {count:,}")
    print(f"html: {len(rendered.html) / 1024:,.0f} KiB, text: {len(rendered.text) / 1024:,.0f} KiB")
    print(f"message: {len(whole()) / 1024:,.0f} KiB")
    print(f"render, cold (templates compiled): {cold:.3f} s")
    print(f"render, median of {repeat}: {statistics.median(warm):.3f} s")
    print(f"mime message, median of {repeat}: {statistics.median(mime):.3f} s")
    print(
        f"render + message, median of {repeat}: {statistics.median(full):.3f} s  (target < 0.5 s)"
    )


def bench_queue(size: int, count: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="lopper-digest-bench-") as folder:
        root = Path(folder)
        os.environ["XDG_STATE_HOME"] = str(root / "state")
        config = root / "config.yaml"
        config.write_text(
            f"""version: 1
accounts:
  - platform: sandbox
    handle: "@you"
    sandbox: {{seed: 11, size: {size}}}
rules:
  per_digest_cap: {count}
digest:
  delivery: files
  folder: {root / "outbox"}
storage:
  url: sqlite:///{root / "bench.sqlite3"}
""",
            encoding="utf-8",
        )
        from service.app import App
        from service.digest import queue_digest

        app = App.load(config, clock=lambda: NOW)
        account = app.accounts()[0]
        started = time.perf_counter()
        app.sync(account)
        report = app.evaluate(account)
        print(
            f"store: sandbox of {size:,}, {report.queued:,} pending suggestions "
            f"(set up in {time.perf_counter() - started:.1f} s)"
        )
        runs = [
            timed(lambda i=i: queue_digest(app, NOW + timedelta(days=7 * (i + 1))))  # type: ignore[misc]
            for i in range(repeat)
        ]
        print(
            f"queue_digest (store read + render + store), median of {repeat}: {statistics.median(runs):.3f} s"
        )
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suggestions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--store-size", type=int, default=6000, help="0: skip the store run")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"python {sys.version.split()[0]}")
    bench_render(args.suggestions, args.repeat)
    if args.store_size:
        bench_queue(args.store_size, args.suggestions, max(3, args.repeat // 3))


if __name__ == "__main__":
    main()
