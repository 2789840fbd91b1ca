"""Rules the test suite keeps so that it cannot go green in silence."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _calls(name: str) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == name
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append((str(path.relative_to(TESTS)), node.lineno, node.args[0].value))
    return found


def test_no_importorskip_on_the_projects_own_modules() -> None:
    # An import error in mlattack must fail the suite, not turn tests into skips.
    own = [call for call in _calls("importorskip") if call[2].split(".")[0] == "mlattack"]
    assert own == []


def test_no_test_reads_shared_data_by_path() -> None:
    # ../shared is absent in a fresh clone: tests read tests/reference_data, or go through the
    # shared_data_dir fixture, which fails under CI=true when the folder is missing.
    offenders = [
        str(path.relative_to(TESTS))
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in ("conftest.py", Path(__file__).name)
        and '"shared"' in path.read_text("utf-8")
    ]
    assert offenders == []


def test_a_fuzzer_that_only_accepts_fails_on_its_own() -> None:
    from fuzz_outcomes import FuzzOutcomes

    outcomes = FuzzOutcomes("self-test")

    @outcomes.checked("toy")
    def only_accepts(n: int) -> None:
        for _ in range(n):
            outcomes.record("toy", "accepted")

    @outcomes.checked("toy")
    def both(n: int) -> None:
        only_accepts.__wrapped__(n)  # type: ignore[attr-defined]
        outcomes.record("toy", "refused (ValueError)")

    with pytest.raises(AssertionError, match="no example was refused"):
        only_accepts(3)
    both(2)  # counts recorded by earlier runs do not count for this one
    with pytest.raises(AssertionError, match="no example was refused"):
        only_accepts(1)


def _run_pytest_on(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(folder)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_under_ci_a_skip_fails_unless_its_reason_is_allowed(tmp_path: Path) -> None:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n"
        "def test_needs_a_missing_extra():\n"
        "    pytest.skip('some extra is not installed')\n\n"
        "def test_needs_a_browser():\n"
        "    pytest.skip('chromium is not installed (setup.sh installs it under CI=true)')\n"
    )
    elsewhere = _run_pytest_on(tmp_path, None)
    assert elsewhere.returncode == 0 and "2 skipped" in elsewhere.stdout, elsewhere.stdout
    under_ci = _run_pytest_on(tmp_path, "true")
    assert under_ci.returncode == 1, under_ci.stdout
    assert "1 failed, 1 skipped" in under_ci.stdout, under_ci.stdout
    assert "some extra is not installed" in under_ci.stdout
    # a module that skips itself at import time fails the collection
    (tmp_path / "test_module_skip.py").write_text(
        "import pytest\n\npytest.importorskip('no_such_module_anywhere')\n"
    )
    assert _run_pytest_on(tmp_path, None).returncode == 0
    under_ci = _run_pytest_on(tmp_path, "true")
    assert under_ci.returncode == 2 and "no_such_module_anywhere" in under_ci.stdout


def test_no_module_assigns_pytestmark_twice() -> None:
    # A second top-level ``pytestmark = ...`` silently replaces the first (and its slow marker).
    twice = []
    for path in sorted(TESTS.rglob("*.py")):
        assigned = [
            node.lineno
            for node in ast.parse(path.read_text("utf-8")).body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
        ]
        if len(assigned) > 1:
            twice.append(f"{path.relative_to(TESTS)}: lines {assigned}")
    assert twice == []
