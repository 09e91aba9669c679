"""The documentation: the configuration reference covers the models, the README splits."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import sys
import typing
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from service import config as cfg
from service import errors
from service.errors import LopperError

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    seen.add(model)
    for info in model.model_fields.values():
        for arg in (info.annotation, *typing.get_args(info.annotation)):
            for inner in (arg, *typing.get_args(arg)):
                if isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in seen:
                    _models(inner, seen)
    return seen


def test_the_configuration_reference_names_every_key_with_a_description() -> None:
    reference = _tool("config_reference")
    listed = {model for _prefix, model in reference.SECTIONS}
    assert _models(cfg.Settings, set()) <= listed, "a section of the file is not in SECTIONS"
    rows = {key: (kind, default, text) for key, kind, default, text in reference.fields()}
    page = reference.reference()
    for prefix, model in reference.SECTIONS:
        for name in model.model_fields:
            key = f"{prefix}.{name}" if prefix else name
            assert f"| `{key}` |" in page
            assert rows[key][2], f"{key} has no description: add a comment above it in config.py"
    assert rows["rules.window"][:2] == ("duration", "180d")
    assert rows["schedule.workers"][:2] == ("integer (≥ 1, ≤ 32)", "2")
    assert rows["rules.count_kinds"][1] == "all"
    assert rows["accounts[].platform"][1] == "required"
    assert "`2000000`" not in page and "one of `sandbox`, `x`" in page


def test_a_field_comment_becomes_its_description() -> None:
    reference = _tool("config_reference")
    rows = {key: text for key, _kind, _default, text in reference.fields()}
    assert rows["rules.retry_after"] == (
        "The pause after a removal's first failure; it doubles after each one."
    )
    assert rows["accounts[].sandbox.silent_share"] == "people who never interact"


README = """# lopper

intro

## Quick start

```sh
# 1. the demo
lopper demo
```

## How it decides

See [the replicas](#several-replicas-benchreplicaspy) and [config](config.example.yaml).

## Platforms

| platform | reads |
|---|---|
| `mastodon` | following |
| `x` | following |

- Mastodon gives no date for a follow,
  so every connection is in grace.
- Bluesky sorts notifications.

## X

x text

### Signing in

sign in

## Facebook, LinkedIn and Instagram: your data export first

exports

### Facebook's API

graph

## The digest and the review page

d

## Running it as a service

s

## Configuration

c

## Reliability

r

### Security review

table

#### Hostile input

more, see [the figures](#hostile-input)

## Performance

p

### Several replicas (`bench/replicas.py`)

figures

## Layout

tree
"""


@pytest.fixture
def split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = _tool("split_readme")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "DOCS", tmp_path / "docs")
    monkeypatch.setattr(module, "LANDING", tmp_path / "docs" / "README.landing.md")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.landing.md").write_text(
        f"{module.LANDING_MARK}\n# lopper\n\n```sh\n# 1. the demo\nlopper demo\n```\n\n"
        "[Getting started](docs/getting-started.md)\n",
        encoding="utf-8",
    )
    return module


def test_the_split_puts_each_section_on_its_page_and_points_links_at_it(
    split: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "README.md").write_text(README, encoding="utf-8")
    assert split.main(["--apply"]) == 0
    docs = tmp_path / "docs"
    decides = (docs / "how-it-decides.md").read_text(encoding="utf-8")
    assert decides.startswith("# How it decides\n")
    # A link to a section on another page points at that page; a file outside docs/ is text.
    assert "[the replicas](performance.md#several-replicas-benchreplicaspy)" in decides
    assert "`config`" in decides and "(config.example.yaml)" not in decides
    security = (docs / "security.md").read_text(encoding="utf-8")
    assert "## Security review\n\ntable" in security
    assert "\n### Hostile input\n" in security  # one level up, as its section
    assert "[the figures](#hostile-input)" in security
    assert "Security review" not in (docs / "reliability.md").read_text(encoding="utf-8")
    x = (docs / "platforms" / "x.md").read_text(encoding="utf-8")
    assert x.startswith("# X\n\nx text\n\n## Signing in\n")
    # With no section of its own, a platform's page takes its row and bullets of "Platforms".
    mastodon = (docs / "platforms" / "mastodon.md").read_text(encoding="utf-8")
    assert "| `mastodon` | following |" in mastodon and "`x`" not in mastodon
    assert "so every connection is in grace." in mastodon and "Bluesky" not in mastodon
    index = (docs / "index.md").read_text(encoding="utf-8")
    assert "[Getting started](getting-started.md)" in index
    assert (tmp_path / "README.md").read_text(encoding="utf-8").startswith(split.LANDING_MARK)
    # Once README.md is the landing page, the split refuses to run again.
    with pytest.raises(SystemExit, match="already the landing page"):
        split.main([])


def test_a_section_the_mapping_does_not_know_stops_the_split(
    split: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "README.md").write_text(README + "\n## Exit codes and more\n\ntable\n")
    assert split.main(["--check"]) == 0  # "Exit codes" goes with getting started
    (tmp_path / "README.md").write_text(README + "\n## Troubleshooting\n\ntext\n")
    assert split.main([]) == 1
    assert "'## Troubleshooting' goes to no page" in capsys.readouterr().err
    assert not (tmp_path / "docs" / "index.md").exists()


def test_the_split_refuses_a_landing_page_without_the_first_commands(
    split: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "README.md").write_text(README.replace("lopper demo", "lopper demo --size 10"))
    assert split.main(["--apply"]) == 1
    assert not (tmp_path / "README.md").read_text().startswith(split.LANDING_MARK)


def test_the_landing_page_keeps_the_readmes_first_commands_and_stays_short() -> None:
    split = _tool("split_readme")
    landing = (ROOT / "docs" / "README.landing.md").read_text(encoding="utf-8")
    assert len(landing) < 15_000
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if split.LANDING_MARK not in readme:
        _intro, tops = split.parse(readme)
        assert split.quick_start_commands(tops) in landing


def _exit_code_table() -> dict[int, str]:
    """The exit codes the documentation lists (README.md, or its page once split)."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        match = re.search(r"^#+ Exit codes\n(.*?)(?=^#|\Z)", text, re.S | re.M)
        if match and "| code | meaning |" in match.group(1):
            rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", match.group(1), re.M)
            return {int(code): meaning for code, meaning in rows}
    raise AssertionError("no exit code table in README.md or docs/")


def test_the_exit_code_table_lists_every_code_the_errors_use() -> None:
    import service

    table = _exit_code_table()
    codes = {0, 1, 2}
    for module in pkgutil.walk_packages(service.__path__, "service."):
        if ".migrations" in module.name or module.name.endswith("__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for value in vars(loaded).values():
            if isinstance(value, type) and issubclass(value, LopperError):
                codes.add(value.exit_code)
    # Codes a command sets itself: typer.Exit(65), SystemExit(EX_UNAVAILABLE), sys.exit(...).
    for path in (ROOT / "service").rglob("*.py"):
        for name in re.findall(r"(?:Exit|sys\.exit)\(([A-Z_0-9]+)\)", path.read_text()):
            if name.isdigit():
                codes.add(int(name))
            elif hasattr(errors, name):
                codes.add(getattr(errors, name))
    assert set(table) == codes
    assert {errors.EX_CONFIG, errors.EX_DATAERR, errors.EX_UNAVAILABLE, errors.EX_USAGE} <= codes
