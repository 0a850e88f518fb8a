"""The house's shape: the rooms of ``dwfhpc/`` import one another without a cycle, and no module is huge.

A room is a top-level module or subpackage of ``dwfhpc`` (``ingest``, ``report``, ``statedb``, ...). Every
import counts, also one inside a function (a lazy import is still a dependency), so the rooms have an order
in which every arrow points down: an arrow that closed a cycle would be an upward one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dwfhpc"
MAX_LINES = 500


def _module(path: Path, root: Path) -> tuple[str, str]:
    """(dotted module name, the package it lives in) of a file under ``root``/dwfhpc/."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        name = ".".join(parts[:-1])
        return name, name
    return ".".join(parts), ".".join(parts[:-1])


def _imported(node: ast.AST, package: str) -> list[str]:
    """The dwfhpc modules (or names in them) one import statement reaches."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("dwfhpc.")]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if not module.startswith("dwfhpc"):
        return []
    return [module] if node.module else [f"{module}.{a.name}" for a in node.names]


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__version__" else None


def room_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """room -> the other rooms it imports (any import anywhere in its files)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(package.rglob("*.py")):
        name, pkg = _module(path, package.parent)
        source = _room(name)
        if source is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in map(_room, _imported(node, pkg)):
                if target and target != source:
                    edges[source].add(target)
    return edges


def test_the_rooms_of_the_package_import_one_another_without_a_cycle():
    graph = room_graph()
    assert len(graph) > 20 and "ingest" in graph["demo"]  # the graph is really read
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle between rooms of dwfhpc: {' -> '.join(exc.args[1])}") from None
    assert order.index("errors") < order.index("ingest") < order.index("commands")


def test_the_cycle_check_finds_a_cycle_through_a_function_local_import(tmp_path):
    pkg = tmp_path / "dwfhpc"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from ..b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from .a import other\n")
    graph = room_graph(pkg)
    assert graph == {"a": {"b"}, "b": {"a"}}
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError:
        return
    raise AssertionError("a -> b -> a was not found")


def test_no_module_of_the_package_or_the_benchmarks_is_over_500_lines():
    files = [*PACKAGE.rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]
    assert len(files) > 100
    long = {str(f.relative_to(REPO)): n for f in files if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by what they do): {long}"
