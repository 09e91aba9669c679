"""Scale: a sandbox network of 100,000 connections and 10,000,000 interactions.

For SQLite and PostgreSQL: the first sync (ingest), the size of the database per million
interactions, and the time and peak memory of a full evaluation (``lopper evaluate``), of a
reduction plan (``lopper plan --keep 20%``) and of the hand-written aggregate query over every
interaction that is their reference (the evaluation reads the period summaries,
``exchange_periods``, and two periods of interactions; the stage ``reference`` checks that
both give the same figures). Each measured stage runs in a fresh process, so its peak memory
(VmHWM) is its own and not the ingest's; the baseline of such a process (Python,
SQLAlchemy and lopper imported, the store opened) is printed beside it.

    python bench/scale.py                                   # SQLite, 100,000 / 10,000,000
    python bench/scale.py --interactions 1000000            # a smaller run
    python bench/scale.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Helpers (sandbox tuning, the hand-written query, PostgreSQL schemas) come from
bench/ingest_evaluate.py. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_evaluate import (
    check_same,
    database_for,
    drop_postgres,
    hand_written_sql,
    median_of,
    n,
    rss_mb,
    runs,
    timed,
    tuned_options,
)

from service.config import Account, Rules
from service.platforms import build_adapter
from service.rules import plan_reduction
from service.store import open_store
from service.store.models import Account as AccountRow
from service.store.models import Base
from service.suggestions import collector_paused, evaluate_account, judge_account
from service.sync import sync_account

HANDLE = "@scale"
KEEP = 0.2  # the plan: keep a fifth of the network


def peak_mb() -> float:
    """This process's peak resident set (VmHWM). Unlike ru_maxrss it starts afresh at exec,
    so a stage's child does not inherit the parent's peak; ru_maxrss where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss_mb()


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def database_size(store: Any) -> tuple[int, dict[str, int]]:
    """Bytes on disk: the SQLite file (after a checkpoint), or each PostgreSQL table with its
    indexes and TOAST (pg_total_relation_size)."""
    if store.dialect == "sqlite":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(store.engine.url.database)
        return path.stat().st_size, {}
    sizes: dict[str, int] = {}
    with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            sizes[table.name] = conn.execute(
                text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": table.name}
            ).scalar_one()
    return sum(sizes.values()), sizes


def summary_rows(store: Any) -> str:
    """The rows of the period summaries the evaluation reads, beside the interactions."""
    with store.engine.connect() as conn:
        counts = {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("interactions", "exchange_periods")
        }
    share = counts["exchange_periods"] / max(1, counts["interactions"])
    return (
        f"{counts['interactions']:,} interactions, {counts['exchange_periods']:,} period "
        f"summaries ({share:.0%})"
    )


# --- one measured stage, in its own process --------------------------------------------------


def measure(stage: str, url: str, now_ts: int, repeat: int) -> dict[str, Any]:
    quiet()
    now = datetime.fromtimestamp(now_ts, UTC)
    rules = Rules()
    store = open_store(url, migrate=False)
    key = f"sandbox:{HANDLE}"
    with store.session() as session:
        account_id = session.query(AccountRow.id).filter_by(key=key).scalar()
    baseline = peak_mb()
    result: dict[str, Any] = {"baseline_mb": baseline}
    if stage == "evaluate":
        seconds, times, report = median_of(repeat, lambda: evaluate_account(store, key, rules, now))
        result["verdicts"] = {str(k): v for k, v in sorted(report.verdicts.items())}
    elif stage in ("plan", "plan-queue"):
        # `lopper plan` judges without evidence; `--queue` builds it, to store with the plan.
        evidence = stage == "plan-queue"

        def plan() -> Any:  # as `lopper plan` does it
            with collector_paused(), store.session() as session:
                row = session.get_one(AccountRow, account_id)
                evaluation = judge_account(
                    session, row, rules, now, with_evidence=evidence, read_apart=True
                )
                return plan_reduction(evaluation.items, KEEP)

        seconds, times, chosen = median_of(repeat, plan)
        result["plan"] = {
            "network": chosen.network,
            "keep": chosen.keep_target,
            "remove": len(chosen.remove),
            "untouchable": chosen.untouchable,
        }
    elif stage == "reference":
        sql, params = hand_written_sql(account_id, rules, now)

        def reference() -> list[Any]:
            with store.engine.connect() as conn:
                return conn.execute(text(sql), params).fetchall()

        seconds, times, rows = median_of(repeat, reference)
        from service.store.queries import exchange_stats

        with store.session() as session:
            stats = exchange_stats(session, account_id, rules, now)
        check_same(rows, stats)
        result["rows"] = len(rows)
    else:
        raise SystemExit(f"unknown stage {stage}")
    result.update(seconds=seconds, times=times, peak_mb=peak_mb())
    store.dispose()
    return result


