"""Rules the test suite keeps so that it cannot go green in silence."""

from __future__ import annotations

import ast
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
