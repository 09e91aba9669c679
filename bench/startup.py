"""Start-up time of the command line, against what Python takes to import Typer.

Runs, in rounds, `python -c 'import typer'` and each lopper command below as a fresh process,
the commands of one or two source trees interleaved (one run of each per round, so a busy
machine weighs on both alike), and prints the median wall time of each with its ratio to the
median of `import typer`:

    lopper --help
    lopper status             (a demo store of --size connections, `lopper demo --no-run`)
    lopper confirm --help
    lopper confirm ID         (a real confirmation: each run confirms another pending one)

It also times, in this tree, two floors under `status` and `confirm`:

- the imports a command that reads the store cannot do without (Typer, structlog, the
  configuration's pydantic models, SQLAlchemy's ORM with the store's models);
- the stack itself, with none of lopper's commands: a Typer program of one command that
  counts the demo store's connections through SQLAlchemy's core (one textual query, no ORM)
  and prints the count in a Rich panel; once as it is, and once loading lopper's
  configuration first (YAML, pydantic). No command that reads the store and validates its
  configuration starts faster than the second.

Each tree gets its own demo store in a temporary folder (XDG_CONFIG_HOME, XDG_STATE_HOME), so
a tree with other migrations does not meet the other's database. Byte code is cached in a
temporary folder (PYTHONPYCACHEPREFIX), outside both trees, and one warm-up run of each command
fills it: the figures are those of an installed lopper, whose modules are compiled once.

    python bench/startup.py                           # this tree
    python bench/startup.py --before ../lopper-before  # another checkout beside this one
    python bench/startup.py --runs 21 --size 500
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lopper_command() -> list[str]:
    """The installed entry point beside this Python, as a person runs it; else -m service."""
    script = Path(sys.executable).with_name("lopper")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service"]


class Tree:
    def __init__(self, label: str, source: Path, work: Path, cache: Path) -> None:
        self.label = label
        self.source = source
        home = work / label
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key
            not in (
                "PYTHONDONTWRITEBYTECODE",
                "LOPPER_CONFIG",
                "STATE_DIRECTORY",
                "CONFIGURATION_DIRECTORY",
                "CREDENTIALS_DIRECTORY",
            )
        }
        self.env.update(
            PYTHONPATH=str(source),
            PYTHONPYCACHEPREFIX=str(cache),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_STATE_HOME=str(home / "state"),
            COLUMNS="100",
        )
        self.pending: list[int] = []

    def run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*lopper_command(), *args], env=self.env, capture_output=True, text=True, cwd="/"
        )
        if check and result.returncode != 0:
            sys.exit(f"{self.label}: lopper {' '.join(args)} failed:\n{result.stderr}")
        return result

    def prepare(self, size: int, runs: int) -> None:
        self.run(["demo", "--size", str(size), "--no-run"])
        listed = json.loads(self.run(["suggestions", "--json"]).stdout)
        self.pending = [item["id"] for item in listed]
        if len(self.pending) < runs + 1:
            sys.exit(
                f"{self.label}: {len(self.pending)} pending suggestions, fewer than the "
                f"{runs + 1} confirmations the runs need: a larger --size"
            )

    def timed(self, args: list[str]) -> float:
        started = time.perf_counter()
        self.run(args)
        return time.perf_counter() - started


# What a command that reads the store cannot start without, whatever the command line
# does: Typer, structlog, the configuration's models (pydantic) and the store's (SQLAlchemy's
# ORM). Timed in this tree as a reference for `status` and `confirm`.
FLOOR = "import typer, structlog, service.config, service.store.models"


# The stack's floor: Typer, SQLAlchemy's core, one query, Rich's output. CONFIGURED also
# validates lopper's configuration, as every command that reads the store must.
STACK = """
import sys

import typer

app = typer.Typer()
CONFIGURED = {configured}
URL = None if CONFIGURED else sys.argv.pop()  # the database, when not from the configuration


