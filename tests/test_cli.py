"""The command line, end to end on the sandbox: what a person types and what they get back."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


def lopper(*args: str, input: str | None = None) -> str:
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def run_module(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point, for exit codes (python -m service)."""
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def pending(limit: int = 0) -> list[dict]:
    args = ["suggestions", "--json"] + (["--limit", str(limit)] if limit else [])
    return json.loads(lopper(*args))


def test_every_command_has_help_text():
    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    for path, command in walk(get_command(app), ["lopper"]):
        assert command.help and command.help.strip(), f"{' '.join(path)} has no help text"


def test_demo_then_the_whole_loop(home):
    output = lopper("demo", "--size", "600")
    assert "simulated" in output
    assert "lopper review" in output
    first = pending()
    assert first, "the demo leaves suggestions pending"
    assert all(s["state"] == "pending" for s in first)
    evidence = first[0]["evidence"]
    for key in (
        "last_exchange",
        "inbound_in_window",
        "outbound_in_window",
        "connected_since",
        "value",
    ):
        assert key in evidence

    ids = [str(s["id"]) for s in first[:3]]
    assert "confirmed" in lopper("confirm", *ids)
    assert "3 removed" in lopper("execute")
    removed = list(csv.DictReader(io.StringIO(lopper("export", "removed", "--csv"))))
    assert sorted(r["suggestion_id"] for r in removed) == sorted(ids)
    assert {r["handle"] for r in removed} == {s["handle"] for s in first[:3]}

    lopper("undo", ids[0])
    states = {s["id"]: s["state"] for s in json.loads(lopper("suggestions", "--json", "--all"))}
    assert states[int(ids[0])] == "restored"
    assert states[int(ids[1])] == "removed"

    status = json.loads(lopper("status", "--json"))["accounts"][0]
    assert status["simulated"] is True
    assert status["suggestions"]["removed"] == 2
    assert status["removals_last_24h"] == 3
    assert status["coverage"] is not None


def test_review_takes_one_key_per_suggestion(home):
    lopper("demo", "--size", "400")
    before = pending()
    assert len(before) >= 4
    lopper("review", input="rksnq")
    after = {s["id"]: s for s in json.loads(lopper("suggestions", "--json", "--all"))}
    assert after[before[0]["id"]]["state"] == "confirmed"
    assert after[before[0]["id"]]["decided_via"] == "review"
    assert after[before[1]["id"]]["state"] == "kept"
    assert after[before[2]["id"]]["state"] == "snoozed"
    assert after[before[3]["id"]]["state"] == "pending"


def test_bulk_confirmation_asks_first(home):
    lopper("demo", "--size", "300")
    count = len(pending())
    result = runner.invoke(app, ["confirm", "--all-pending"], input="n\n")
    assert result.exit_code != 0
    assert len(pending()) == count
    lopper("confirm", "--all-pending", input="y\n")
    assert pending() == []


def test_plan_lists_lowest_value_first_and_queues_only_on_request(home):
    lopper("demo", "--size", "500")
    before = len(json.loads(lopper("suggestions", "--json", "--all")))
    output = lopper("plan", "--keep", "20%", "--show", "5")
    assert "keeping" in output
    assert len(json.loads(lopper("suggestions", "--json", "--all"))) == before
    lopper("plan", "--keep", "20%", "--queue")
    after = json.loads(lopper("suggestions", "--json", "--all"))
    assert len(after) > before
    # A queued plan carries its evidence like any suggestion (the plan alone builds none).
    assert all(s["evidence"].get("value") is not None for s in after[before:])


