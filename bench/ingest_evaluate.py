"""Ingest and evaluation at scale: a sandbox network of 50,000 connections, ~1M interactions.

Prints plain figure lines. Targets: evaluation within 1.5x of one hand-written aggregate
query, ingest at least 50,000 events/s on SQLite, peak memory under 300 MB.

    python bench/ingest_evaluate.py
    python bench/ingest_evaluate.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import shutil
import statistics
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from measure import n, rss_mb, timed
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.config import Account, Rules, SandboxOptions
from service.model import Direction
from service.platforms import build_adapter
from service.platforms.sandbox import STREAM, SandboxNetwork
from service.store import Store, open_store
from service.store.models import Account as AccountRow
from service.store.queries import connection_facts, exchange_stats
from service.suggestions import evaluate_account
from service.sync import sync_account

HANDLE = "@bench"


# --- helpers -----------------------------------------------------------------------------


def median_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        result = None  # one result alive at a time: the peak memory is that of one run
        seconds, result = timed(fn)
        times.append(seconds)
    return statistics.median(times), times, result


def runs(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


def tuned_options(connections: int, interactions: int, history_days: int) -> SandboxOptions:
    """Sandbox options whose expected number of exchanges is ``interactions``.

    The expected count follows from the network itself: each day the sandbox draws
    ``daily`` exchanges in proportion to the people's weights and keeps those of people
    connected and not yet quiet that day, so the kept share per day is the eligible weight
    over the total weight (a difference array over the days gives it in one pass).
    """
    probe = SandboxOptions(size=connections, history_days=history_days)
    anchor = 0
    network = SandboxNetwork(probe, anchor)
    today = anchor + history_days
    delta = [0.0] * (history_days + 2)
    total = 0.0
    active = 0
    for m in network.members:
        if m.weight <= 0:
            continue
        active += 1
        total += m.weight
        first = max(m.connected_day, anchor)
        last = today if m.quiet_day is None else min(m.quiet_day, today)
        if first > last:
            continue
        delta[first - anchor] += m.weight
        delta[last - anchor + 1] -= m.weight
    eligible, kept_days = 0.0, 0.0
    for day in range(history_days + 1):
        eligible += delta[day]
        kept_days += eligible / total
    # daily = active * per_person / 365; expected kept = daily * kept_days
    per_person = interactions * 365.0 / (active * kept_days)
    return probe.model_copy(update={"events_per_active_person": per_person})


def hand_written_sql(account_id: int, rules: Rules, now: datetime) -> tuple[str, dict[str, Any]]:
    """The evaluation's aggregate written out by hand (same semantics as exchange_statement).

    Numbers travel as bound parameters: in PostgreSQL a literal such as 1.5 is ``numeric``,
    and EXP over numeric is many times slower than over double precision. Like the store's
    query it counts an exchange older than e**-600 as worth 0 (PostgreSQL raises on the
    underflow instead).
    """
    kinds = ", ".join(f"'{kind.value}'" for kind in sorted(rules.count_kinds))
    directions = ", ".join(f"'{d.value}'" for d in sorted(rules.count_directions))
    weights = " ".join(f"WHEN '{kind.value}' THEN :w_{kind.value}" for kind in rules.weights)
    counted = f"occurred_at >= :since AND kind IN ({kinds}) AND direction IN ({directions})"
    inbound = f"direction = '{Direction.INBOUND.value}'"
    sql = f"""
        SELECT counterpart_id,
               SUM(CASE WHEN {counted} AND {inbound} THEN 1 ELSE 0 END),
               SUM(CASE WHEN {counted} AND NOT {inbound} THEN 1 ELSE 0 END),
               MAX(CASE WHEN {inbound} THEN occurred_at END),
               MAX(CASE WHEN NOT {inbound} THEN occurred_at END),
               SUM((CASE kind {weights} ELSE :w_other END)
                   * (CASE WHEN {inbound} THEN :w_inbound ELSE :w_outbound END)
                   * CASE WHEN (occurred_at - :now) * :k < -600 THEN 0.0
                          ELSE EXP((occurred_at - :now) * :k) END)
          FROM interactions
         WHERE account_id = :account AND occurred_at <= :now
         GROUP BY counterpart_id
    """
    params: dict[str, Any] = {
        "account": account_id,
        "now": int(now.timestamp()),
        "since": int((now - rules.window).timestamp()),
        "k": math.log(2) / rules.half_life.total_seconds(),
        "w_inbound": float(rules.inbound_weight),
        "w_outbound": float(rules.outbound_weight),
        "w_other": 1.0,
        **{f"w_{kind.value}": float(w) for kind, w in rules.weights.items()},
    }
    return sql, params


def database_for(database_url: str | None, schema: str, sqlite_file: Path) -> tuple[str, str]:
    """The store's URL for the run (a fresh PostgreSQL schema, else a SQLite file) and a
    line that says where it is."""
    if database_url:
        return prepare_postgres(database_url, schema), f"postgresql (schema {schema})"
    return f"sqlite:///{sqlite_file}", f"sqlite ({sqlite_file})"


def prepare_postgres(url: str, schema: str) -> str:
    """A fresh schema for the run (dropped first, so runs repeat); the URL that uses it."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    parsed = make_url(url)
    scoped = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False)


