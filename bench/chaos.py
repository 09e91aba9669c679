"""Chaos: the real daemon (``lopper run``) SIGKILLed at random moments, then restarted.

A sandbox account on a fast schedule (tests/daemon_helpers.py): the daemon syncs, evaluates,
mails the overdue digest as .eml files and carries out removals that "the person" confirms
between rounds (through ``decide``, as ``lopper confirm`` does). Each round starts the daemon,
lets it work for a random time and kills it with SIGKILL, whatever it is doing: in a sync,
between a removal and its record, while writing a digest. After the last round a final
daemon runs until the work is done and stops on SIGTERM. Then the store is compared with the
sandbox's own record of what was removed, and with a fault-free sync of the same network.

    python bench/chaos.py                 # 50 rounds
    python bench/chaos.py --rounds 200 --seed 3

It prints one line per invariant: the rounds after which it held (checked after each kill),
and whether the final comparison held. Exit status 1 if any did not.

Faults injected at the HTTP level (429s, 5xx, timeouts, malformed bodies) are the platform
contract tests' business (tests/test_x.py, tests/test_mastodon.py ... against the fakes); here
the sandbox runs in the daemon's own process, so the faults are the kills.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from daemon_helpers import Running, environment, prepared_store, wait_for, write_config  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from service.app import App  # noqa: E402
from service.model import Channel, SuggestionState  # noqa: E402
from service.store import Store  # noqa: E402
from service.store.models import (  # noqa: E402
    Account,
    AuditEntry,
    Connection,
    Digest,
    Interaction,
    Suggestion,
)
from service.suggestions import decide  # noqa: E402

S = SuggestionState
SIZE, EVENTS = 400, 40.0


def removed_on_platform(state: Path) -> dict[str, str]:
    """What the sandbox itself records as removed through it (user id -> when)."""
    files = list((state / "sandbox").glob("*.json"))
    if not files:
        return {}
    return dict(json.loads(files[0].read_text(encoding="utf-8")).get("removed", {}))


def confirmed_users(store: Store, confirmed: set[int]) -> dict[int, str]:
    with store.session() as session:
        rows = session.execute(
            select(Suggestion.id, Connection.platform_user_id)
            .join(Connection, Suggestion.connection_id == Connection.id)
            .where(Suggestion.id.in_(confirmed))
        )
        return {sid: user for sid, user in rows}


def removal_records(store: Store) -> Counter[int]:
    """How many times each suggestion was recorded as removed."""
    with store.session() as session:
        rows = session.scalars(
            select(AuditEntry.entity_id).where(
                AuditEntry.entity == "suggestion", AuditEntry.to_state == S.REMOVED.value
            )
        )
        return Counter(rows)


def digests(store: Store, outbox: Path) -> tuple[int, int, int]:
    """(digests recorded as sent, .eml files written, slots with more than one digest)."""
    with store.session() as session:
        sent = (
            session.scalar(
                select(func.count()).select_from(Digest).where(Digest.sent_at.is_not(None))
            )
            or 0
        )
        slots = Counter(session.scalars(select(Digest.slot).where(Digest.slot.is_not(None))))
    files = len(list(outbox.glob("*.eml"))) if outbox.exists() else 0
    return sent, files, sum(1 for n in slots.values() if n > 1)


def events_until(store: Store, cutoff: Any) -> set[str]:
    with store.session() as session:
        return set(
            session.scalars(select(Interaction.event_id).where(Interaction.occurred_at <= cutoff))
        )


class Chaos:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.random = random.Random(seed)
        self.url = f"sqlite:///{root / 'state' / 'lopper.sqlite3'}"
        self.outbox = root / "outbox"
        self.config = write_config(
            root / "config.yaml", self.url, self.outbox, size=SIZE, events=EVENTS
        )
        self.env = environment(root)
        # Installed a month ago: the weekly digest slots that passed are overdue at once.
        from datetime import UTC, datetime

        self.store = prepared_store(self.url, first_start=datetime.now(UTC) - timedelta(days=30))
        self.confirmed: set[int] = set()
        self.held: Counter[str] = Counter()
        self.logs = root / "logs"
        self.logs.mkdir()

    def confirm_some(self) -> None:
        """The person confirms a few pending suggestions, as `lopper confirm` does."""
        with self.store.session() as session:
            pending = list(
                session.scalars(
                    select(Suggestion.id)
                    .where(Suggestion.state == S.PENDING)
                    .order_by(Suggestion.id)
                )
            )
        chosen = pending[: self.random.randint(1, 5)]
        if chosen:
            from datetime import UTC, datetime

            result = decide(self.store, chosen, S.CONFIRMED, via=Channel.CLI, now=datetime.now(UTC))
            self.confirmed.update(result.changed)

    def check_round(self) -> None:
        """What must hold at any moment, even right after a SIGKILL."""
        platform = removed_on_platform(self.root / "state")
        users = confirmed_users(self.store, self.confirmed)
        if set(platform) <= set(users.values()):
            self.held["no unconfirmed removal"] += 1
        if all(n == 1 for n in removal_records(self.store).values()):
            self.held["no removal recorded twice"] += 1
        sent, files, doubled = digests(self.store, self.outbox)
        if doubled == 0 and files <= max(sent, 1):
            self.held["no digest delivered twice"] += 1

    def round(self, index: int) -> None:
        daemon = Running(self.config, self.env, self.logs / f"round-{index:03d}.log")
        time.sleep(self.random.uniform(0.3, 4.0))
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(timeout=10)
        daemon._out.close()
        self.check_round()
        if self.random.random() < 0.5:
            self.confirm_some()

    def settle(self) -> int:
        """A last daemon runs until every confirmed removal is carried out and a digest is
        out, then stops on SIGTERM."""
        daemon = Running(self.config, self.env, self.logs / "final.log")

        def suggested() -> bool:
            with self.store.session() as session:
                return bool(session.scalar(select(func.count()).select_from(Suggestion)))

        wait_for(suggested, "an evaluation", timeout=120, process=daemon)
        self.confirm_some()

        def settled() -> bool:
            with self.store.session() as session:
                waiting = session.scalar(
                    select(func.count())
                    .select_from(Suggestion)
                    .where(Suggestion.id.in_(self.confirmed), Suggestion.state == S.CONFIRMED)
                )
            sent, _files, _ = digests(self.store, self.outbox)
            return waiting == 0 and sent >= 1

        wait_for(settled, "the confirmed removals and the digest", timeout=120, process=daemon)
        time.sleep(1.0)  # a sync or two more
        return daemon.stop(timeout=30)


def reference_events(root: Path, cutoff: Any) -> set[str]:
    """The same network synced once, without faults, into a store of its own."""
    import os

    root.mkdir(parents=True)
    url = f"sqlite:///{root / 'state' / 'lopper.sqlite3'}"
    config = write_config(root / "config.yaml", url, root / "outbox", size=SIZE, events=EVENTS)
    previous = os.environ.get("STATE_DIRECTORY")
    os.environ["STATE_DIRECTORY"] = str(root / "state")
    try:
        application = App.load(config)
        report = application.sync(application.accounts()[0])
        assert report.outcome == "ok", report.problems
        application.close()
    finally:
        if previous is None:
            os.environ.pop("STATE_DIRECTORY", None)
        else:
            os.environ["STATE_DIRECTORY"] = previous
    store = prepared_store(url)
    try:
        return events_until(store, cutoff)
    finally:
        store.dispose()


def run(rounds: int, seed: int, root: Path, say: Any = print) -> dict[str, tuple[int, int]]:
    """Run the rounds; {invariant: (held, out of)}."""
    chaos = Chaos(root / "chaos", seed)
    started = time.perf_counter()
    for index in range(rounds):
        chaos.round(index)
    status = chaos.settle()
    results: dict[str, tuple[int, int]] = {
        name: (chaos.held[name], rounds)
        for name in (
            "no unconfirmed removal",
            "no removal recorded twice",
            "no digest delivered twice",
        )
    }
    store = chaos.store
    platform = removed_on_platform(root / "chaos" / "state")
    users = confirmed_users(store, chaos.confirmed)
    records = removal_records(store)
    results["final: every confirmed removal done, once"] = (
        int(
            set(platform) == set(users.values())
            and all(records[sid] == 1 for sid in users)
            and len(users) > 0
        ),
        1,
    )
    sent, files, doubled = digests(store, chaos.outbox)
    results["final: every digest delivered once"] = (
        int(sent >= 1 and files == sent and doubled == 0),
        1,
    )
    with store.session() as session:
        cutoff = session.scalar(select(Account.last_sync_at))
    assert cutoff is not None
    cutoff -= timedelta(seconds=1)
    mine = events_until(store, cutoff)
    reference = reference_events(root / "reference", cutoff)
    results["final: interactions equal a fault-free sync"] = (
        int(mine == reference and len(mine) > 1000),
        1,
    )
    results["final: clean stop on SIGTERM"] = (int(status == 0), 1)
    say(
        f"{rounds} rounds (seed {seed}) in {time.perf_counter() - started:,.0f} s: "
        f"{len(chaos.confirmed)} removals confirmed, {len(platform)} done, {sent} digest(s), "
        f"{len(mine):,} interactions (fault-free: {len(reference):,})"
    )
    store.dispose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--keep", action="store_true", help="keep the folder (logs, stores)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    root = Path(tempfile.mkdtemp(prefix="lopper-chaos-"))
    results = run(args.rounds, seed, root)
    failed = False
    for name, (held, total) in results.items():
        mark = "held" if held == total else "FAILED"
        failed = failed or held != total
        print(f"{name}: {mark} ({held}/{total})")
    if args.keep or failed:
        print(f"logs and stores: {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
