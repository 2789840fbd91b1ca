"""The package's import graph, read with ``ast``: no import circle, and no import against the layering.

Every ``import`` statement counts, wherever it is (module level, inside a function, under
``TYPE_CHECKING``): a lazy import still ties two modules together.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mlattack"

#: The layering, package by package: who may import whom (besides itself). Dependencies point one
#: way: graph, losses <- attacks <- metrics <- experiments <- cli; graph_sources, models and data
#: are leaves over the graph, used by experiments and cli. ``mlattack`` is the top-level façade
#: (``from mlattack import GMLA``); every module may read ``mlattack.__version__``.
BASE = {"_validation", "_files"}
ALLOWED: dict[str, set[str]] = {
    "_validation": set(),
    "_files": set(),  # reading the files a user names (regular files, inside a root, JSON)
    "graph": BASE,
    "graph_sources": BASE | {"graph"},
    "losses": BASE,
    "attacks": BASE | {"graph", "losses"},
    "metrics": BASE | {"graph", "losses", "attacks"},
    "data": BASE | {"graph", "graph_sources"},
    "models": BASE | {"graph", "graph_sources"},
    "experiments": BASE
    | {"graph", "graph_sources", "losses", "attacks", "metrics", "data", "models"},
    "cli": BASE
    | {"graph", "graph_sources", "losses", "attacks", "metrics", "data", "models", "experiments"},
    "mlattack": {"graph", "attacks", "metrics"},
    "__main__": {"cli"},
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[tuple[str, str]]:
    """``(imported module, name)`` pairs; ``name`` is what a ``from mlattack import`` takes."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update((alias.name, "") for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add((submodule, "") if submodule in modules else (source, alias.name))
    return {(target, name) for target, name in found if target in modules and target != module}


def _area(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    upward = []
    for module, path in sorted(modules.items()):
        for target, name in sorted(_imports(module, path, modules)):
            edges[module].add(target)
            source_area, target_area = _area(module), _area(target)
            if source_area == target_area or (target == "mlattack" and name == "__version__"):
                continue
            if target_area not in ALLOWED.get(source_area, set()):
                upward.append(f"{module} imports {target}" + (f" ({name})" if name else ""))
    return edges, upward


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_every_area_of_the_package_has_a_place_in_the_layering() -> None:
    areas = {_area(module) for module in _modules()}
    assert areas - set(ALLOWED) == set()


def test_no_import_circle() -> None:
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_no_import_against_the_layering() -> None:
    _, upward = _graph()
    assert upward == []


def test_the_checks_see_a_circle_and_an_upward_import() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert "attacks" not in ALLOWED["graph"] and "experiments" not in ALLOWED["models"]


def test_the_readme_states_the_layering() -> None:
    readme = (PACKAGE.parents[1] / "README.md").read_text("utf-8")
    assert "graph, losses ← attacks ← metrics ← experiments ← cli" in readme
