"""Bad input, tried: property tests over the configuration loader, every export reader and the
review page's form.

The property each test holds: an input either works, or is refused with lopper's own error
(``ConfigError``, ``ExportError``, a 4xx page) whose message names the file, member or key;
never another exception, and a refused input leaves every table exactly as it was.

``LOPPER_FUZZ_EXAMPLES=N`` runs N inputs per test instead of the defaults below (which keep
the suite fast); ``LOPPER_FUZZ_SEED`` picks the random seed (default: fixed, so the suite is
repeatable); ``LOPPER_FUZZ_REPORT=FILE`` writes how many inputs each test tried, as JSON.
``bench/fuzz.py`` runs many more with a random seed and prints the counts.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from digest_site import Site, clone_site, decisions, make_site, parse, parts, review_links
from fakes.facebook_server import FakeGraph
from fakes.x_server import FakeX
from helpers import NOW, Clock
from hypothesis import Phase, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy import select
from test_imports import (
    FB,
    IG,
    LI,
    ME,
    connections,
    exchanges,
    facebook_files,
    instagram_files,
    linkedin_2018,
    linkedin_recent,
    write_export,
)
from test_x_archive import CONFIG as X_CONFIG
from test_x_archive import Archive, message, tweet
from werkzeug.test import Client

from service.config import Rules, Schedule, Web, load_config
from service.digest import deliver_outbox, queue_digest
from service.errors import ConfigError
from service.imports.common import run_import
from service.imports.export import ExportError
from service.imports.facebook import FacebookReader
from service.imports.instagram import InstagramReader
from service.imports.linkedin import LinkedInReader
from service.imports.names import name_key
from service.imports.x_archive import import_archive
from service.platforms.base import PlatformError
from service.store import Store
from service.store.models import Base, Connection, Coverage, Interaction
from service.web.review import CSRF_COOKIE, ReviewApp

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
TRIED: Counter[str] = Counter()
OUTCOMES: Counter[str] = Counter()


def examples(default: int) -> int:
    wanted = os.environ.get("LOPPER_FUZZ_EXAMPLES")
    return int(wanted) if wanted else default


def fuzz(default: int) -> Callable[[Any], Any]:
    """Hypothesis settings for one property: its number of inputs, a repeatable seed."""
    chosen = os.environ.get("LOPPER_FUZZ_SEED")

    def wrap(test: Any) -> Any:
        # No shrinking: a failure prints its draws, which is enough to reproduce it, and
        # shrinking a deep document can take minutes.
        test = settings(
            max_examples=examples(default),
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
        )(test)
        return seed(int(chosen) if chosen else 20261125)(test)

    return wrap


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    report = os.environ.get("LOPPER_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({"tried": TRIED, "outcomes": OUTCOMES}, indent=1))


def tried(test: str, outcome: str) -> None:
    TRIED[test] += 1
    OUTCOMES[f"{test}: {outcome}"] += 1


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a comparable form."""
    with store.session() as session:
        return {
            table.name: sorted(
                (tuple(repr(v) for v in row) for row in session.execute(select(table))),
            )
            for table in Base.metadata.sorted_tables
        }


# --- JSON-ish values, and mutations of a document ----------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a document of dicts and lists (the root included)."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


def mutate(data: st.DataObject, document: Any) -> Any:
    """One structural change at a random place: replace, delete, add a key, or retype."""
    document = copy.deepcopy(document)
    path = data.draw(st.sampled_from(paths(document)), label="path")
    action = data.draw(st.sampled_from(["replace", "delete", "add", "wrap"]), label="action")
    if not path:
        return data.draw(VALUES, label="root") if action != "wrap" else [document]
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = data.draw(VALUES, label="value")
    elif action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent[last], dict):
        parent[last][data.draw(st.text(min_size=1, max_size=10), label="key")] = data.draw(VALUES)
    elif action == "add" and isinstance(parent[last], list):
        parent[last].append(data.draw(VALUES, label="item"))
    else:
        parent[last] = [parent[last]]
    return document


# --- the configuration ---------------------------------------------------------------------


def check_config(test: str, text: str) -> None:
    try:
        load_config(text=text)
    except ConfigError as exc:
        assert exc.problems, "a refusal names at least one problem"
        for problem in exc.problems:
            assert problem.message.strip(), "every problem says what is wrong"
            assert (
                problem.key
                or problem.line is not None
                or "YAML" in problem.message
                or "mapping" in problem.message
            ), f"no key or line: {problem}"
        tried(test, "refused")
        return
    tried(test, "accepted")


