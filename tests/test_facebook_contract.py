"""The contract suite (tests/test_contract.py) run over the Facebook adapter against the fake
Graph API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import test_contract as contract
from fakes.facebook_server import ME, TOKEN, FakeGraph

from service.config import Account, FacebookOptions
from service.platforms import build_adapter
from service.platforms.base import Platform


@pytest.fixture
def adapter(tmp_path: Path) -> Iterator[Platform]:
    # One moment for the whole test: a reaction has no time of its own and is dated when it
    # is read, so two reads agree only at the same clock (the store keeps the first anyway).
    start = datetime.now(UTC).replace(microsecond=0)

    def clock() -> datetime:
        return start

    with FakeGraph(clock) as fake:
        people = [fake.add_user(f"Friend {n}", uses_app=n % 3 != 0) for n in range(240)]
        for n in range(40):
            post = fake.post(start - timedelta(days=3 * n + 1))
            for k in range(n % 7):
                fake.comment(post, people[(n + k) % 240], start - timedelta(days=3 * n))
                fake.react(post, people[(n * k) % 240], "LIKE" if k % 2 else "LOVE")
            fake.comment(post, ME, start - timedelta(days=3 * n))
        config = Account(
            platform="facebook",
            handle="harriet.vane",
            credentials={"access_token": TOKEN},
            facebook=FacebookOptions(graph_url=fake.url),
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
