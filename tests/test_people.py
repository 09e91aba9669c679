"""One person on several accounts, and the dormant lane."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from helpers import NOW, Clock, make_rules, scripted, states

from service.config import Account as AccountConfig
from service.errors import NotFound
from service.model import Direction, Kind
from service.people import LinkError, link, suggest_links, unlink
from service.suggestions import evaluate_account
from service.sync import sync_account

X = AccountConfig(platform="x", handle="@me")
MASTODON = AccountConfig(platform="mastodon", handle="@me@example.social")


@pytest.fixture
def two_accounts(store):
    clock = Clock(NOW)
    x = scripted(clock, people=3)
    x.people["u1"] = replace(x.people["u1"], handle="@ana")
    mastodon = scripted(clock)
    mastodon.add_person("m1", handle="@ana@example.social", since=NOW - timedelta(days=365))
    # Ana is silent on X but talks on Mastodon.
    mastodon.add_exchange(
        "m1", NOW - timedelta(days=10), kind=Kind.REPLY, direction=Direction.INBOUND
    )
    rules = make_rules()
    sync_account(store, X, x, rules, clock)
    sync_account(store, MASTODON, mastodon, rules, clock)
    return store, clock


@pytest.mark.parametrize("count_linked", [True, False])
def test_an_exchange_on_a_linked_account_keeps_the_person(two_accounts, count_linked):
    store, clock = two_accounts
    rules = make_rules(count_linked=count_linked)
    link(store, ["x:@ana", "mastodon:@ana@example.social"], now=clock())
    report = evaluate_account(store, X.key, rules, clock())
    flagged = set(states(store))
    if count_linked:
        assert "u1" not in flagged
        assert report.verdicts["keep"] == 1
    else:
        assert "u1" in flagged
    assert {"u2", "u3"} <= flagged


def test_unlinking_restores_the_separate_verdict(two_accounts):
    store, clock = two_accounts
    link(store, ["x:@ana", "mastodon:@ana@example.social"], now=clock())
    unlink(store, "x:@ana", now=clock())
    evaluate_account(store, X.key, make_rules(), clock())
    assert "u1" in states(store)


def test_links_are_suggested_never_made(two_accounts):
    store, clock = two_accounts
    suggestions = suggest_links(store)
    assert [s.refs for s in suggestions] == [("mastodon:@ana@example.social", "x:@ana")]
    evaluate_account(store, X.key, make_rules(), clock())
    assert "u1" in states(store), "a suggested link changes nothing until the person makes it"
    link(store, list(suggestions[0].refs), now=clock())
    assert suggest_links(store) == []


@pytest.mark.parametrize(
    ("refs", "error"),
    [
        (["x:@ana"], LinkError),
        (["x:@nobody", "mastodon:@ana@example.social"], NotFound),
        (["ana", "x:@ana"], LinkError),
    ],
)
def test_bad_links_are_refused(two_accounts, refs, error):
    store, clock = two_accounts
    with pytest.raises(error):
        link(store, refs, now=clock())


def test_dormant_accounts_join_the_gone_lane_only_when_the_rule_is_on(store):
    clock = Clock(NOW)
    platform = scripted(clock, people=3)
    platform.people["u1"] = replace(platform.people["u1"], last_active_at=NOW - timedelta(days=400))
    platform.people["u2"] = replace(platform.people["u2"], last_active_at=NOW - timedelta(days=3))
    # u3: last activity unknown, which is not dormant.
    sync_account(store, X, platform, make_rules(), clock)
    report = evaluate_account(store, X.key, make_rules(), clock())
    assert report.verdicts == {"flag": 3}
    report = evaluate_account(store, X.key, make_rules(dormant_after=timedelta(days=90)), clock())
    assert report.verdicts == {"flag": 2, "gone": 1}


@pytest.mark.parametrize("pattern", ["@a_a", "@a%", "@A_A"])
def test_a_handle_is_matched_exactly_never_as_a_pattern(two_accounts, pattern):
    """`_` and `%` in a handle are letters: `@john_doe` never links `@john.doe`."""
    store, clock = two_accounts
    with pytest.raises(NotFound):
        link(store, [f"x:{pattern}", "mastodon:@ana@example.social"], now=clock())


def test_a_handle_matches_whatever_its_case(two_accounts):
    store, clock = two_accounts
    link(store, ["x:@ANA", "mastodon:@Ana@Example.social"], now=clock())
    assert suggest_links(store) == []