@fuzz(300)
@given(st.text(max_size=300))
def test_any_text_loads_or_is_refused_naming_the_problem(text: str) -> None:
    check_config("config: any text", text)


@fuzz(100)
@given(st.dictionaries(st.text(max_size=12) | st.integers(), VALUES, max_size=6))
def test_any_mapping_loads_or_is_refused_naming_the_key(document: dict[Any, Any]) -> None:
    check_config("config: any mapping", yaml.safe_dump({"version": 1, **document}))


@fuzz(80)
@given(st.data())
def test_a_mutated_example_loads_or_is_refused_naming_the_key(data: st.DataObject) -> None:
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        example = mutate(data, example)
    check_config("config: mutated example", yaml.safe_dump(example, allow_unicode=True))


# Escapes the properties above found once, kept as examples of their own.
def test_an_impossible_date_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        load_config(text="version: 1\nbogus: 2001-02-30\n")


def test_a_huge_poll_interval_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="schedule"):
        load_config(text="version: 1\nschedule: {poll_every: 600000000d, lease: 600000000d}\n")


def test_a_duration_too_long_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"web\.link_ttl"):
        load_config(text="version: 1\nweb: {link_ttl: 99999999999999999999d}\n")


DURATION_KEYS = [
    (model, name)
    for model, section in ((Rules, "rules"), (Schedule, "schedule"), (Web, "web"))
    for name, field in model.model_fields.items()
    if field.annotation in (timedelta, timedelta | None)
    for _ in [section]
]
SECTIONS = {Rules: "rules", Schedule: "schedule", Web: "web"}


@fuzz(150)
@given(
    st.sampled_from(DURATION_KEYS),
    st.integers(-(10**13), 10**13) | st.integers(-5000, 5000),
    st.sampled_from(["s", "m", "h", "d", "w", ""]),
)
def test_any_duration_is_in_range_or_refused_naming_key_and_line(
    where: tuple[Any, str], amount: int, unit: str
) -> None:
    """Accepted, a duration lies in its key's range and every date computed with it exists;
    refused, the problem names that key and its line. Never an OverflowError."""
    model, name = where
    section = SECTIONS[model]
    text = f"version: 1\n{section}:\n  {name}: {amount}{unit}\n"
    try:
        loaded = load_config(text=text)
    except ConfigError as exc:
        # A rule across keys (lease at least twice poll_every) names the section and the key.
        assert [(p.key, p.line) for p in exc.problems] in (
            [(f"{section}.{name}", 3)],
            [(section, 2)],
        ), exc
        assert name in str(exc), exc
        tried("config: durations", "refused")
        return
    value = getattr(getattr(loaded.settings, section), name)
    low, high = model.DURATION_RANGES.get(name, (timedelta(0), timedelta(days=3650)))
    assert low <= value <= high
    assert NOW + value - value == NOW  # dates a step of it away exist
    tried("config: durations", "accepted")


# --- the exports ---------------------------------------------------------------------------

YTD = re.compile(r"^(window\.[\w.]+\s*=\s*)", re.S)


def _parse_member(value: Any) -> tuple[str, Any] | None:
    """(prefix, JSON value) of a member the generators wrote, or None when it is not JSON."""
    if not isinstance(value, str):
        return "", value
    match = YTD.match(value)
    prefix = match[1] if match else ""
    try:
        return prefix, json.loads(value[len(prefix) :])
    except ValueError:
        return None


