"""Adapters built against their fake platforms, for the contract suite (tests/test_contract.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fakes.bluesky_server import FakeBluesky
from fakes.mastodon_server import TOKEN, FakeMastodon, NetworkSize, generate
from service.config import Account
from service.platforms import build_adapter
from service.platforms.base import Platform

FACTORIES: dict[str, Callable[[Path], Iterator[Platform]]] = {}


def _bluesky(tmp_path: Path) -> Iterator[Platform]:
    with FakeBluesky(handle="contract.test", clock=lambda: datetime.now(UTC)) as fake:
        fake.populate(follows=120, followers=90, mutual=40, notifications=150, posts=30, likes=25)
        account = Account(
            platform="bluesky",
            handle="@contract.test",
            credentials={"base_url": fake.base_url, "app_password": fake.app_password},
        )
        yield build_adapter(account, tmp_path)


FACTORIES["bluesky"] = _bluesky


def _mastodon(tmp_path: Path) -> Iterator[Platform]:
    def clock() -> datetime:
        return datetime.now(UTC)

    with FakeMastodon(clock) as fake:
        generate(fake, NetworkSize(120, 90, 40, 150, 30, 25), now=clock() - timedelta(minutes=1))
        account = Account(
            platform="mastodon",
            handle="@me@example.social",
            credentials={"access_token": TOKEN, "api_base_url": fake.url},
        )
        yield build_adapter(account, tmp_path)


FACTORIES["mastodon"] = _mastodon
