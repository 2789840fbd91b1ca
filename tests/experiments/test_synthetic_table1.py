"""Smoke tests of ``benchmarks/synthetic_table1.py``: its config validates and its verdict reads rows right."""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

from mlattack.experiments.config import ExperimentConfig

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "synthetic_table1.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("synthetic_table1", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(attack: str, eps: float, size: int, fr_s: float, nt: float) -> dict[str, str]:
    return {
        "attack": attack,
        "eps": str(eps),
        "size": str(size),
        "fr_semantic_mean": str(fr_s),
        "nt_rate_mean": str(nt),
    }


def test_config_is_valid_and_draws_among_the_given_leaves(script: ModuleType) -> None:
    args = argparse.Namespace(
        checkpoint=Path("scenes.pt"), n_test=100, size=32, steps=5, draws=2, images=4, seed=0,
        eps=[0.01, 0.02], gmla_mode="adaptive", tau=0.85,
        extra_gmla=[script.parse_variant("projection"), script.parse_variant("tau=0.5")],
    )  # fmt: skip
    config = ExperimentConfig.from_dict(script.experiment_config(args, ["disc", "ring"]))
    assert [a.display_name for a in config.attacks] == [
        "mla-u", "mla-c", "gmla", "gmla-projection", "gmla-adaptive-tau0.5",
    ]  # fmt: skip
    assert {a.options["steps"] for a in config.attacks} == {5}
    assert config.target_sets.labels == ["disc", "ring"]
    assert config.images.require_consistent


def test_bad_variant_is_refused(script: ModuleType) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="projection"):
        script.parse_variant("fast")


def test_verdict_needs_every_size_and_the_nt_condition(script: ModuleType) -> None:
    rows = [
        # eps 0.01: holds for |Ω| = 1 only.
        _row("mla-u", 0.01, 1, 0.6, 0.02), _row("mla-c", 0.01, 1, 0.5, 0.0), _row("gmla", 0.01, 1, 0.95, 0.01),
        _row("mla-u", 0.01, 2, 0.2, 0.02), _row("mla-c", 0.01, 2, 0.1, 0.0), _row("gmla", 0.01, 2, 0.5, 0.01),
        # eps 0.02: |Ω| = 2 holds; |Ω| = 1 fails on NT_R (GMLA disturbs more than MLA-U).
        _row("mla-u", 0.02, 1, 0.7, 0.02), _row("mla-c", 0.02, 1, 0.6, 0.0), _row("gmla", 0.02, 1, 0.99, 0.03),
        _row("mla-u", 0.02, 2, 0.3, 0.04), _row("mla-c", 0.02, 2, 0.2, 0.0), _row("gmla", 0.02, 2, 0.91, 0.01),
    ]  # fmt: skip
    passed, lines = script.verdict(rows, "gmla")
    assert passed
    assert lines[-1].endswith("for every |Ω| at once: none")
    assert sum(line.endswith("holds") for line in lines) == 2

    without_size_2 = [r for r in rows if not (r["size"] == "2" and r["eps"] == "0.02")]
    assert not script.verdict(without_size_2, "gmla")[0]


def test_cell_shows_a_dash_for_nan(script: ModuleType) -> None:
    assert script._cell(str(math.nan), str(math.nan)).strip() == "-"
    assert script._cell("0.5", "0.25") == "0.50±0.25"
