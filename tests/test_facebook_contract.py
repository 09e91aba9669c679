"""The contract suite (tests/test_contract.py) run over the Facebook adapter against the fake
Graph API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import test_contract as contract
from fakes.facebook_server import ME, TOKEN, FakeGraph

from service.config import Account, FacebookOptions
from service.imports.names import ANONYMOUS, name_key
from service.model import Direction, Kind
from service.platforms import build_adapter
from service.platforms.base import Exchange, Platform


@pytest.fixture(params=["some friends use the app", "every friend uses the app"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    # Only when every friend uses the app does the adapter see inbound comments whole (its
    # unseen() is empty once the listing showed it): the coverage check then holds it to them.
    everyone = request.param == "every friend uses the app"
    # One moment for the whole test: a reaction has no time of its own and is dated when it
    # is read, so two reads agree only at the same clock (the store keeps the first anyway).
    start = datetime.now(UTC).replace(microsecond=0)

    def clock() -> datetime:
        return start

    with FakeGraph(clock) as fake:
        people = [fake.add_user(f"Friend {n}", uses_app=everyone or n % 3 != 0) for n in range(240)]
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
        made = build_adapter(config, tmp_path, clock)
        contract.TRUTHS[id(made)] = _truth(fake)
        try:
            yield made
        finally:
            contract.TRUTHS.pop(id(made), None)


def _truth(fake: FakeGraph) -> Callable[[str], Iterator[Exchange]]:
    """The comments on the account's posts, as the fake Graph holds them, under the name the
    person goes by (anonymous for friends who do not use the app). Reactions are never dated
    by Graph, so no span vouches for them; the export stream reads the data export only."""

    def truth(stream: str) -> Iterator[Exchange]:
        if stream != "posts":
            return
        for post in list(fake.posts):
            for c in post.comments:
                if c.author == ME:
                    continue
                user = fake.users[c.author]
                who = name_key(user.name) if user.uses_app else ANONYMOUS
                at = c.created.replace(microsecond=0)  # Graph dates to the second
                yield Exchange(f"comment:{c.id}", who, Kind.COMMENT, Direction.INBOUND, at)

    return truth


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
