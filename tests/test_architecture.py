"""The import layering of docs/ARCHITECTURE.md: every module imports only from its own layer or below,
and packages of one layer import each other without a cycle. Imports inside functions count too: a lazy
import that goes upward is still upward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "taskneurons"

# lowest first; a unit is a package (``taskneurons.data``) or a top-level module (``taskneurons.train``)
LAYERS: list[tuple[str, ...]] = [
    ("taskneurons", "taskneurons.errors"),
    ("taskneurons.data",),
    ("taskneurons.models",),
    ("taskneurons.runtime", "taskneurons.config"),
    ("taskneurons.neurons", "taskneurons.eval", "taskneurons.lit"),
    ("taskneurons.continual", "taskneurons.analyze", "taskneurons.report"),
    # entry points: the ``python -m`` modules and the benchmark and GPU-check tools
    ("taskneurons.train", "taskneurons.evaluate", "taskneurons.identify", "taskneurons.continual.__main__",
     "taskneurons.analyze.__main__", "taskneurons.report.__main__", "taskneurons.bench", "taskneurons.gpu_check",
     "taskneurons.harness", "taskneurons.export", "taskneurons.api"),  # the Python API sits with the entry points
]
# (importing module, imported name) pairs allowed to go upward, each with the reason. Keep it empty.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The longest unit named in LAYERS that ``module`` is or lies inside."""
    units = [u for layer in LAYERS for u in layer if module == u or module.startswith(u + ".")]
    assert units, f"{module} is in no layer: add it to LAYERS in tests/test_architecture.py and docs/ARCHITECTURE.md"
    return max(units, key=len)


def layer_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def imports_of(path: Path, module: str) -> list[tuple[str, int]]:
    """Every ``taskneurons`` module imported anywhere in the file (top level or in a function), with its line."""
    out = []
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    # ``if TYPE_CHECKING:`` imports never run (the package root names the public API for type checkers and
    # resolves it lazily, by module name, on first use)
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # ``from taskneurons.x import y``: y may be a submodule; the deeper name decides the unit
            out += [(f"{name}.{a.name}", node.lineno) for a in node.names]
    return [(n, line) for n, line in out if n == "taskneurons" or n.startswith("taskneurons.")]


def import_edges() -> list[tuple[str, str, str, int]]:
    """(importing module, imported name, file, line) for every import of the package by itself."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        edges += [(module, name, str(path.relative_to(PACKAGE.parent.parent)), line)
                  for name, line in imports_of(path, module)]
    return edges


def test_every_module_is_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        unit_of(module_name(path))


def test_no_module_imports_from_a_higher_layer():
    bad = []
    for module, name, file, line in import_edges():
        src, dst = unit_of(module), unit_of(name)
        if layer_of(dst) > layer_of(src) and (module, name) not in ALLOWED_UPWARD:
            bad.append(f"{file}:{line}: {module} (layer {layer_of(src)}) imports {name} (layer {layer_of(dst)})")
    assert not bad, "imports from a higher layer (docs/ARCHITECTURE.md):\n" + "\n".join(bad)


def package_graph() -> dict[str, dict[str, str]]:
    """unit -> {imported unit: one place it is imported}, across units only."""
    graph: dict[str, dict[str, str]] = {}
    for module, name, file, line in import_edges():
        src, dst = unit_of(module), unit_of(name)
        if src != dst:
            graph.setdefault(src, {}).setdefault(dst, f"{file}:{line} imports {name}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of the graph as a list of units (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph.get(u, {})):
            if state.get(v) == 1:
                return path[path.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        path.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_no_import_cycle_between_packages():
    graph = package_graph()
    cycle = find_cycle(graph)
    where = [graph[a][b] for a, b in zip(cycle, cycle[1:], strict=False)] if cycle else []
    assert cycle is None, f"package import cycle {' -> '.join(cycle)}:\n" + "\n".join(where)


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b": ""}, "b": {"c": ""}}, None),
    ({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}}, ["a", "b", "c", "a"]),
    ({"a": {"a2": ""}, "b": {"c": ""}, "c": {"b": ""}}, ["b", "c", "b"]),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert find_cycle(graph) == expected


def test_the_checks_see_lazy_relative_and_upward_imports(tmp_path):
    pkg = tmp_path / "taskneurons" / "data"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    src = "def f():\n    from taskneurons.lit.module import CausalLMModule\n    from . import tasks\n"
    (pkg / "x.py").write_text(src)
    names = [n for n, _ in imports_of(pkg / "x.py", "taskneurons.data.x")]
    assert names == ["taskneurons.lit.module.CausalLMModule", "taskneurons.data.tasks"]
    assert layer_of(unit_of(names[0])) > layer_of(unit_of("taskneurons.data.x"))
    assert unit_of("taskneurons.continual.__main__") == "taskneurons.continual.__main__"
    assert layer_of(unit_of("taskneurons.continual.loop")) < layer_of(unit_of("taskneurons.continual.__main__"))
