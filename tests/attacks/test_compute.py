"""Compute is counted: per-image forward and backward passes, and a budget of backward passes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from mlattack.attacks import GMLA, MLAC, MLALP, MLAU, MLDP, Repair, Sequential, build_attack

ATTACK_NAMES = ("mla-u", "mla-c", "gmla", "ml-dp", "mla-lp")


def case_of(
    trained_hierarchy: Any, n: int = 6
) -> tuple[nn.Module, Any, torch.Tensor, torch.Tensor]:
    case = trained_hierarchy
    return case.model, case.graph, case.images[:n], case.targets[:n]


def test_one_pass_each_way_per_evaluation_of_mla(trained_hierarchy: Any) -> None:
    model, _, images, targets = case_of(trained_hierarchy)
    for attack in (MLAU(model, eps=0.05, steps=7), MLAC(model, eps=0.05, steps=7)):
        result = attack(images, targets)
        # The start and every step are evaluated once: one forward and one backward pass each.
        assert torch.equal(result.forward_passes, result.iterations + 1)
        assert torch.equal(result.backward_passes, result.iterations + 1)
    official = MLAC(model, preset="official", eps=0.05, steps=7)(images, targets)
    # The authors' arithmetic takes g1 and g2 by two backward passes.
    assert torch.equal(official.backward_passes, 2 * official.forward_passes)


def test_gmla_counts_its_protected_gradients(trained_hierarchy: Any) -> None:
    model, graph, images, targets = case_of(trained_hierarchy)
    options: dict[str, Any] = {"eps": 0.05, "steps": 6, "repair": False, "early_stop": False}
    default = GMLA(model, graph, **options)(images, targets)
    # The default search steps on Ψ alone: one backward pass per evaluation.
    assert torch.equal(default.backward_passes, default.iterations + 1)
    summed = GMLA(model, graph, mode="steepest", **options)(images, targets)
    assert torch.equal(summed.forward_passes, summed.iterations + 1)
    assert torch.equal(summed.backward_passes, 2 * (summed.iterations + 1))
    multi = GMLA(model, graph, mode="multi", k=2, **options)(images, targets)
    assert torch.equal(multi.backward_passes, 3 * (multi.iterations + 1))  # g_t and k logits
    lazy = GMLA(model, graph, mode="steepest", refresh=3, **options)(images, targets)
    # 7 evaluations, the protected gradient at evaluations 0, 3 and 6 only.
    assert (lazy.backward_passes == 7 + 3).all()


def test_the_repair_stage_is_counted(trained_hierarchy: Any) -> None:
    model, graph, images, targets = case_of(trained_hierarchy)
    plain = MLAU(model, eps=0.1, steps=20)(images, targets)
    repaired = Repair()(model, plain, steps=20)
    extra = repaired.iterations - plain.iterations
    # Each repair step, and the look at the found point of every image with steps left.
    assert (repaired.backward_passes - plain.backward_passes == extra).all()
    assert (repaired.forward_passes - plain.forward_passes >= extra).all()
    composed = Sequential(MLAU(model, eps=0.1, steps=20), Repair())(images, targets)
    assert torch.equal(composed.backward_passes, repaired.backward_passes)
    assert torch.equal(composed.forward_passes, repaired.forward_passes)


def test_unattacked_images_spend_nothing(trained_hierarchy: Any) -> None:
    model, _, images, targets = case_of(trained_hierarchy, 3)
    wrong = targets.clone()
    wrong[0] = False
    wrong[0, 2] = True  # cat is absent: not a turn-off target
    result = MLAU(model, eps=0.05, steps=5, on_invalid="skip")(images, wrong)
    assert not result.attacked[0]
    assert result.forward_passes[0] == 0 and result.backward_passes[0] == 0
    assert (result.forward_passes[1:] > 0).all()


@pytest.mark.parametrize("budget", [1, 3, 8])
@pytest.mark.parametrize(
    "make",
    [
        lambda model, graph, budget: MLAU(model, eps=0.02, steps=30, max_backward=budget),
        lambda model, graph, budget: GMLA(model, graph, eps=0.02, steps=30, max_backward=budget),
        lambda model, graph, budget: GMLA(
            model, graph, eps=0.02, steps=30, mode="adaptive", fallback="unconstrained",
            max_backward=budget,
        ),
        lambda model, graph, budget: Sequential(
            MLAU(model, eps=0.02, steps=30), Repair(), graph=graph
        ),
        lambda model, graph, budget: Sequential(
            MLAU(model, eps=0.02, steps=30, max_backward=budget), Repair(extra_steps=40),
            graph=graph,
        ),
    ],
    ids=["mla-u", "gmla", "gmla-fallback", "mla-u-psi-repair-unbudgeted", "repair-extra-steps"],
)  # fmt: skip
def test_max_backward_stops_every_image_at_its_budget(
    trained_hierarchy: Any, make: Any, budget: int
) -> None:
    model, graph, images, targets = case_of(trained_hierarchy, 8)
    attack = make(model, graph, budget)
    if attack.max_backward is None:  # a composite takes over the first attack's budget
        attack = Sequential(
            MLAU(model, eps=0.02, steps=30, max_backward=budget), Repair(), graph=graph
        )
        assert attack.max_backward == budget
    result = attack(images, targets)
    unlimited = make(model, graph, 10_000)(images, targets)
    # One evaluation costs at most 2 backward passes here: a budget below that still evaluates
    # the start once; otherwise the budget holds.
    assert (result.backward_passes <= max(budget, 2)).all()
    assert (unlimited.backward_passes > budget).any(), "the budget must bind for the test to mean"
    assert ((result.adv - images).abs().amax(dim=(1, 2, 3)) <= 0.02).all()


def test_linearised_attacks_stop_near_their_budget(trained_hierarchy: Any) -> None:
    model, _, images, targets = case_of(trained_hierarchy, 4)
    for attack_class in (MLDP, MLALP):
        free = attack_class(model, eps=0.02, steps=4, early_stop=False)(images, targets)
        capped = attack_class(model, eps=0.02, steps=4, early_stop=False, max_backward=8)(
            images, targets
        )
        per_step = 7  # every label of the 7-label model is linearised
        assert (free.backward_passes > 8 + per_step).all()
        assert (capped.backward_passes <= 8).all()
        assert (capped.iterations < free.iterations).all()


@pytest.mark.parametrize("name", ATTACK_NAMES)
@pytest.mark.parametrize("budget", [0, -3, 2.5, True, "10"])
def test_a_budget_that_is_not_a_positive_integer_is_refused(
    name: str, budget: Any, linear_model: nn.Module
) -> None:
    with pytest.raises(ValueError, match="max_backward must be a positive integer"):
        build_attack(name, linear_model, max_backward=budget)


def test_repr_shows_the_budget_and_every_shared_option_away_from_its_default(
    linear_model: nn.Module,
) -> None:
    attack = MLAU(linear_model, max_backward=5, early_stop=False, amp="bf16")
    text = repr(attack)
    assert "max_backward=5" in text and "early_stop=False" in text and "amp='bf16'" in text
    assert "random_start" not in text and "compile" not in text
    assert "max_backward" not in repr(MLAU(linear_model))


def test_a_batched_jacobian_counts_one_backward_pass_per_label(
    trained_hierarchy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off the CPU ML-DP takes its Jacobian in one batched call: it must count as many passes as
    the per-row calls the CPU makes."""
    import mlattack.attacks.mldp as mldp

    model, _, images, targets = case_of(trained_hierarchy, 4)
    options: dict[str, Any] = {"eps": 0.02, "steps": 3, "early_stop": False}
    per_row = MLDP(model, **options)(images, targets)
    original = mldp.label_jacobian

    def batched(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, "batched": True})

    monkeypatch.setattr(mldp, "label_jacobian", batched)
    together = MLDP(model, **options)(images, targets)
    assert torch.equal(together.backward_passes, per_row.backward_passes)
    assert torch.equal(together.forward_passes, per_row.forward_passes)
    assert (per_row.backward_passes > per_row.forward_passes).all()


