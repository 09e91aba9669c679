"""The import graph of the package: the flow runs one way, and no module imports in a circle.

The layers, lowest first, are described in the contributors' page (README "Which module may
import which"); a module imports only from its own layer or the ones below, and the graph has
no cycle, counting the imports made inside functions as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parent.parent / "service"

# Lowest first. A module is in the layer of its longest listed prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("service.model", "service.errors", "service.logs", "service.text", "service.files"),
    ("service.config",),
    ("service.rules",),
    ("service.platforms", "service.imports.names", "service.store"),
    ("service.people", "service.suggestions", "service.costs"),
    ("service.removals",),
    ("service.sync", "service.imports"),
    ("service.app", "service.digest", "service.daemon", "service.web"),
    ("service.cli", "service.commands", "service.__main__", "service"),
)

# Arrows that point upwards on purpose, each with its reason.
ALLOWED_UP = {
    # The configuration checks a cron expression with the daemon's own reading of it.
    ("service.config", "service.daemon.cron"),
}


def modules() -> dict[str, Path]:
    found = {}
    for path in SERVICE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(SERVICE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def graph() -> dict[str, set[str]]:
    """Every module of the package and the modules of the package it imports."""
    known = modules()

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] == "service":
                    for alias in node.names:
                        found = resolve(f"{node.module}.{alias.name}")
                        if found:
                            targets.add(found)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "service":
                        found = resolve(alias.name)
                        if found:
                            targets.add(found)
        targets.discard(name)
        edges[name] = targets
    return edges


def layer(name: str) -> int:
    best, level = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    assert level >= 0, f"{name} is in no layer: add it to LAYERS (and to the contributors' page)"
    return level


def test_every_import_points_to_the_same_layer_or_below() -> None:
    upward = sorted(
        (name, target)
        for name, targets in graph().items()
        for target in targets
        if layer(target) > layer(name) and (name, target) not in ALLOWED_UP
    )
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(edges[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert cycles == []


def test_rules_know_no_platform_and_platforms_know_no_flow() -> None:
    edges = graph()
    assert edges["service.rules"] <= {"service.model", "service.config"}
    flow = ("service.sync", "service.removals", "service.suggestions", "service.costs")
    for name, targets in edges.items():
        if name.startswith("service.platforms"):
            assert not [t for t in targets if t.startswith((*flow, "service.store"))], name


# What the command line may import when it is imported (before any command runs): the
# vocabulary, and its own modules. Everything else is imported inside the command that uses
# it, so `lopper --help` and the light commands start without the store, the digest, the
# daemon or a platform (tests/test_startup.py checks the same at run time).
EAGER_FOR_CLI = {"service.errors", "service.files", "service.model", "service.text", "service.cli"}


def eager_imports(path: Path) -> set[str]:
    """The modules of the package imported when the file is imported: its top-level
    statements, not the bodies of its functions nor its `if TYPE_CHECKING:` blocks."""
    known = modules()
    found: set[str] = set()

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody):
                    visit(block)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] == "service":
                    for alias in node.names:
                        target = resolve(f"{node.module}.{alias.name}")
                        if target:
                            found.add(target)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "service":
                        target = resolve(alias.name)
                        if target:
                            found.add(target)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def test_the_command_line_imports_what_a_command_uses_when_it_runs() -> None:
    eager = {
        name: sorted(
            target
            for target in eager_imports(path)
            if target not in EAGER_FOR_CLI and not target.startswith("service.commands")
        )
        for name, path in modules().items()
        if name == "service.cli" or name.startswith("service.commands")
    }
    assert {name: targets for name, targets in eager.items() if targets} == {}
