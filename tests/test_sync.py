"""Sync: idempotence (invariant 2), the sanity brake (invariant 4), crash safety (invariant 6)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta

import pytest
from fakes.scripted import ScriptedPlatform
from helpers import ACCOUNT, NOW, Clock, make_rules, reset_cursors, scripted, snapshot, states
from sqlalchemy import select

from service.config import Rules
from service.model import ConnectionState, Kind
from service.platforms.base import AuthError, ConnectionPage, Person, PlatformError, RateLimited
from service.store import Store
from service.store.models import Account, Connection, SyncCursor, SyncRun
from service.suggestions import evaluate_account, judge_account
from service.sync import CONNECTIONS, SyncReport, sync_account


def sync(
    store: Store, platform: ScriptedPlatform, clock: Clock, rules: Rules | None = None
) -> SyncReport:
    return sync_account(store, ACCOUNT, platform, rules or make_rules(), clock)


def busy_network(clock: Clock) -> ScriptedPlatform:
    """Several pages of people and of exchanges, on two streams."""
    platform = scripted(clock, people=10, streams=("activity", "messages"))
    for index in range(1, 11):
        for days in (3, 40, 200):
            platform.add_exchange(f"u{index}", NOW - timedelta(days=days + index))
        platform.add_exchange(
            f"u{index}", NOW - timedelta(days=index), kind=Kind.MESSAGE, stream="messages"
        )
    return platform


# --- invariant 2: a sync is idempotent ---------------------------------------------------


def test_second_sync_changes_no_count(store: Store, clock: Clock) -> None:
    platform = busy_network(clock)
    first = sync(store, platform, clock)
    before = snapshot(store)
    assert first.outcome == "ok"
    assert before["connections"] == 10
    assert before["interactions"] == 40
    assert first.interactions_new == 40
    assert first.connections_new == 10

    second = sync(store, platform, clock)

    assert snapshot(store) == before
    assert (second.interactions_new, second.connections_new, second.connections_vanished) == (
        0,
        0,
        0,
    )


def test_fetching_every_page_again_changes_no_count(store: Store, clock: Clock) -> None:
    platform = busy_network(clock)
    sync(store, platform, clock)
    before = snapshot(store)
    platform.reset_calls()
    reset_cursors(store)

    again = sync(store, platform, clock)

    assert platform.called("connections")[0] == (None,)
    assert ("activity", None) in platform.called("interactions")
    assert snapshot(store) == before
    assert again.interactions_new == 0
    assert again.connections_new == 0


def test_later_sync_adds_only_what_is_new(store: Store, clock: Clock) -> None:
    platform = busy_network(clock)
    sync(store, platform, clock)
    clock.advance()
    platform.add_exchange("u1", clock.now - timedelta(hours=1))
    platform.add_person("u99", since=clock.now - timedelta(hours=2))

    report = sync(store, platform, clock)

    assert (report.interactions_new, report.connections_new) == (1, 1)
    after = snapshot(store)
    assert (after["interactions"], after["connections"]) == (41, 11)
    # Touching spans merge: still one span per stream, now ending a day later.
    assert [(s, end) for s, _start, end in after["coverage"]] == [
        ("activity", clock.now),
        ("messages", clock.now),
    ]


def test_duplicate_event_ids_in_one_page_are_stored_once(store: Store, clock: Clock) -> None:
    platform = scripted(clock, people=2, events_page_size=10)
    platform.add_exchange("u1", NOW - timedelta(days=1), event_id="same")
    platform.add_exchange("u1", NOW - timedelta(days=1), event_id="same")
    platform.add_exchange("u2", NOW - timedelta(days=2), event_id="other")
    platform.add_exchange("u2", NOW - timedelta(days=2), event_id="other")

    report = sync(store, platform, clock)

    assert report.interactions_new == 2
    assert snapshot(store)["event_ids"] == ["other", "same"]


def test_the_same_event_on_two_streams_is_stored_once(store: Store, clock: Clock) -> None:
    platform = scripted(clock, people=1, streams=("a", "b"))
    platform.add_exchange("u1", NOW - timedelta(days=1), stream="a", event_id="e1")
    platform.add_exchange("u1", NOW - timedelta(days=1), stream="b", event_id="e1")

    report = sync(store, platform, clock)

    assert report.interactions_new == 1
    assert snapshot(store)["interactions"] == 1


# --- invariant 4: the sanity brake -------------------------------------------------------


def quiet_network(clock: Clock) -> ScriptedPlatform:
    """Ten people nobody exchanged with, one of them gone: everyone is removable."""
    platform = scripted(clock, people=9)
    platform.add_person("u10", since=NOW - timedelta(days=365), gone=True)
    return platform


def removable(store: Store, rules: Rules, clock: Clock) -> dict[str, str]:
    with store.session() as session:
        account = session.scalars(select(Account)).one()
        return {
            item.facts.user_id: item.judgement.verdict.value
            for item in judge_account(session, account, rules, clock()).items
            if item.judgement.removable
        }


def active_ids(store: Store) -> set[str]:
    with store.session() as session:
        return set(
            session.scalars(
                select(Connection.platform_user_id).where(
                    Connection.state == ConnectionState.ACTIVE
                )
            )
        )


def brake_engaged(store: Store) -> bool:
    with store.session() as session:
        return session.scalars(select(Account)).one().brake_engaged_at is not None


def test_a_listing_that_suddenly_loses_most_people_engages_the_brake(
    store: Store, clock: Clock
) -> None:
    rules = make_rules()
    platform = quiet_network(clock)
    sync(store, platform, clock, rules)
    assert len(removable(store, rules, clock)) == 10
    clock.advance(timedelta(hours=6))
    platform.glitch_listing()

    report = sync(store, platform, clock, rules)

    assert report.brake is not None
    assert report.connections_vanished == 0
    assert active_ids(store) == {f"u{i}" for i in range(1, 11)}
    assert brake_engaged(store)
    evaluation = evaluate_account(store, ACCOUNT.key, rules, clock())
    assert evaluation.brake
    assert evaluation.queued == 0
    assert evaluation.verdicts == {"held": 10}
    assert removable(store, rules, clock) == {}
    assert states(store) == {}


def test_brake_keeps_open_suggestions_as_they_are(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = quiet_network(clock)
    sync(store, platform, clock, rules)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    platform.glitch_listing()
    clock.advance(timedelta(hours=6))
    sync(store, platform, clock, rules)

    report = evaluate_account(store, ACCOUNT.key, rules, clock())

    assert report.expired == 0
    assert set(states(store).values()) == {"pending"}


def test_a_later_sync_that_agrees_applies_the_vanishing(store: Store, clock: Clock) -> None:
    rules = make_rules()
    platform = quiet_network(clock)
    sync(store, platform, clock, rules)
    evaluate_account(store, ACCOUNT.key, rules, clock())
    for index in range(1, 9):
        platform.drop_person(f"u{index}")
    clock.advance(timedelta(hours=6))
    held = sync(store, platform, clock, rules)
    assert held.brake is not None
    assert len(active_ids(store)) == 10

    clock.advance(timedelta(hours=6))
    agreed = sync(store, platform, clock, rules)

    assert agreed.brake is None
    assert agreed.connections_vanished == 8
    assert active_ids(store) == {"u9", "u10"}
    assert not brake_engaged(store)
    report = evaluate_account(store, ACCOUNT.key, rules, clock())
    assert report.expired == 8
    assert sorted(states(store).items()) == sorted(
        {**{f"u{i}": "expired" for i in range(1, 9)}, "u9": "pending", "u10": "pending"}.items()
    )


def test_a_later_sync_that_disagrees_releases_the_brake_without_marking(
    store: Store, clock: Clock
) -> None:
    rules = make_rules()
    platform = quiet_network(clock)
    sync(store, platform, clock, rules)
    platform.glitch_listing()
    clock.advance(timedelta(hours=6))
    sync(store, platform, clock, rules)
    assert brake_engaged(store)

    clock.advance(timedelta(hours=6))
    report = sync(store, platform, clock, rules)

    assert report.brake is None
    assert report.connections_vanished == 0
    assert not brake_engaged(store)
    assert len(active_ids(store)) == 10
    assert evaluate_account(store, ACCOUNT.key, rules, clock()).queued == 10


def test_a_few_people_leaving_is_no_glitch(store: Store, clock: Clock) -> None:
    rules = make_rules(brake_min=3, brake_share=0.3)
    platform = quiet_network(clock)
    sync(store, platform, clock, rules)
    platform.drop_person("u1")
    platform.drop_person("u2")

    report = sync(store, platform, clock, rules)

    assert report.brake is None
    assert report.connections_vanished == 2
    assert active_ids(store) == {f"u{i}" for i in range(3, 11)}


# --- invariant 6: a crash mid-sync loses nothing committed and resumes from the cursor ---


@pytest.mark.parametrize("crash", [RuntimeError("adapter bug"), KeyboardInterrupt()])
def test_crash_mid_listing_resumes_from_the_stored_cursor(
    make_store: Callable[[], Store], clock: Clock, crash: BaseException
) -> None:
    store, reference = make_store(), make_store()
    sync(reference, busy_network(clock), clock)
    platform = busy_network(clock)  # pages of 3: cursors None, 3, 6, 9
    platform.inject("connections", crash, skip=2)

    with pytest.raises(type(crash)):
        sync(store, platform, clock)

    with store.session() as session:
        assert session.get_one(SyncCursor, (1, CONNECTIONS)).cursor == "6"
        assert len(session.scalars(select(Connection)).all()) == 6
    platform.reset_calls()
    report = sync(store, platform, clock)

    assert platform.called("connections") == [("6",), ("9",)]
    assert report.connections_vanished == 0
    assert snapshot(store) == snapshot(reference)


@pytest.mark.parametrize("crash", [RuntimeError("adapter bug"), KeyboardInterrupt()])
def test_crash_mid_stream_resumes_from_the_stored_cursor(
    make_store: Callable[[], Store], clock: Clock, crash: BaseException
) -> None:
    store, reference = make_store(), make_store()
    sync(reference, busy_network(clock), clock)
    platform = busy_network(clock)  # 30 exchanges on "activity", pages of 4
    platform.inject("interactions", crash, skip=3)

    with pytest.raises(type(crash)):
        sync(store, platform, clock)

    with store.session() as session:
        assert session.get_one(SyncCursor, (1, "activity")).cursor == "12"
    assert snapshot(store)["interactions"] == 12
    platform.reset_calls()
    sync(store, platform, clock)

    activity = [call for call in platform.called("interactions") if call[0] == "activity"]
    assert activity[0] == ("activity", "12")
    assert ("activity", None) not in activity
    assert snapshot(store) == snapshot(reference)


@pytest.mark.parametrize(
    ("batch", "seconds", "stored"),
    [
        # Two pages of 4 per transaction, the last when the stream ends.
        (8, 3600.0, [None, None, "8", "8", "16", "16", "24", "24"]),
        # Reading for longer than allowed: page by page.
        (8, 0.0, [None, "4", "8", "12", "16", "20", "24", "28"]),
        # The stream in one.
        (10_000, 3600.0, [None] * 8),
    ],
)
def test_pages_are_written_together_up_to_a_count_or_a_time(
    store: Store,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
    seconds: float,
    stored: list[str | None],
) -> None:
    from service import sync as sync_module

    monkeypatch.setattr(sync_module, "BATCH_EXCHANGES", batch)
    monkeypatch.setattr(sync_module, "BATCH_SECONDS", seconds)
    platform = busy_network(clock)  # 30 exchanges on "activity", pages of 4
    seen: list[tuple[int, str | None]] = []

    def progress(stream: str, count: int) -> None:
        if stream == "activity":  # told of each page read: what is committed by then
            with store.session() as session:
                row = session.get(SyncCursor, (1, stream))
                seen.append((count, row.cursor if row else None))

    report = sync_account(store, ACCOUNT, platform, make_rules(), clock, progress=progress)

    assert report.outcome == "ok" and report.interactions_new == 40
    assert [count for count, _ in seen] == [4] * 7 + [2]
    assert [cursor for _, cursor in seen] == stored
    with store.session() as session:  # the last write holds the cursor after the last page
        assert session.get_one(SyncCursor, (1, "activity")).cursor == "30"
    assert snapshot(store)["interactions"] == 40


def test_a_stop_raised_while_reading_writes_the_pages_read_first(
    store: Store, clock: Clock
) -> None:
    """The daemon stops a sync from its progress callback, told of each page read; the pages
    read by then, not yet written, are written with their cursor before the stop goes on."""

    class Stop(Exception):
        pass

    read: list[int] = []

    def progress(stream: str, count: int) -> None:
        if stream == "activity":
            read.append(count)
            if len(read) == 3:
                raise Stop()

    with pytest.raises(Stop):
        sync_account(store, ACCOUNT, busy_network(clock), make_rules(), clock, progress=progress)

    with store.session() as session:
        assert session.get_one(SyncCursor, (1, "activity")).cursor == "12"
    assert snapshot(store)["interactions"] == 12


def test_a_crashed_sync_is_not_recorded_as_a_good_one(store: Store, clock: Clock) -> None:
    platform = busy_network(clock)
    sync(store, platform, clock)
    clock.advance()
    platform.inject("interactions", RuntimeError("adapter bug"))

    with pytest.raises(RuntimeError):
        sync(store, platform, clock)

    with store.session() as session:
        runs = session.scalars(select(SyncRun).order_by(SyncRun.id)).all()
        assert [r.outcome for r in runs] == ["ok", "failed"]
        assert session.scalars(select(Account)).one().last_sync_at == NOW


# --- the contract's errors during a sync -------------------------------------------------


def test_rate_limit_mid_stream_keeps_the_cursor_for_next_time(store: Store, clock: Clock) -> None:
    platform = busy_network(clock)
    platform.inject("interactions", RateLimited(NOW + timedelta(minutes=15)), skip=2)

    report = sync(store, platform, clock)

    assert report.outcome == "partial"
    assert report.streams["activity"].startswith("deferred")
    with store.session() as session:
        assert session.get_one(SyncCursor, (1, "activity")).cursor == "8"
    platform.reset_calls()
    assert sync(store, platform, clock).outcome == "ok"
    assert platform.called("interactions")[0] == ("activity", "8")
    assert snapshot(store)["interactions"] == 40


def test_refused_credentials_pause_the_account_until_a_good_sync(
    store: Store, clock: Clock
) -> None:
    platform = busy_network(clock)
    platform.inject("connections", AuthError("token revoked"))

    report = sync(store, platform, clock)

    assert report.outcome == "paused"
    with store.session() as session:
        account = session.scalars(select(Account)).one()
        assert account.paused_reason is not None
        assert account.last_sync_at is None
    assert sync(store, platform, clock).outcome == "ok"
    with store.session() as session:
        assert session.scalars(select(Account)).one().paused_reason is None


def test_transient_trouble_stops_only_its_stream(store: Store, clock: Clock) -> None:
    platform = busy_network(clock)
    sync(store, platform, clock)
    before = snapshot(store)
    clock.advance()
    platform.drop_person("u1")
    platform.add_exchange("u2", clock())
    platform.inject("connections", PlatformError("502 bad gateway"))

    report = sync(store, platform, clock)

    assert report.outcome == "partial"
    assert report.streams["connections"].startswith("failed: 502")
    # The listing stopped: nobody is marked vanished on half a listing ...
    assert snapshot(store)["connection_states"] == before["connection_states"]
    # ... while the exchanges still came in.
    assert report.interactions_new == 1


def test_credentials_of_another_person_are_refused(store: Store, clock: Clock) -> None:
    sync(store, busy_network(clock), clock)
    other = busy_network(clock)
    other.user_id = "2"

    report = sync(store, other, clock)

    assert report.outcome == "failed"
    assert "not to @harry" in report.problems[0]


def test_a_page_larger_than_the_drivers_batches_is_counted_exactly(store):
    # Drivers split big inserts into batches; the count of new rows must still be exact.
    clock = Clock(NOW)
    platform = scripted(clock, people=3, events_page_size=2500)
    for index in range(2500):
        platform.add_exchange(f"u{index % 3 + 1}", NOW - timedelta(days=1 + index % 300))
    first = sync_account(store, ACCOUNT, platform, make_rules(), clock)
    assert first.interactions_new == 2500
    reset_cursors(store)
    again = sync_account(store, ACCOUNT, platform, make_rules(), clock)
    assert again.interactions_new == 0
    assert snapshot(store)["interactions"] == 2500


def test_a_person_in_both_lists_of_one_listing_is_mutual(store: Store, clock: Clock) -> None:
    # Platforms page "following" and "followers" separately: the second appearance of a
    # person must add to what the first said, not overwrite it.
    platform = scripted(clock)
    pages = {
        None: ConnectionPage(
            [Person("a", "@a", following=True), Person("b", "@b", following=True)], "1"
        ),
        "1": ConnectionPage(
            [Person("a", "@a", followed_by=True), Person("c", "@c", followed_by=True)], None
        ),
    }
    platform.listing = pages.__getitem__
    sync(store, platform, clock)
    with store.session() as session:
        flags = {
            c.platform_user_id: (c.following, c.followed_by)
            for c in session.scalars(select(Connection))
        }
    assert flags == {"a": (True, True), "b": (True, False), "c": (False, True)}


def test_flags_from_an_earlier_listing_do_not_stick(store: Store, clock: Clock) -> None:
    platform = scripted(clock)
    platform.add_person("a", following=True, followed_by=True)
    sync(store, platform, clock)
    platform.add_person("a", following=True, followed_by=False)  # they unfollowed the account
    clock.advance()
    sync(store, platform, clock)
    with store.session() as session:
        connection = session.scalars(select(Connection)).one()
    assert (connection.following, connection.followed_by) == (True, False)


def test_a_listing_split_by_a_rate_limit_expires_no_suggestion(store: Store, clock: Clock) -> None:
    platform = scripted(clock)
    since = NOW - timedelta(days=365)
    first = {None: ConnectionPage([Person("p", "@p", following=True, connected_since=since)], None)}
    platform.listing = first.__getitem__
    sync(store, platform, clock)
    evaluate_account(store, ACCOUNT.key, make_rules(), clock())
    assert states(store) == {"p": "pending"}

    # The next listing pages followers first; the window runs out before "following".
    def split(cursor: str | None) -> ConnectionPage:
        if cursor is None:
            return ConnectionPage(
                [Person("p", "@p", followed_by=True, connected_since=since)], "following"
            )
        raise RateLimited(detail="window spent")

    platform.listing = split
    clock.advance()
    report = sync(store, platform, clock)
    assert report.streams["connections"].startswith("deferred")
    evaluate_account(store, ACCOUNT.key, make_rules(), clock())
    assert states(store) == {"p": "pending"}, "half a listing says nothing final about p"


def test_a_fresh_listing_is_not_fetched_again(store: Store, clock: Clock) -> None:
    platform = busy_network(clock)
    fresh = timedelta(hours=12)

    def listings() -> int:
        return sum(1 for call in platform.calls if call.method == "connections")

    sync_account(store, ACCOUNT, platform, make_rules(), clock, relist_after=fresh)
    listed = listings()
    assert listed > 0
    clock.advance(timedelta(hours=1))
    report = sync_account(store, ACCOUNT, platform, make_rules(), clock, relist_after=fresh)
    assert listings() == listed
    assert "still fresh" in report.streams["connections"]
    clock.advance(fresh)
    sync_account(store, ACCOUNT, platform, make_rules(), clock, relist_after=fresh)
    assert listings() > listed


def test_a_stream_cut_short_by_a_rate_limit_goes_first_next_time(
    store: Store, clock: Clock
) -> None:
    platform = busy_network(clock)
    sync(store, platform, clock)
    clock.advance()
    platform.calls.clear()
    # The window runs out on the second stream of the run.
    platform.inject("interactions", RateLimited(detail="spent"), skip=1)
    sync(store, platform, clock)
    starved = [call.args[0] for call in platform.calls if call.method == "interactions"][-1]
    clock.advance()
    platform.calls.clear()
    sync(store, platform, clock)
    assert next(call.args[0] for call in platform.calls if call.method == "interactions") == starved


def test_coverage_that_starts_where_the_last_ended_within_a_second_stays_one_span(
    store: Store,
) -> None:
    """Syncs on a real clock end and start at fractions of a second; the store keeps whole
    seconds. The pieces must still join, or the account never counts as covered again."""
    from service.platforms.base import Span
    from service.store.models import Coverage
    from service.store.queries import account_coverage
    from service.sync import ensure_account, extend_coverage

    start = NOW - timedelta(days=400)
    ends = [NOW + timedelta(seconds=s) for s in (0.5, 7.25, 7.75, 30.9)]
    with store.session() as session:
        account = ensure_account(session, ACCOUNT, NOW)
        account.streams = ["mentions"]
        account_id = account.id
    edges = [start, *ends]
    for low, high in itertools.pairwise(edges):
        with store.session() as session:
            extend_coverage(session, account_id, "mentions", "sync", Span(low, high))
    with store.session() as session:
        rows = session.scalars(select(Coverage).where(Coverage.account_id == account_id)).all()
        assert [(r.covered_from, r.covered_to) for r in rows] == [
            (start.replace(microsecond=0), ends[-1].replace(microsecond=0))
        ]
        coverage = account_coverage(session, session.get_one(Account, account_id))
        assert coverage is not None and coverage.start == start.replace(microsecond=0)


def test_ctrl_c_is_recorded_as_interrupted_and_says_where_the_next_sync_resumes(
    store: Store, clock: Clock
) -> None:
    platform = busy_network(clock)
    platform.inject("interactions", KeyboardInterrupt(), skip=3)

    with pytest.raises(KeyboardInterrupt) as caught:
        sync(store, platform, clock)

    said = "interrupted while reading activity; the next sync resumes from there"
    assert said in caught.value.__notes__[-1]
    with store.session() as session:
        run = session.scalars(select(SyncRun)).one()
        assert run.outcome == "interrupted"
        assert said in (run.detail or "")


def test_ctrl_c_while_a_page_is_written_stops_after_that_page_is_stored(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C that lands inside a page's write waits for its commit: the page is kept whole,
    no transaction is left open, and the run is recorded as interrupted."""
    import os
    import signal

    from service import sync as sync_module

    platform = busy_network(clock)
    real_save = sync_module.save_exchanges
    pages: list[int] = []

    def interrupted_save(session, account_id, exchanges):  # type: ignore[no-untyped-def]
        os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the write
        stored = real_save(session, account_id, exchanges)
        pages.append(stored)
        return stored

    monkeypatch.setattr(sync_module, "save_exchanges", interrupted_save)

    with pytest.raises(KeyboardInterrupt):
        sync(store, platform, clock)

    assert len(pages) == 1  # the write went on to its end, and no further page was read
    assert snapshot(store)["interactions"] == pages[0] > 0
    with store.session() as session:  # the write lock was let go: a new write goes through
        runs = session.scalars(select(SyncRun)).all()
        assert [run.outcome for run in runs] == ["interrupted"]
        session.add(SyncCursor(account_id=runs[0].account_id, stream="probe", updated_at=NOW))
