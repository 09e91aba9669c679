"""X archive import throughput: MB/s of the streaming reader against plain ``json.loads``.

Writes an archive in X's format into a temporary folder (posts split into parts as X splits
them, messages, likes, follows), then times, over the same data files:

- ``json.loads``: each file read whole, its ``window.YTD`` prefix cut off, parsed at once;
- the reader lopper uses (``service.imports.x_archive.records``): element by element;
- the whole import into a fresh SQLite store (no API: likes stay unattributed).

and the peak memory (tracemalloc) of the first two on the largest file.

    python bench/x_archive.py
    python bench/x_archive.py --posts 300000 --zip
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import random
import sys
import tempfile
import time
import tracemalloc
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from service.config import Account
from service.imports.export import open_export
from service.imports.x_archive import import_archive, records
from service.store import open_store

ME, USERNAME = "1072250532645998596", "TweepyDev"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PART_POSTS = 60_000  # X starts a new part file at about this size


def ytd(name: str, part: int, items: list[object]) -> str:
    return f"window.YTD.{name}.part{part} = " + json.dumps(items, indent=2)


def post(rng: random.Random, index: int, people: list[str]) -> dict[str, object]:
    at = NOW - timedelta(seconds=index * 600)
    who = rng.choice(people)
    text = f"@p{who} " + "words and more words " * rng.randint(1, 10)
    body: dict[str, object] = {
        "edit_info": {
            "initial": {
                "editTweetIds": [str(index)],
                "editableUntil": "2022-11-07T21:12:53.000Z",
                "editsRemaining": "5",
                "isEditEligible": True,
            }
        },
        "retweeted": False,
        "source": '<a href="https://mobile.twitter.com" rel="nofollow">Twitter Web App</a>',
        "entities": {
            "hashtags": [],
            "symbols": [],
            "user_mentions": [
                {
                    "name": f"P {who}",
                    "screen_name": f"p{who}",
                    "indices": ["0", "8"],
                    "id_str": who,
                    "id": who,
                }
            ],
            "urls": [],
        },
        "display_text_range": ["0", str(len(text))],
        "favorite_count": str(rng.randint(0, 50)),
        "id_str": str(1590000000000000000 + index),
        "truncated": False,
        "retweet_count": "0",
        "id": str(1590000000000000000 + index),
        "created_at": at.strftime("%a %b %d %H:%M:%S +0000 %Y"),
        "favorited": False,
        "full_text": text,
        "lang": "en",
    }
    if index % 3 == 0:
        body |= {
            "in_reply_to_user_id": who,
            "in_reply_to_user_id_str": who,
            "in_reply_to_screen_name": f"p{who}",
        }
    return {"tweet": body}


def write(folder: Path, posts: int, messages: int, likes: int, people: int) -> dict[str, str]:
    rng = random.Random(1)
    ids = [str(100_000 + i) for i in range(people)]
    files: dict[str, str] = {
        "data/account.js": ytd(
            "account",
            0,
            [
                {
                    "account": {
                        "username": USERNAME,
                        "accountId": ME,
                        "createdAt": "2016-03-01T09:30:00.000Z",
                    }
                }
            ],
        ),
        "data/following.js": ytd(
            "following",
            0,
            [
                {
                    "following": {
                        "accountId": u,
                        "userLink": f"https://twitter.com/intent/user?user_id={u}",
                    }
                }
                for u in ids[: people // 2]
            ],
        ),
        "data/follower.js": ytd(
            "follower",
            0,
            [
                {
                    "follower": {
                        "accountId": u,
                        "userLink": f"https://twitter.com/intent/user?user_id={u}",
                    }
                }
                for u in ids[people // 4 :]
            ],
        ),
        "data/like.js": ytd(
            "like",
            0,
            [
                {
                    "like": {
                        "tweetId": str(1400000000000000000 + i),
                        "fullText": "liked " * 8,
                        "expandedUrl": f"https://twitter.com/i/web/status/{i}",
                    }
                }
                for i in range(likes)
            ],
        ),
    }
    for part, start in enumerate(range(0, posts, PART_POSTS)):
        name = "data/tweets.js" if part == 0 else f"data/tweets-part{part}.js"
        files[name] = ytd(
            "tweets",
            part,
            [post(rng, i, ids) for i in range(start, min(posts, start + PART_POSTS))],
        )
    conversations = []
    for c in range(max(1, messages // 20)):
        other = ids[c % people]
        msgs = []
        for m in range(20):
            sender, recipient = (other, ME) if m % 2 else (ME, other)
            msgs.append(
                {
                    "messageCreate": {
                        "reactions": [],
                        "urls": [],
                        "text": "hello there " * 4,
                        "mediaUrls": [],
                        "senderId": sender,
                        "recipientId": recipient,
                        "id": str(1600000000000000000 + c * 20 + m),
                        "createdAt": (NOW - timedelta(hours=c * 20 + m)).strftime(
                            "%Y-%m-%dT%H:%M:%S.000Z"
                        ),
                    }
                }
            )
        conversations.append(
            {"dmConversation": {"conversationId": f"{other}-{ME}", "messages": msgs}}
        )
    files["data/direct-messages.js"] = ytd("direct_messages", 0, conversations)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return files


def with_json_loads(folder: Path, names: list[str]) -> int:
    count = 0
    for name in names:
        text = (folder / name).read_text(encoding="utf-8")
        count += len(json.loads(text[text.index("=") + 1 :]))
    return count


def with_records(folder: Path, names: list[str]) -> int:
    count = 0
    with open_export(folder) as export:
        for name in names:
            count += sum(1 for _ in records(export, name))
    return count


def best(fn, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=120_000)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--likes", type=int, default=30_000)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--zip", action="store_true", help="import from a zip instead of a folder")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "twitter-archive"
        files = write(folder, args.posts, args.messages, args.likes, args.people)
        names = [n for n in files if n != "data/account.js"]
        size = sum((folder / n).stat().st_size for n in names)
        mb = size / 1e6
        print(
            f"archive: {len(names)} data files, {mb:,.1f} MB ({args.posts:,} posts, {args.messages:,} messages, {args.likes:,} likes)"
        )

        gc.disable()  # json.loads builds every object at once: spare it the collector's passes
        loads_nogc, _ = best(lambda: with_json_loads(folder, names), args.repeat)
        gc.enable()
        loads, n1 = best(lambda: with_json_loads(folder, names), args.repeat)
        ours, n2 = best(lambda: with_records(folder, names), args.repeat)
        assert n1 == n2, (n1, n2)
        print(f"json.loads, whole files:     {loads:.2f} s = {mb / loads:,.1f} MB/s")
        print(f"json.loads, collector off:   {loads_nogc:.2f} s = {mb / loads_nogc:,.1f} MB/s")
        print(
            f"lopper's reader, streaming:  {ours:.2f} s = {mb / ours:,.1f} MB/s "
            f"({ours / loads:.2f}x json.loads, {ours / loads_nogc:.2f}x with the collector off)"
        )

        largest = max(names, key=lambda n: (folder / n).stat().st_size)
        for label, fn in (("json.loads", with_json_loads), ("streaming", with_records)):
            tracemalloc.start()
            fn(folder, [largest])
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(
                f"  peak memory on {largest} ({(folder / largest).stat().st_size / 1e6:,.0f} MB), {label}: {peak / 1e6:,.1f} MB"
            )

        source = folder
        if args.zip:
            source = Path(tmp) / "archive.zip"
            with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as z:
                for name in files:
                    z.write(folder / name, name)
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}")
        config = Account(platform="x", handle=f"@{USERNAME}")
        start = time.perf_counter()
        report = import_archive(store, config, source, NOW)
        seconds = time.perf_counter() - start
        print(
            f"whole import into SQLite ({'zip' if args.zip else 'folder'}): {seconds:.2f} s = {mb / seconds:,.1f} MB/s, "
            f"{report.exchanges_new:,} exchanges ({report.exchanges_new / seconds:,.0f}/s), "
            f"{report.connections_new:,} connections"
        )
        start = time.perf_counter()
        again = import_archive(store, config, source, NOW)
        print(
            f"the same archive again: {time.perf_counter() - start:.2f} s, {again.exchanges_new} new exchanges"
        )
        store.dispose()


if __name__ == "__main__":
    main()
