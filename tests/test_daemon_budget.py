"""Bluesky's write budget file, spent by the daemon and a command at the same time."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

from service.platforms.bluesky import WriteBudget

NOW = datetime(2025, 6, 1, 12, 0, 30, tzinfo=UTC)


def _spend(path: str, times: int) -> None:
    budget = WriteBudget(Path(path), lambda: NOW, (5000, 35000))
    for _ in range(times):
        budget.spend(1)


def test_two_processes_spending_at_once_lose_no_points(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_spend, args=(str(path), 60)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    minutes = json.loads(path.read_text(encoding="utf-8"))["minutes"]
    assert minutes == {str(int(NOW.timestamp()) // 60): 240}
