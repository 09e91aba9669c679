"""The X archive import, on archives the tests write in X's own format (zip and folder, split
files, both generations of the posts file), with the API looked up through the fake X."""

from __future__ import annotations

import json
import random
import zipfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes.x_server import CLIENT_ID, ME, TOKEN, USERNAME, FakeX
from helpers import NOW, Clock, make_rules, snapshot
from sqlalchemy import select
from typer.testing import CliRunner

from service.config import Account as AccountConfig
from service.imports import x_archive
from service.imports.export import ExportError, open_export
from service.imports.x_archive import import_archive, records
from service.platforms import build_adapter
from service.platforms.tokens import save_token
from service.platforms.x import XPlatform
from service.store import Store
from service.store.models import Connection, CostRecord, Coverage, Interaction
from service.sync import sync_account

HANDLE = f"@{USERNAME}"
KEY = f"x:{HANDLE}"
CREATED = datetime(2016, 3, 1, 9, 30, tzinfo=UTC)
GENERATED = NOW - timedelta(days=2)
CONFIG = AccountConfig(platform="x", handle=HANDLE)


def _twitter_time(at: datetime) -> str:
    return at.strftime("%a %b %d %H:%M:%S +0000 %Y")


def tweet(
    post_id: str,
    at: datetime,
    *,
    reply_to: str | None = None,
    mentions: tuple[str, ...] = (),
    text: str = "hi",
) -> dict[str, Any]:
    """A post as the archive writes it: every number a string."""
    user_mentions = [
        {"name": f"P {m}", "screen_name": f"p{m}", "indices": ["0", "5"], "id_str": m, "id": m}
        for m in mentions
    ]
    body: dict[str, Any] = {
        "edit_info": {
            "initial": {
                "editTweetIds": [post_id],
                "editableUntil": "2022-11-07T21:12:53.000Z",
                "editsRemaining": "5",
                "isEditEligible": True,
            }
        },
        "retweeted": False,
        "source": '<a href="https://mobile.twitter.com" rel="nofollow">Twitter Web App</a>',
        "entities": {"hashtags": [], "symbols": [], "user_mentions": user_mentions, "urls": []},
        "display_text_range": ["0", str(len(text))],
        "favorite_count": "0",
        "id_str": post_id,
        "truncated": False,
        "retweet_count": "0",
        "id": post_id,
        "created_at": _twitter_time(at),
        "favorited": False,
        "full_text": text,
        "lang": "en",
    }
    if reply_to:
        body |= {
            "in_reply_to_status_id_str": "1500000000000000000",
            "in_reply_to_status_id": "1500000000000000000",
            "in_reply_to_user_id": reply_to,
            "in_reply_to_user_id_str": reply_to,
            "in_reply_to_screen_name": f"p{reply_to}",
        }
    return {"tweet": body}


