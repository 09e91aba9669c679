"""The rules: verdicts (invariant 3), the SQL aggregate against its reference, the plan."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from helpers import NOW, make_rules
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from service.config import Rules
from service.model import Direction, Kind
from service.platforms.base import Span
from service.rules import (
    ConnectionFacts,
    ExchangeRow,
    ExchangeStats,
    PlanItem,
    Verdict,
    counting_rules,
    coverage_gap,
    judge,
    plan_reduction,
    stats_from_rows,
    verdict_time,
)
from service.store import Store
from service.store.models import Account, Interaction
from service.store.queries import reference_exchange_stats as exchange_stats

FULL = Span(NOW - timedelta(days=400), NOW)


def facts(
    index: int = 1,
    *,
    following: bool = True,
    followed_by: bool = False,
    since: datetime | None = None,
    handle: str | None = None,
    lists: tuple[str, ...] = (),
    gone: bool = False,
    kept: bool = False,
) -> ConnectionFacts:
    return ConnectionFacts(
        id=index,
        user_id=f"u{index}",
        handle=handle or f"@p{index}",
        display_name=None,
        profile_url=None,
        following=following,
        followed_by=followed_by,
        connected_since=since or NOW - timedelta(days=365),
        first_seen_at=NOW - timedelta(days=365),
        gone=gone,
        lists=lists,
        kept=kept,
    )


# --- verdicts ----------------------------------------------------------------------------


def test_an_exchange_in_the_window_is_never_flagged() -> None:
    rules = make_rules()
    stats = ExchangeStats(inbound=1, last_inbound=NOW - timedelta(days=179))
    assert judge(facts(), stats, rules, FULL, NOW).verdict is Verdict.KEEP
    assert judge(facts(), ExchangeStats(), rules, FULL, NOW).verdict is Verdict.FLAG


def test_protection_by_handle_is_case_blind_and_by_id_too() -> None:
    rules = make_rules(protected=frozenset({"@Ada", "u7"}))
    assert judge(facts(handle="@ADA"), ExchangeStats(), rules, FULL, NOW).verdict is (
        Verdict.PROTECTED
    )
    assert judge(facts(7), ExchangeStats(), rules, FULL, NOW).verdict is Verdict.PROTECTED


def test_gone_accounts_are_a_lane_of_their_own_but_protection_still_wins() -> None:
    rules = make_rules(protected=frozenset({"@p1"}))
    assert judge(facts(2, gone=True), ExchangeStats(), rules, FULL, NOW).verdict is Verdict.GONE
    assert judge(facts(1, gone=True), ExchangeStats(), rules, FULL, NOW).verdict is (
        Verdict.PROTECTED
    )


def test_coverage_must_reach_the_moment_of_the_verdict() -> None:
    rules = make_rules(stale_after=timedelta(days=7))
    start = NOW - timedelta(days=400)

    assert coverage_gap(Span(start, NOW), rules, NOW) is None
    # No allowance for a recent stretch nobody read, however short.
    assert coverage_gap(Span(start, NOW - timedelta(seconds=1)), rules, NOW) == (
        "history read only up to 2025-06-01 11:59 UTC, not up to 2025-06-01 12:00 UTC"
    )
    assert coverage_gap(Span(start, NOW - timedelta(days=6)), rules, NOW) is not None
    assert coverage_gap(Span(NOW - timedelta(days=100), NOW), rules, NOW) == (
        "history covers only since 2025-02-21; 81 more days needed"
    )
    assert coverage_gap(None, rules, NOW) == "no complete interaction history yet"
    verdict = judge(facts(), ExchangeStats(), rules, Span(start, NOW - timedelta(days=6)), NOW)
    assert verdict.verdict is Verdict.TOO_EARLY


def test_a_verdict_is_made_at_the_end_of_the_data() -> None:
    rules = make_rules()
    behind = Span(NOW - timedelta(days=400), NOW - timedelta(days=6))

    assert verdict_time(behind, NOW) == NOW - timedelta(days=6)
    assert verdict_time(Span(NOW - timedelta(days=400), NOW + timedelta(hours=1)), NOW) == NOW
    assert verdict_time(None, NOW) == NOW
    assert coverage_gap(behind, rules, verdict_time(behind, NOW)) is None
    # Counting from the verdict's window start up to now: nothing learned since is lost.
    counting = counting_rules(rules, NOW - timedelta(days=6), NOW)
    assert counting.window == timedelta(days=186)
    assert counting_rules(rules, NOW, NOW) is rules


windows = st.integers(min_value=1, max_value=400).map(lambda d: timedelta(days=d))
offsets = st.integers(min_value=0, max_value=800).map(lambda d: timedelta(days=d))


@settings(max_examples=300)
@given(
    window=windows,
    grace=st.integers(min_value=0, max_value=60).map(lambda d: timedelta(days=d)),
    min_exchanges=st.integers(min_value=1, max_value=3),
    inbound=st.integers(min_value=0, max_value=3),
    outbound=st.integers(min_value=0, max_value=3),
    since=offsets,
    coverage=st.none() | st.tuples(offsets, offsets),
    following=st.booleans(),
    followed_by=st.booleans(),
    protect_mutuals=st.booleans(),
    kept=st.booleans(),
    listed=st.booleans(),
    gone=st.booleans(),
    brake=st.booleans(),
)
def test_a_flag_needs_every_condition(
    window: timedelta,
    grace: timedelta,
    min_exchanges: int,
    inbound: int,
    outbound: int,
    since: timedelta,
    coverage: tuple[timedelta, timedelta] | None,
    following: bool,
    followed_by: bool,
    protect_mutuals: bool,
    kept: bool,
    listed: bool,
    gone: bool,
    brake: bool,
) -> None:
    rules = make_rules(
        window=window,
        grace=grace,
        min_exchanges=min_exchanges,
        protect_mutuals=protect_mutuals,
        protected_lists=frozenset({"VIP"}),
    )
    span = None
    if coverage is not None:
        start, end = sorted(coverage, reverse=True)
        span = Span(NOW - start, NOW - end)
    person = facts(
        following=following,
        followed_by=followed_by,
        since=NOW - since,
        lists=("VIP",) if listed else (),
        gone=gone,
        kept=kept,
    )
    stats = ExchangeStats(inbound=inbound, outbound=outbound)

    verdict = judge(person, stats, rules, span, NOW, brake=brake).verdict

    if verdict in (Verdict.FLAG, Verdict.GONE):
        assert following, "only people the account follows can be suggested"
        assert not kept and not listed and not (protect_mutuals and followed_by)
        assert not brake, "nobody is suggested while the sanity brake holds"
    if verdict is Verdict.FLAG:
        assert inbound + outbound < min_exchanges
        assert NOW - since <= NOW - grace
        assert span is not None
        assert span.start <= NOW - window, "coverage must span the window"
        assert span.end >= NOW, "coverage must reach the moment of the verdict"


# --- the SQL aggregate equals the reference ----------------------------------------------

rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(list(Kind)),
        st.sampled_from(list(Direction)),
        # Whole seconds, as the store keeps them; a little past ``now`` for clock skew.
        st.integers(min_value=-500 * 86400, max_value=2 * 86400),
    ),
    max_size=40,
)
# Realistic weights: a weight like 1e-300 would make PostgreSQL's float product underflow.
weights = st.just(0.0) | st.floats(min_value=1e-3, max_value=10)
rules_strategy = st.builds(
    Rules,
    window=windows,
    half_life=st.integers(min_value=1, max_value=400).map(lambda d: timedelta(days=d)),
    count_kinds=st.frozensets(st.sampled_from(list(Kind)), min_size=1),
    count_directions=st.frozensets(st.sampled_from(list(Direction)), min_size=1),
    weights=st.dictionaries(st.sampled_from(list(Kind)), weights),
    inbound_weight=weights,
    outbound_weight=weights,
)


def _account(store: Store) -> int:
    with store.session() as session:
        session.execute(delete(Account))
        account = Account(key="x:@harry", platform="x", handle="@harry", streams=[], created_at=NOW)
        session.add(account)
        session.flush()
        return account.id


@settings(max_examples=40)
@given(rows=rows_strategy, rules=rules_strategy)
def test_sql_aggregate_equals_the_reference(
    store: Store, rows: list[tuple[str, Kind, Direction, int]], rules: Rules
) -> None:
    account_id = _account(store)
    exchanges = [
        ExchangeRow(who, kind, direction, NOW + timedelta(seconds=offset))
        for who, kind, direction, offset in rows
    ]
    if exchanges:
        with store.session() as session:
            session.execute(
                insert(Interaction),
                [
                    {
                        "account_id": account_id,
                        "event_id": f"e{n}",
                        "counterpart_id": e.counterpart_id,
                        "kind": e.kind,
                        "direction": e.direction,
                        "occurred_at": e.occurred_at,
                    }
                    for n, e in enumerate(exchanges)
                ],
            )

    with store.session() as session:
        got = exchange_stats(session, account_id, rules, NOW)
    want = stats_from_rows(exchanges, rules, NOW)

    assert got.keys() == want.keys()
    for who, expected in want.items():
        actual = got[who]
        assert (actual.inbound, actual.outbound) == (expected.inbound, expected.outbound)
        assert (actual.last_inbound, actual.last_outbound) == (
            expected.last_inbound,
            expected.last_outbound,
        )
        assert math.isclose(actual.value, expected.value, rel_tol=1e-9, abs_tol=1e-12)


def test_a_short_half_life_over_old_history_does_not_break_the_aggregate(store: Store) -> None:
    # exp() of a large negative number underflows; PostgreSQL raises instead of returning 0.
    rules = make_rules(half_life=timedelta(days=1), window=timedelta(days=30))
    account_id = _account(store)
    old = [ExchangeRow("a", Kind.LIKE, Direction.INBOUND, NOW - timedelta(days=1100))]
    with store.session() as session:
        session.execute(
            insert(Interaction),
            [
                {
                    "account_id": account_id,
                    "event_id": "e1",
                    "counterpart_id": "a",
                    "kind": Kind.LIKE,
                    "direction": Direction.INBOUND,
                    "occurred_at": old[0].occurred_at,
                }
            ],
        )

    with store.session() as session:
        got = exchange_stats(session, account_id, rules, NOW)

    assert got["a"].value == stats_from_rows(old, rules, NOW)["a"].value == 0.0
    assert got["a"].last_inbound == old[0].occurred_at


# --- the reduction plan ------------------------------------------------------------------


def item(person: ConnectionFacts, verdict: Verdict, value: float = 0.0) -> PlanItem:
    from service.rules import Judgement

    return PlanItem(person, ExchangeStats(value=value), Judgement(verdict, "test"))


def test_plan_takes_gone_first_then_lowest_value() -> None:
    items = [
        item(facts(1), Verdict.KEEP, value=9.0),
        item(facts(2), Verdict.FLAG, value=0.0),
        item(facts(3), Verdict.KEEP, value=2.0),
        item(facts(4, gone=True), Verdict.GONE, value=5.0),
        item(facts(5), Verdict.KEEP, value=1.0),
        item(facts(6), Verdict.KEEP, value=7.0),
    ]

    plan = plan_reduction(items, 0.5)

    assert (plan.network, plan.keep_target, plan.shortfall) == (6, 3, 0)
    assert [i.facts.id for i in plan.remove] == [4, 2, 5]


def test_plan_never_touches_protected_new_too_early_or_held_people() -> None:
    untouchable = [
        item(facts(1), Verdict.PROTECTED),
        item(facts(2), Verdict.NEW),
        item(facts(3), Verdict.TOO_EARLY),
        item(facts(4), Verdict.HELD),
    ]
    items = [*untouchable, item(facts(5), Verdict.KEEP, 3.0), item(facts(6), Verdict.FLAG)]

    plan = plan_reduction(items, 2)

    assert [i.facts.id for i in plan.remove] == [6, 5]
    assert plan.untouchable == 4
    assert plan.shortfall == 2


def test_plan_ignores_people_the_account_does_not_follow() -> None:
    items = [
        item(facts(1, following=False, followed_by=True), Verdict.NOT_FOLLOWING),
        item(facts(2), Verdict.FLAG),
        item(facts(3), Verdict.KEEP, 4.0),
    ]

    plan = plan_reduction(items, 0.5)

    assert (plan.network, plan.keep_target) == (2, 1)
    assert [i.facts.id for i in plan.remove] == [2]


def test_plan_with_nothing_to_do() -> None:
    plan = plan_reduction([item(facts(1), Verdict.FLAG)], 1.0)
    assert (plan.remove, plan.shortfall) == ([], 0)


def test_a_window_of_part_days_is_not_rounded_down_to_whole_days() -> None:
    # The configuration takes windows from one day up; a day and a half was "1 days" before.
    rules = make_rules(window=timedelta(hours=36), grace=timedelta(hours=1))
    quiet = judge(facts(), ExchangeStats(), rules, FULL, NOW)
    busy = judge(facts(), ExchangeStats(inbound=3), make_rules(window=timedelta(days=1)), FULL, NOW)

    assert quiet.why == "0 exchanges in the last 36 hours (fewer than 1)"
    assert quiet.evidence["window_days"] == 1.5
    assert busy.why == "3 exchanges in the last 1 day"
    assert busy.evidence["window_days"] == 1
