"""One registry of attacks: every name list, the config, the planner and the CLI agree with it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from torch import nn

import mlattack.attacks as attacks_module
from mlattack.attacks import (
    ATTACKS,
    REGISTRY,
    Attack,
    AttackProblem,
    LoopOutput,
    attack_entry,
    build_attack,
    register_attack,
)
from mlattack.experiments.config import AttackSpec
from mlattack.experiments.planning import attack_step_cost


class _Nothing(Attack):
    name = "nothing"

    def _attack(self, problem: AttackProblem) -> LoopOutput:  # pragma: no cover - never run
        raise NotImplementedError


@pytest.fixture
def registry_snapshot() -> Any:
    before = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(before)


def test_the_builtin_attacks_are_registered_once_each() -> None:
    assert list(REGISTRY) == ["mla-u", "mla-c", "gmla", "ml-dp", "mla-lp"]
    assert dict(ATTACKS) == {name: entry.cls for name, entry in REGISTRY.items()}
    for name, entry in REGISTRY.items():
        assert attack_entry(name.upper()) is entry
        assert entry.step_cost > 0
        assert entry.takes_graph == ("graph" in inspect.signature(entry.cls.__init__).parameters)
        assert {"eps", "steps", "threshold", "max_backward"} <= entry.options
    assert {name for name, entry in REGISTRY.items() if entry.presets} == {"mla-u", "mla-c", "gmla"}
    assert "tau" in REGISTRY["gmla"].options and "tau" not in REGISTRY["mla-u"].options


def test_config_planning_and_builder_derive_from_the_registry(linear_model: nn.Module) -> None:
    for name, entry in REGISTRY.items():
        spec = AttackSpec(name=name.upper())
        assert spec.name == name
        assert attack_step_cost(spec) == entry.step_cost
        assert isinstance(build_attack(name, linear_model), entry.cls)
        if entry.presets:
            assert AttackSpec(name=name, options={"preset": "official"}).options["preset"]
        else:
            with pytest.raises(ValueError, match=f"{name} has no presets"):
                AttackSpec(name=name, options={"preset": "official"})
    with pytest.raises(ValueError, match="unknown attack 'pgd'"):
        AttackSpec(name="pgd")
    with pytest.raises(ValueError, match="unknown attack 'pgd'; known attacks: mla-u"):
        build_attack("pgd", linear_model)


def test_a_registered_attack_is_known_everywhere(
    registry_snapshot: None, linear_model: nn.Module
) -> None:
    entry = register_attack("nothing", _Nothing, step_cost=2.5)
    assert ATTACKS["nothing"] is _Nothing and attacks_module.ATTACKS["nothing"] is _Nothing
    spec = AttackSpec(name="nothing", options={"steps": 3})
    assert attack_step_cost(spec) == 2.5 and entry.presets == ()
    assert isinstance(build_attack("nothing", linear_model, steps=3), _Nothing)


@pytest.mark.parametrize(
    ("name", "cls", "options", "error", "message"),
    [
        ("Nothing", _Nothing, {"step_cost": 1.0}, ValueError, "lower case"),
        ("no thing", _Nothing, {"step_cost": 1.0}, ValueError, "lower case"),
        ("mla-u", _Nothing, {"step_cost": 1.0}, ValueError, "registered already"),
        ("nothing", nn.Linear, {"step_cost": 1.0}, TypeError, "Attack subclass"),
        ("nothing", _Nothing, {"step_cost": 0}, ValueError, "step_cost"),
        ("nothing", _Nothing, {"step_cost": float("inf")}, ValueError, "step_cost"),
        ("nothing", _Nothing, {"step_cost": 1.0, "presets": ("official",)}, ValueError, "preset"),
    ],
)
def test_bad_registrations_are_refused(
    registry_snapshot: None,
    name: str,
    cls: Any,
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        register_attack(name, cls, **options)
    assert "nothing" not in REGISTRY


def test_the_adding_an_attack_page_runs_as_written(registry_snapshot: None) -> None:
    """The page's Python blocks, in order, in one namespace: define, register, build and run."""
    import re
    from pathlib import Path

    page = Path(__file__).parents[2] / "docs" / "adding-an-attack.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == 3
    namespace: dict[str, Any] = {"__name__": "adding_an_attack"}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102 - the repository's own page
    assert "sign-step" in REGISTRY
    assert namespace["result"].name == "sign-step"
    assert (namespace["result"].backward_passes == 1).all()