def damage(data: st.DataObject, files: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The export's members with one member damaged; also how the zip itself is damaged."""
    files = dict(files)
    member = data.draw(st.sampled_from(sorted(files)), label="member")
    how = data.draw(
        st.sampled_from(["json", "json", "truncate", "garbage", "drop", "zip-cut", "zip-flip"]),
        label="how",
    )
    text = files[member] if isinstance(files[member], str) else json.dumps(files[member])
    if how == "json":
        parsed = _parse_member(files[member])
        if parsed is None:  # a CSV: damage its text instead
            how = "truncate"
        else:
            prefix, value = parsed
            files[member] = prefix + json.dumps(mutate(data, value))
            return files, None
    if how == "truncate":
        files[member] = text[: len(text) * data.draw(st.integers(0, 999), label="cut") // 1000]
    elif how == "garbage":
        files[member] = data.draw(st.binary(max_size=200), label="bytes")
    elif how == "drop":
        del files[member]
    return files, how if how.startswith("zip-") else None


def write(root: Path, files: dict[str, Any], as_zip: bool) -> Path:
    """Like the import tests' ``write_export``, with raw bytes for garbage members."""
    raw = {k: v for k, v in files.items() if isinstance(v, bytes)}
    path = write_export(root, {k: v for k, v in files.items() if k not in raw}, as_zip)
    if as_zip:
        with zipfile.ZipFile(path, "a") as archive:
            for name, value in raw.items():
                archive.writestr(f"{root.name}/{name}", value)
    else:
        for name, value in raw.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(value)
    return path


def spoil_zip(data: st.DataObject, path: Path, how: str) -> None:
    blob = bytearray(path.read_bytes())
    # A share of the size, not an offset: draws must not depend on the bytes written.
    at = len(blob) * data.draw(st.integers(0, 999), label="per mille") // 1000
    if how == "zip-cut":
        del blob[at:]
    else:
        blob[at] ^= data.draw(st.integers(1, 255), label="xor")
    path.write_bytes(bytes(blob))


@dataclass(frozen=True)
class Held:
    """What an import left in the store, to hold it to what the export holds."""

    connections: int
    exchanges: int
    coverage: int
    nameless: list[tuple[Any, ...]]  # connections or exchanges with no one named
    times: tuple[datetime, datetime] | None  # the earliest and latest exchange
    spans: tuple[datetime, datetime] | None  # the widest span the coverage vouches for


def held(store: Store) -> Held:
    with store.session() as session:
        exchanges = session.execute(
            select(Interaction.event_id, Interaction.counterpart_id, Interaction.occurred_at)
        ).all()
        people = session.execute(select(Connection.platform_user_id, Connection.handle)).all()
        spans = session.execute(select(Coverage.covered_from, Coverage.covered_to)).all()
    times = [at for _, _, at in exchanges]
    return Held(
        connections=len(people),
        exchanges=len(exchanges),
        coverage=len(spans),
        nameless=[tuple(e) for e in exchanges if not e[1].strip()]
        + [tuple(p) for p in people if not p[0].strip() or not p[1].strip()],
        times=(min(times), max(times)) if times else None,
        spans=(min(f for f, _ in spans), max(t for _, t in spans)) if spans else None,
    )


BASELINES: dict[str, Held] = {}  # what each undamaged export imports as, by its files


class Exports:
    """One store per test, emptied for each example (so what an import left is all there is);
    each example gets its own folder."""

    def __init__(self, store: Store, tmp_path: Path) -> None:
        self.store, self.tmp_path, self.count = store, tmp_path, 0

    def empty(self) -> None:
        with self.store.session() as session:
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(table.delete())

    def baseline(self, files: dict[str, Any], importer: Callable[[Path], Any]) -> Held:
        key = json.dumps(files, sort_keys=True, default=str)
        if key not in BASELINES:
            self.empty()
            importer(write(self.tmp_path / f"whole{len(BASELINES)}" / "export", files, False))
            BASELINES[key] = held(self.store)
        return BASELINES[key]

    def run(
        self,
        test: str,
        data: st.DataObject,
        files: dict[str, Any],
        importer: Callable[[Path], Any],
    ) -> None:
        self.count += 1
        whole = self.baseline(files, importer)
        self.empty()
        root = self.tmp_path / f"e{self.count}" / "export"
        root.parent.mkdir()
        damaged, zip_damage = damage(data, files)
        as_zip = zip_damage is not None or data.draw(st.booleans(), label="zip")
        path = write(root, damaged, as_zip)
        if zip_damage:
            spoil_zip(data, path, zip_damage)
        before = dump(self.store)
        try:
            report = importer(path)
        except ExportError as exc:
            message = str(exc)
            assert str(path) in message, f"the error names the export: {message}"
            assert dump(self.store) == before, f"a refused import changed the store: {message}"
            tried(test, "refused")
            return
        tried(test, "imported")
        got = held(self.store)
        assert not got.nameless, f"rows for no one: {got.nameless}"
        # One damage changes one place: it may add one entry, or part one person in two.
        assert got.connections <= whole.connections + 1, (got, whole)
        read = getattr(report, "exchanges_read", None)
        if read is not None:
            assert got.exchanges <= read, f"{got.exchanges} stored of {read} read"
        if got.times is not None:
            # What an export holds is no later than it was made, and vouched for by its spans.
            assert got.spans is not None, f"exchanges from {got.times} under no coverage"
            assert got.spans[0] <= got.times[0] and got.times[1] <= got.spans[1], got
        if got.spans is not None:
            assert got.spans[1] <= NOW, f"coverage into the future: {got.spans}"
        importer(path)
        assert held(self.store) == got, "importing the same export again changed the store"


@pytest.fixture
def exports(store: Store, tmp_path: Path) -> Exports:
    return Exports(store, tmp_path)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@fuzz(60)
@given(data=st.data())
def test_a_damaged_facebook_export_imports_or_is_refused_whole(
    exports: Exports, data: st.DataObject
) -> None:
    generation = data.draw(st.sampled_from(["2018", "2020", "2023", "2024", "2025"]))
    exports.run(
        "facebook export",
        data,
        facebook_files(generation),
        lambda p: run_import(exports.store, FB, FacebookReader(), p, _rules(), NOW),
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@fuzz(60)
@given(data=st.data())
def test_a_damaged_linkedin_export_imports_or_is_refused_whole(
    exports: Exports, data: st.DataObject
) -> None:
    files = data.draw(st.sampled_from([linkedin_recent, linkedin_2018]))()
    exports.run(
        "linkedin export",
        data,
        files,
        lambda p: run_import(exports.store, LI, LinkedInReader(), p, _rules(), NOW),
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@fuzz(60)
@given(data=st.data())
def test_a_damaged_instagram_export_imports_or_is_refused_whole(
    exports: Exports, data: st.DataObject
) -> None:
    files = instagram_files(data.draw(st.sampled_from(["2024", "2026"])))
    exports.run(
        "instagram export",
        data,
        files,
        lambda p: run_import(exports.store, IG, InstagramReader(), p, _rules(), NOW),
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_linkedin_row_cut_before_its_date_names_the_line(store: Store, tmp_path: Path) -> None:
    files = linkedin_2018()
    text = files["Connections.csv"]
    files["Connections.csv"] = text[: text.rindex(',"1/8/18')] + "\r\n"
    path = write_export(tmp_path / "cut", files, as_zip=False)
    with pytest.raises(ExportError, match=r"Connections\.csv"):
        run_import(store, LI, LinkedInReader(), path, _rules(), NOW)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_facebook_profile_whose_name_is_a_list_is_read_or_refused(
    store: Store, make_store: Callable[[], Store], tmp_path: Path
) -> None:
    files = facebook_files("2024")
    whole = make_store()
    run_import(
        whole, FB, FacebookReader(), write_export(tmp_path / "whole", files, False), _rules(), NOW
    )
    files["profile_information/profile_information.json"] = {"profile_v2": {"name": [ME]}}
    path = write_export(tmp_path / "fb", files, as_zip=False)
    try:
        run_import(store, FB, FacebookReader(), path, _rules(), NOW)
    except ExportError as exc:
        assert "profile_information.json" in str(exc)
        assert exchanges(store) == []
        return
    # Read: the owner is still known (by the name in the list, or from the messages), so the
    # export reads as it does with the name in its usual form, and the owner is nobody's
    # counterpart.
    assert exchanges(store) == exchanges(whole) != []
    assert name_key(ME) not in {who for who, _, _ in exchanges(store)}
    assert connections(store) == connections(whole)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_zip_member_of_an_unknown_version_is_refused_by_name(
    store: Store, tmp_path: Path
) -> None:
    path = write_export(tmp_path / "li", linkedin_recent(), as_zip=True)
    blob = bytearray(path.read_bytes())
    at = blob.index(b"PK\x01\x02")  # the first member's central directory entry
    blob[at + 6 : at + 8] = (94).to_bytes(2, "little")  # "version needed to extract"
    path.write_bytes(bytes(blob))
    with pytest.raises(ExportError, match=r"li\.zip"):
        run_import(store, LI, LinkedInReader(), path, _rules(), NOW)


def _x_archive(generation: str) -> dict[str, Any]:
    archive = Archive(generation=generation).follows(["21", "22"], ["22", "23"])
    archive.posts(
        [
            tweet("1590000000000000101", NOW - timedelta(days=5), mentions=("21",)),
            tweet("1590000000000000102", NOW - timedelta(days=9), reply_to="23"),
        ],
        [tweet("1590000000000000103", NOW - timedelta(days=40), mentions=("22",))],
    )
    archive.messages(
        [
            {
                "conversationId": f"{21}-1",
                "messages": [message("9001", "21", "1", NOW - timedelta(days=3))],
            }
        ]
    )
    archive.likes(["1590000000000000900"])
    return dict(archive.files)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@fuzz(60)
@given(data=st.data())
def test_a_damaged_x_archive_imports_or_is_refused_whole(
    exports: Exports, data: st.DataObject
) -> None:
    files = _x_archive(data.draw(st.sampled_from(["tweets", "tweet"])))
    exports.run(
        "x archive",
        data,
        files,
        lambda p: import_archive(exports.store, X_CONFIG, p, NOW),
    )


# --- names from the platforms, on a terminal and in a spreadsheet ---------------------------

# Names as hostile as text gets: markup, escape sequences (CSI, OSC-8 links), bidi overrides,
# formula starts, and anything else.
NAME_PIECES = st.sampled_from(
    [
        "[/]",
        "[bold]",
        "[/bold]",
        "[link=https://evil.example]",
        "[/link]",
        "\\",
        "\x1b[2J",
        "\x1b]8;;https://evil.example\x1b\\",
        "\x07",
        "\u202e",
        "\n",
        "\r",
        "\t",
        "=",
        "+",
        "-",
        "@",
        "Ana",
        " ",
    ]
)
NAMES = st.lists(NAME_PIECES | st.text(max_size=4), max_size=8).map("".join)


@fuzz(300)
@given(NAMES)
def test_any_name_prints_as_its_text_on_a_terminal(name: str) -> None:
    """A name in a table cell and inside a line of markup (as `lopper review` prints it):
    never a MarkupError, never a control character on the terminal, and the reader sees the
    name's own characters."""
    from rich.console import Console
    from rich.table import Table

    from service.text import plain, shown

    console = Console(file=io.StringIO(), width=400, color_system=None, force_terminal=True)
    table = Table()
    table.add_column("who")
    table.add_row(shown(name))
    console.print(table)
    console.print(f"[bold]{shown(name)}[/bold]  {shown(name)}", soft_wrap=True)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    visible = plain(name)
    assert not any((ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in output), repr(
        output
    )
    assert "\u202e" not in output
    # (Rich doubles a trailing backslash so that it cannot escape the markup after it.)
    core = visible.rstrip("\\")
    assert f"{core}".strip() in output and output.count(core) >= 3
    tried("names: terminal", "printed")


@fuzz(300)
@given(NAMES)
def test_any_name_in_a_csv_export_is_no_formula(name: str) -> None:
    """OWASP: no cell begins with = + - @ tab or CR, and a spreadsheet shows the name itself
    (the leading quote is the spreadsheet's "text" mark)."""
    import csv

    from service.text import spreadsheet_cell

    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerow([spreadsheet_cell(name)])
    (cell,) = next(csv.reader(io.StringIO(buffer.getvalue())))
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")) or re.fullmatch(
        r"@[\w.-]+(@[\w.-]+)?", cell
    ), cell
    assert cell in (name, "'" + name)
    tried("names: csv", "neutralised" if cell != name else "as is")


# --- answers of the platforms' APIs ---------------------------------------------------------


@pytest.mark.parametrize("fault", ["nested", "nested-400"])
def test_an_x_answer_nested_too_deep_is_a_platform_error(
    tmp_path: Path, clock: Clock, fault: str
) -> None:
    """JSON nested 100,000 deep (a hostile server, a broken proxy) is refused as an answer, with
    the contract's PlatformError a sync records; never a RecursionError."""
    from test_x import adapter_for as x_adapter

    with FakeX(clock) as fake:
        fake.inject(fault)
        adapter = x_adapter(fake, tmp_path, clock)
        with pytest.raises(PlatformError) as caught:
            adapter.whoami()
        assert "X" in str(caught.value)
        assert fake.faulted[fault] == 1
        # The next answer is read as usual: nothing was left broken.
        assert adapter.whoami().handle


def test_a_facebook_answer_nested_too_deep_is_a_platform_error(
    tmp_path: Path, clock: Clock
) -> None:
    from test_facebook import adapter_for as facebook_adapter

    with FakeGraph(clock) as fake:
        fake.raw_answers.append((200, '{"id": ' + "[" * 100_000 + "]" * 100_000 + "}"))
        adapter = facebook_adapter(fake, clock, tmp_path)
        with pytest.raises(PlatformError) as caught:
            adapter.whoami()
        assert "Facebook" in str(caught.value)
        assert adapter.whoami().user_id


def _rules() -> Any:
    from helpers import make_rules

    return make_rules()


# --- the review page's form ----------------------------------------------------------------


class Review:
    """A synced site with one digest link; a submit that went through is undone by restoring
    the database file, so every example meets the same page."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.pristine = site.root / "pristine.sqlite3"
        self._open()
        assert queue_digest(self.app, NOW)
        assert deliver_outbox(self.app, NOW) == 1
        (eml,) = (site.root / "outbox").glob("*.eml")
        text, _ = parts(parse(eml.read_bytes()))
        (link,) = set(review_links(text))
        self.path = urlsplit(link).path
        self.ids = sorted(decisions(self.app))
        self.app.store.dispose()
        shutil.copyfile(site.root / "lopper.sqlite3", self.pristine)

    def _open(self) -> None:
        self.app = self.site.app()
        self.client = Client(ReviewApp(self.app))

    def restore(self) -> None:
        self.app.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{self.site.root / 'lopper.sqlite3'}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.pristine, self.site.root / "lopper.sqlite3")
        self._open()

    def csrf(self) -> str:
        body = self.client.get(self.path).get_data(as_text=True)
        match = re.search(r'name="csrf" value="([^"]+)"', body)
        assert match
        return match[1]


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Review]:
    root = tmp_path_factory.mktemp("fuzz-web")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(root / "state"))
        template = make_site(root / "template", size=80)
        template.close()
        page = Review(clone_site(template, root / "site"))
        yield page
        page.app.close()


FIELD_VALUES = st.sampled_from(
    ["remove", "keep", "snooze", "later", "", "REMOVE", "delete"]
) | st.text(max_size=12)


@fuzz(60)
@given(data=st.data())
def test_any_form_is_decided_or_refused_with_a_page_never_a_failure(
    review: Review, data: st.DataObject
) -> None:
    ids = review.ids
    form: dict[str, str] = {}
    if data.draw(st.booleans(), label="with token"):
        form["csrf"] = review.csrf()
        if data.draw(st.integers(0, 9), label="spoil") == 0:
            form["csrf"] = form["csrf"][:-1] + ("A" if form["csrf"][-1] != "A" else "B")
    rows = data.draw(st.lists(st.sampled_from([*ids, 0, -1, 10**12]), max_size=6), label="rows")
    for row in rows:
        form[f"d-{row}"] = data.draw(FIELD_VALUES, label="choice")
    if data.draw(st.booleans(), label="all"):
        form["all"] = data.draw(FIELD_VALUES, label="all value")
    if data.draw(st.booleans(), label="days"):
        form["snooze_days"] = data.draw(
            st.sampled_from(["7", "30", "90", "0", "-7", "1e3", "٣٠", "99999999999999999999"])
            | st.text(max_size=8),
            label="days value",
        )
    extra = data.draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
    form.update({k: v for k, v in extra.items() if k not in form})
    before = decisions(review.app)
    response = review.client.post(review.path, data=form)
    status = response.status_code
    assert status in (200, 303, 400, 403, 409), (status, form)
    body = response.get_data(as_text=True)
    assert "Traceback" not in body
    after = decisions(review.app)
    if status != 303:
        assert after == before, f"a refused form ({status}) changed a decision: {form}"
        tried("review form", f"refused {status}")
        return
    # Went through: only rows the form named changed, each to what it chose.
    wanted = {"remove": "confirmed", "keep": "kept", "snooze": "snoozed"}
    for suggestion_id, (state, via) in after.items():
        if (state, via) != before[suggestion_id]:
            choice = form.get(f"d-{suggestion_id}")
            if choice == "later":
                choice = form.get("all")
            assert state == wanted.get(choice or ""), (suggestion_id, state, form)
            assert via == "web"
    tried("review form", "decided")
    review.restore()


@fuzz(100)
@given(
    token=st.text(max_size=120) | st.from_regex(r"\A[A-Za-z0-9_.-]{10,120}\Z"),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]),
    body=st.binary(max_size=300),
    cookie=st.from_regex(r"\A[A-Za-z0-9_-]{0,40}\Z"),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "text/plain",
            "application/json",
        ]
    ),
)
def test_any_link_and_body_gets_a_page_and_changes_nothing(
    review: Review, token: str, method: str, body: bytes, cookie: str, content_type: str
) -> None:
    before = decisions(review.app)
    path = review.path.rsplit("/", 1)[0] + "/" + token
    response = review.client.open(
        path,
        method=method,
        data=body,
        headers={"Content-Type": content_type, "Cookie": f"{CSRF_COOKIE}={cookie}"},
    )
    assert 200 <= response.status_code < 500, (response.status_code, path)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert decisions(review.app) == before
    tried("review link and body", f"status {response.status_code}")
