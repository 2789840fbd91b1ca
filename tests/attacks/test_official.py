"""``preset="official"`` against outputs of the authors' code (``../shared/data/official-reference``).

The reference README describes the data: a tiny model given by a formula, and 36 runs of the
authors' ``attack_single_run`` (MLA-U, MLA-C, GMLA; targets {dog}, {car}; ε 0.05, 0.1, 0.2;
N 30, 100), each on the same batch of 8 images.

Iterations: the reference's ``first_success_iter`` is the 1-based step whose iterate first had the
flip set on its desired side, or N when none had; our ``iterations`` is the number of steps taken
before an image stopped, which is the same number in both cases.

Images: ours lie within 1e-6 of theirs, not bit for bit, in 6 of the 36 cases. The reason is the
ε-ball, not the loop: the authors clip to ``x ± float32(ε)``, and ``float32(ε)`` is above ε for
0.05, 0.1 and 0.2, while our base class clips to the exact ball (radius rounded down, see
``AttackProblem.bounds``). A pixel on the boundary then differs by one float32 step; with the
authors' bounds all 36 cases are bit-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mlattack.attacks import GMLA, MLAC, MLAU, gmla_direction
from mlattack.attacks.base import AttackProblem
from mlattack.attacks.official import official_direction, official_gradients

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "official-reference"
ATTACKS = {"mlaalpha": MLAU, "mlabeta": MLAC, "gmla": GMLA}


class FormulaModel(nn.Module):
    """``tanh(x.reshape(n, 192) @ A.T + a) @ B.T + b``, evaluated as the README writes it."""

    def __init__(self, weights: Any) -> None:
        super().__init__()
        for name in ("A", "a", "B", "b"):
            self.register_buffer(name, torch.from_numpy(weights[name]))

    def forward(self, x: Tensor) -> Tensor:
        hidden = torch.tanh(x.reshape(x.shape[0], -1) @ self.A.T + self.a)
        return hidden @ self.B.T + self.b


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    if not (REFERENCE / "apgd_cases.npz").exists():
        pytest.skip(f"official reference data not found under {REFERENCE}")
    with np.load(REFERENCE / "tiny_model.npz") as weights:
        model = FormulaModel(weights).eval()
    with np.load(REFERENCE / "apgd_cases.npz") as cases:
        data = {name: cases[name] for name in cases.files}
    return {"model": model, **data}


def case_tensors(reference: dict[str, Any], case: int) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.from_numpy(reference["x"][case]),
        torch.from_numpy(reference["targets"][case]),
        torch.from_numpy(reference["flip_mask"][case]),
    )


def test_model_rebuild_gives_the_reference_logits(reference: dict[str, Any]) -> None:
    model = reference["model"]
    for case in range(len(reference["attack"])):
        images = torch.from_numpy(reference["x"][case])
        with torch.no_grad():
            assert torch.equal(model(images), torch.from_numpy(reference["clean_logits"][case]))


@pytest.mark.parametrize("attack_type", sorted(ATTACKS))
def test_every_reference_case_is_reproduced(reference: dict[str, Any], attack_type: str) -> None:
    # The 12 cases of one attack type (targets × ε × N) per test.
    model = reference["model"]
    cases = (reference["attack"] == attack_type).nonzero()[0].tolist()
    assert len(cases) == 12
    mismatches = []
    for case in cases:
        attack = ATTACKS[attack_type](
            model,
            eps=float(reference["eps"][case]),
            steps=int(reference["n_iter"][case]),
            preset="official",
        )
        images, targets, flip_mask = case_tensors(reference, case)
        result = attack(images, targets, flip_set=flip_mask)
        success = result.success.numpy()
        iterations = result.iterations.numpy()
        gap = float(np.abs(result.adv.numpy() - reference["adv"][case]).max())
        if not (
            np.array_equal(success, reference["success"][case])
            and np.array_equal(iterations, reference["first_success_iter"][case])
            and gap <= 1e-5
        ):
            mismatches.append((case, success.tolist(), iterations.tolist(), gap))
    assert not mismatches


def test_count_nonzero_quirk_on_the_reference_batch(reference: dict[str, Any]) -> None:
    # Cases 12-17 (GMLA, target dog): at the clean images only image 0 has cos <= -0.85, so the
    # authors' code projects no image at all. Without the quirk image 0 would project.
    case = 12
    assert str(reference["attack"][case]) == "gmla"
    images, targets, flip_mask = case_tensors(reference, case)
    model = reference["model"]
    with torch.no_grad():
        logits = model(images)
    clean = logits > 0
    problem = AttackProblem(
        images=images,
        eps=torch.full((8,), float(reference["eps"][case]), dtype=torch.float64),
        clean_logits=logits,
        clean_pred=clean,
        targets=targets,
        flip_set=flip_mask,
        desired=clean ^ flip_mask,
        logit_threshold=0.0,
        seed=None,
        model=model,
    )
    gradients = official_gradients(model, problem, images, torch.arange(8))
    cosine = torch.mul(gradients.unit_flip, gradients.unit_other).sum(1)
    assert torch.equal(cosine, torch.from_numpy(reference["cos"][case][:, 0]))
    _, projected = official_direction("gmla", gradients)
    assert projected.tolist() == reference["projected"][case][:, 0].tolist() == [False] * 8
    _, per_image = official_direction("gmla", gradients, count_nonzero_quirk=False)
    assert per_image.tolist() == (cosine <= -0.85).tolist()
    assert per_image[0] and not per_image[1:].any()


def test_gmla_direction_count_nonzero_quirk() -> None:
    # Rows 0 and 2 have cos(g_t, g_nt) = 1 >= tau, row 1 has cos = -1.
    g_t = torch.tensor([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0]])
    g_nt = torch.tensor([[2.0, 4.0], [-1.0, -2.0], [4.0, 2.0]])
    _, per_image = gmla_direction(g_t, g_nt, tau=0.85)
    assert per_image.tolist() == [True, False, True]
    _, quirk = gmla_direction(g_t, g_nt, tau=0.85, count_nonzero_quirk=True)
    assert quirk.tolist() == [True, False, True]  # row 2 qualifies, so row 0 projects too
    _, alone = gmla_direction(g_t[:2], g_nt[:2], tau=0.85, count_nonzero_quirk=True)
    assert alone.tolist() == [False, False]  # only row 0 qualifies: nobody projects
