"""Adding an attack is one file and one registration (docs/adding-an-attack.md): a toy attack added
that way runs through `mlattack run` and shows in `mlattack report`."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlattack.attacks import REGISTRY

pytestmark = pytest.mark.usefixtures("one_thread")

#: The one file: the attack class and its registration, as docs/adding-an-attack.md shows them.
TOY_ATTACK = '''
import torch

from mlattack.attacks import Attack, AttackProblem, LoopOutput, register_attack


class SignStep(Attack):
    """One signed-gradient step of size eps on the flip set's BCE."""

    name = "sign-step"
    default_steps = 1

    def _attack(self, problem: AttackProblem) -> LoopOutput:
        x = problem.images.detach().requires_grad_(True)
        logits = problem.model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, problem.desired.float(), reduction="none"
        )
        (gradient,) = torch.autograd.grad((loss * problem.flip_set).sum(), x)
        step = problem.eps.to(x.dtype).view(-1, 1, 1, 1) * gradient.sign()
        ones = torch.ones(len(x), dtype=torch.int64, device=x.device)
        return LoopOutput(
            adv=problem.project(x.detach() - step),
            iterations=ones,
            gradient_failed=torch.zeros_like(ones, dtype=torch.bool),
        )


register_attack("sign-step", SignStep, step_cost=1.0)
'''


@pytest.fixture
def toy_attack(tmp_path: Path) -> Iterator[None]:
    path = tmp_path / "sign_step.py"
    path.write_text(TOY_ATTACK, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("sign_step", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield
    REGISTRY.pop("sign-step", None)
    sys.modules.pop("sign_step", None)


def test_a_toy_attack_runs_through_mlattack_run_and_the_report(
    toy_attack: None,
    checkpoint_dir: Path,
    run_experiment: Callable[[dict[str, Any], Path], Path],
) -> None:
    config = {
        "name": "toy",
        "model": {"checkpoint": "model.pt"},
        "dataset": {
            "name": "synthetic",
            "options": {"n": 6, "size": 16, "split": "test", "seed": 3},
        },
        "graph": "model",
        "attacks": [{"name": "mla-u", "options": {"steps": 2}}, {"name": "sign-step"}],
        "eps": [0.05],
        "target_sets": {"sizes": [1], "mode": "random", "draws": 2},
        "images": {"per_target_set": 2},
        "batch_size": 4,
        "examples": 0,
    }
    out = run_experiment(config, checkpoint_dir)
    db = sqlite3.connect(out / "results-rank0.sqlite")
    rows = db.execute(
        "SELECT iterations, forward_passes, backward_passes, linf FROM results "
        "WHERE attack = 'sign-step' AND attacked"
    ).fetchall()
    db.close()
    assert rows and all(row[:3] == (1, 1, 1) and row[3] <= 0.05 + 1e-6 for row in rows)
    page = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert '<td class="l">sign-step</td>' in page  # a row of Table 1