def test_demo_never_overwrites_a_real_configuration(home):
    config = home / "config" / "lopper" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("version: 1\n")
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 1
    assert config.read_text() == "version: 1\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["confirm", "999999"], 65, "no such suggestion"),
        (["undo", "999999"], 65, "no suggestion with id 999999"),
        (["done", "999999"], 65, "no suggestion with id 999999"),
        (["sync", "x:@nobody"], 2, "no account 'x:@nobody' in the configuration"),
        (["sync", "sandbox:@yuo"], 2, "did you mean sandbox:@you?"),
    ],
)
def test_bad_requests_get_a_clear_error_and_change_nothing(home, args, code, message):
    lopper("demo", "--size", "200")
    before = lopper("suggestions", "--json", "--all")
    result = run_module(home, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert lopper("suggestions", "--json", "--all") == before


def test_confirming_a_removed_suggestion_is_refused(home):
    lopper("demo", "--size", "200")
    sid = str(pending()[0]["id"])
    lopper("confirm", sid)
    lopper("execute")
    result = run_module(home, "confirm", sid)
    assert result.returncode == 65
    assert "is removed" in result.stderr


def test_bad_configuration_exits_78_naming_the_line(home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  window: forever\n")
    result = run_module(home, "config", "check", str(bad))
    assert result.returncode == 78
    assert "line 3" in result.stderr and "rules.window" in result.stderr
    result = run_module(home, "--config", str(bad), "status")
    assert result.returncode == 78
    assert "Traceback" not in result.stderr


def test_missing_configuration_points_to_the_demo(home):
    result = run_module(home, "status")
    assert result.returncode == 78
    assert "lopper demo" in result.stderr


@pytest.mark.parametrize(
    "url", ["not a url", "mysql://u@h/db", "sqlite:////proc/nonexistent/dir/x.sqlite3"]
)
def test_corrupt_database_url_is_explained(home, tmp_path, url):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"version: 1\naccounts: [{{platform: sandbox, handle: '@a'}}]\nstorage: {{url: '{url}'}}\n"
    )
    result = run_module(home, "--config", str(config), "status")
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    assert "database" in result.stderr


def test_a_file_that_is_not_a_database_is_explained(home, tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not an sqlite database" * 100)
    config = tmp_path / "c.yaml"
    config.write_text(f"version: 1\nstorage: {{url: 'sqlite:///{junk}'}}\n")
    result = run_module(home, "--config", str(config), "status")
    assert result.returncode == 78
    assert "not an SQLite database" in result.stderr


def test_account_without_its_secret_is_skipped_while_others_run(home, tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    config = tmp_path / "c.yaml"
    state = tmp_path / "state"
    config.write_text(
        "version: 1\naccounts:\n"
        "  - {platform: sandbox, handle: '@a', sandbox: {size: 50}}\n"
        "  - {platform: sandbox, handle: '@b', sandbox: {size: 50}, credentials: {token: '${NOPE_TOKEN}'}}\n"
        f"storage: {{url: 'sqlite:///{state}/db.sqlite3'}}\n"
    )
    result = runner.invoke(app, ["--config", str(config), "sync"])
    assert result.exit_code == 1
    assert "sandbox:@b skipped" in result.output and "NOPE_TOKEN" in result.output
    assert "sandbox:@a: ok" in result.output


def test_a_planted_secret_reaches_no_output_log_or_database(home, tmp_path, monkeypatch):
    secret = "tok-9f8e7d6c5b4a-planted"
    monkeypatch.setenv("PLANTED_TOKEN", secret)
    config = tmp_path / "c.yaml"
    database = tmp_path / "db.sqlite3"
    config.write_text(
        "version: 1\naccounts:\n"
        "  - {platform: sandbox, handle: '@a', sandbox: {size: 80}, credentials: {token: '${PLANTED_TOKEN}'}}\n"
        f"storage: {{url: 'sqlite:///{database}'}}\n"
    )
    outputs = []
    for args in (
        ["sync"],
        ["evaluate"],
        ["suggestions", "--json", "--all"],
        ["status", "--json"],
        ["status"],
    ):
        result = runner.invoke(app, ["--config", str(config), "-v", "--json-logs", *args])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert secret not in "".join(outputs)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    # The secret was really in play: the account it belongs to synced.
    assert "sandbox:@a: ok" in outputs[0]


def test_python_dash_m_service_runs(home):
    result = run_module(home, "--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_typer_app_is_importable_without_platform_sdks():
    # Importing the command line must not pull in any platform SDK (slow, heavy).
    code = (
        "import sys, service.cli; "
        "heavy = [m for m in ('tweepy', 'facebook', 'mastodon', 'atproto') if m in sys.modules]; "
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr
    assert isinstance(app, typer.Typer)


def test_running_the_demo_again_keeps_the_earlier_one_aside_and_says_so(home):
    import socket

    import yaml

    first = lopper("demo", "--size", "200", "--no-run")
    assert "kept in" not in first
    config = home / "config" / "lopper" / "config.yaml"
    state = home / "state" / "lopper"
    with socket.socket() as probe:  # a port the person chose for the review page
        probe.bind(("127.0.0.1", 0))
        chosen = probe.getsockname()[1]
    config.write_text(config.read_text().replace("port: 8470", f"port: {chosen}"))
    before = pending()
    first_database = (state / "demo.sqlite3").stat().st_ino

    second = " ".join(lopper("demo", "--size", "300", "--no-run").split())
    kept = [p for p in state.iterdir() if p.name.startswith("demo-")]
    assert len(kept) == 1
    assert f"The earlier demo's data is kept in {kept[0]}" in second
    assert {p.name for p in kept[0].iterdir()} >= {"demo.sqlite3", "sandbox", "config.yaml"}
    assert yaml.safe_load(config.read_text())["web"]["port"] == chosen
    # The earlier database itself was moved aside, whole; the new demo has a database of its own.
    assert (kept[0] / "demo.sqlite3").stat().st_ino == first_database
    assert (state / "demo.sqlite3").stat().st_ino != first_database
    assert before


def test_the_demo_takes_another_port_when_its_own_is_taken(home):
    import socket

    import yaml

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        output = " ".join(lopper("demo", "--size", "100", "--no-run", "--port", str(port)).split())
    config = yaml.safe_load((home / "config" / "lopper" / "config.yaml").read_text())
    other = config["web"]["port"]
    assert other != port
    assert f"Port {port} is taken; the review page uses port {other}" in output


def test_ctrl_c_during_sync_says_where_the_next_sync_resumes(home, tmp_path):
    import signal
    import sqlite3
    import time
    from contextlib import closing

    database = tmp_path / "big.sqlite3"
    config = tmp_path / "big.yaml"
    config.write_text(
        "version: 1\naccounts:\n  - platform: sandbox\n    handle: '@big'\n"
        f"    sandbox: {{size: 60000}}\nstorage: {{url: 'sqlite:///{database}'}}\n"
    )
    env = {**os.environ, "XDG_STATE_HOME": str(home / "state")}
    sync = subprocess.Popen(
        [sys.executable, "-m", "service", "--config", str(config), "sync"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )

    def pages_stored() -> int:
        # Read only, and only once the sync has the database in WAL mode: a reader then never
        # stands in the way of its writes.
        if not Path(f"{database}-wal").exists():
            return 0
        try:
            with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
                return int(db.execute("select count(*) from sync_cursors").fetchone()[0])
        except sqlite3.Error:
            return 0

    try:
        while not pages_stored() and sync.poll() is None:
            time.sleep(0.2)  # waits for the first stored page; nothing is timed
        sync.send_signal(signal.SIGINT)
        _out, said = sync.communicate(timeout=60)
    finally:
        if sync.poll() is None:
            sync.kill()
    assert sync.returncode == 130, said
    one_line = " ".join(said.split())
    assert "sandbox:@big: interrupted while reading" in one_line, said
    assert "the next sync resumes from there" in one_line, said
    assert "Traceback" not in said
    status = json.loads(lopper("--config", str(config), "status", "--json"))
    assert status["accounts"][0]["last_sync_outcome"] == "interrupted"


def test_status_says_whether_the_service_runs_and_what_is_due(home):
    from service.daemon.queue import SqliteLock

    lopper("demo", "--size", "100", "--no-run")
    config = home / "config" / "lopper" / "config.yaml"
    text = config.read_text()
    config.write_text(
        text.replace("accounts:\n", "accounts:\n  - {platform: sandbox, handle: '@new'}\n")
    )
    said = " ".join(lopper("status").split())
    assert "service: not running: nothing runs on its own until `lopper run`" in said
    assert "sync due (when the service runs)" in said  # @new was never synced
    assert json.loads(lopper("status", "--json"))["service"] == {"running": False, "by": None}

    database = home / "state" / "lopper" / "demo.sqlite3"
    lock = SqliteLock(Path(f"{database}.lock"))  # as `lopper run` holds it
    lock.acquire(str(database))
    try:
        said = " ".join(lopper("status").split())
        assert f"service: running (pid {os.getpid()} on" in said
        assert "sync due now" in said
        assert json.loads(lopper("status", "--json"))["service"]["running"] is True
    finally:
        lock.release()


def test_every_command_the_quick_start_lists_for_the_demo_runs_on_it(home):
    """The README says these work on the demo's data: each one, in its order."""
    import re
    import shlex

    root = Path(__file__).resolve().parent.parent
    pages = [root / "README.md", root / "docs" / "getting-started.md"]
    text = next(
        p.read_text() for p in pages if "After the demo, every command works" in p.read_text()
    )
    block = re.search(r"After the demo, every command works.*?```sh\n(.*?)```", text, re.S)
    assert block is not None
    lopper("demo", "--size", "300", "--no-run")
    ran = 0
    listed = [shlex.split(line.split("#")[0]) for line in block.group(1).splitlines()]
    runnable = [w for w in listed if w and w[1] not in ("run", "web")]  # they serve until stopped
    for words in runnable:
        result = runner.invoke(app, words[1:], input="q\n")
        assert result.exit_code == 0, (words, result.output)
        ran += 1
    assert ran == len(runnable) >= 8
