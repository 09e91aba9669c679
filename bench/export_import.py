"""Importing a large Facebook export: 5,000 friends and 200,000 messages.

Writes a "Download Your Information" export in the current path generation (mojibake names,
1:1 and group threads split into ``message_N.json`` files of up to 10,000 messages, as
Facebook splits them), then prints:

- ``json.loads``: every member read and parsed, nothing else: the floor for any reader;
- ``reader``: lopper's Facebook reader over the same files (parsing, repairing names, event
  ids, directions), nothing stored; and its ratio to ``json.loads``;
- ``import``: ``lopper import facebook`` without the terminal: reader, matching and the store,
  in one transaction; and ``re-import``, which must add nothing;
- peak memory (``VmHWM``) of a child process that only reads, then only imports, the full
  export and one a quarter its size: messages are read one thread file at a time and written
  in batches, so the reader's peak stays flat; the import adds SQLite's page cache, which
  the store caps at 32 MiB (``PRAGMA cache_size``).

    python bench/export_import.py
    python bench/export_import.py --friends 500 --messages 20000
    python bench/export_import.py --zip
    python bench/export_import.py --repeat 5
    python bench/export_import.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/export_import.py --big 200

``--big MB``: an export whose one thread file is that large (a junk file, or a life's
conversation): the peak memory of ``json.loads`` of that file, of the reader, and of the
import, each in a fresh process. The readers go element by element, so their peak does not
grow with the file.

``walk`` is the element-by-element JSON parse alone (``jsonstream.walk``), next to the
``json.loads`` it replaces; ``reader`` adds everything the reader does with each message.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from service.config import Account, Rules
from service.imports.common import run_import
from service.imports.export import open_export
from service.imports.facebook import FacebookReader
from service.imports.jsonstream import walk
from service.store import open_store

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ME = "Harriet Vane"
ACCOUNT = Account(platform="facebook", handle="harriet.vane")
FIRST = ["José", "Ana", "Bo", "Zoë", "Łukasz", "Chloé", "Søren", "Mei", "Ife", "Noa"]
LAST = ["Ñúñez", "Lima", "Chen", "Müller", "Park", "Okafor", "Dubois", "Kowalski", "Sato"]
PER_FILE = 10_000
ROOT = "your_facebook_activity/"


def mojibake(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def names(count: int) -> list[str]:
    out, n = [], 0
    while len(out) < count:
        first, last = FIRST[n % len(FIRST)], LAST[(n // len(FIRST)) % len(LAST)]
        out.append(f"{first} {last} {n // (len(FIRST) * len(LAST))}")
        n += 1
    return out


def write(root: Path, friends: int, messages: int, seed: int = 7) -> dict[str, int]:
    """The export as a folder: friends, and threads holding ``messages`` in total."""
    rng = random.Random(seed)
    people = names(friends)
    start = NOW - timedelta(days=800)
    files = {
        "connections/friends/your_friends.json": {
            "friends_v2": [
                {"name": mojibake(p), "timestamp": int((start + timedelta(hours=i)).timestamp())}
                for i, p in enumerate(people)
            ]
        },
        "profile_information/profile_information.json": {"profile_v2": {"name": {"full_name": ME}}},
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(data), "utf-8")
    threads = max(1, friends // 2)
    counts = {"threads": threads, "files": len(files), "messages": 0}
    # A few talkative threads, many quiet ones: shares drawn from a long-tailed distribution.
    weights = [rng.paretovariate(1.2) for _ in range(threads)]
    total = sum(weights)
    sizes = [max(1, int(messages * w / total)) for w in weights]
    sizes[0] += messages - sum(sizes)
    span = (NOW - start).total_seconds()
    for t, size in enumerate(sizes):
        others = [people[t]] if t % 10 else rng.sample(people, 4)  # every tenth is a group
        participants = [*others, ME]
        stamps = sorted((rng.random() * span for _ in range(size)), reverse=True)
        folder = root / f"{ROOT}messages/inbox/thread{t}_{1000 + t}"
        folder.mkdir(parents=True)
        for part in range(0, size, PER_FILE):
            chunk = stamps[part : part + PER_FILE]
            body = {
                "participants": [{"name": mojibake(p)} for p in participants],
                "messages": [
                    {
                        "sender_name": mojibake(rng.choice(participants)),
                        "timestamp_ms": int((start.timestamp() + s) * 1000),
                        "content": mojibake("Olá, tudo bem? 👋"),
                        "type": "Generic",
                    }
                    for s in chunk
                ],
                "title": mojibake(others[0]),
                "is_still_participant": True,
                "thread_path": f"inbox/thread{t}_{1000 + t}",
            }
            (folder / f"message_{part // PER_FILE + 1}.json").write_text(json.dumps(body), "utf-8")
            counts["files"] += 1
        counts["messages"] += size
    return counts


def zip_folder(folder: Path) -> Path:
    target = folder.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"facebook-harriet/{path.relative_to(folder).as_posix()}")
    return target


def plain_json(path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    items = 0
    with open_export(path) as export:
        for member in export.names():
            with export.open(member) as stream:
                data = json.loads(stream.read())
            items += len(data.get("messages", ())) if isinstance(data, dict) else 0
    return time.perf_counter() - start, items


def walk_only(path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    items = 0
    with open_export(path) as export:
        for member in export.names():
            for _key, _value in walk(export, member):
                items += 1
    return time.perf_counter() - start, items


def loads_only(path: Path) -> None:
    with open_export(path) as export:
        for member in export.names():
            with export.open(member) as stream:
                json.loads(stream.read())


def write_big(root: Path, megabytes: int) -> int:
    """An export of 50 friends and one thread file of about ``megabytes`` MB."""
    write(root, 50, 100)
    thread = root / f"{ROOT}messages/inbox/big_1/message_1.json"
    thread.parent.mkdir(parents=True)
    friend = mojibake(names(1)[0])
    start = int((NOW - timedelta(days=700)).timestamp() * 1000)
    line = '{"sender_name": "%s", "timestamp_ms": %d, "content": "%s", "type": "Generic"}'
    count = 0
    with thread.open("w", encoding="utf-8") as out:
        people = json.dumps([{"name": friend}, {"name": ME}])
        out.write(f'{{"participants": {people}, "messages": [')
        written = 0
        while written < megabytes * 1_000_000:
            sender = friend if count % 2 else ME
            text = line % (sender, start + count * 1000, "x" * (40 + count % 80))
            out.write(("," if count else "") + text)
            written += len(text) + 1
            count += 1
        out.write('], "title": "big", "is_still_participant": true}')
    return count


def reader_only(path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    reader = FacebookReader()
    reader.handle = ACCOUNT.handle
    count = 0
    with open_export(path) as export:
        reader.members(export)
        listing = reader.listing(export, lambda _n: None)
        count += len(listing.people) if listing else 0
        for batch in reader.exchanges(export, lambda _n: None):
            count += len(batch)
    return time.perf_counter() - start, count


def child_rss(path: Path, url: str | None) -> int:
    """Peak resident memory (KiB) of a fresh process that only imports ``path`` into ``url``
    (or, without a URL, only reads it)."""
    # VmHWM, not ru_maxrss: Linux hands a forked child its parent's ru_maxrss.
    work = "import_once(sys.argv[1], sys.argv[2])" if url else "reader_only(Path(sys.argv[1]))"
    if url == "loads":
        work = "loads_only(Path(sys.argv[1]))"
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from bench.export_import import import_once, loads_only, reader_only\n"
        f"{work}\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(hwm.split()[1])\n"
    )
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code, str(path), *([url] if url and url != "loads" else [])],
        capture_output=True,
        text=True,
        check=True,
        cwd=repo,
    )
    return int(result.stdout.strip().splitlines()[-1])


def import_once(path: str, url: str) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    store = open_store(url)
    try:
        run_import(store, ACCOUNT, FacebookReader(), Path(path), Rules(), NOW)
    finally:
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--friends", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--zip", action="store_true", help="read the export as a zip")
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--no-memory", action="store_true", help="skip the child-process runs")
    parser.add_argument("--repeat", type=int, default=3, help="runs of json.loads and reader")
    parser.add_argument("--big", type=int, metavar="MB", help="peak memory on one file this big")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.big:
        big(args.big)
        return

    work = Path(tempfile.mkdtemp(prefix="lopper-bench-export-"))
    try:
        folder = work / "facebook-harriet"
        t0 = time.perf_counter()
        counts = write(folder, args.friends, args.messages)
        path = zip_folder(folder) if args.zip else folder
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(
            f"export: {args.friends:,} friends, {counts['messages']:,} messages in "
            f"{counts['threads']:,} threads, {counts['files']:,} files, {size / 1e6:.1f} MB "
            f"({'zip' if args.zip else 'folder'}; written in {time.perf_counter() - t0:.1f} s)"
        )

        # Alternated and repeated: on a shared machine the load drifts between runs.
        floors, walks, readers = [], [], []
        for _ in range(args.repeat):
            base, parsed = plain_json(path)
            floors.append(base)
            walks.append(walk_only(path)[0])
            spent, items = reader_only(path)
            readers.append(spent)
        base, walked = min(floors), min(walks)
        spent = min(readers)
        print(
            f"json.loads:  {base:6.2f} s  ({parsed / base:,.0f} messages/s; best of {args.repeat})"
        )
        print(f"walk:        {walked:6.2f} s  ({walked / base:.2f}x json.loads)")
        print(f"reader:      {spent:6.2f} s  ({spent / base:.2f}x json.loads; {items:,} items)")

        url = args.database_url or f"sqlite:///{work / 'lopper.sqlite3'}"
        store = open_store(url)
        try:
            start = time.perf_counter()
            report = run_import(store, ACCOUNT, FacebookReader(), path, Rules(), NOW)
            spent = time.perf_counter() - start
            print(
                f"import:      {spent:6.2f} s  ({spent / base:.2f}x json.loads; "
                f"{report.connections_new:,} connections, {report.exchanges_new:,} exchanges, "
                f"{report.exchanges_new / spent:,.0f}/s)"
            )
            start = time.perf_counter()
            again = run_import(store, ACCOUNT, FacebookReader(), path, Rules(), NOW)
            spent = time.perf_counter() - start
            print(f"re-import:   {spent:6.2f} s  ({again.exchanges_new} new exchanges)")
        finally:
            store.dispose()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"peak rss of this process: {rss / 1024:.0f} MiB")

        if not args.no_memory and args.database_url is None:
            small = work / "quarter"
            write(small, args.friends // 4, args.messages // 4)
            small_path = zip_folder(small) if args.zip else small
            for label, full_url, small_url in (
                ("reader", None, None),
                ("import", f"sqlite:///{work / 'full.sqlite3'}", f"sqlite:///{work / 'q.sqlite3'}"),
            ):
                small_kib = child_rss(small_path, small_url)
                full_kib = child_rss(path, full_url)
                print(
                    f"peak rss, {label} alone: {small_kib / 1024:.0f} MiB for a quarter of the "
                    f"export, {full_kib / 1024:.0f} MiB for all of it"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def big(megabytes: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="lopper-bench-export-"))
    try:
        folder = work / "facebook-big"
        count = write_big(folder, megabytes)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"export: one thread file of {count:,} messages, {size / 1e6:.0f} MB in all")
        for label, url in (
            ("json.loads of every file", "loads"),
            ("reader", None),
            ("import (SQLite)", f"sqlite:///{work / 'big.sqlite3'}"),
        ):
            start = time.perf_counter()
            kib = child_rss(folder, url)
            print(f"peak rss, {label}: {kib / 1024:.0f} MiB ({time.perf_counter() - start:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
