"""Every name a benchmark or script imports from mlattack exists, also the imports inside functions
(a moved name otherwise breaks only the run that reaches that function, minutes in)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py")])


def _mlattack_imports(path: Path) -> list[tuple[int, str, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module is not None
            and (node.module == "mlattack" or node.module.startswith("mlattack."))
        ):
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.relative_to(ROOT).as_posix() for p in SCRIPTS])
def test_every_mlattack_name_a_script_imports_exists(path: Path) -> None:
    imports = _mlattack_imports(path)
    missing = []
    for line, module, name in imports:
        target = importlib.import_module(module)
        if not hasattr(target, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{path.name}:{line}: from {module} import {name}")
    assert not missing, missing


def test_the_check_finds_a_name_that_moved(tmp_path: Path) -> None:
    script = tmp_path / "moved.py"
    script.write_text("def run():\n    from mlattack.models import sample_photos\n", "utf-8")
    assert _mlattack_imports(script) == [(2, "mlattack.models", "sample_photos")]
    assert not hasattr(importlib.import_module("mlattack.models"), "sample_photos")
