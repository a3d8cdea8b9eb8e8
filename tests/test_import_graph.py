"""The import graph of the two packages, read with `ast` (nothing is imported or run).

Data flows one way: no file may import another that (directly or not) imports it back, and no
file of `datamodules/` may import `lightning_modules/` or the other way round; only the CLI
module (`lightning_modules/cli.py`), which wires a DataModule to a model, imports both.

Inside `datamodules/` the rooms import downwards only (`ROOMS`): `datamodules/data/` (the
data library: layouts, index, samples, sources, datasets, loaders) imports nothing else of
`datamodules/`, and `datamodules/demo/` (the generated sets) only itself and `data/`; the
DataModules at the top import both. Imports inside functions count like the others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datamodules", "lightning_modules")
#: The one module allowed to import both sides.
WIRING_MODULES = {"lightning_modules.cli"}
#: Room (a package of `datamodules`) -> the parts of `datamodules` its modules may import.
ROOMS = {
    "datamodules.data": ("datamodules.data",),
    "datamodules.demo": ("datamodules.demo", "datamodules.data"),
}


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement in `path` names, relative imports resolved."""
    names: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (a name is matched to its longest module)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        targets = {resolve(name) for name in imported_names(path, module)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cross_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if source.split(".")[0] != target.split(".")[0] and source not in WIRING_MODULES
    )


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def room_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, imported module) pairs where a room imports a part of `datamodules` it may not."""
    return sorted(
        (source, target)
        for source, targets in graph.items()
        for room, allowed in ROOMS.items()
        if _within(source, room)
        for target in targets
        if _within(target, "datamodules") and not any(_within(target, a) for a in allowed)
    )


def test_the_packages_have_no_import_circles() -> None:
    graph = import_graph(project_modules())
    assert len(graph) > 20, "the walk found too few modules to mean anything"
    assert cycles(graph) == []


def test_data_and_model_code_do_not_import_each_other() -> None:
    graph = import_graph(project_modules())
    assert cross_imports(graph) == []
    # The wiring module is the exception, and it does wire both sides.
    assert {t.split(".")[0] for t in graph["lightning_modules.cli"]} >= set(PACKAGES)


def test_the_rooms_of_datamodules_import_only_downwards() -> None:
    graph = import_graph(project_modules())
    assert {room for room in ROOMS if any(_within(m, room) for m in graph)} == set(ROOMS)
    assert room_violations(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (
            {"datamodules.data.index": {"datamodules.demo.cache"}},
            [("datamodules.data.index", "datamodules.demo.cache")],
        ),
        ({"datamodules.data": {"datamodules.base"}}, [("datamodules.data", "datamodules.base")]),
        ({"datamodules.demo.cifar": {"datamodules.data.cifar_archive"}}, []),
        (
            {"datamodules.demo.x": {"datamodules.officehome"}},
            [("datamodules.demo.x", "datamodules.officehome")],
        ),
        ({"datamodules.officehome": {"datamodules.demo", "datamodules.data.layout"}}, []),
    ],
)
def test_the_room_check_catches_upward_imports(graph, expected) -> None:
    assert room_violations(graph) == expected


def test_a_function_level_import_of_the_demo_is_a_violation(tmp_path: Path) -> None:
    index, cache = tmp_path / "index.py", tmp_path / "cache.py"
    index.write_text("def default_dir():\n    from datamodules.demo.cache import f\n")
    cache.write_text("def f():\n    pass\n")
    graph = import_graph({"datamodules.data.index": index, "datamodules.demo.cache": cache})
    assert room_violations(graph) == [("datamodules.data.index", "datamodules.demo.cache")]


@pytest.mark.parametrize(
    ("graph", "expected_cycles", "expected_cross"),
    [
        ({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}, [["a.x", "a.y", "a.z"]], []),
        (
            {"datamodules.x": {"lightning_modules.y"}, "lightning_modules.y": set()},
            [],
            [("datamodules.x", "lightning_modules.y")],
        ),
        ({"lightning_modules.cli": {"datamodules.x"}, "datamodules.x": set()}, [], []),
    ],
)
def test_the_checks_catch_what_they_look_for(graph, expected_cycles, expected_cross) -> None:
    assert cycles(graph) == expected_cycles
    assert cross_imports(graph) == expected_cross


def test_function_level_and_relative_imports_are_seen(tmp_path: Path) -> None:
    source = tmp_path / "pkg" / "mod.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from datamodules.base import X\n\nfrom . import sibling\n")
    names = imported_names(source, "pkg.mod")
    assert "datamodules.base" in names and "pkg.sibling" in names


# The tests: a test module imports shared helpers from `tests.helpers` (or takes fixtures from a
# conftest.py), never from another test module or a conftest, so that moving, renaming or
# deselecting one test file cannot break another.
TESTS = ROOT / "tests"
HELPERS = "tests.helpers"


def imports_of_test_modules(path: Path, local_names: set[str]) -> list[str]:
    """What `path` imports from the tests other than `tests.helpers`: `tests.<x>` names, and
    bare names of files under tests/ (`from conftest import ...`, `import test_cli`)."""
    found = []
    for name in sorted(imported_names(path, "tests._")):
        top = name.split(".")[0]
        if name == "tests" or name.startswith("tests."):
            if name != HELPERS and not name.startswith(HELPERS + "."):
                found.append(name)
        elif top in local_names:
            found.append(name)
    return found


def cross_test_imports(root: Path) -> dict[str, list[str]]:
    """Each .py file under `root` (test modules, conftest.py, helpers) -> its imports of test
    modules; files importing none are left out."""
    files = sorted(root.rglob("*.py"))
    local_names = {path.stem for path in files}
    found = {}
    for path in files:
        imports = imports_of_test_modules(path, local_names)
        if imports:
            found[str(path.relative_to(root.parent))] = imports
    return found


def test_no_test_module_imports_another() -> None:
    assert len(list(TESTS.rglob("test_*.py"))) > 50, "the walk found too few test modules"
    assert cross_test_imports(TESTS) == {}


def test_the_test_import_check_catches_imports_of_test_modules(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    (tests / "helpers").mkdir(parents=True)
    (tests / "helpers" / "trees.py").write_text("X = 1\n")
    (tests / "conftest.py").write_text("from tests.helpers.trees import X\n")
    (tests / "test_a.py").write_text(
        "from tests.helpers.trees import X\nfrom tests.test_b import helper\n"
    )
    (tests / "test_b.py").write_text("def helper():\n    from conftest import X\n\nimport test_a\n")
    assert cross_test_imports(tests) == {
        "tests/test_a.py": ["tests.test_b", "tests.test_b.helper"],
        "tests/test_b.py": ["conftest", "conftest.X", "test_a"],
    }