def message(event: str, sender: str, recipient: str | None, at: datetime) -> dict[str, Any]:
    create: dict[str, Any] = {
        "reactions": [],
        "urls": [],
        "text": "hello",
        "mediaUrls": [],
        "senderId": sender,
        "id": event,
        "createdAt": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    if recipient is not None:
        create["recipientId"] = recipient
    return {"messageCreate": create}


def ytd(name: str, part: int, items: list[Any]) -> str:
    return f"window.YTD.{name}.part{part} = " + json.dumps(items, indent=2)


class Archive:
    """The files of one archive, by path; written as a zip or a folder."""

    def __init__(
        self,
        *,
        generated: datetime = GENERATED,
        username: str = USERNAME,
        generation: str = "tweets",
    ) -> None:
        self.generation = generation
        self.files: dict[str, str] = {
            "data/manifest.js": "window.__THAR_CONFIG = "
            + json.dumps(
                {
                    "userInfo": {
                        "accountId": ME,
                        "userName": username,
                        "displayName": "Tweepy Testing",
                    },
                    "archiveInfo": {
                        "sizeBytes": "1000",
                        "generationDate": generated.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                        "isPartialArchive": False,
                        "maxPartSizeBytes": "53687091200",
                    },
                    "readmeInfo": {
                        "fileName": "data/README.txt",
                        "directory": "data/",
                        "name": "README.txt",
                    },
                    "dataTypes": {},
                }
            ),
            "data/account.js": ytd(
                "account",
                0,
                [
                    {
                        "account": {
                            "email": "me@example.com",
                            "createdVia": "web",
                            "username": username,
                            "accountId": ME,
                            "createdAt": CREATED.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                            "accountDisplayName": "Tweepy Testing",
                        }
                    }
                ],
            ),
            "data/README.txt": "Twitter archive",
        }

    def follows(self, following: list[str], followers: list[str]) -> Archive:
        self.files["data/following.js"] = ytd(
            "following",
            0,
            [
                {
                    "following": {
                        "accountId": u,
                        "userLink": f"https://twitter.com/intent/user?user_id={u}",
                    }
                }
                for u in following
            ],
        )
        self.files["data/follower.js"] = ytd(
            "follower",
            0,
            [
                {
                    "follower": {
                        "accountId": u,
                        "userLink": f"https://twitter.com/intent/user?user_id={u}",
                    }
                }
                for u in followers
            ],
        )
        return self

    def posts(self, *parts: list[dict[str, Any]]) -> Archive:
        name = self.generation  # "tweets" since 2022, "tweet" before
        for index, items in enumerate(parts):
            path = f"data/{name}.js" if index == 0 else f"data/{name}-part{index}.js"
            self.files[path] = ytd(name, index, items)
        return self

    def messages(
        self, conversations: list[dict[str, Any]], groups: list[dict[str, Any]] | None = None
    ) -> Archive:
        self.files["data/direct-messages.js"] = ytd(
            "direct_messages", 0, [{"dmConversation": c} for c in conversations]
        )
        self.files["data/direct-messages-group.js"] = ytd(
            "direct_messages_group", 0, [{"dmConversation": c} for c in groups or []]
        )
        return self

    def likes(self, post_ids: list[str]) -> Archive:
        self.files["data/like.js"] = ytd(
            "like",
            0,
            [
                {
                    "like": {
                        "tweetId": p,
                        "fullText": "liked",
                        "expandedUrl": f"https://twitter.com/i/web/status/{p}",
                    }
                }
                for p in post_ids
            ],
        )
        return self

    def write_zip(self, path: Path, top: str = "") -> Path:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in self.files.items():
                archive.writestr(top + name, text)
        return path

    def write_folder(self, path: Path) -> Path:
        for name, text in self.files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text, encoding="utf-8")
        return path


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeX]:
    with FakeX(clock) as server:
        yield server


def api(fake: FakeX, state: Path, clock: Clock) -> tuple[AccountConfig, XPlatform]:
    config = AccountConfig(
        platform="x", handle=HANDLE, x={"api_base_url": fake.url, "client_id": CLIENT_ID}
    )
    save_token(
        state, config.key, {"access_token": TOKEN, "refresh_token": "r", "client_id": CLIENT_ID}
    )
    adapter = build_adapter(config, state, clock)
    assert isinstance(adapter, XPlatform)
    return config, adapter


def exchanges(store: Store) -> Counter[tuple[str, str, str]]:
    with store.session() as session:
        return Counter(
            (i.counterpart_id, str(i.kind), str(i.direction))
            for i in session.scalars(select(Interaction))
        )