@app.command()
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    url = URL
    if CONFIGURED:
        from service.config import find_config, load_config

        url = load_config(find_config(None)).settings.storage.url.get_secret_value()
    import sqlalchemy
    from rich.console import Console
    from rich.panel import Panel

    with sqlalchemy.create_engine(url).connect() as connection:
        count = connection.execute(sqlalchemy.text("SELECT count(*) FROM connections"))
        Console().print(Panel(f"connections: {{count.scalar_one():,}}"))


@app.command()
def other() -> None:
    pass


app()
"""


def python(code: str, env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd="/", capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"python -c … {' '.join(args)} failed:\n{result.stderr}")
    return elapsed


COMMANDS = {
    "lopper --help": lambda tree: ["--help"],
    "lopper status": lambda tree: ["status"],
    "lopper confirm --help": lambda tree: ["confirm", "--help"],
    "lopper confirm ID": lambda tree: ["confirm", str(tree.pending.pop())],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="rounds (default 15)")
    parser.add_argument("--size", type=int, default=300, help="demo connections (default 300)")
    parser.add_argument("--before", type=Path, help="another source tree to measure beside this")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lopper-startup-"))
    try:
        cache = work / "pycache"
        trees = [Tree("after", ROOT, work, cache)]
        if args.before:
            trees.insert(0, Tree("before", args.before.resolve(), work, cache))
        for tree in trees:
            tree.prepare(args.size, args.runs)
            for name, command in COMMANDS.items():  # the warm-up run: byte code cached
                if name != "lopper confirm ID":
                    tree.run(command(tree))
            tree.run(COMMANDS["lopper confirm ID"](tree))
        base_env = {**trees[-1].env}
        database = Path(base_env["XDG_STATE_HOME"]) / "lopper" / "demo.sqlite3"
        if not database.exists():
            sys.exit(f"the demo's database is not where the stack's floor looks: {database}")
        stacks = {
            "stack": (STACK.format(configured=False), ["status", f"sqlite:///{database}"]),
            "stack, configured": (STACK.format(configured=True), ["status"]),
        }
        python("import typer", base_env)
        python(FLOOR, base_env)
        for code, stack_args in stacks.values():
            python(code, base_env, *stack_args)
        times: dict[str, list[float]] = {"import typer": [], "floor": []}
        times.update({name: [] for name in stacks})
        for tree in trees:
            for name in COMMANDS:
                times[f"{tree.label}: {name}"] = []
        for _ in range(args.runs):
            times["import typer"].append(python("import typer", base_env))
            times["floor"].append(python(FLOOR, base_env))
            for name, (code, stack_args) in stacks.items():
                times[name].append(python(code, base_env, *stack_args))
            for name, command in COMMANDS.items():
                for tree in trees:
                    times[f"{tree.label}: {name}"].append(tree.timed(command(tree)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    typer = statistics.median(times["import typer"])
    print(f"median of {args.runs} interleaved runs each; python -c 'import typer': {typer:.3f} s")
    labels = [tree.label for tree in trees]
    header = " | ".join(f"{label} (s) | {label} ÷ typer" for label in labels)
    print(f"| command | {header} |")
    print("|---|" + "---:|---:|" * len(labels))
    for name in COMMANDS:
        cells = []
        for label in labels:
            median = statistics.median(times[f"{label}: {name}"])
            cells.append(f"{median:.3f} | {median / typer:.1f}×")
        print(f"| `{name}` | {' | '.join(cells)} |")
    floor = statistics.median(times["floor"])
    print(f"python -c '{FLOOR}' (this tree): {floor:.3f} s = {floor / typer:.1f}× typer")
    for name, what in (
        ("stack", "a Typer command counting rows through SQLAlchemy's core"),
        ("stack, configured", "the same, validating lopper's configuration first"),
    ):
        median = statistics.median(times[name])
        print(f"{what}: {median:.3f} s = {median / typer:.1f}× typer")
    if args.before:
        print(f"(before: {args.before.resolve()}; after: {ROOT})")


if __name__ == "__main__":
    main()
