"""The contract suite (tests/test_contract.py) run over the X adapter against the fake X."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import test_contract as contract
from fakes.x_server import CLIENT_ID, REFRESH, TOKEN, USERNAME, FakeX, NetworkSize, generate

from service.config import Account
from service.platforms import build_adapter
from service.platforms.base import Platform
from service.platforms.tokens import save_token


@pytest.fixture
def adapter(tmp_path: Path) -> Iterator[Platform]:
    def clock() -> datetime:
        return datetime.now(UTC)

    with FakeX(clock) as fake:
        generate(
            fake,
            NetworkSize(
                1300, 900, 400, mentions=150, posts=30, likes=25, messages=20, reactions=60
            ),
            now=clock(),
        )
        config = Account(
            platform="x",
            handle=f"@{USERNAME}",
            x={"api_base_url": fake.url, "client_id": CLIENT_ID},
        )
        save_token(
            tmp_path,
            config.key,
            {"access_token": TOKEN, "refresh_token": REFRESH, "expires_at": time.time() + 3600},
        )
        yield build_adapter(config, tmp_path, clock)


test_identity = contract.test_identity
test_declares_what_it_can_do = contract.test_declares_what_it_can_do
test_connections_page_to_the_end_with_string_ids_and_aware_times = (
    contract.test_connections_page_to_the_end_with_string_ids_and_aware_times
)
test_every_stream_pages_to_done_with_unique_ids_and_honest_coverage = (
    contract.test_every_stream_pages_to_done_with_unique_ids_and_honest_coverage
)
test_remove_is_idempotent_and_restore_undoes_it = (
    contract.test_remove_is_idempotent_and_restore_undoes_it
)