def _rich(fake: FakeX) -> tuple[Archive, dict[str, str]]:
    """A full archive: two parts of posts, one-to-one and group messages, likes to look up."""
    who = {n: fake.add_user(n) for n in ("ann", "ben", "cy", "di", "ed")}
    liked = [
        fake.like(who["ann"], NOW - timedelta(days=50)).id,
        fake.like(who["ed"], NOW - timedelta(days=9)).id,
    ]
    at = NOW - timedelta(days=300)
    archive = (
        Archive()
        .follows([who["ann"], who["ben"], who["cy"]], [who["ann"], who["di"]])
        .posts(
            [
                tweet("1590000000000000001", at, reply_to=who["ann"], mentions=(who["ann"],)),
                tweet(
                    "1590000000000000002", at + timedelta(days=1), mentions=(who["ben"], who["cy"])
                ),
            ],
            [
                tweet(
                    "1590000000000000003",
                    at + timedelta(days=2),
                    text=f"RT @p{who['di']}: nice",
                    mentions=(who["di"], who["ann"]),
                ),
                tweet(
                    "1590000000000000004", at + timedelta(days=3), reply_to=ME, mentions=(ME,)
                ),  # a thread of its own
            ],
        )
        .messages(
            [
                {
                    "conversationId": f"{who['ben']}-{ME}",
                    "messages": [
                        message("1600000000000000001", who["ben"], ME, at),
                        message("1600000000000000002", ME, who["ben"], at + timedelta(hours=1)),
                    ],
                },
            ],
            [
                {
                    "conversationId": "1600000000000000900",
                    "messages": [
                        {
                            "joinConversation": {
                                "initiatingUserId": who["cy"],
                                "participantsSnapshot": [ME, who["cy"], who["di"]],
                                "createdAt": "2024-01-01T00:00:00.000Z",
                            }
                        },
                        message("1600000000000000003", who["cy"], None, at + timedelta(days=5)),
                        message("1600000000000000004", ME, None, at + timedelta(days=6)),
                    ],
                }
            ],
        )
        .likes([*liked, "1234567890123456789"])  # the last one was deleted since
    )
    return archive, who


