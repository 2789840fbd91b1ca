"""The repair as a stage of its own: after any attack, as a composite attack or on a result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from mlattack import models
from mlattack.attacks import GMLA, MLAC, MLAU, Attack, AttackResult, Repair, Sequential
from mlattack.attacks.base import AttackProblem, LoopOutput
from mlattack.attacks.stages import hinge, smooth_hinge
from mlattack.data import SyntheticScenes

RESULT_FIELDS = (
    "adv", "clean_pred", "adv_pred", "targets", "flip_set", "success", "iterations", "eps",
    "attacked", "gradient_failed", "clean_logits", "adv_logits", "nonfinite_logits",
)  # fmt: skip


def assert_same(first: AttackResult, second: AttackResult) -> None:
    for name in RESULT_FIELDS:
        assert torch.equal(getattr(first, name), getattr(second, name)), name


def collateral(result: AttackResult) -> Tensor:
    return ((result.adv_pred != result.clean_pred) & ~result.flip_set).sum(dim=1)


def test_gmla_repair_is_the_search_followed_by_the_repair_stage(trained_hierarchy: Any) -> None:
    case = trained_hierarchy
    images, targets = case.images[:6], case.targets[:6]
    options: dict[str, Any] = {"eps": 0.1, "steps": 20}
    default = GMLA(case.model, case.graph, **options)(images, targets)
    composed = Sequential(GMLA(case.model, case.graph, repair=False, **options), Repair())
    assert_same(default, composed(images, targets))
    assert composed.name == "GMLA+repair"
    # The same repair on the result of the search alone, computed beforehand.
    searched = GMLA(case.model, case.graph, repair=False, **options)(images, targets)
    afterwards = Repair()(case.model, searched, steps=20, eps=0.1)
    assert_same(default, afterwards)
    assert afterwards.name == "GMLA+repair"
    # Without eps, the ball of result.eps (0.1 rounded to float32): within one float32 step.
    rounded = Repair()(case.model, searched, steps=20)
    assert ((rounded.adv - images).abs().amax(dim=(1, 2, 3)) <= searched.eps).all()
    assert torch.allclose(rounded.adv, default.adv, rtol=0, atol=1e-7)


@pytest.mark.parametrize("attack_class", [MLAU, MLAC])
def test_mla_on_psi_plus_repair_reaches_psi_with_fewer_collateral_flips(
    trained_hierarchy: Any, attack_class: type[Attack]
) -> None:
    case = trained_hierarchy
    images, targets = case.images[:8], case.targets[:8]
    options: dict[str, Any] = {"eps": 0.1, "steps": 30}
    on_psi = Sequential(attack_class(case.model, **options), graph=case.graph)
    repaired = Sequential(attack_class(case.model, **options), Repair(), graph=case.graph)
    plain, fixed = on_psi(images, targets), repaired(images, targets)
    assert repaired.name == f"{attack_class.name} on Psi+repair"
    psi = case.graph.consistent_target_set(plain.clean_pred, targets, logits=plain.clean_logits)
    assert torch.equal(plain.flip_set, torch.as_tensor(psi))  # the consistent set, not Ω
    assert not torch.equal(plain.flip_set, targets)
    assert torch.equal(plain.success, fixed.success)  # the repair never loses a success
    assert (collateral(fixed) <= collateral(plain)).all()
    assert (fixed.iterations >= plain.iterations).all() and (fixed.iterations <= 30).all()
    assert ((fixed.adv - images).abs().amax(dim=(1, 2, 3)) <= 0.1).all()


class SignStep(Attack):
    """One big signed-gradient step on Ψ: overshoots and flips other labels too."""

    name = "sign-step"

    def _attack(self, problem: AttackProblem) -> LoopOutput:
        x = problem.images.detach().requires_grad_(True)
        logits = problem.model(x)
        toward = torch.where(problem.desired, logits, -logits)
        (gradient,) = torch.autograd.grad((toward * problem.flip_set).sum(), x)
        adv = problem.project(x.detach() + problem.eps.view(-1, 1, 1, 1) * gradient.sign())
        one = torch.ones(len(x), dtype=torch.int64)
        return LoopOutput(
            adv=adv, iterations=one, gradient_failed=torch.zeros_like(one, dtype=torch.bool)
        )


def test_a_users_own_attack_can_be_repaired(trained_hierarchy: Any) -> None:
    case = trained_hierarchy
    images, targets = case.images[:8], case.targets[:8]
    plain = SignStep(case.model, eps=0.2, steps=20)(images, targets)
    fixed = Sequential(SignStep(case.model, eps=0.2, steps=20), Repair())(images, targets)
    assert plain.success.any()
    assert torch.equal(plain.success, fixed.success)
    assert (collateral(fixed) <= collateral(plain)).all()


def test_extra_steps_repair_an_image_that_used_all_its_steps(trained_hierarchy: Any) -> None:
    case = trained_hierarchy
    images, targets = case.images[:8], case.targets[:8]
    # One step, all spent: the repair has no unused step left unless it is given extra ones.
    plain = SignStep(case.model, eps=0.2, steps=1)(images, targets)
    unpaid = Sequential(SignStep(case.model, eps=0.2, steps=1), Repair())(images, targets)
    extra = Repair(extra_steps=15)
    paid = Sequential(SignStep(case.model, eps=0.2, steps=1), extra)(images, targets)
    assert collateral(plain)[plain.success].sum() > 0, "the test needs collateral flips to repair"
    assert_same(plain, replace(unpaid, name=plain.name))
    assert torch.equal(paid.success, plain.success)
    assert (collateral(paid) <= collateral(plain)).all()
    assert collateral(paid).sum() < collateral(plain).sum()
    assert (paid.iterations <= 1 + 15).all() and (paid.iterations > 1).any()
    assert (paid.backward_passes <= plain.backward_passes + 15).all()
    assert ((paid.adv - images).abs().amax(dim=(1, 2, 3)) <= 0.2).all()
    # The same on a result computed beforehand.
    afterwards = Repair(extra_steps=15)(case.model, plain, steps=1, eps=0.2)
    assert torch.equal(afterwards.adv, paid.adv)
    assert repr(extra) == "Repair(margin=1.0, labels='flipped', extra_steps=15)"
    assert repr(Repair()) == "Repair(margin=1.0, labels='flipped')"
    for wrong in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="extra_steps"):
            Repair(extra_steps=wrong)  # type: ignore[arg-type]


def test_an_image_short_of_psi_keeps_what_it_reached_while_repaired() -> None:
    """Ω turned off but a parent of Ψ still on: the extra steps pull back the collateral flips and
    keep every label of Ψ the search had moved, so the image stays a (naive) success."""
    model = models.load(Path(models.__file__).parent / "synthetic-dense-small-cnn.pt").eval()
    scenes = SyntheticScenes(40, size=48, seed=5, split="test", dense=True)
    images = torch.stack([scenes[i][0] for i in range(len(scenes))])
    with torch.no_grad():
        pred = model(images) > 0
    leaves = torch.tensor([int(i) for i in model.graph.leaves])
    rows = pred[:, leaves].sum(1).argsort(descending=True)[:8]  # the most crowded scenes
    targets = torch.zeros(len(rows), pred.shape[1], dtype=torch.bool)
    for row, image in enumerate(rows.tolist()):
        targets[row, leaves[pred[image, leaves]][:3]] = True  # three leaves on, to turn off
    searched = GMLA(model, model.graph, steps=20, repair=False)(images[rows], targets, eps=0.01)
    moved = searched.flip_set & (searched.adv_pred != searched.clean_pred)
    short = searched.success & (moved != searched.flip_set).any(dim=1)
    assert (collateral(searched)[short] > 0).any(), "the test needs a success short of Ψ"
    assert Repair()(model, searched, steps=20, eps=0.01).adv[short].equal(searched.adv[short])

    repaired = Repair(extra_steps=20)(model, searched, steps=20, eps=0.01)
    assert torch.equal(repaired.success, searched.success)
    assert ((repaired.adv_pred != repaired.clean_pred) | ~moved).all()
    assert (collateral(repaired) <= collateral(searched)).all()
    assert collateral(repaired)[short].sum() < collateral(searched)[short].sum()
    assert ((repaired.adv - repaired.images).abs().amax(dim=(1, 2, 3)) <= 0.01 + 1e-7).all()


def test_a_repair_needs_the_flip_set(trained_hierarchy: Any) -> None:
    case = trained_hierarchy
    images, targets = case.images[:2], case.targets[:2]
    result = MLAU(case.model, eps=0.1, steps=5)(images, targets)
    without = replace(result, flip_set=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flip_set"):
        Repair()(case.model, without, steps=5)
    with pytest.raises(ValueError, match="steps"):
        Repair()(case.model, result, steps=0)
    with pytest.raises(ValueError, match="threshold"):
        Repair()(case.model, result, steps=5, threshold=1e-6)
    with pytest.raises(ValueError, match="margin"):
        Repair(margin=0.0)
    with pytest.raises(TypeError, match="attack must be an Attack"):
        Sequential(Repair())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="stages must be Stage objects"):
        Sequential(MLAU(case.model), MLAU(case.model))  # type: ignore[arg-type]


def test_a_call_leaves_the_attack_object_as_it_was(trained_hierarchy: Any) -> None:
    """No per-call state: the attributes after a call are those before it, ``model`` is the model
    given throughout, and a call made from inside the model's forward pass (the same attack object,
    reentered) leaves the outer call's numbers as they are."""
    case = trained_hierarchy
    images, targets = case.images[:3], case.targets[:3]
    seen: list[Any] = []
    entered: list[bool] = []
    nested: list[AttackResult] = []

    class Spy(torch.nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            seen.append(attack.model)
            if not entered and torch.is_grad_enabled():
                entered.append(True)
                nested.append(attack(images[:1], targets[:1]))  # reentered mid-call
            return case.model(x)

    spy = Spy()
    attack = MLAU(spy, eps=0.05, steps=3, amp="bf16")
    before = dict(vars(attack))
    result = attack(images, targets)
    assert dict(vars(attack)) == before
    assert seen and all(model is spy for model in seen)
    assert nested
    plain = MLAU(case.model, eps=0.05, steps=3, amp="bf16")(images, targets)
    assert_same(result, plain)


@pytest.mark.parametrize("threshold", [0.0, -0.7])
def test_the_smoothed_hinge_spans_bce_and_the_hinge(threshold: float) -> None:
    generator = torch.Generator().manual_seed(3)
    logits = 6 * torch.randn(5, 7, generator=generator, dtype=torch.float64)
    wanted_on = torch.rand(5, 7, generator=generator) < 0.5
    mask = torch.rand(5, 7, generator=generator) < 0.6
    # sharpness 1 and margin 0: the binary cross-entropy of the labels against their wanted side.
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits - threshold, wanted_on.double(), reduction="none"
    )
    expected = torch.where(mask, bce, 0.0).sum(1)
    torch.testing.assert_close(smooth_hinge(logits, wanted_on, mask, 0.0, threshold, 1.0), expected)
    # A large sharpness: the hinge, within log(2)/k per label.
    sharp = smooth_hinge(logits, wanted_on, mask, 1.0, threshold, 1e4)
    exact = hinge(logits, wanted_on, mask, 1.0, threshold)
    assert bool(((sharp - exact).abs() <= mask.sum(1) * 0.7e-4 + 1e-12).all())
    # Each label pulls with weight σ(k(margin − s(z − θ))): its gradient against the hinge's 0/1.
    z = logits.clone().requires_grad_(True)
    smooth_hinge(z, wanted_on, mask, 1.0, threshold, 1.5).sum().backward()
    signs = wanted_on.double() * 2 - 1
    weight = torch.sigmoid(1.5 * (1.0 - signs * (logits - threshold)))
    assert z.grad is not None
    torch.testing.assert_close(z.grad, torch.where(mask, -signs * weight, 0.0))
