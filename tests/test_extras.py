"""A platform whose SDK (its extra of the package) is not installed: say what to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.errors import MissingExtra

runner = CliRunner()


def said(result) -> str:  # type: ignore[no-untyped-def]
    """The output as one line: Rich wraps it at the terminal's width."""
    return " ".join(result.output.split())


CONFIG = """version: 1
accounts:
  - platform: mastodon
    handle: "@you@example.social"
    credentials:
      access_token: ${MASTODON_TOKEN}
  - platform: sandbox
    handle: "@sim"
    sandbox: {size: 50}
"""


@pytest.fixture
def without_mastodon_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """As after `pip install lopper` without the [mastodon] extra: `import mastodon` fails."""
    monkeypatch.setitem(sys.modules, "mastodon", None)
    monkeypatch.delitem(sys.modules, "service.platforms.mastodon", raising=False)


@pytest.fixture
def config(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = home / "config.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("MASTODON_TOKEN", "token-1")
    return path


def test_sync_names_the_extra_and_the_other_accounts_run(config, without_mastodon_sdk) -> None:
    result = runner.invoke(app, ["--config", str(config), "sync"])
    assert result.exit_code == 1, result.output
    assert "mastodon:@you@example.social skipped: mastodon needs its SDK" in said(result)
    assert "pip install 'lopper[mastodon]'" in said(result)
    assert "sandbox:@sim: ok" in said(result)
    assert "Traceback" not in said(result)


def test_config_check_names_the_extra(config, without_mastodon_sdk) -> None:
    result = runner.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 78, result.output
    assert "mastodon:@you@example.social: mastodon needs its SDK" in said(result)
    assert "pip install 'lopper[mastodon]'" in said(result)
    assert "valid, but not every enabled account can run here" in said(result)


def test_a_disabled_account_without_its_sdk_is_only_a_warning(config, without_mastodon_sdk) -> None:
    config.write_text(CONFIG.replace("    credentials:", "    enabled: false\n    credentials:"))
    result = runner.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert "warning" in said(result) and "lopper[mastodon]" in said(result)


def test_auth_names_the_extra(config, without_mastodon_sdk) -> None:
    result = runner.invoke(app, ["--config", str(config), "auth", "mastodon"])
    assert isinstance(result.exception, MissingExtra)
    assert result.exception.exit_code == 78
    assert "pip install 'lopper[mastodon]'" in str(result.exception)


def test_with_the_sdk_installed_config_check_says_valid(config) -> None:
    result = runner.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert "valid (mastodon:@you@example.social, sandbox:@sim)" in said(result)
