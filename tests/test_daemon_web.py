"""`lopper run` when the review page cannot be served: the daemon runs on without it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import Running, environment, prepared_store, runs, wait_for, write_config
from test_cli import run_module

from service.store.models import JobState


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def _config(tmp_path: Path, port: int) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path / 'state' / 'lopper.sqlite3'}"
    config = write_config(tmp_path / "config.yaml", url, tmp_path / "outbox", size=60)
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("web: {enabled: false}", f"web: {{enabled: true, port: {port}}}"),
        encoding="utf-8",
    )
    return config, url


def test_the_daemon_runs_on_when_the_review_page_s_port_is_taken(
    tmp_path: Path, taken_port: int
) -> None:
    """Werkzeug ends the process (sys.exit(1)) when it cannot listen; with Restart=on-failure
    the service would then never sync, remove or send a digest."""
    config, url = _config(tmp_path, taken_port)
    store = prepared_store(url)
    daemon = Running(config, environment(tmp_path), tmp_path / "run.log")
    try:
        wait_for(
            lambda: runs(store, "sync", JobState.DONE), "a sync without the page", process=daemon
        )
        refused = [
            line for line in daemon.lines() if line.get("event") == "review page not started"
        ]
        assert len(refused) == 1, daemon.text()[-2000:]
        assert str(taken_port) in refused[0]["error"]
        assert "runs on without it" in refused[0]["detail"]
        assert daemon.process.poll() is None
    finally:
        assert daemon.stop() == 0


def test_lopper_web_says_the_port_is_taken(tmp_path: Path, taken_port: int) -> None:
    config, _url = _config(tmp_path, taken_port)
    result = run_module(tmp_path, "--config", str(config), "web")
    assert result.returncode == 69, result.stderr
    assert f"127.0.0.1:{taken_port}" in result.stderr and "web.port" in result.stderr
    assert "Traceback" not in result.stderr
