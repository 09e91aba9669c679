"""Invariant 7 beyond the logs: a secret in a platform's error never reaches the store or a report."""

from __future__ import annotations

from datetime import timedelta

import pytest
from helpers import ACCOUNT, Clock, make_rules, scripted, suggestion_ids
from sqlalchemy import String, Text, select

from service import logs
from service.model import Channel, SuggestionState
from service.platforms.base import AuthError, Blocked, PlatformError, RateLimited
from service.removals import RestoreError, execute_account, restore
from service.store import Store
from service.store.models import Base
from service.suggestions import decide, evaluate_account
from service.sync import sync_account

TOKEN = "ya29.a0AfB_byC-secret-token-value"


def stored_text(store: Store) -> str:
    """Every text and string value in every table, in one string."""
    parts: list[str] = []
    with store.session() as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            if columns:
                for row in session.execute(select(*columns)):
                    parts.extend(str(value) for value in row if value is not None)
    return "\n".join(parts)


def test_platform_errors_carrying_a_token_are_stored_without_it(store: Store, clock: Clock) -> None:
    logs.register_secrets([TOKEN])
    rules = make_rules(max_attempts=2)
    platform = scripted(clock, people=4, streams=("activity", "messages"))
    said: list[str] = []

    # An SDK that echoes the request URL, token and all, into its messages.
    platform.inject("interactions", PlatformError(f"GET /feed?access_token={TOKEN}: 500"))
    platform.inject("interactions", RateLimited(detail=f"429 for {TOKEN}"))
    report = sync_account(store, ACCOUNT, platform, rules, clock)
    said += [*report.problems, *report.streams.values()]
    platform.inject("connections", AuthError(f"401: token {TOKEN} revoked"))
    report = sync_account(store, ACCOUNT, platform, rules, clock)
    said += [*report.problems, *report.streams.values()]
    sync_account(store, ACCOUNT, platform, rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    ids = suggestion_ids(store)
    decide(store, list(ids.values()), SuggestionState.CONFIRMED, via=Channel.CLI, now=clock())

    # Run one: a transient failure, then a rate limit on the re-check stops the run.
    platform.inject("remove", PlatformError(f"503 while using {TOKEN}"))
    platform.inject("relationship", RateLimited(detail=f"429 for {TOKEN}"), skip=1)
    first = execute_account(store, ACCOUNT, platform, rules, clock)
    clock.advance(timedelta(hours=1))
    # Run two: the platform pushes back.
    platform.inject("remove", Blocked(f"blocked: {TOKEN}"))
    second = execute_account(store, ACCOUNT, platform, rules, clock)
    for execution in (first, second):
        said += [execution.stopped or "", *execution.failed.values()]
    assert first.stopped is not None and first.stopped.startswith("rate limited")
    assert second.stopped is not None and second.stopped.startswith("removals stopped")
    assert len(first.failed) == len(second.failed) == 1

    assert any(logs.MASK in text for text in said)
    assert not [text for text in said if TOKEN in text]
    assert TOKEN not in stored_text(store)


def test_a_refused_undo_does_not_repeat_the_token(store: Store, clock: Clock) -> None:
    logs.register_secrets([TOKEN])
    rules = make_rules()
    platform = scripted(clock, people=1)
    sync_account(store, ACCOUNT, platform, rules, clock)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    sid = suggestion_ids(store)["u1"]
    decide(store, [sid], SuggestionState.CONFIRMED, via=Channel.CLI, now=clock())
    execute_account(store, ACCOUNT, platform, rules, clock)
    platform.inject("restore", PlatformError(f"403 with {TOKEN}"))

    with pytest.raises(RestoreError) as refused:
        restore(store, sid, platform, via=Channel.CLI, now=clock())

    assert TOKEN not in str(refused.value)


def test_a_server_address_among_the_credentials_is_named_in_errors_the_token_is_not(
    tmp_path, monkeypatch
) -> None:
    import socket

    from service.app import App

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{probe.getsockname()[1]}"
    config = tmp_path / "config.yaml"
    config.write_text(
        "version: 1\naccounts:\n  - platform: mastodon\n    handle: '@me@example.social'\n"
        f"    credentials: {{access_token: '${{MASTODON_TOKEN}}', api_base_url: '{address}'}}\n"
        f"storage: {{url: 'sqlite:///{tmp_path / 'lopper.sqlite3'}'}}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("MASTODON_TOKEN", "planted-mastodon-token-5521")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    logs.forget_secrets()
    application = App.load(config)
    report = application.sync(application.accounts()[0])
    application.close()
    said = logs.scrub(" ".join([*report.problems, *report.streams.values()]))
    assert report.outcome == "failed"
    assert address.removeprefix("http://") in said, said
    assert logs.scrub("planted-mastodon-token-5521") == logs.MASK


@pytest.mark.parametrize("safe", ["", "/"])
def test_a_percent_encoded_token_in_an_error_is_stored_without_it(
    store: Store, clock: Clock, safe: str
) -> None:
    """A server that echoes the request URL gives the token back percent-encoded."""
    from urllib.parse import quote

    token = "EAAB+slash/eq=Zx9"
    encoded = quote(token, safe=safe)
    logs.register_secrets([token])
    platform = scripted(clock, people=3, streams=("activity",))
    platform.inject("interactions", PlatformError(f"GET /me/feed?access_token={encoded}: 500"))
    report = sync_account(store, ACCOUNT, platform, make_rules(), clock)
    said = "\n".join([*report.problems, *report.streams.values()])
    assert "/me/feed" in said and logs.MASK in said
    assert encoded not in said
    assert encoded not in stored_text(store) and "slash" not in stored_text(store)
