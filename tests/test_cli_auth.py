"""`lopper auth`: sign in once from the terminal, then every run reuses the stored token."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fakes.bluesky_server import FakeBluesky
from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


@pytest.fixture
def bluesky() -> Iterator[FakeBluesky]:
    with FakeBluesky(handle="me.bsky.social", clock=lambda: datetime.now(UTC)) as server:
        yield server


def test_bluesky_signs_in_once_and_the_password_is_never_stored(home, bluesky):
    config = home / "config.yaml"
    config.write_text(
        "version: 1\naccounts:\n"
        f"  - {{platform: bluesky, handle: '@me.bsky.social', credentials: {{base_url: '{bluesky.base_url}'}}}}\n"
        f"storage: {{url: 'sqlite:///{home}/db.sqlite3'}}\n"
    )
    result = runner.invoke(
        app, ["--config", str(config), "auth", "bluesky"], input=f"{bluesky.app_password}\n"
    )
    assert result.exit_code == 0, result.output
    assert "signed in as @me.bsky.social" in result.output
    assert bluesky.logins == 1

    tokens = list((home / "state" / "lopper" / "tokens").glob("*.json"))
    assert tokens
    for token in tokens:
        assert stat.S_IMODE(os.stat(token).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tokens[0].parent).st_mode) == 0o700

    result = runner.invoke(app, ["--config", str(config), "sync"])
    assert result.exit_code == 0, result.output
    assert bluesky.logins == 1, "the stored session is reused: no second sign-in"
    for path in home.rglob("*"):
        if path.is_file():
            assert bluesky.app_password.encode() not in path.read_bytes(), path


def test_a_refused_password_is_a_clear_error(home, bluesky):
    config = home / "config.yaml"
    config.write_text(
        "version: 1\naccounts:\n"
        f"  - {{platform: bluesky, handle: '@me.bsky.social', credentials: {{base_url: '{bluesky.base_url}'}}}}\n"
        f"storage: {{url: 'sqlite:///{home}/db.sqlite3'}}\n"
    )
    result = runner.invoke(
        app, ["--config", str(config), "auth", "bluesky"], input="wrong-password\n"
    )
    assert result.exit_code != 0
    assert "wrong-password" not in result.output


def test_auth_names_a_missing_account(home):
    config = home / "config.yaml"
    config.write_text(f"version: 1\nstorage: {{url: 'sqlite:///{home}/db.sqlite3'}}\n")
    result = runner.invoke(app, ["--config", str(config), "auth", "bluesky"])
    assert result.exit_code != 0
    assert "no bluesky account" in str(result.exception)