def test_an_archive_with_split_files_lands_whole_with_likes_attributed(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    archive, who = _rich(fake)
    path = archive.write_zip(tmp_path / "twitter-2025-05-30-abc.zip", top="twitter-2025-05-30-abc/")
    config, adapter = api(fake, tmp_path, clock)

    report = import_archive(store, config, path, clock.now, lookup=adapter.post_authors)

    assert exchanges(store) == Counter(
        {
            (who["ann"], "reply", "outbound"): 1,
            (who["ben"], "mention", "outbound"): 1,
            (who["cy"], "mention", "outbound"): 1,
            (who["di"], "repost", "outbound"): 1,
            (who["ben"], "message", "inbound"): 1,
            (who["ben"], "message", "outbound"): 1,
            (who["cy"], "message", "inbound"): 1,
            (who["cy"], "message", "outbound"): 1,  # to the group: each other member
            (who["di"], "message", "outbound"): 1,
            (who["ann"], "like", "outbound"): 1,
            (who["ed"], "like", "outbound"): 1,
        }
    )
    assert report.likes == 3 and report.likes_attributed == 2 and report.likes_note is None
    assert fake.requests["tweets_lookup"] == 1  # one batch for three posts
    with store.session() as session:
        people = {
            c.platform_user_id: (c.handle, c.profile_url, c.following, c.followed_by)
            for c in session.scalars(select(Connection))
        }
        covered = {
            c.stream: (c.covered_from, c.covered_to, c.source)
            for c in session.scalars(select(Coverage))
        }
        liked_at = set(
            session.scalars(select(Interaction.occurred_at).where(Interaction.kind == "like"))
        )
        cost = session.scalars(select(CostRecord)).all()
    assert people[who["ann"]] == (
        f"x:{who['ann']}",
        f"https://x.com/intent/user?user_id={who['ann']}",
        True,
        True,
    )
    assert people[who["di"]][2:] == (False, True) and len(people) == 4
    assert covered == {
        s: (CREATED.replace(second=0), GENERATED, "import") for s in ("posts", "messages", "likes")
    }
    assert liked_at == {GENERATED}  # the latest a like in the archive can have happened
    assert cost == []  # the command records the lookups; the library only reads


def test_importing_the_same_archive_again_changes_nothing_and_a_newer_one_adds_only_what_is_new(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    archive, who = _rich(fake)
    config, adapter = api(fake, tmp_path, clock)
    first = archive.write_zip(tmp_path / "first.zip")
    import_archive(store, config, first, clock.now, lookup=adapter.post_authors)
    before = snapshot(store)

    again = import_archive(store, config, first, clock.now, lookup=adapter.post_authors)

    assert snapshot(store) == before
    assert again.exchanges_new == 0 and again.connections_new == 0
    # Known likes are not looked up again; only the deleted post is asked for (and X bills
    # nothing for a post it does not return).
    assert fake.requests["tweets_lookup"] == 2 and again.likes_attributed == 2

    counted = exchanges(store)
    newer = Archive(generated=NOW - timedelta(days=1))
    newer.files.update(
        {k: v for k, v in archive.files.items() if k not in ("data/manifest.js", "data/account.js")}
    )
    extra = tweet("1590000000000000009", NOW - timedelta(days=1, hours=2), mentions=(who["ed"],))
    newer.posts([json.loads(archive.files["data/tweets.js"].split("= ", 1)[1])[0], extra])
    newer.follows([who["ann"], who["ben"], who["cy"], who["ed"]], [who["ann"], who["di"]])
    report = import_archive(
        store,
        config,
        newer.write_folder(tmp_path / "newer"),
        clock.now,
        lookup=adapter.post_authors,
    )

    assert report.connections_new == 1
    assert exchanges(store) - counted == Counter({(who["ed"], "mention", "outbound"): 1}), report
    assert exchanges(store)[(who["ed"], "mention", "outbound")] == 1


def test_an_older_archive_with_tweet_js_and_no_api_says_the_likes_are_unattributed(
    store: Store, tmp_path: Path
) -> None:
    at = NOW - timedelta(days=800)
    archive = (
        Archive(generation="tweet")
        .follows(["11"], ["11", "12"])
        .posts([tweet("1100000000000000001", at, reply_to="11", mentions=("11",))])
        .likes(["1100000000000000050", "1100000000000000051"])
    )
    path = archive.write_folder(tmp_path / "twitter-2021")

    report = import_archive(store, CONFIG, path, NOW)

    assert exchanges(store) == Counter({("11", "reply", "outbound"): 1})
    assert report.likes_unattributed == 2
    assert report.likes_note is not None and "configure the X API" in report.likes_note
    assert set(report.covered) == {"posts"}  # likes with no author vouch for nothing


def test_archive_and_api_give_the_same_ids_so_nothing_counts_twice(
    store: Store, clock: Clock, fake: FakeX, tmp_path: Path
) -> None:
    friend = fake.add_user("friend")
    fake.follow(friend)
    post = fake.write(NOW - timedelta(days=3), reply_to=friend)
    dm = fake.dm(friend, NOW - timedelta(days=2), inbound=True)
    archive = (
        Archive()
        .follows([friend], [])
        .posts([tweet(post.id, post.created_at, reply_to=friend, mentions=(friend,))])
        .messages(
            [
                {
                    "conversationId": dm.conversation,
                    "messages": [message(dm.id, friend, ME, dm.created_at)],
                }
            ]
        )
    )
    config, adapter = api(fake, tmp_path, clock)
    import_archive(store, config, archive.write_zip(tmp_path / "a.zip"), clock.now)

    assert sync_account(store, config, adapter, make_rules(), clock).outcome == "ok"

    assert exchanges(store) == Counter(
        {(friend, "reply", "outbound"): 1, (friend, "message", "inbound"): 1}
    )
    with store.session() as session:
        handle = session.scalar(
            select(Connection.handle).where(Connection.platform_user_id == friend)
        )
    assert handle == "@friend"  # the sync named the person the archive knew by id only


# --- bad input ------------------------------------------------------------------------------


def _seeded(store: Store, tmp_path: Path) -> dict[str, Any]:
    archive = (
        Archive()
        .follows(["21"], ["22"])
        .posts([tweet("1590000000000000101", NOW - timedelta(days=5), mentions=("21",))])
    )
    import_archive(store, CONFIG, archive.write_zip(tmp_path / "good.zip"), NOW)
    return snapshot(store)


def test_a_file_that_is_not_an_x_archive_is_refused_by_name(store: Store, tmp_path: Path) -> None:
    before = _seeded(store, tmp_path)
    other = tmp_path / "facebook-export.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("your_activity_across_facebook/messages/inbox/a/message_1.json", "{}")

    with pytest.raises(ExportError, match=r"facebook-export\.zip: not an X archive"):
        import_archive(store, CONFIG, other, NOW)
    assert snapshot(store) == before


def test_a_truncated_zip_is_refused_by_name_and_changes_nothing(
    store: Store, tmp_path: Path
) -> None:
    before = _seeded(store, tmp_path)
    archive = Archive().follows(["31"], [])
    full = archive.posts(
        [
            tweet(str(1590000000000000200 + i), NOW - timedelta(days=i), mentions=("31",))
            for i in range(300)
        ]
    ).write_zip(tmp_path / "full.zip")
    cut = tmp_path / "twitter-cut.zip"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])

    with pytest.raises(ExportError, match=r"twitter-cut\.zip"):
        import_archive(store, CONFIG, cut, NOW)
    assert snapshot(store) == before


