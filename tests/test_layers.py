"""The house stays in layers (docs/architecture.md): every import in ``src/evowatt``, lazy ones inside
functions included, goes to the module's own folder or to a floor below; folders on one floor never import
each other; no two modules import each other, directly or around a loop."""

from __future__ import annotations

import ast
from pathlib import Path

import evowatt

SRC = Path(evowatt.__file__).parent

#: Bottom to top, as docs/architecture.md draws them. A base module is named by its file; the front doors
#: (``evowatt/__init__.py``, ``fitting.py``) share the top floor with cli/.
BASE = {"errors", "units", "console", "version", "records", "provenance"}
FLOORS: list[set[str]] = [
    {"base"},
    {"config"},
    {"representation", "data"},
    {"search", "nn"},
    {"energy"},
    {"driver"},
    {"handover"},
    {"cli", "fitting", "__init__"},
]
FLOOR = {part: floor for floor, parts in enumerate(FLOORS) for part in parts}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The folder (or base file) a module ``evowatt.X...`` belongs to."""
    parts = module.split(".")
    part = parts[1] if len(parts) > 1 else "__init__"
    return "base" if part in BASE else part


MODULES = {module_name(path): path for path in SRC.rglob("*.py")}


def _nodes(tree: ast.AST, typing: bool) -> list[ast.AST]:
    """Every node of ``tree``; without ``typing``, none under ``if TYPE_CHECKING:`` (never run)."""
    found = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if not typing and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def imports_of(path: Path, typing: bool = True) -> set[str]:
    """The evowatt modules ``path`` imports, resolved to modules that exist (``from evowatt.x import y``
    names module ``evowatt.x.y`` when that is a module, else ``evowatt.x``); ``typing=False`` leaves out
    the imports only a type checker runs."""
    found: set[str] = set()
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8")), typing):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("evowatt"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evowatt"):
            assert node.level == 0, f"{path}: a relative import"
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
    return found


def test_every_part_of_the_package_has_a_floor():
    assert {part_of(name) for name in MODULES} == set(FLOOR)


def test_no_import_runs_up_or_across_a_floor():
    wrong = []
    for name, path in sorted(MODULES.items()):
        if name == "evowatt":  # the front door's API functions import what they serve, lazily
            continue
        here = part_of(name)
        for target in sorted(imports_of(path)):
            there = part_of(target)
            if there == here:
                continue
            if FLOOR[there] >= FLOOR[here]:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_no_module_imports_itself_around_a_loop():
    """Imports a type checker alone runs are left out: they form no cycle when the code runs."""
    graph = {name: imports_of(path, typing=False) & MODULES.keys() for name, path in MODULES.items()}
    for name in graph:  # the package itself is its modules' parent, not a module they depend on
        graph[name] -= {"evowatt"}
        graph[name] -= {other for other in graph[name] if name.startswith(other + ".") and other != name}
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycles.append([*path[path.index(name) :], name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


def test_the_check_sees_a_wrong_import(tmp_path):
    """The checker itself: an import up a floor and one across a floor are both found."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from evowatt.energy.select import open_meter\n    import evowatt.nn.builder\n"
        "if TYPE_CHECKING:\n    import evowatt.cli.main\n"
    )
    found = imports_of(probe)
    assert found == {"evowatt.energy.select", "evowatt.nn.builder", "evowatt.cli.main"}
    assert imports_of(probe, typing=False) == {"evowatt.energy.select", "evowatt.nn.builder"}
    assert FLOOR[part_of("evowatt.energy.select")] > FLOOR["search"]
    assert FLOOR[part_of("evowatt.nn.builder")] == FLOOR["search"]
