"""The AutoPGD engine: schedule, early stop, compaction, restarts, gradient failures."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mlattack.attacks import MLAU
from mlattack.attacks.apgd import DirectionStep, checkpoints, run_apgd
from mlattack.attacks.base import AttackProblem


def test_checkpoints_follow_croce_hein_schedule() -> None:
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then > 1), times N rounded up.
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]


def pixel_problem(values: list[float], eps: float, flip: bool = True) -> AttackProblem:
    """One-pixel images with one label each; the label is "reached" when logit (= pixel) > 0.5."""
    images = torch.tensor(values).view(-1, 1, 1, 1)
    n = len(values)
    flip_set = torch.full((n, 1), flip)
    clean_pred = torch.zeros(n, 1, dtype=torch.bool)
    return AttackProblem(
        images=images,
        eps=torch.full((n,), eps),
        clean_logits=images.view(n, 1),
        clean_pred=clean_pred,
        targets=flip_set,
        flip_set=flip_set,
        desired=clean_pred ^ flip_set,
        logit_threshold=0.5,
        seed=None,
    )


class Recorder:
    """A direction function with a scripted objective; records every call."""

    def __init__(self, step: float = 0.1, loss: str = "decreasing") -> None:
        self.step = step
        self.loss = loss
        self.points: list[Tensor] = []
        self.rows: list[Tensor] = []

    def __call__(self, x: Tensor, rows: Tensor) -> DirectionStep:
        self.points.append(x.clone())
        self.rows.append(rows.clone())
        n = x.shape[0]
        if self.loss == "decreasing":  # never improves: every checkpoint halves and restarts
            loss = torch.full((n,), -float(len(self.points)))
        else:  # the pixel value itself: always improves while moving up
            loss = x.flatten(1)[:, 0].clone()
        return DirectionStep(
            loss=loss,
            direction=torch.full_like(x, self.step),
            logits=x.flatten(1)[:, :1].clone(),
            failed=torch.zeros(n, dtype=torch.bool),
        )


def test_momentum_steps_halving_and_restart_from_best() -> None:
    problem = pixel_problem([0.2], eps=0.4)  # the iterates stay inside the ball [0, 0.6]
    recorder = Recorder(step=0.1)
    run_apgd(problem, recorder, steps=10, early_stop=False)
    xs = [float(p.flatten()[0]) for p in recorder.points]
    eta_d = 2 * 0.4 * 0.1  # initial step 2ε times |d|
    assert abs(xs[1] - (0.2 + eta_d)) < 1e-6  # first step: no momentum
    assert abs(xs[2] - (xs[1] + eta_d)) < 1e-6  # α(z − x) + (1 − α)(x − x_prev) with equal steps
    assert abs(xs[3] - (xs[2] + eta_d)) < 1e-6
    # Checkpoint w1 = 3: no step improved the objective -> halve, restart from the best (the start)
    # with the momentum reset: x4 = x0 + α·(η/2)·d.
    assert abs(xs[4] - (0.2 + 0.75 * eta_d / 2)) < 1e-6


def test_steady_progress_keeps_step_size() -> None:
    problem = pixel_problem([0.0], eps=1.0, flip=True)
    recorder = Recorder(step=0.01, loss="value")
    run_apgd(problem, recorder, steps=10, early_stop=False)
    xs = [float(p.flatten()[0]) for p in recorder.points]
    increments = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    assert all(abs(inc - 0.02) < 1e-6 for inc in increments), increments


def test_early_stop_returns_first_reaching_iterate_and_compacts() -> None:
    # Pixel i needs about (0.5 − v)/0.02 steps to pass the 0.5 threshold.
    problem = pixel_problem([0.45, 0.29, 0.01], eps=1.0)
    recorder = Recorder(step=0.01, loss="value")
    out = run_apgd(problem, recorder, steps=40, early_stop=True)
    assert out.iterations.tolist() == [3, 11, 25]
    for row, iteration in enumerate(out.iterations.tolist()):
        call = recorder.points[iteration]
        position = (recorder.rows[iteration] == row).nonzero().item()
        assert torch.equal(out.adv[row], call[position])
        assert float(out.adv[row].flatten()[0]) > 0.5
        assert float(recorder.points[iteration - 1][position].flatten()[0]) <= 0.5
    # Finished images leave the working batch.
    sizes = [len(r) for r in recorder.rows]
    assert sizes[:4] == [3, 3, 3, 3] and sizes[4] == 2 and sizes[12] == 1 and len(sizes) == 26


def test_without_compaction_same_results_full_batches() -> None:
    problem = pixel_problem([0.45, 0.29, 0.01], eps=1.0)
    compact, full = Recorder(step=0.01, loss="value"), Recorder(step=0.01, loss="value")
    first = run_apgd(problem, compact, steps=40)
    second = run_apgd(problem, full, steps=40, compact=False)
    assert torch.equal(first.adv, second.adv)
    assert torch.equal(first.iterations, second.iterations)
    assert all(len(rows) == 3 for rows in full.rows)
    assert sum(len(r) for r in compact.rows) < sum(len(r) for r in full.rows)


def test_without_early_stop_returns_reaching_iterate_of_best_objective() -> None:
    problem = pixel_problem([0.45], eps=0.2)
    recorder = Recorder(step=0.01, loss="value")
    out = run_apgd(problem, recorder, steps=10, early_stop=False)
    assert out.iterations.tolist() == [10]
    best = max(float(p.flatten()[0]) for p in recorder.points)
    assert abs(float(out.adv.flatten()[0]) - best) < 1e-7


class GatedLinear(torch.nn.Module):
    """Linear logits; image 1's input gradient is zero and image 2's NaN, their logits unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([[2.0, 2.0, 2.0], [-2.0, -2.0, -2.0]]))
        self.bias = torch.nn.Parameter(torch.tensor([-3.0, 1.0]))

    def forward(self, x: Tensor) -> Tensor:
        features = x.flatten(1)
        live, dead, poisoned = features[:1], features[1:2].detach(), features[2:3]
        # sqrt'(0) = inf and inf·0 = NaN: a NaN gradient, the value unchanged.
        poisoned = poisoned + 0 * torch.sqrt(poisoned - poisoned.detach())
        return torch.cat([live, dead, poisoned]) @ self.weight.T + self.bias


def test_zero_and_nan_gradients_are_reported_not_raised() -> None:
    model = GatedLinear()
    images = torch.full((3, 1, 1, 3), 0.6)
    targets = torch.tensor([[True, False]] * 3)
    result = MLAU(model, eps=0.3, steps=10)(images, targets)
    assert result.gradient_failed.tolist() == [False, True, True]
    assert result.success.tolist() == [True, False, False]
    assert torch.equal(result.adv[1:], images[1:])
    assert result.iterations[1:].tolist() == [0, 0]
    assert torch.isfinite(result.adv).all()


def test_verbose_progress_bar_runs(capsys: Any) -> None:
    problem = pixel_problem([0.0], eps=1.0)
    run_apgd(problem, Recorder(step=0.01, loss="value"), steps=3, verbose=True)
    assert "APGD" in capsys.readouterr().err
