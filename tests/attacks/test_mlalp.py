"""MLA-LP: the linear program's optimum and constraints on linear models, resolution, relaxation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mlattack.attacks import AttackProblem, mlalp
from mlattack.attacks.mlalp import MLALP, solve_min_linf_step
from mlattack.attacks.mldp import FLOAT32_MARGIN, Linearization

# The linear model of tests/attacks/conftest.py (fixture ``linear_model``) reads 3×4×4 images:
# label c looks at pixel block c (8 pixels, weight 1), a child also at its parent's block (0.5).
IMAGE_SHAPE = (3, 4, 4)
ANIMAL, DOG, CAT = 0, 1, 2
MARGIN = 0.05


def grey(shape: tuple[int, ...] = IMAGE_SHAPE) -> torch.Tensor:
    return torch.full((1, *shape), 0.5)


def target(label: int, num_labels: int = 6) -> torch.Tensor:
    mask = torch.zeros(1, num_labels, dtype=torch.bool)
    mask[0, label] = True
    return mask


def test_one_step_reaches_the_holder_optimum(linear_model: nn.Module) -> None:
    # Dog (logit 1) must reach −margin: min ‖r‖∞ s.t. w·r ≤ −1 − margin is |1 + margin| / ‖w‖₁,
    # with ‖w‖₁ = 8·1 + 8·0.5 = 12. No other constraint binds (animal ends at 1 − 8z = 0.3).
    result = MLALP(linear_model, eps=1.0, steps=1, margin=MARGIN)(grey(), target(DOG))
    delta = result.adv - grey()
    assert delta.abs().max().item() == pytest.approx(1.05 / 12, abs=1e-6)
    logits = result.adv_logits[0]
    assert logits[DOG].item() <= -MARGIN + 1e-6
    assert logits[ANIMAL].item() == pytest.approx(0.3, abs=1e-5)
    assert result.success.item() and result.iterations.item() == 1


def test_binding_non_target_constraint_is_respected(
    linear_model: nn.Module, make_linear_model: Callable[[Tensor, Tensor], nn.Module]
) -> None:
    # Animal's logit is 0.3: it may fall to the margin (Σ_animal r ≥ −0.25) and no further, so
    # dog's constraint A + 0.5 B ≤ −1.05 with A = −8z, B = −0.25 gives z = 0.925 / 8.
    bias = linear_model.bias.detach().clone()
    bias[ANIMAL] = -3.7
    model = make_linear_model(linear_model.weight.detach().clone(), bias)
    result = MLALP(model, eps=1.0, steps=1, margin=MARGIN)(grey(), target(DOG))
    assert (result.adv - grey()).abs().max().item() == pytest.approx(0.925 / 8, abs=1e-6)
    logits = result.adv_logits[0]
    assert logits[DOG].item() <= -MARGIN + 1e-6
    assert logits[ANIMAL].item() >= MARGIN - 1e-6
    clean = result.clean_logits[0]
    for label in (CAT, 3, 4, 5):  # the others keep their side by at least min(margin, |f − θ|)
        sign = 1.0 if clean[label] > 0 else -1.0
        assert sign * logits[label].item() >= min(MARGIN, abs(clean[label].item())) - 1e-6


def test_turn_on_direction_reaches_the_holder_optimum(linear_model: nn.Module) -> None:
    # Cat (logit −1, weight 1 on its block and 0.5 on animal's) must reach +margin: z = 1.05 / 12.
    result = MLALP(linear_model, eps=1.0, steps=1, direction="on")(grey(), target(CAT))
    assert (result.adv - grey()).abs().max().item() == pytest.approx(1.05 / 12, abs=1e-6)
    assert result.success.item() and result.adv_logits[0, CAT].item() >= MARGIN - 1e-6


def test_solver_returns_feasible_optimum_and_duals() -> None:
    rows = np.array([[1.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    bounds = np.array([-1.0, 0.2])  # r0 + r1 ≤ −1 and r1 ≥ −0.2
    step, duals = solve_min_linf_step(rows, bounds, np.full(3, -5.0), np.full(3, 5.0))
    assert step is not None
    assert np.abs(step).max() == pytest.approx(0.8, abs=1e-7)  # r0 = −0.8, r1 = −0.2
    assert (rows @ step <= bounds + 1e-7).all()
    assert (np.abs(duals) > 1e-9).all()  # both constraints bind
    infeasible, _ = solve_min_linf_step(
        np.array([[1.0], [-1.0]]), np.array([-1.0, -1.0]), np.array([-5.0]), np.array([5.0])
    )
    assert infeasible is None


def test_low_resolution_program_gives_a_blockwise_constant_step(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module],
) -> None:
    torch.manual_seed(0)
    shape = (3, 16, 16)
    model = make_linear_model(torch.randn(4, 3 * 16 * 16) / 16, torch.tensor([0.5, 0.4, -0.3, 0.2]))
    images = 0.3 + 0.4 * torch.rand(1, *shape)
    targets = (model(images).detach() > 0) & (torch.arange(4) == 0)
    assert targets.any()
    coarse = MLALP(model, eps=1.0, steps=1, lp_size=4)(images, targets)
    blocks = (coarse.adv - images).view(1, 3, 4, 4, 4, 4)  # [.., row block, row, col block, col]
    torch.testing.assert_close(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    assert coarse.success.item()
    # The full-resolution program has more freedom: its optimum cannot be larger.
    fine = MLALP(model, eps=1.0, steps=1, lp_size=None)(images, targets)
    assert fine.success.item()
    fine_norm = (fine.adv - images).abs().max()
    assert fine_norm <= (coarse.adv - images).abs().max() + 1e-6


def test_low_resolution_program_is_batch_invariant(
    strongest_present: Callable[[Tensor], Tensor],
) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5), nn.Tanh(), nn.Linear(5, 5))
    model = model.double().eval()
    images = (0.5 + 0.3 * (torch.rand(3, 3, 16, 16, dtype=torch.float64) - 0.5)).clamp(0, 1)
    with torch.no_grad():
        logits = model(images)
    targets = strongest_present(logits)
    assert (logits[targets] > 0).all()
    attack = MLALP(model, eps=0.05, steps=4, lp_size=8, early_stop=False)
    batch = attack(images, targets)
    for i in range(3):
        alone = attack(images[i : i + 1], targets[i : i + 1])
        torch.testing.assert_close(alone.adv[0], batch.adv[i], atol=1e-9, rtol=0)
        assert alone.iterations[0] == batch.iterations[i]


def test_infeasible_program_relaxes_the_blocking_non_target(
    monkeypatch: pytest.MonkeyPatch, make_linear_model: Callable[[Tensor, Tensor], nn.Module]
) -> None:
    # Two labels with one weight row: label 0 cannot turn off while label 1 stays on. The program
    # is infeasible until label 1's threshold is relaxed (ρ = margin, then 3·margin); then both
    # turn off within the first step.
    outcomes: list[bool] = []

    def recording(*args: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        step, duals = solve_min_linf_step(*args)
        outcomes.append(step is not None)
        return step, duals

    monkeypatch.setattr(mlalp, "solve_min_linf_step", recording)
    row = torch.randn(1, 48, generator=torch.Generator().manual_seed(1))
    model = make_linear_model(torch.cat([row, row]), torch.tensor([1.0, 1.0]) - row.sum() * 0.5)
    result = MLALP(model, eps=1.0, steps=3)(grey(), torch.tensor([[True, False]]))
    assert outcomes == [False, False, True]
    assert result.success.item() and result.iterations.item() == 1
    assert result.adv_pred[0].tolist() == [False, False]


def test_succeeds_on_a_nonlinear_model(
    mlp_model: nn.Module, strongest_present: Callable[[Tensor], Tensor]
) -> None:
    torch.manual_seed(0)
    images = (0.5 + 0.2 * (torch.rand(4, *IMAGE_SHAPE) - 0.5)).clamp(0, 1)
    with torch.no_grad():
        logits = mlp_model(images)
    targets = strongest_present(logits)
    result = MLALP(mlp_model, eps=0.3, steps=10)(images, targets)
    assert result.success.all()
    assert (result.adv - images).abs().amax() < 0.1


def test_relaxed_flip_margins_never_fall_below_the_robust_margin(
    linear_model: nn.Module, make_problem: Callable[..., AttackProblem]
) -> None:
    # A step that never makes progress halves κ at each relaxation; it stops at
    # min(margin, FLOAT32_MARGIN) so that an iterate is never aimed at the threshold itself.
    attack = MLALP(linear_model, eps=0.1, margin=MARGIN)
    images = grey()
    problem = make_problem(linear_model, images, target(DOG))
    state = attack._start(problem)
    logits = linear_model(images).detach()
    signs = problem.desired.double() * 2 - 1
    lin = Linearization(
        rows=torch.tensor([0]),
        x=images,
        logits=logits,
        margins=signs * logits,
        signs=signs,
        labels=torch.tensor([[DOG]]),
        valid=torch.tensor([[True]]),
        jacobian=torch.zeros(1, 1, images[0].numel()),
    )
    for _ in range(12):
        attack._relax(state, problem, lin)
    assert state.flip_margin[0, DOG].item() == pytest.approx(min(MARGIN, FLOAT32_MARGIN))


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"margin": 0.0}, ValueError),
        ({"margin": "1"}, TypeError),
        ({"margin": None}, TypeError),
        ({"lp_size": 2.5}, ValueError),
        ({"lp_size": 0}, ValueError),
        ({"max_labels": -1}, ValueError),
    ],
)
def test_bad_options_raise(
    options: dict[str, object], error: type[Exception], linear_model: nn.Module
) -> None:
    with pytest.raises(error, match=next(iter(options))):
        MLALP(linear_model, **options)  # type: ignore[arg-type]
