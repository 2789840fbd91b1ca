"""GMLA: the eq. 10/11 direction, the flip set from the graph, and the semantic success it buys."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mlattack.attacks import GMLA, MLAC, MLAU, gmla_direction
from mlattack.attacks.mla import evaluate_objectives
from mlattack.losses import masked_bce


def closed_form_gradients(
    weight: Tensor, bias: Tensor, images: Tensor, flip_set: Tensor
) -> tuple[Tensor, Tensor]:
    """``g_t = −∇L_t`` and ``g_nt = ∇L_nt`` of the linear model: ``∇ₓ BCE(z, y) = Wᵀ(σ(z) − y)``."""
    logits = images.flatten(1) @ weight.T + bias
    clean = logits > 0
    desired = (clean ^ flip_set).to(logits.dtype)
    residual = torch.sigmoid(logits) - desired
    g_t = -(residual * flip_set) @ weight
    g_nt = ((torch.sigmoid(logits) - clean.to(logits.dtype)) * ~flip_set) @ weight
    return g_t, g_nt


def vectors_with_cosine(
    cosines: list[float], dim: int = 64, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Pairs of random vectors whose cosine is exactly each value in ``cosines``."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.randn((len(cosines), dim), generator=generator, dtype=torch.float64)
    other = torch.randn((len(cosines), dim), generator=generator, dtype=torch.float64)
    first = first / first.norm(dim=1, keepdim=True)
    other = other - (other * first).sum(1, keepdim=True) * first
    other = other / other.norm(dim=1, keepdim=True)
    cos = torch.tensor(cosines, dtype=torch.float64).unsqueeze(1)
    second = cos * first + (1 - cos**2).sqrt() * other
    return 3.0 * first, 0.2 * second  # different scales: only the directions may matter


def test_projection_is_orthogonal_to_nontarget_gradient() -> None:
    g_t, g_nt = vectors_with_cosine([0.99, 0.9, 0.5, 0.0, -0.7])
    direction, projected = gmla_direction(g_t, g_nt, mode="projection")
    assert projected.all()
    # eq. 10: g_ntᵀ Pν = 0, while the step still ascends the target objective (Pν projects the
    # sign vector, not g_t itself, so at a cosine near 1 that ascent is not guaranteed).
    assert torch.allclose(
        (direction * g_nt).sum(1), torch.zeros(5, dtype=torch.float64), atol=1e-12
    )
    assert ((direction * g_t).sum(1)[1:] > 0).all()
    assert torch.allclose(direction.abs().amax(1), torch.ones(5, dtype=torch.float64))


def test_branch_selection_follows_tau() -> None:
    cosines = [0.95, 0.86, 0.84, 0.3, -0.5]
    g_t, g_nt = vectors_with_cosine(cosines)
    _, projected = gmla_direction(g_t, g_nt, tau=0.85)
    assert projected.tolist() == [True, True, False, False, False]
    _, projected = gmla_direction(g_t, g_nt, tau=0.0)
    assert projected.tolist() == [True, True, True, True, False]
    _, projected = gmla_direction(g_t, g_nt, tau=1.5, mode="projection")
    assert projected.all()
    # The adaptive branch is eq. 11: sgn(ĝ_t − ĝ_nt), not the unnormalised MLA-C direction.
    direction, _ = gmla_direction(g_t, g_nt, tau=1.5)
    unit = (g_t / g_t.norm(dim=1, keepdim=True)) - (g_nt / g_nt.norm(dim=1, keepdim=True))
    assert torch.equal(direction, unit.sign())
    assert not torch.equal(direction, (g_t - g_nt).sign())


def test_zero_nontarget_gradient_gives_plain_sign_step() -> None:
    g_t = torch.tensor([[0.5, -2.0, 0.0, 1.0]])
    for mode in ("adaptive", "projection"):
        direction, _ = gmla_direction(g_t, torch.zeros_like(g_t), mode=mode)  # type: ignore[arg-type]
        assert torch.equal(direction, g_t.sign())


def test_attack_gradients_match_closed_form_and_keep_nontarget_loss(
    linear_model: Any, make_case: Any, make_problem: Any, label_graph: Any
) -> None:
    model = linear_model.double()
    images, _ = make_case(model, n=3)
    flip_set = torch.zeros(3, len(label_graph), dtype=torch.bool)
    flip_set[:, [label_graph.index("vehicle"), label_graph.index("car")]] = True
    problem = make_problem(model, images, flip_set)
    rows = torch.arange(3)
    objectives = evaluate_objectives(model, problem, images, rows)
    (g_t,) = torch.autograd.grad(-objectives.target_loss.sum(), objectives.x, retain_graph=True)
    (g_nt,) = torch.autograd.grad(objectives.nontarget_loss.sum(), objectives.x)
    weight, bias = model.weight.detach(), model.bias.detach()
    expected_t, expected_nt = closed_form_gradients(weight, bias, images, flip_set)
    torch.testing.assert_close(g_t.flatten(1), expected_t)
    torch.testing.assert_close(g_nt.flatten(1), expected_nt)

    direction, _ = gmla_direction(g_t, g_nt, mode="projection")
    # First order: the non-target loss does not move along d (the sign step does move it).
    assert ((direction * g_nt).flatten(1).sum(1).abs() < 1e-12).all()
    sign_step = g_t.sign()
    assert ((sign_step * g_nt).flatten(1).sum(1).abs() > 1e-3).all()

    def nontarget_loss(x: Tensor) -> Tensor:
        with torch.no_grad():
            return masked_bce(model(x), problem.clean_pred, ~flip_set)

    h = 1e-4
    change_projected = (nontarget_loss(images + h * direction) - nontarget_loss(images)).abs()
    change_sign = (nontarget_loss(images + h * sign_step) - nontarget_loss(images)).abs()
    assert (change_projected < 1e-3 * change_sign).all()


def test_one_forward_pass_per_iteration(
    linear_model: nn.Module, make_case: Any, label_graph: Any
) -> None:
    images, targets = make_case(linear_model, n=2)
    calls: list[int] = []
    linear_model.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    # One loop (no fallback stage): the protected gradients come from the step's own forward.
    # Without early stop no step is left over, so the repair adds no pass either.
    for mode in ("steepest", "multi", "projection", "adaptive"):
        calls.clear()
        attack = GMLA(
            linear_model, label_graph, eps=0.001, steps=5, early_stop=False, mode=mode,
            fallback="none",
        )  # fmt: skip
        attack(images, targets)
        # clean prediction, start point + 5 steps, fresh forward on the result
        assert calls == [2, 2, 2, 2, 2, 2, 2, 2], mode


def test_flip_set_comes_from_the_graph(
    linear_model: nn.Module, make_case: Any, label_graph: Any
) -> None:
    images, targets = make_case(linear_model, n=3)
    assert targets[:, label_graph.index("car")].all()
    result = GMLA(linear_model, label_graph, eps=0.01, steps=2)(images, targets)
    expected = label_graph.consistent_target_set(result.clean_pred, targets)
    assert torch.equal(result.flip_set, torch.as_tensor(expected))
    # car is on, bike off, so turning car off takes vehicle with it.
    assert result.flip_set[:, label_graph.index("vehicle")].all()

    given = targets.clone()
    given[:, label_graph.index("animal")] = True
    result = GMLA(linear_model, label_graph, eps=0.01, steps=2)(images, targets, flip_set=given)
    assert torch.equal(result.flip_set, given)


def test_graph_problems_raise(linear_model: nn.Module, make_case: Any, label_graph: Any) -> None:
    images, targets = make_case(linear_model, n=2)
    with pytest.raises(ValueError, match="graph"):
        GMLA(linear_model, None, eps=0.01)(images, targets)
    small = label_graph.subgraph(["animal", "dog"])
    with pytest.raises(ValueError, match="2 labels but the model outputs 6"):
        GMLA(linear_model, small, eps=0.01)(images, targets)
    with pytest.raises(ValueError, match="mode"):
        GMLA(linear_model, label_graph, mode="orthogonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau"):
        GMLA(linear_model, label_graph, tau=float("nan"))


def semantic_success_rate(result: Any, graph: Any) -> float:
    """FR_S: Ω flipped and the adversarial prediction locally consistent around Ω (``docs/semantics.md``)."""
    consistent = torch.as_tensor(graph.is_consistent(result.adv_pred, around=result.targets))
    return float((consistent & result.success).float().mean())


def test_gmla_keeps_predictions_consistent_where_mla_does_not(trained_hierarchy: Any) -> None:
    model, graph = trained_hierarchy.model, trained_hierarchy.graph
    images, targets = trained_hierarchy.images, trained_hierarchy.targets
    assert images.shape[0] >= 50
    options = {"eps": 0.1, "steps": 20}
    rates = {
        "MLA-U": semantic_success_rate(MLAU(model, **options)(images, targets), graph),
        "MLA-C": semantic_success_rate(MLAC(model, **options)(images, targets), graph),
        "GMLA": semantic_success_rate(GMLA(model, graph, **options)(images, targets), graph),
        "GMLA-projection": semantic_success_rate(
            GMLA(model, graph, mode="projection", **options)(images, targets), graph
        ),
    }
    baseline = max(rates["MLA-U"], rates["MLA-C"])
    assert baseline < 0.3, rates
    assert rates["GMLA"] >= baseline + 0.2, rates
    assert rates["GMLA-projection"] >= 0.9, rates