def test_a_part_with_broken_json_names_the_file_and_line_and_changes_nothing(
    store: Store, tmp_path: Path
) -> None:
    before = _seeded(store, tmp_path)
    archive = (
        Archive()
        .follows(["41", "42"], ["43"])
        .posts(
            [tweet("1590000000000000301", NOW - timedelta(days=9), mentions=("41",))],
            [tweet("1590000000000000302", NOW - timedelta(days=8), mentions=("42",))],
        )
    )
    broken = archive.files["data/tweets-part1.js"]
    archive.files["data/tweets-part1.js"] = broken.replace(
        '"full_text": "hi",', '"full_text": "hi" "oops",', 1
    )

    with pytest.raises(ExportError, match=r"data/tweets-part1\.js: broken JSON at line \d+"):
        import_archive(store, CONFIG, archive.write_zip(tmp_path / "broken.zip"), NOW)
    assert snapshot(store) == before


def test_an_archive_of_another_account_is_refused(store: Store, tmp_path: Path) -> None:
    archive = Archive(username="someone_else").follows(["51"], [])

    with pytest.raises(ExportError, match=r"the archive is @someone_else's, not @TweepyDev's"):
        import_archive(store, CONFIG, archive.write_zip(tmp_path / "theirs.zip"), NOW)


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_reading_element_by_element_gives_what_json_loads_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(x_archive, "CHUNK", chunk)
    items = [
        tweet(str(1590000000000000400 + i), NOW, text='é, ] "quoted" ' * (i % 9), mentions=("61",))
        for i in range(40)
    ]
    path = Archive().posts(items).write_folder(tmp_path / "a")
    seen: list[int] = []

    with open_export(path) as export:
        read = list(records(export, "data/tweets.js", seen.append))

    assert read == items
    assert sum(seen) == (path / "data" / "tweets.js").stat().st_size


# --- the command line -----------------------------------------------------------------------


def test_the_command_imports_an_archive_and_status_shows_the_month_s_cost(
    home: Path, clock: Clock, fake: FakeX
) -> None:
    from service.cli import app

    archive, _who = _rich(fake)
    path = archive.write_zip(home / "archive.zip")
    config = home / "config.yaml"
    config.write_text(
        "version: 1\naccounts:\n"
        f"  - {{platform: x, handle: '{HANDLE}', x: {{api_base_url: '{fake.url}', client_id: {CLIENT_ID}, monthly_budget: 25}}}}\n"
        f"storage: {{url: 'sqlite:///{home}/db.sqlite3'}}\n"
    )
    save_token(
        home / "state" / "lopper",
        KEY,
        {"access_token": TOKEN, "refresh_token": "r", "client_id": CLIENT_ID},
    )
    runner = CliRunner()

    result = runner.invoke(app, ["--config", str(config), "import", "x-archive", str(path)])

    assert result.exit_code == 0, result.output
    assert "2 of 3 likes attributed" in result.output and "$0.01 of X reads" in result.output
    status = runner.invoke(app, ["--config", str(config), "status", "--json"])
    entry = json.loads(status.stdout)["accounts"][0]
    assert entry["x_cost_month"] == pytest.approx(0.01) and entry["x_budget"] == 25
    assert entry["last_sync_outcome"] == "ok"  # the import is recorded as a run
    assert entry["last_sync_detail"].startswith("import of archive.zip")
    shown = runner.invoke(app, ["--config", str(config), "status"])
    assert "X cost:       $0.01 this month (estimate), budget $25.00" in shown.output


def _mutate(value: Any, rng: random.Random) -> tuple[Any, bool]:
    """The value with one leaf, somewhere inside it, replaced by something of another type."""
    if isinstance(value, dict) and value and rng.random() < 0.85:
        key = rng.choice(sorted(value))
        inner, done = _mutate(value[key], rng)
        return {**value, key: inner}, done
    if isinstance(value, list) and value and rng.random() < 0.85:
        index = rng.randrange(len(value))
        inner, done = _mutate(value[index], rng)
        return [*value[:index], inner, *value[index + 1 :]], done
    return rng.choice([None, 7, -1.5, "", "x", [], {}, [1, "a"], {"k": None}, True]), True


