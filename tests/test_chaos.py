"""A short run of bench/chaos.py: the real daemon, against a Mastodon fake that answers a
fifth of its requests with faults and an SMTP server that refuses half the deliveries,
SIGKILLed three times, then left to finish. Every invariant it checks must hold
(bench/chaos.py runs 50 rounds)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from chaos import run  # noqa: E402 - bench/ is not a package


def test_faults_and_kills_lose_nothing_and_repeat_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    results = run(3, seed=11, root=tmp_path, say=said.append, fault_rate=0.2, refuse_rate=0.5)
    assert len(results) == 8
    failed = {name: f"{held}/{total}" for name, (held, total) in results.items() if held != total}
    assert failed == {}, said
    assert "removals confirmed" in said[0] and " 0 removals confirmed" not in said[0]
    assert said[2].startswith("faults answered: ") and "none" not in said[2], said
