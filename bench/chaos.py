"""Chaos: the real daemon (``lopper run``) against faulty platforms, SIGKILLed and restarted.

Two accounts on a fast schedule: a Mastodon account whose server is a fake served from this
process over HTTP (tests/fakes/mastodon_server.py, the same fake the adapter's tests use),
and a sandbox account. The digest goes to an SMTP server of this process every minute.

- **Faults at the HTTP level:** a share of the Mastodon requests (``--fault-rate``, 10%) is
  answered with a 429, a 500 or 503, a malformed body, a dropped connection, or an answer
  that comes only after the client gave up (a timeout; the server still acted). A share of
  the SMTP deliveries (``--refuse-rate``, 30%) is refused with a 451 or 421.
- **Kills:** each round starts the daemon and SIGKILLs it: right after the server carried
  out an unfollow and before the daemon heard (between a removal request and its record),
  right after the SMTP server accepted a digest (while sending it), at a page of a sync, or
  otherwise at a random moment after 1-6 s.
- **The person** confirms a few pending suggestions of each account between rounds.

Before the rounds, a first daemon (faults on, no kills) runs until both accounts have their
first suggestions, so that removals happen in the rounds; it is SIGKILLed too.

After the last round a final daemon runs, with the faults still on for a minute at most, until
every confirmed removal is carried out and every digest is delivered, then stops on SIGTERM
between two digest slots. The store is then compared with the Mastodon fake's ground truth
(its own record of every exchange, who follows whom, and each unfollow it carried out) and
with a fault-free sync of the sandbox.

    python bench/chaos.py                 # 50 rounds
    python bench/chaos.py --rounds 200 --seed 3

It prints one line per invariant: the rounds after which it held (checked after each kill),
and whether the final comparison held. Exit status 1 if any did not.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from aiosmtpd.controller import Controller  # noqa: E402
from daemon_helpers import Running, environment, prepared_store, wait_for, write_config  # noqa: E402
from fakes.mastodon_server import TOKEN, FakeMastodon, NetworkSize, generate  # noqa: E402
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
SIZE, EVENTS = 400, 40.0  # the sandbox account
MASTODON = NetworkSize(
    following=240, followers=120, mutual=60, notifications=1200, statuses=160, favourites=160
)
HANDLE = "@me@example.social"
SANDBOX = "sandbox:@you"
STOP_MARGIN = 10  # seconds between the final stop and a digest slot, either side
# How long the last daemon works with the faults on. A failed removal or delivery is retried
# after twice the previous wait (1 s, 2 s, 4 s, ...), and an attempt of several requests fails
# often at a fifth of requests faulted: seven or eight failures in a row would wait two to four
# minutes. Past this the faults stop, and each retry succeeds once it is due (within about as
# long again).
FAULTY_SETTLE = 60.0
FAULT_KINDS = ("429", "500", "503", "malformed", "drop", "stall")
SYNC_PAGES = ("following", "followers", "notifications", "statuses", "favourites")
KILL_MOMENTS = (
    "between a removal request and its record",
    "while sending a digest",
    "in a sync",
    "at a random moment",
)


class Mailbox:
    """An SMTP server's handler: refuses a share of the deliveries, keeps the rest."""

    def __init__(self, rng: random.Random, refuse_rate: float) -> None:
        self.rng = rng
        self.refuse_rate = refuse_rate
        self.lock = threading.Lock()
        self.accepted: Counter[str] = Counter()  # Message-ID -> times accepted
        self.refused = 0
        self.on_accept: Callable[[str], None] | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.rng.random() < self.refuse_rate:
                self.refused += 1
                return self.rng.choice(
                    ("451 4.3.0 mailbox busy, try again later", "421 4.7.0 try again later")
                )
            parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
            message_id = str(parsed["Message-ID"]).strip()  # unfolded
            self.accepted[message_id] += 1
        if self.on_accept is not None:
            self.on_accept(message_id)
        return "250 OK"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def account_id(store: Store, key: str) -> int:
    """The account's id (-1 before the daemon first recorded it)."""
    with store.session() as session:
        found = session.scalar(select(Account.id).where(Account.key == key))
    return -1 if found is None else found