@pytest.mark.parametrize("seed", range(15))
def test_a_damaged_record_imports_or_is_refused_naming_the_file_and_changes_nothing(
    store: Store, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    at = NOW - timedelta(days=40)
    archive = (
        Archive()
        .follows(["71", "72"], ["72"])
        .posts([tweet("1590000000000000501", at, reply_to="71", mentions=("71", "72"))])
        .messages(
            [
                {
                    "conversationId": f"71-{ME}",
                    "messages": [message("1600000000000000501", "71", ME, at)],
                }
            ],
            [{"conversationId": "9", "messages": [message("1600000000000000502", ME, None, at)]}],
        )
    )
    name = rng.choice([n for n in archive.files if n.endswith(".js") and "manifest" not in n])
    prefix, body = archive.files[name].split("= ", 1)
    damaged, _ = _mutate(json.loads(body), rng)
    archive.files[name] = f"{prefix}= {json.dumps(damaged)}"
    before = snapshot(store)

    try:
        import_archive(store, CONFIG, archive.write_zip(tmp_path / "damaged.zip"), NOW)
    except ExportError as exc:
        assert name in str(exc) or "damaged.zip" in str(exc)
        assert snapshot(store) == before


_READ_FIELDS = [
    ("data/tweets.js", ["tweet", "entities", "user_mentions"]),
    ("data/tweets.js", ["tweet", "entities"]),
    ("data/tweets.js", ["tweet", "in_reply_to_user_id_str"]),
    ("data/tweets.js", ["tweet", "created_at"]),
    ("data/tweets.js", ["tweet", "full_text"]),
    ("data/direct-messages.js", ["dmConversation", "messages"]),
    ("data/direct-messages.js", ["dmConversation", "messages", 0, "messageCreate"]),
    ("data/direct-messages.js", ["dmConversation", "messages", 0, "messageCreate", "senderId"]),
    ("data/direct-messages.js", ["dmConversation", "messages", 0, "messageCreate", "createdAt"]),
    (
        "data/direct-messages-group.js",
        ["dmConversation", "messages", 0, "joinConversation", "participantsSnapshot"],
    ),
    ("data/following.js", ["following", "accountId"]),
    ("data/follower.js", ["follower"]),
    ("data/like.js", ["like", "tweetId"]),
    ("data/account.js", ["account", "createdAt"]),
]


@pytest.mark.parametrize(("name", "path"), _READ_FIELDS)
@pytest.mark.parametrize("value", [7, [1, "a"], {"k": None}, None])
def test_a_field_of_the_wrong_type_is_refused_naming_the_file(
    store: Store, tmp_path: Path, name: str, path: list[Any], value: Any
) -> None:
    at = NOW - timedelta(days=40)
    join = {
        "joinConversation": {
            "initiatingUserId": "73",
            "participantsSnapshot": [ME, "73"],
            "createdAt": "2024-01-01T00:00:00.000Z",
        }
    }
    archive = (
        Archive()
        .follows(["71", "72"], ["72"])
        .posts([tweet("1590000000000000501", at, reply_to="71", mentions=("71", "72"))])
        .messages(
            [
                {
                    "conversationId": f"71-{ME}",
                    "messages": [message("1600000000000000501", "71", ME, at)],
                }
            ],
            [
                {
                    "conversationId": "9",
                    "messages": [join, message("1600000000000000502", ME, None, at)],
                }
            ],
        )
        .likes(["1590000000000000777"])
    )
    prefix, body = archive.files[name].split("= ", 1)
    items = json.loads(body)
    target = items[0]
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    archive.files[name] = f"{prefix}= {json.dumps(items)}"
    before = snapshot(store)

    try:
        import_archive(store, CONFIG, archive.write_zip(tmp_path / "damaged.zip"), NOW)
    except ExportError as exc:
        assert name in str(exc)
        assert snapshot(store) == before
