"""The package's modules import each other without a cycle.

A cycle makes the import order matter (a module sees its partner half-initialised) and ties
modules that should be layered: exceptions, contracts, backends, jobs.  The graph is read
statically with ``ast``: every ``import`` and ``from ... import`` anywhere in a module (module
level, inside functions, under ``if TYPE_CHECKING:``), relative or absolute, counts as an edge.
``from pkg import name`` is an edge to ``pkg.name`` where that is a module, else to ``pkg``.
A package is not an edge of its submodules: Python runs ``pkg/__init__.py`` before
``pkg.mod``, but that is the package's own import of its parts, not a dependency of ``mod``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "whisperquant"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name (``whisperquant.quantize.base``) -> its file, for every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that the module ``name`` (at ``path``) imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) for each strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(graph, c) for c in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, by breadth-first search inside it."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def test_the_package_imports_without_a_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and graph["whisperquant.jobs"], "the graph was not read"
    found = cycles(graph)
    assert not found, "import cycles in whisperquant:\n" + "\n".join(" -> ".join(c) for c in found)


@pytest.fixture
def toy(tmp_path) -> Path:
    """A package whose cycle closes only through a relative import inside a function."""
    root = tmp_path / "toy"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from .errors import Oops\n")
    (root / "sub" / "errors.py").write_text("class Oops(Exception):\n    pass\n")
    (root / "sub" / "a.py").write_text("from .errors import Oops\nfrom . import b\n")
    (root / "sub" / "b.py").write_text("def f():\n    from ..sub.a import g\n")
    (root / "top.py").write_text("import toy.sub.a\nfrom toy.sub import errors\n")
    return root


def test_function_level_and_relative_imports_are_edges(toy):
    graph = import_graph(toy)
    assert graph["toy.sub.a"] == {"toy.sub.errors", "toy.sub.b"}
    assert graph["toy.sub.b"] == {"toy.sub.a"}
    assert graph["toy.top"] == {"toy.sub.a", "toy.sub.errors"}
    assert cycles(graph) == [["toy.sub.a", "toy.sub.b", "toy.sub.a"]]


def test_a_cycle_is_named_and_its_removal_is_seen(toy):
    (toy / "sub" / "b.py").write_text("def f():\n    from .errors import Oops\n")
    assert cycles(import_graph(toy)) == []