def in_child(stage: str, url: str, now: datetime, repeat: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--stage",
        stage,
        "--database-url-scoped",
        url,
        "--now",
        str(int(now.timestamp())),
        "--repeat",
        str(repeat),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{done.stdout}\n{done.stderr}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    for line in done.stdout.splitlines():
        if line.startswith("check:"):
            print(f"  {line}")
    return dict(json.loads(lines[-1]))


# --- the run ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=10_000_000, help="target count")
    parser.add_argument("--history-days", type=int, default=400)
    parser.add_argument("--database-url", help="PostgreSQL server; default: SQLite in a temp dir")
    parser.add_argument("--schema", default="lopper_scale", help="PostgreSQL schema to use")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each stage")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--database-url-scoped", help=argparse.SUPPRESS)
    parser.add_argument("--now", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(measure(args.stage, args.database_url_scoped, args.now, args.repeat)))
        return 0
    quiet()

    workdir = Path(tempfile.mkdtemp(prefix="lopper-scale-"))
    url, where = database_for(args.database_url, args.schema, workdir / "scale.sqlite3")
    now = datetime.now(UTC).replace(microsecond=0)
    clock = lambda: now  # noqa: E731 - one fixed instant for the whole run
    rules = Rules()
    print(f"python: {sys.version.split()[0]}, database: {where}, cpus: {os.cpu_count()}")
    started = time.perf_counter()
    try:
        options = tuned_options(args.connections, args.interactions, args.history_days)
        account = Account(platform="sandbox", handle=HANDLE, sandbox=options)
        print(
            f"sandbox: size={options.size:,}, history_days={options.history_days}, "
            f"events_per_active_person={options.events_per_active_person:.2f}"
        )
        store = open_store(url)
        adapter = build_adapter(account, workdir, clock)

        sync_s, report = timed(lambda: sync_account(store, account, adapter, rules, clock))
        if report.outcome != "ok":
            print(f"sync outcome: {report.outcome} {report.problems}", file=sys.stderr)
            return 1
        stored = report.interactions_new
        print(
            f"ingest (first sync, sandbox generation included): {n(stored)} interactions, "
            f"{n(report.connections_new)} connections in {sync_s:,.0f} s = "
            f"{n(stored / sync_s)} interactions/s; rss {rss_mb():.0f} MB"
        )
        if store.dialect == "postgresql":
            with store.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE"
                )
        else:
            with store.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        size, tables = database_size(store)
        per_million = size / (stored / 1e6)
        print(
            f"database size: {size / 2**20:,.0f} MiB = {per_million / 2**20:,.1f} MiB per million "
            f"interactions ({size / stored:,.0f} bytes each, indexes included)"
        )
        for name, value in sorted(tables.items(), key=lambda kv: -kv[1])[:4]:
            print(f"  {name}: {value / 2**20:,.0f} MiB")
        print(f"rows: {summary_rows(store)}")
        store.dispose()

        figures = {}
        for stage in ("reference", "evaluate", "plan", "plan-queue"):
            figures[stage] = result = in_child(stage, url, now, args.repeat)
            label = {
                "reference": "hand-written aggregate query",
                "evaluate": "full evaluation (evaluate_account)",
                "plan": f"reduction plan (lopper plan --keep {KEEP:.0%})",
                "plan-queue": "the same plan with the evidence of every connection (--queue)",
            }[stage]
            print(
                f"{label}: median {result['seconds']:.2f} s ({runs(result['times'])}); "
                f"peak rss {result['peak_mb']:.0f} MB (process baseline "
                f"{result['baseline_mb']:.0f} MB)"
            )
            if stage == "evaluate":
                print(f"  verdicts: {result['verdicts']}")
            if stage.startswith("plan"):
                print(f"  plan: {result['plan']}")
        ratio = figures["evaluate"]["seconds"] / figures["reference"]["seconds"]
        print(f"evaluation / hand-written query: {ratio:.2f}x")
        print(f"total wall time: {time.perf_counter() - started:,.0f} s")
    finally:
        if args.keep:
            print(f"kept: {url}")
        else:
            if args.database_url:
                drop_postgres(args.database_url, args.schema)
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
