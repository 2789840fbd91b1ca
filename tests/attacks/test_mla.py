"""MLA-U and MLA-C: directions against closed-form gradients of a linear model, and sign conventions."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from mlattack.attacks import MLAC, MLAU
from mlattack.losses import masked_bce


def closed_form(model: Any, images: Tensor, flip_set: Tensor) -> tuple[Tensor, Tensor]:
    """``g_t = −∇L_t`` and ``g_nt = ∇L_nt`` of the linear model, ``∇ₓ BCE(z, y) = Wᵀ(σ(z) − y)``."""
    weight, bias = model.weight.detach(), model.bias.detach()
    logits = images.flatten(1) @ weight.T + bias
    clean = logits > 0
    desired = (clean ^ flip_set).to(logits.dtype)
    g_t = -((torch.sigmoid(logits) - desired) * flip_set) @ weight
    g_nt = ((torch.sigmoid(logits) - clean.to(logits.dtype)) * ~flip_set) @ weight
    return g_t, g_nt


@pytest.mark.parametrize("attack_class", [MLAU, MLAC])
def test_direction_is_sign_of_closed_form_gradient(
    attack_class: Any, linear_model: Any, make_case: Any, make_problem: Any
) -> None:
    model = linear_model.double()
    images, targets = make_case(model, n=3)
    problem = make_problem(model, images, targets)
    step = attack_class(model)._direction(problem, images, torch.arange(3))
    g_t, g_nt = closed_form(model, images, targets)
    expected = g_t if attack_class is MLAU else g_t - g_nt  # eq. 1 / eq. 3
    assert torch.equal(step.direction.flatten(1), expected.sign())
    loss_t = masked_bce(step.logits, problem.desired, targets)
    loss_nt = masked_bce(step.logits, problem.clean_pred, ~targets)
    expected_loss = -loss_t if attack_class is MLAU else -loss_t - loss_nt
    torch.testing.assert_close(step.loss, expected_loss)
    assert not step.failed.any()


@pytest.mark.parametrize("attack_class", [MLAU, MLAC])
def test_small_step_moves_targets_towards_desired_side(
    attack_class: Any, conv_model: Any, make_case: Any, make_problem: Any
) -> None:
    images, targets = make_case(conv_model, n=4)
    problem = make_problem(conv_model, images, targets)
    step = attack_class(conv_model)._direction(problem, images, torch.arange(4))
    with torch.no_grad():
        before = conv_model(images)[targets]
        after = conv_model(images + 1e-3 * step.direction)[targets]
    # Turn-off targets: their logits must go down.
    assert (after < before).all()


def test_mla_c_keeps_other_labels_more_confident_than_mla_u(
    linear_model: Any, make_case: Any
) -> None:
    images, targets = make_case(linear_model, n=4)
    options = {"eps": 0.05, "steps": 10, "early_stop": False}
    unconstrained = MLAU(linear_model, **options)(images, targets)
    constrained = MLAC(linear_model, **options)(images, targets)

    def nontarget_loss(result: Any) -> Tensor:
        return masked_bce(result.adv_logits, result.clean_pred, ~targets)

    assert (nontarget_loss(constrained) < nontarget_loss(unconstrained)).all()