def drop_postgres(url: str, schema: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


# --- the run -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50_000)
    parser.add_argument("--interactions", type=int, default=1_000_000, help="target count")
    parser.add_argument("--history-days", type=int, default=400)
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (a schema is created in it and dropped after); default: SQLite "
        "in a temporary directory",
    )
    parser.add_argument("--schema", default="lopper_bench", help="PostgreSQL schema to use")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each evaluation")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="skip the extra traced evaluation"
    )
    args = parser.parse_args(argv)
    # The service's info lines ("evaluated ...") would interleave with the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    workdir = Path(tempfile.mkdtemp(prefix="lopper-bench-"))
    url, where = database_for(args.database_url, args.schema, workdir / "bench.sqlite3")

    now = datetime.now(UTC).replace(microsecond=0)
    clock = lambda: now  # noqa: E731 - one fixed instant for the whole run
    rules = Rules()
    print(f"python: {sys.version.split()[0]}, database: {where}")
    print(f"rss at start: {rss_mb():.0f} MB")

    seconds, options = timed(
        lambda: tuned_options(args.connections, args.interactions, args.history_days)
    )
    print(
        f"sandbox options: size={options.size}, history_days={options.history_days}, "
        f"events_per_active_person={options.events_per_active_person:.2f} "
        f"(tuned in {seconds:.1f} s)"
    )
    account = Account(platform="sandbox", handle=HANDLE, sandbox=options)

    # Sandbox generation alone: the same pages the sync will fetch, not stored.
    seconds, adapter = timed(lambda: build_adapter(account, workdir, clock))
    print(f"sandbox network: {n(len(adapter.network.members))} people built in {seconds:.2f} s")

    def generate_only() -> tuple[int, int]:
        cursor, events, pages = None, 0, 0
        while True:
            page = adapter.interactions(STREAM, cursor)
            events += len(page.exchanges)
            pages += 1
            cursor = page.cursor
            if page.done:
                return events, pages

    gen_s, (generated, pages) = timed(generate_only)
    print(
        f"generation: {n(generated)} events in {pages:,} pages in {gen_s:.2f} s = "
        f"{n(generated / gen_s)} events/s (sandbox alone, nothing stored)"
    )
    print(f"rss after generation: {rss_mb():.0f} MB")

    store: Store = open_store(url)
    try:
        # The first sync: connections, then the whole history, through the real adapter.
        adapter = build_adapter(account, workdir, clock)
        sync_s, report = timed(lambda: sync_account(store, account, adapter, rules, clock))
        if report.outcome != "ok":
            print(f"sync outcome: {report.outcome} {report.problems}", file=sys.stderr)
            return 1
        ingested = report.interactions_new
        print(
            f"ingest: {n(ingested)} events in {sync_s:.1f} s = {n(ingested / sync_s)} events/s "
            f"(first sync, {n(report.connections_new)} connections, sandbox included)"
        )
        store_s = sync_s - gen_s
        print(
            f"ingest, store's share: {store_s:.1f} s of {sync_s:.1f} s = "
            f"{n(ingested / store_s)} events/s without generation"
        )
        print(f"rss after ingest: {rss_mb():.0f} MB")

        with store.session() as session:
            account_id = session.query(AccountRow.id).filter_by(key=account.key).scalar()
            stored = session.execute(
                text("SELECT count(*) FROM interactions WHERE account_id = :a"), {"a": account_id}
            ).scalar_one()
            counterparts = session.execute(
                text(
                    "SELECT count(DISTINCT counterpart_id) FROM interactions WHERE account_id = :a"
                ),
                {"a": account_id},
            ).scalar_one()
            summaries = session.execute(
                text("SELECT count(*) FROM exchange_periods WHERE account_id = :a"),
                {"a": account_id},
            ).scalar_one()
        print(
            f"interactions: {n(stored)} stored, {n(counterparts)} counterparts, "
            f"{n(report.connections_seen)} connections; {n(summaries)} period summaries"
        )
        if stored != ingested:
            print(
                f"WARNING: the sync reported {n(ingested)} new events, the store holds {n(stored)}"
            )
        if store.dialect == "postgresql":
            with store.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE"
                )
        else:
            with store.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")

        # Idempotence, and the cost of a sync with nothing new.
        resync_s, again = timed(
            lambda: sync_account(
                store, account, build_adapter(account, workdir, clock), rules, clock
            )
        )
        print(
            f"second sync: {again.interactions_new} new events, {again.connections_new} new "
            f"connections in {resync_s:.1f} s"
        )

        # The reference: one hand-written aggregate, every row fetched.
        sql, params = hand_written_sql(account_id, rules, now)

        def reference() -> list[Any]:
            with store.engine.connect() as conn:
                return conn.execute(text(sql), params).fetchall()

        ref_s, ref_times, ref_rows = median_of(args.repeat, reference)
        print(
            f"hand-written query: {len(ref_rows):,} rows, median {ref_s:.3f} s ({runs(ref_times)})"
        )

        # The same aggregate through the store (exchange_stats), and the facts read.
        def aggregate() -> dict[str, Any]:
            with store.session() as session:
                return exchange_stats(session, account_id, rules, now)

        agg_s, agg_times, stats = median_of(args.repeat, aggregate)
        print(f"exchange_stats: {len(stats):,} rows, median {agg_s:.3f} s ({runs(agg_times)})")
        check_same(ref_rows, stats)

        def facts() -> int:
            with store.session() as session:
                return len(connection_facts(session, account_id))

        facts_s, facts_times, facts_count = median_of(args.repeat, facts)
        print(
            f"connection_facts: {facts_count:,} rows, median {facts_s:.3f} s ({runs(facts_times)})"
        )

        # The full evaluation: aggregate, judge every connection, queue suggestions.
        eval_s, eval_times, evaluation = median_of(
            args.repeat, lambda: evaluate_account(store, account.key, rules, now)
        )
        verdicts = ", ".join(f"{k}={v:,}" for k, v in sorted(evaluation.verdicts.items()))
        print(f"evaluation: median {eval_s:.3f} s ({runs(eval_times)}); {verdicts}")
        ratio = eval_s / ref_s
        print(f"evaluation / hand-written query: {ratio:.2f}x")
        print(f"rss after evaluation: {rss_mb():.0f} MB")

        rate = ingested / sync_s
        peak = rss_mb()
        if store.dialect == "sqlite":
            verdict = "met" if rate >= 50_000 else "MISSED"
        else:
            verdict = "set for SQLite only"
        print(f"ingest target >= 50,000 events/s: {verdict} ({n(rate)} events/s)")
        print(
            f"evaluation target <= 1.5x the hand-written query: "
            f"{'met' if ratio <= 1.5 else 'MISSED'} ({ratio:.2f}x)"
        )
        print(
            f"peak memory (ru_maxrss): {peak:.0f} MB "
            f"(target < 300 MB: {'met' if peak < 300 else 'MISSED'})"
        )

        if not args.no_tracemalloc:
            # After the figures above: tracing itself costs memory and time.
            gc.collect()
            tracemalloc.start()
            evaluate_account(store, account.key, rules, now)
            _, traced = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"tracemalloc peak of one more evaluation: {traced / 2**20:.0f} MB")
    finally:
        store.dispose()
        if args.keep:
            print(f"kept: {url} (sandbox state in {workdir})")
        else:
            if args.database_url:
                drop_postgres(args.database_url, args.schema)
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def check_same(ref_rows: list[Any], stats: dict[str, Any]) -> None:
    """The hand-written query and exchange_stats must agree, or the comparison is moot."""
    if len(ref_rows) != len(stats):
        raise SystemExit(f"mismatch: {len(ref_rows)} rows by hand, {len(stats)} by the store")
    for row in ref_rows:
        cp, inbound, outbound, last_in, last_out, value = row
        s = stats[cp]
        same = (
            s.inbound == inbound
            and s.outbound == outbound
            and _epoch(s.last_inbound) == last_in
            and _epoch(s.last_outbound) == last_out
            and math.isclose(s.value, float(value or 0.0), rel_tol=1e-9, abs_tol=1e-12)
        )
        if not same:
            raise SystemExit(f"mismatch for counterpart {cp}: {s} vs {tuple(row)}")
    print(f"check: hand-written query and exchange_stats agree on {len(stats):,} counterparts")


def _epoch(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


if __name__ == "__main__":
    raise SystemExit(main())