def test_the_repair_charges_no_backward_pass_to_an_image_it_does_not_step(
    make_linear_model: Any, make_problem: Any
) -> None:
    """Image 0 reached Ψ with a collateral flip and is repaired; image 1 never reached Ψ: the
    repair's gradient of the batch must not count as a backward pass of image 1."""
    from dataclasses import replace

    from mlattack.attacks import LoopOutput
    from mlattack.attacks.compute import PassCounter

    weight = torch.zeros(2, 48)
    weight[0, :16] = 1.0
    weight[1, :16] = 1.0
    weight[1, 16:32] = 1.0
    model = make_linear_model(weight, torch.tensor([-7.5, -15.0]))
    images = torch.full((2, 3, 4, 4), 0.5)
    problem = make_problem(model, images, torch.tensor([[True, False]] * 2), eps=0.2)
    counter = PassCounter.around(model, 2, images.device)
    problem = replace(problem, model=counter)
    found = images.clone()
    found.view(2, -1)[0, :16] -= 0.1  # image 0: Ψ reached, label 1 flipped; image 1: clean
    out = Repair().refine(
        problem,
        LoopOutput(adv=found, iterations=torch.tensor([10, 10]),
                   gradient_failed=torch.zeros(2, dtype=torch.bool)),
        30,
    )  # fmt: skip
    assert out.iterations[0] > 10 and out.iterations[1] == 10
    assert counter.backward_passes.tolist() == [int(out.iterations[0]) - 10, 0]


def test_gmla_with_its_repair_keeps_within_max_backward(trained_hierarchy: Any) -> None:
    """Images with nothing to repair, or whose budget is spent, pay no backward pass of the
    repair's batch: the budget holds per image, repair included."""
    model, graph, images, targets = case_of(trained_hierarchy)
    for budget in (3, 6, 11):
        result = GMLA(model, graph, eps=0.05, steps=50, max_backward=budget)(images, targets)
        assert (result.backward_passes <= budget).all(), (budget, result.backward_passes)