def removed_on_sandbox(state: Path) -> set[str]:
    """Who the sandbox itself records as removed through it."""
    import json

    files = list((state / "sandbox").glob("*.json"))
    if not files:
        return set()
    return set(json.loads(files[0].read_text(encoding="utf-8")).get("removed", {}))


def confirmed_users(store: Store, confirmed: set[int], account: int) -> dict[int, str]:
    with store.session() as session:
        rows = session.execute(
            select(Suggestion.id, Connection.platform_user_id)
            .join(Connection, Suggestion.connection_id == Connection.id)
            .where(Suggestion.id.in_(confirmed), Suggestion.account_id == account)
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


def recorded_digests(store: Store) -> list[tuple[Any, str, bool]]:
    """(slot, Message-ID, recorded as sent) of every digest the store holds."""
    with store.session() as session:
        return [
            (slot, message_id, sent is not None)
            for slot, message_id, sent in session.execute(
                select(Digest.slot, Digest.message_id, Digest.sent_at)
            )
        ]


def exchanges(store: Store, account: int) -> Counter[tuple[str, str, str]]:
    with store.session() as session:
        return Counter(
            (i.counterpart_id, str(i.kind), str(i.direction))
            for i in session.scalars(select(Interaction).where(Interaction.account_id == account))
        )


def connections(store: Store, account: int) -> dict[str, tuple[bool, bool]]:
    with store.session() as session:
        return {
            c.platform_user_id: (c.following, c.followed_by)
            for c in session.scalars(select(Connection).where(Connection.account_id == account))
            if c.state.value == "active"
        }


def events_until(store: Store, account: int, cutoff: Any) -> set[str]:
    with store.session() as session:
        return set(
            session.scalars(
                select(Interaction.event_id).where(
                    Interaction.account_id == account, Interaction.occurred_at <= cutoff
                )
            )
        )


class Chaos:
    def __init__(
        self, root: Path, seed: int, fault_rate: float = 0.1, refuse_rate: float = 0.3
    ) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.current: Running | None = None
        self.killing = True
        self.kills: Counter[str] = Counter()
        self.sent_before_kill: Counter[str] = Counter()  # Message-ID -> kills right after
        self.held: Counter[str] = Counter()
        self.confirmed: set[int] = set()
        # (confirmed removals, digests) still waiting for a retry when the faults stopped
        self.lifted: tuple[int, int] | None = None
        self.started: list[Running] = []

        self.fake = FakeMastodon(lambda: datetime.now(UTC), window=timedelta(seconds=2))
        generate(self.fake, MASTODON, now=datetime.now(UTC), seed=seed % 1000)
        self.fake.stall = 1.5  # past the account's request_timeout of 1 s
        self.fake.at_random(fault_rate, FAULT_KINDS, random.Random(f"faults-{seed}"))
        self.fake.on_answer = self._answered
        self.fake.start()
        self.mailbox = Mailbox(random.Random(f"smtp-{seed}"), refuse_rate)
        self.mailbox.on_accept = self._accepted
        port = free_port()
        self.smtp = Controller(self.mailbox, hostname="127.0.0.1", port=port)
        self.smtp.start()

        self.url = f"sqlite:///{root / 'state' / 'lopper.sqlite3'}"
        self.config = write_config(
            root / "config.yaml",
            self.url,
            root / "outbox",
            size=SIZE,
            events=EVENTS,
            accounts=["@you"],
            mastodon=[(HANDLE, self.fake.url, TOKEN)],
            removal_spacing="0s",
            request_timeout="1s",
            smtp_port=port,
            rules={"retry_after": "1s", "max_attempts": "50", "grace": "0s"},
            digest_retry="1s",
            schedule={"digest": "* * * * *"},
        )
        self.env = environment(root)
        # Installed a month ago: the digest slots that passed are overdue at once.
        self.store = prepared_store(self.url, first_start=datetime.now(UTC) - timedelta(days=30))
        self.logs = root / "logs"
        self.logs.mkdir()

    def start(self, log: str) -> Running:
        daemon = Running(self.config, self.env, self.logs / log)
        self.started.append(daemon)
        return daemon

    def close(self) -> None:
        for daemon in self.started:  # a run that failed half-way leaves none behind
            if daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.wait(timeout=10)
        self.fake.stop()
        self.smtp.stop()
        self.store.dispose()

    # -- kills --------------------------------------------------------------------------

    def kill(self, moment: str) -> bool:
        """SIGKILL the running daemon, if it still runs; True if this call killed it."""
        with self.lock:
            daemon = self.current
            if daemon is None or not self.killing or daemon.process.poll() is not None:
                return False
            os.kill(daemon.process.pid, signal.SIGKILL)
            daemon.process.wait()
            self.kills[moment] += 1
            return True

    def _answered(self, route: str, answer: Any) -> None:
        """The fake is about to answer: kill the daemon first, sometimes."""
        if route == "unfollow" and answer.status == 200 and self.random.random() < 0.5:
            self.kill(KILL_MOMENTS[0])
        elif route in SYNC_PAGES and self.random.random() < 0.05:
            self.kill(KILL_MOMENTS[2])

    def _accepted(self, message_id: str) -> None:
        if self.random.random() < 0.5 and self.kill(KILL_MOMENTS[1]):
            self.sent_before_kill[message_id] += 1

    # -- the person ---------------------------------------------------------------------

    def confirm_some(self) -> None:
        """The person confirms a few pending suggestions of each account (`lopper confirm`)."""
        chosen: list[int] = []
        with self.store.session() as session:
            for account in session.scalars(select(Account.id)):
                pending = list(
                    session.scalars(
                        select(Suggestion.id)
                        .where(Suggestion.state == S.PENDING, Suggestion.account_id == account)
                        .order_by(Suggestion.id)
                    )
                )
                chosen += pending[: self.random.randint(1, 4)]
        if chosen:
            result = decide(self.store, chosen, S.CONFIRMED, via=Channel.CLI, now=datetime.now(UTC))
            self.confirmed.update(result.changed)

    # -- what must hold at any moment ---------------------------------------------------

    def unconfirmed_removals(self) -> int:
        sandbox = set(confirmed_users(self.store, self.confirmed, self.sandbox_id).values())
        mastodon = set(confirmed_users(self.store, self.confirmed, self.mastodon_id).values())
        return len(removed_on_sandbox(self.root / "state") - sandbox) + len(
            set(self.fake.unfollowed) - mastodon
        )

    def digests_doubled(self) -> int:
        """Digests delivered more often than they were sent plus re-sent after a kill between
        the server's acceptance and the record, or two digests for one slot."""
        with self.mailbox.lock:
            accepted = Counter(self.mailbox.accepted)
        extra = sum(
            max(0, n - 1 - self.sent_before_kill[message_id]) for message_id, n in accepted.items()
        )
        slots = Counter(slot for slot, _id, _sent in recorded_digests(self.store))
        return extra + sum(1 for n in slots.values() if n > 1)

    def check_round(self) -> None:
        if self.unconfirmed_removals() == 0:
            self.held["no unconfirmed removal"] += 1
        if all(n == 1 for n in removal_records(self.store).values()) and all(
            n == 1 for n in self.fake.unfollowed.values()
        ):
            self.held["no removal done or recorded twice"] += 1
        if self.digests_doubled() == 0:
            self.held["no digest delivered twice"] += 1

    @property
    def sandbox_id(self) -> int:
        return account_id(self.store, SANDBOX)

    @property
    def mastodon_id(self) -> int:
        return account_id(self.store, f"mastodon:{HANDLE}")

    # -- rounds -------------------------------------------------------------------------

    def suggested(self) -> bool:
        with self.store.session() as session:
            accounts = session.scalar(
                select(func.count(func.distinct(Suggestion.account_id))).select_from(Suggestion)
            )
        return accounts == 2

    def first_start(self) -> None:
        """The daemon, faults on and no kills, until both accounts have suggestions."""
        daemon = self.start("first.log")
        wait_for(self.suggested, "suggestions on both accounts", timeout=180, process=daemon)
        daemon.kill()
        self.confirm_some()

    def round(self, index: int) -> None:
        daemon = self.start(f"round-{index:03d}.log")
        with self.lock:
            self.current = daemon
        try:
            daemon.process.wait(timeout=self.random.uniform(1.0, 6.0))
        except subprocess.TimeoutExpired:
            self.kill(KILL_MOMENTS[3])
        daemon.process.wait(timeout=10)
        daemon._out.close()
        if daemon.process.returncode != -signal.SIGKILL:
            raise AssertionError(
                f"round {index}: the daemon exited by itself ({daemon.process.returncode}):\n"
                + daemon.text()[-3000:]
            )
        self.check_round()
        if self.random.random() < 0.5:
            self.confirm_some()

    def settle(self) -> int:
        """A last daemon, faults still on (for FAULTY_SETTLE seconds at most), runs until
        every confirmed removal is carried out and every digest delivered, then one more sync
        of each account without faults, then SIGTERM."""
        with self.lock:
            self.killing = False
        daemon = self.start("final.log")
        self.confirm_some()

        def waiting() -> int:
            with self.store.session() as session:
                return (
                    session.scalar(
                        select(func.count())
                        .select_from(Suggestion)
                        .where(
                            Suggestion.id.in_(self.confirmed),
                            Suggestion.state.in_([S.CONFIRMED, S.FAILED]),
                        )
                    )
                    or 0
                )

        def settled() -> bool:
            digests = recorded_digests(self.store)
            return waiting() == 0 and bool(digests) and all(sent for _s, _m, sent in digests)

        faulty_until = time.monotonic() + FAULTY_SETTLE
        wait_for(
            lambda: settled() or time.monotonic() > faulty_until,
            "the confirmed removals and the digests, faults on",
            timeout=FAULTY_SETTLE + 30,
            process=daemon,
        )
        # No more faults: the retries due succeed; the last sync is the reference.
        self.fake.at_random(0, FAULT_KINDS, self.random)
        with self.mailbox.lock:
            self.mailbox.refuse_rate = 0.0
        if not settled():
            unsent = sum(1 for _s, _m, sent in recorded_digests(self.store) if not sent)
            self.lifted = (waiting(), unsent)
            wait_for(settled, "the confirmed removals and the digests", timeout=180, process=daemon)
        since = datetime.now(UTC)

        def synced_again() -> bool:
            with self.store.session() as session:
                return all(
                    last is not None and last > since
                    for last in session.scalars(select(Account.last_sync_at))
                )

        wait_for(synced_again, "a last sync of each account", timeout=120, process=daemon)

        # A digest slot starts every minute, and a digest composed just before the stop can
        # be refused once and wait for its retry: the daemon would stop with it unsent (the
        # next start sends it), which the final count would take for a digest lost. Stop
        # with every digest delivered, at least STOP_MARGIN seconds after the last slot (its
        # digest is composed by then) and before the next.
        def quiet() -> bool:
            return STOP_MARGIN <= time.time() % 60 < 60 - STOP_MARGIN and settled()

        wait_for(quiet, "every digest delivered, between two slots", timeout=120, process=daemon)
        return daemon.stop(timeout=30)


def reference_events(root: Path, cutoff: Any) -> set[str]:
    """The sandbox network synced once, without faults, into a store of its own."""
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
        return events_until(store, account_id(store, SANDBOX), cutoff)
    finally:
        store.dispose()


def run(
    rounds: int,
    seed: int,
    root: Path,
    say: Any = print,
    fault_rate: float = 0.1,
    refuse_rate: float = 0.3,
) -> dict[str, tuple[int, int]]:
    """Run the rounds; {invariant: (held, out of)}."""
    chaos = Chaos(root / "chaos", seed, fault_rate, refuse_rate)
    try:
        return _run(chaos, rounds, seed, root, say)
    finally:
        chaos.close()


def _run(chaos: Chaos, rounds: int, seed: int, root: Path, say: Any) -> dict[str, tuple[int, int]]:
    started = time.perf_counter()
    chaos.first_start()
    for index in range(rounds):
        chaos.round(index)
    status = chaos.settle()
    results: dict[str, tuple[int, int]] = {
        name: (chaos.held[name], rounds)
        for name in (
            "no unconfirmed removal",
            "no removal done or recorded twice",
            "no digest delivered twice",
        )
    }
    store, fake = chaos.store, chaos.fake
    sandbox, mastodon = chaos.sandbox_id, chaos.mastodon_id
    records = removal_records(store)
    sandbox_users = confirmed_users(store, chaos.confirmed, sandbox)
    mastodon_users = confirmed_users(store, chaos.confirmed, mastodon)
    done = removed_on_sandbox(root / "chaos" / "state")
    results["final: every confirmed removal done, once"] = (
        int(
            done == set(sandbox_users.values())
            and set(fake.unfollowed) == set(mastodon_users.values())
            and set(fake.unfollowed.values()) == {1}
            and all(records[sid] == 1 for sid in (*sandbox_users, *mastodon_users))
            and len(records) == len(chaos.confirmed)
        ),
        1,
    )
    digests = recorded_digests(store)
    sent_ids = {message_id for _slot, message_id, sent in digests if sent}
    results["final: every digest delivered once"] = (
        int(
            bool(digests)
            and len(sent_ids) == len(digests)
            and set(chaos.mailbox.accepted) == sent_ids
            and chaos.digests_doubled() == 0
        ),
        1,
    )
    following, followers = fake.following_ids(), fake.follower_ids()
    truth = Counter((t.counterpart, t.kind, t.direction) for t in fake.truth)
    stored = exchanges(store, mastodon)
    results["final: Mastodon interactions and follows equal the server's"] = (
        int(
            stored == truth
            and connections(store, mastodon)
            == {a: (a in following, a in followers) for a in following | followers}
        ),
        1,
    )
    with store.session() as session:
        cutoff = session.scalar(select(Account.last_sync_at).where(Account.id == sandbox))
    assert cutoff is not None
    cutoff -= timedelta(seconds=1)
    mine = events_until(store, sandbox, cutoff)
    reference = reference_events(root / "reference", cutoff)
    results["final: sandbox interactions equal a fault-free sync"] = (
        int(mine == reference and len(mine) > 1000),
        1,
    )
    results["final: clean stop on SIGTERM"] = (int(status == 0), 1)
    kills = ", ".join(f"{chaos.kills[m]} {m}" for m in KILL_MOMENTS)
    faults = ", ".join(f"{n} {kind}" for kind, n in sorted(fake.faulted.items()))
    say(
        f"{rounds} rounds (seed {seed}) in {time.perf_counter() - started:,.0f} s: "
        f"{len(chaos.confirmed)} removals confirmed, {len(done) + len(fake.unfollowed)} done, "
        f"{len(digests)} digest(s), {sum(stored.values()):,} Mastodon exchanges "
        f"(server: {sum(truth.values()):,}), {len(mine):,} sandbox interactions "
        f"(fault-free: {len(reference):,})"
    )
    say(f"kills: {kills}")
    say(
        f"faults answered: {faults or 'none'} of {sum(fake.requests.values()):,} Mastodon "
        f"requests; SMTP: {chaos.mailbox.refused} refused, "
        f"{sum(chaos.mailbox.accepted.values())} accepted, "
        f"{sum(chaos.sent_before_kill.values())} re-sent after a kill between acceptance and record"
        + (
            ""
            if chaos.lifted is None
            else f"; faults stopped after {FAULTY_SETTLE:.0f} s of the last daemon, with "
            f"{chaos.lifted[0]} confirmed removal(s) and {chaos.lifted[1]} digest(s) still "
            "waiting for a retry"
        )
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--fault-rate", type=float, default=0.1, help="share of HTTP requests")
    parser.add_argument("--refuse-rate", type=float, default=0.3, help="share of SMTP sends")
    parser.add_argument("--keep", action="store_true", help="keep the folder (logs, stores)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    root = Path(tempfile.mkdtemp(prefix="lopper-chaos-"))
    results = run(args.rounds, seed, root, fault_rate=args.fault_rate, refuse_rate=args.refuse_rate)
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
