"""Bluesky through the AT Protocol reference network: the adapter against a real PDS, AppView
and PLC directory, with accounts the tests create, and what each person did known as truth.

Everything happens now, in real time: what must lie in the past is backdated the way a client
can do it (a record's ``createdAt``, a record key made from an earlier time).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import make_rules, suggestion_ids
from reference_network import Account as NetAccount
from reference_network import Network, tid_at
from sqlalchemy import select

from service.config import Account as AccountConfig
from service.model import Channel, ConnectionState, Kind, SuggestionState
from service.platforms import build_adapter
from service.platforms.bluesky import BlueskyPlatform
from service.platforms.tokens import load_token, save_token
from service.removals import execute_account, restore
from service.rules import Rules
from service.store import Store
from service.store.models import Account, Connection, Interaction
from service.suggestions import decide, evaluate_account, judge_account
from service.sync import SyncReport, sync_account

pytestmark = pytest.mark.realnet

POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
REPOST = "app.bsky.feed.repost"
FOLLOW = "app.bsky.graph.follow"
MESSAGES = frozenset({Kind.MESSAGE})  # accept_unseen: [message]
S = SuggestionState


def iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def ref(record: dict[str, str]) -> dict[str, str]:
    return {"uri": record["uri"], "cid": record["cid"]}


def clock() -> datetime:
    return datetime.now(UTC)


def config_for(network: Network, owner: NetAccount, password: str) -> AccountConfig:
    return AccountConfig(
        platform="bluesky",
        handle=f"@{owner.handle}",
        credentials={"app_password": password, "base_url": network.pds, "plc_url": network.plc},
        accept_unseen=MESSAGES,  # direct messages are unseen on Bluesky
    )


def lopper(config: AccountConfig, state: Path) -> BlueskyPlatform:
    platform = build_adapter(config, state, clock)
    assert isinstance(platform, BlueskyPlatform)
    return platform


def rules() -> Rules:
    return make_rules(window=timedelta(days=10), grace=timedelta(days=5))


def sync(store: Store, config: AccountConfig, platform: BlueskyPlatform) -> SyncReport:
    return sync_account(store, config, platform, rules(), clock)


def stored_exchanges(store: Store) -> Counter[tuple[str, str, str]]:
    with store.session() as session:
        rows = session.execute(
            select(Interaction.counterpart_id, Interaction.kind, Interaction.direction)
        )
        return Counter((who, kind.value, way.value) for who, kind, way in rows)


def stored_connections(store: Store) -> dict[str, tuple[bool, bool, bool]]:
    with store.session() as session:
        return {
            c.platform_user_id: (c.following, c.followed_by, c.gone)
            for c in session.scalars(
                select(Connection).where(Connection.state == ConnectionState.ACTIVE)
            )
        }


def verdicts(store: Store) -> dict[str, str]:
    with store.session() as session:
        account = session.scalars(select(Account)).one()
        evaluation = judge_account(session, account, rules(), clock(), accepted=MESSAGES)
    return {item.facts.user_id: item.judgement.verdict.value for item in evaluation.items}


def follow_subjects(network: Network, owner: NetAccount) -> list[str]:
    return [r["value"]["subject"] for r in network.records(owner, FOLLOW)]


def test_sync_evaluate_remove_and_undo_against_the_reference_network(
    network: Network, make_store: Any, tmp_path: Path
) -> None:
    net, start = network, clock()
    owner = net.create_account("owner")
    names = ("liker", "replier", "mentioner", "quoter", "reposter", "quiet", "pal", "gone", "back")
    people = {name: net.create_account(name) for name in names}
    did = {name: account.did for name, account in people.items()}
    truth: Counter[tuple[str, str, str]] = Counter()

    # The owner followed everyone a month ago (the record keys say so), except "back", who
    # followed the owner more than a year ago and was followed back only yesterday.
    for index, name in enumerate(names):
        when = start - (timedelta(days=1) if name == "back" else timedelta(days=30, seconds=index))
        net.create(owner, FOLLOW, {"subject": did[name], "createdAt": iso(when)}, tid_at(when))
    for name, ago in (("liker", timedelta(days=20)), ("back", timedelta(days=400))):
        when = start - ago
        net.create(
            people[name], FOLLOW, {"subject": owner.did, "createdAt": iso(when)}, tid_at(when)
        )

    # What others did to the owner.
    old = net.create(
        owner, POST, {"text": "an old post", "createdAt": iso(start - timedelta(days=20))}
    )
    post = net.create(owner, POST, {"text": "hello", "createdAt": iso(start - timedelta(days=2))})
    # The AppView notifies of a reply only if it indexed the parent first (the reference
    # network drops the notification otherwise): the owner's posts are indexed before anyone
    # answers them.
    net.process()
    # a like from before the window: the notification listing reaches back to it
    net.create(
        people["liker"], LIKE, {"subject": ref(old), "createdAt": iso(start - timedelta(days=20))}
    )
    net.create(people["liker"], LIKE, {"subject": ref(post), "createdAt": iso(start)})
    truth[(did["liker"], "like", "inbound")] += 2
    net.create(
        people["replier"],
        POST,
        {
            "text": "indeed",
            "reply": {"root": ref(post), "parent": ref(post)},
            "createdAt": iso(start),
        },
    )
    truth[(did["replier"], "reply", "inbound")] += 1
    mention = f"hi @{owner.handle}"
    net.create(
        people["mentioner"],
        POST,
        {
            "text": mention,
            "facets": [
                {
                    "index": {"byteStart": 3, "byteEnd": len(mention.encode())},
                    "features": [{"$type": "app.bsky.richtext.facet#mention", "did": owner.did}],
                }
            ],
            "createdAt": iso(start),
        },
    )
    truth[(did["mentioner"], "mention", "inbound")] += 1
    net.create(
        people["quoter"],
        POST,
        {
            "text": "look",
            "embed": {"$type": "app.bsky.embed.record", "record": ref(post)},
            "createdAt": iso(start),
        },
    )
    truth[(did["quoter"], "quote", "inbound")] += 1
    net.create(people["reposter"], REPOST, {"subject": ref(post), "createdAt": iso(start)})
    truth[(did["reposter"], "repost", "inbound")] += 1

    # What the owner did to "pal": a reply (and one from before the window), a like (and an
    # old one), a repost, a quote and a mention. A second like of the same post would replace
    # the first (the PDS deletes a like, repost or follow of the same subject): two posts.
    for when in (start - timedelta(days=20), start):
        pal_post = net.create(
            people["pal"], POST, {"text": "pal here", "createdAt": iso(when - timedelta(hours=1))}
        )
        net.create(
            owner,
            POST,
            {
                "text": "yes",
                "reply": {"root": ref(pal_post), "parent": ref(pal_post)},
                "createdAt": iso(when),
            },
        )
        net.create(owner, LIKE, {"subject": ref(pal_post), "createdAt": iso(when)}, tid_at(when, 1))
    truth[(did["pal"], "reply", "outbound")] += 2
    truth[(did["pal"], "like", "outbound")] += 2
    net.create(owner, REPOST, {"subject": ref(pal_post), "createdAt": iso(start)})
    truth[(did["pal"], "repost", "outbound")] += 1
    net.create(
        owner,
        POST,
        {
            "text": "see this",
            "embed": {"$type": "app.bsky.embed.record", "record": ref(pal_post)},
            "createdAt": iso(start),
        },
    )
    truth[(did["pal"], "quote", "outbound")] += 1
    named = f"thanks @{people['pal'].handle}"
    net.create(
        owner,
        POST,
        {
            "text": named,
            "facets": [
                {
                    "index": {"byteStart": 7, "byteEnd": len(named.encode())},
                    "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did["pal"]}],
                }
            ],
            "createdAt": iso(start),
        },
    )
    truth[(did["pal"], "mention", "outbound")] += 1
    net.process()

    config = config_for(net, owner, net.app_password(owner))
    platform = lopper(config, tmp_path)
    store = make_store()

    # First sync: every connection once, every exchange as it happened.
    first = sync(store, config, platform)
    assert first.outcome == "ok", first.problems
    assert first.connections_seen == first.connections_new == len(names)
    assert stored_exchanges(store) == truth
    connections = stored_connections(store)
    assert connections == {d: (True, name in ("liker", "back"), False) for name, d in did.items()}
    with store.session() as session:
        since = {c.platform_user_id: c.connected_since for c in session.scalars(select(Connection))}
    # dated by the owner's own follow record: yesterday, not the follower's year-old one
    back_since = since[did["back"]]
    assert back_since is not None and abs(back_since - (start - timedelta(days=1))) < timedelta(
        seconds=2
    )
    liker_since = since[did["liker"]]
    assert liker_since is not None and abs(liker_since - (start - timedelta(days=30))) < timedelta(
        seconds=2
    )
    assert [u.kind for u in first.unseen] == [Kind.MESSAGE]

    # Incremental: only what is new is read.
    net.create(
        people["replier"],
        POST,
        {
            "text": "and again",
            "reply": {"root": ref(post), "parent": ref(post)},
            "createdAt": iso(clock()),
        },
    )
    net.create(people["quoter"], LIKE, {"subject": ref(post), "createdAt": iso(clock())})
    truth[(did["replier"], "reply", "inbound")] += 1
    truth[(did["quoter"], "like", "inbound")] += 1
    net.process()
    second = sync(store, config, platform)
    assert second.outcome == "ok", second.problems
    assert second.interactions_new == 2
    assert stored_exchanges(store) == truth

    # "gone" deletes their account: the AppView stops listing them, the owner's follow
    # record of them stays behind.
    net.delete_account(people["gone"])
    net.process()
    assert did["gone"] in follow_subjects(net, owner)
    third = sync(store, config, platform)
    assert third.outcome == "ok", third.problems
    assert stored_connections(store)[did["gone"]] == (True, False, True)
    with store.session() as session:
        handles = {c.platform_user_id: c.handle for c in session.scalars(select(Connection))}
    assert handles[did["gone"]] == f"@{people['gone'].handle}"  # its last, from the PLC

    # Known truth: the quiet one is flagged, the deleted one is gone, the one followed back
    # yesterday is in grace, everyone who exchanged anything is kept.
    evaluate_account(store, config.key, rules(), clock(), accepted=MESSAGES)
    judged = verdicts(store)
    expected = {d: "keep" for d in did.values()}
    expected |= {did["quiet"]: "flag", did["gone"]: "gone", did["back"]: "new"}
    assert judged == expected
    ids = suggestion_ids(store)
    assert set(ids) == {did["quiet"], did["gone"]}

    # Confirm and execute: the follow records are deleted, as the network itself says.
    decide(store, [ids[did["quiet"]], ids[did["gone"]]], S.CONFIRMED, via=Channel.CLI, now=clock())
    executed = execute_account(store, config, platform, rules(), clock)
    assert sorted(executed.removed) == sorted([ids[did["quiet"]], ids[did["gone"]]])
    subjects = follow_subjects(net, owner)
    assert did["quiet"] not in subjects and did["gone"] not in subjects
    net.process()
    follows = net.xrpc("app.bsky.graph.getFollows", token=owner.access, actor=owner.did, limit=100)
    assert did["quiet"] not in {p["did"] for p in follows["follows"]}

    # Undo: a follow record for "quiet" exists again, and the next sync sees it.
    restore(store, ids[did["quiet"]], platform, via=Channel.CLI, now=clock())
    assert did["quiet"] in follow_subjects(net, owner)
    net.process()
    assert sync(store, config, platform).outcome == "ok"
    assert stored_connections(store)[did["quiet"]] == (True, False, False)


def expired(session: str) -> str:
    """The same saved session with its access token past its expiry (its signature is then
    wrong too, but the client never sends an access token it knows to be expired)."""
    handle, did, access, refresh, pds = session.split(":::")
    header, payload, signature = access.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = int(clock().timestamp()) - 60
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return ":::".join((handle, did, f"{header}.{payload}.{signature}", refresh, pds))


def test_sessions_refresh_and_a_revoked_app_password_pauses_only_its_account(
    network: Network, make_store: Any, tmp_path: Path
) -> None:
    net = network
    owner, other = net.create_account("revoker"), net.create_account("other")
    net.create(owner, FOLLOW, {"subject": other.did, "createdAt": iso(clock())})
    net.create(other, FOLLOW, {"subject": owner.did, "createdAt": iso(clock())})
    net.process()
    mine = config_for(net, owner, net.app_password(owner))
    theirs = config_for(net, other, net.app_password(other))
    store = make_store()
    platform, other_platform = lopper(mine, tmp_path), lopper(theirs, tmp_path)
    assert sync(store, mine, platform).outcome == "ok"
    assert sync(store, theirs, other_platform).outcome == "ok"

    # The access token expires: the saved refresh token gets a new session, no sign-in.
    token = load_token(tmp_path, mine.key)
    assert token is not None
    save_token(tmp_path, mine.key, {**token, "session": expired(token["session"])})
    refreshed = lopper(mine, tmp_path)
    assert sync(store, mine, refreshed).outcome == "ok"
    renewed = load_token(tmp_path, mine.key)
    assert renewed is not None and renewed["session"] != token["session"]

    # The person revokes the app password. The PDS keeps accepting the access token it
    # already issued (for up to two hours): lopper cannot tell yet.
    net.revoke_app_password(owner)
    assert sync(store, mine, refreshed).outcome == "ok"

    # Once that token expires, the refresh is refused and so is the password: the account
    # is paused with a message that says what to do, and the other account runs on.
    latest = load_token(tmp_path, mine.key)
    assert latest is not None
    save_token(tmp_path, mine.key, {**latest, "session": expired(latest["session"])})
    paused = sync(store, mine, lopper(mine, tmp_path))
    assert paused.outcome == "paused", paused.problems
    assert "lopper auth bluesky" in paused.problems[0]
    assert sync(store, theirs, other_platform).outcome == "ok"
    with store.session() as session:
        rows = {a.key: a.paused_reason for a in session.scalars(select(Account))}
    assert rows[theirs.key] is None
    assert "app password" in (rows[mine.key] or "")


def test_a_notification_sorts_by_its_records_own_date(
    network: Network, make_store: Any, tmp_path: Path
) -> None:
    """What the reference AppView shows as a notification's ``indexedAt`` is its sort key:
    the earlier of the record's ``createdAt`` and the time it was indexed."""
    net = network
    owner, fan = net.create_account("sorted"), net.create_account("fan")
    post = net.create(owner, POST, {"text": "a post", "createdAt": iso(clock())})
    net.process()
    backdated = clock() - timedelta(days=3)
    net.create(fan, LIKE, {"subject": ref(post), "createdAt": iso(backdated)})
    net.process()

    listing = net.xrpc("app.bsky.notification.listNotifications", token=owner.access, limit=10)
    (like,) = [n for n in listing["notifications"] if n["reason"] == "like"]
    assert like["indexedAt"] == like["record"]["createdAt"] == iso(backdated)
