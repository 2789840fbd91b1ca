"""The AutoPGD engine: schedule, early stop, compaction, restarts, gradient failures, and the loop
options that switch it to the authors' behaviour (the end-to-end reproduction is test_official.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mlattack.attacks import GMLA, MLAC, MLAU
from mlattack.attacks.apgd import AUTOPGD_SCHEDULE, DirectionStep, Schedule, checkpoints, run_apgd
from mlattack.attacks.apgd_attack import APGDAttack
from mlattack.attacks.base import AttackProblem
from mlattack.attacks.official import OFFICIAL_SCHEDULE, official_checkpoints


def test_checkpoints_follow_croce_hein_schedule() -> None:
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then > 1), times N rounded up.
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]


def test_official_checkpoints_shrink_the_interval_twice() -> None:
    # Intervals floor(0.22 N), each checkpoint shrinking them twice by floor(0.03 N), >= floor(0.06 N).
    assert official_checkpoints(30) == [6, 10, 12, *range(13, 31)]
    assert official_checkpoints(100) == [22, 38, 48, *range(54, 97, 6)]
    assert official_checkpoints(1) == [1]


#: The engine's checkpoint rules by the names the attacks' ``schedule=`` option uses.
SCHEDULE: dict[str, Schedule] = {"autopgd": AUTOPGD_SCHEDULE, "official": OFFICIAL_SCHEDULE}


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
        model=nn.Identity(),
    )


class Recorder:
    """A direction function with a scripted objective; records every call.

    ``loss``: ``"decreasing"`` (never improves: every checkpoint halves and restarts), ``"value"``
    (the pixel itself) or ``"value-1"`` (the pixel minus 1, negative like a −BCE objective).
    """

    def __init__(self, step: float = 0.1, loss: str = "decreasing") -> None:
        self.step = step
        self.loss = loss
        self.points: list[Tensor] = []
        self.rows: list[Tensor] = []

    def __call__(self, x: Tensor, rows: Tensor) -> DirectionStep:
        self.points.append(x.clone())
        self.rows.append(rows.clone())
        n = x.shape[0]
        if self.loss == "decreasing":
            loss = torch.full((n,), -float(len(self.points)))
        else:
            loss = x.flatten(1)[:, 0] - (1.0 if self.loss == "value-1" else 0.0)
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


def pixel_values(recorder: Recorder, row: int) -> list[float]:
    """The value of row ``row`` at every call in which it took part."""
    values = []
    for points, rows in zip(recorder.points, recorder.rows, strict=True):
        hits = (rows == row).nonzero().flatten()
        if hits.numel():
            values.append(float(points[hits[0]].flatten()[0]))
    return values


@pytest.mark.parametrize(("schedule", "start"), [("autopgd", 0.28), ("official", 0.36)])
def test_image_reaching_at_a_restart_checkpoint_is_returned_as_reached(
    schedule: str, start: float
) -> None:
    # Steps of 2ε·0.1 = 0.08: 0.28 passes 0.5 at step 3, 0.36 at step 2, both checkpoints for N = 10
    # (autopgd: 3, 5, ...; official: 2, 3, ...). The objective never improves, so each checkpoint
    # restarts from the start: the restart must not replace the reaching iterate (issue 8, item 1).
    steps = 10
    problem = pixel_problem([start], eps=0.4)
    recorder = Recorder(step=0.1)
    out = run_apgd(problem, recorder, steps=steps, schedule=SCHEDULE[schedule])
    reached_at = next(i for i, v in enumerate(pixel_values(recorder, 0)) if v > 0.5)
    assert reached_at in SCHEDULE[schedule].checkpoints(steps)
    assert out.iterations.tolist() == [reached_at]
    assert float(out.adv.flatten()[0]) > 0.5
    assert float(out.adv.flatten()[0]) == pixel_values(recorder, 0)[reached_at]


class Oscillating:
    """A direction function whose objective oscillates (so checkpoints restart often), with a
    constant upward direction of a different size per row; the logit is the pixel."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: Tensor, rows: Tensor) -> DirectionStep:
        self.calls += 1
        scale = (0.004 * (1 + rows % 10)).view(-1, 1, 1, 1).to(x.dtype)
        return DirectionStep(
            loss=torch.sin(1.7 * self.calls + 2.3 * rows.double()).to(x.dtype),
            direction=scale.expand_as(x).clone(),
            logits=x.flatten(1)[:, :1].clone(),
            failed=torch.zeros(x.shape[0], dtype=torch.bool),
        )


@pytest.mark.parametrize(
    ("schedule", "reset_momentum", "compact"),
    [("autopgd", True, True), ("official", False, True), ("official", False, False)],
)
def test_every_early_stopped_image_is_on_the_desired_side(
    schedule: str, reset_momentum: bool, compact: bool
) -> None:
    # Many one-pixel images crossing the threshold at different steps, checkpoints restarting
    # often: whatever the step, the returned image must pass a fresh check (logit = pixel).
    steps = 20
    problem = pixel_problem(torch.linspace(0.30, 0.49, 40).tolist(), eps=0.3)
    out = run_apgd(
        problem,
        Oscillating(),
        steps=steps,
        schedule=SCHEDULE[schedule],
        reset_momentum=reset_momentum,
        compact=compact,
    )
    stopped = out.iterations < steps
    assert problem.flip_set_reached(out.adv.flatten(1)[:, :1])[stopped].all()
    # The stops fall both on checkpoints and between them.
    at_checkpoint = torch.isin(out.iterations, torch.tensor(SCHEDULE[schedule].checkpoints(steps)))
    assert (stopped & at_checkpoint).any() and (stopped & ~at_checkpoint).any()


def test_early_stopped_images_are_successes_on_a_model(
    linear_model: nn.Module, make_case: Any
) -> None:
    # The same invariant through the public API: any image stopped early is a success there.
    images, targets = make_case(linear_model, n=4)
    images = images.repeat(8, 1, 1, 1)
    targets = targets.repeat(8, 1)
    eps = torch.linspace(0.01, 0.2, images.shape[0]).double()
    for attack in (MLAU(linear_model, steps=10), MLAU(linear_model, steps=10, preset="official")):
        result = attack(images, targets, eps=eps)
        stopped = (result.iterations < 10) & ~result.gradient_failed
        assert stopped.any()
        assert result.success[stopped].all()


def test_fixed_step_size() -> None:
    problem = pixel_problem([0.2], eps=0.4)
    recorder = Recorder(step=1.0)
    run_apgd(problem, recorder, steps=2, early_stop=False, step_size=0.05)
    xs = pixel_values(recorder, 0)
    assert abs(xs[1] - 0.25) < 1e-7  # 0.05, not 2ε = 0.8


@pytest.mark.parametrize(
    ("step_size", "factor"), [("0.25eps", 0.25), ("1eps", 1.0), (".5eps", 0.5)]
)
def test_a_relative_step_is_that_multiple_of_each_images_eps(step_size: str, factor: float) -> None:
    problem = pixel_problem([0.2, 0.3], eps=0.4)
    problem.eps[1] = 0.2  # per-image budgets: each image's step follows its own ε
    recorder = Recorder(step=1.0)
    run_apgd(problem, recorder, steps=2, early_stop=False, step_size=step_size)
    for row, start, eps in ((0, 0.2, 0.4), (1, 0.3, 0.2)):
        assert abs(pixel_values(recorder, row)[1] - (start + min(factor * eps, eps))) < 1e-6


def test_momentum_kept_on_restart() -> None:
    # As test_momentum_steps_halving_and_restart_from_best, but the restart keeps the momentum
    # term: x4 = x0 + α(η/2)d + (1 − α)(x0 − x2), x2 being the iterate before the abandoned x3.
    problem = pixel_problem([0.2], eps=0.4)
    recorder = Recorder(step=0.1)
    run_apgd(problem, recorder, steps=10, early_stop=False, reset_momentum=False)
    xs = pixel_values(recorder, 0)
    eta_d = 2 * 0.4 * 0.1
    expected = 0.2 + 0.75 * eta_d / 2 + 0.25 * (0.2 - xs[2])
    assert abs(xs[4] - expected) < 1e-6


def test_official_schedule_compares_the_first_step_with_zero() -> None:
    # A steadily improving negative objective: AutoPGD never halves the step. The authors' loop
    # compares step 1 with 0 (so it does not count as improving), which makes the first checkpoint
    # (N = 10: after step 2) fail their oscillation test "improving <= 0.75 · 2".
    increments = {}
    for schedule in ("autopgd", "official"):
        problem = pixel_problem([0.0], eps=1.0)
        recorder = Recorder(step=0.01, loss="value-1")
        run_apgd(problem, recorder, steps=10, early_stop=False, schedule=SCHEDULE[schedule])
        xs = pixel_values(recorder, 0)
        increments[schedule] = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    assert all(abs(inc - 0.02) < 1e-6 for inc in increments["autopgd"])
    official = increments["official"]
    assert all(abs(inc - 0.02) < 1e-6 for inc in official[:2])
    assert all(inc < 0.02 - 1e-6 for inc in official[2:])


def test_failures_returned_clean() -> None:
    # eps 0.2 from 0.2: never above 0.5. "best" returns the highest point, "clean" the image.
    problem = pixel_problem([0.2], eps=0.2)
    best = run_apgd(problem, Recorder(step=0.1, loss="value"), steps=10, failures="best")
    clean = run_apgd(problem, Recorder(step=0.1, loss="value"), steps=10, failures="clean")
    assert float(best.adv.flatten()[0]) > 0.35
    assert torch.equal(clean.adv, problem.images)
    assert clean.iterations.tolist() == [10]
    no_stop = run_apgd(
        problem, Recorder(step=0.1, loss="value"), steps=10, failures="clean", early_stop=False
    )
    assert torch.equal(no_stop.adv, problem.images)


def test_all_labels_objective_chooses_the_best_point() -> None:
    # The attack's own objective never improves, so its best point is the start; over all labels
    # (−BCE(pixel, desired = 1), rising with the pixel) the best point is the highest one.
    problem = pixel_problem([0.2], eps=0.1)
    own = run_apgd(problem, Recorder(step=0.1), steps=10)
    every_label = run_apgd(problem, Recorder(step=0.1), steps=10, objective="all-labels")
    assert torch.equal(own.adv, problem.images)
    assert float(every_label.adv.flatten()[0]) > 0.25


class BatchSizes(nn.Module):
    """Wraps a model and records the batch size of every forward pass."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.sizes.append(x.shape[0])
        return self.inner(x)


def test_batch_stop_keeps_finished_images_in_the_batch(
    linear_model: nn.Module, make_case: Any
) -> None:
    images, targets = make_case(linear_model, n=4)
    eps = torch.tensor([0.02, 0.05, 0.1, 0.3], dtype=torch.float64)
    results = {}
    for stop in ("image", "batch"):
        model = BatchSizes(linear_model)
        results[stop] = MLAU(model, steps=30, stop=stop)(images, targets, eps=eps)
        # Forward passes: the clean one, the loop's, the final one.
        results[stop + " sizes"] = model.sizes[1:-1]
    assert torch.equal(results["image"].adv, results["batch"].adv)
    assert torch.equal(results["image"].iterations, results["batch"].iterations)
    assert set(results["batch sizes"]) == {4}
    assert min(results["image sizes"]) < 4


def test_restarts_reattack_only_unsolved_images() -> None:
    # The direction pushes each pixel away from 0.45: from the clean 0.40 it goes down, never past
    # 0.5; from a random start above 0.45 it goes up to 0.6 > 0.5. The image at 0.47 succeeds at
    # once and must not be re-attacked.
    values = [0.40, 0.401, 0.402, 0.403, 0.47]
    problem = replace(pixel_problem(values, eps=0.2), seed=3)

    def away_from_middle(x: Tensor, rows: Tensor) -> DirectionStep:
        calls.append(rows.clone())
        pixel = x.flatten(1)[:, :1]
        return DirectionStep(
            loss=pixel[:, 0].clone(),
            direction=torch.where(pixel > 0.45, 1.0, -1.0).view_as(x),
            logits=pixel.clone(),
            failed=torch.zeros(x.shape[0], dtype=torch.bool),
        )

    calls: list[Tensor] = []
    single = run_apgd(problem, away_from_middle, steps=10)
    assert problem.flip_set_reached(single.adv.flatten(1)[:, :1]).tolist() == [
        False,
        False,
        False,
        False,
        True,
    ]
    calls = []
    out = run_apgd(problem, away_from_middle, steps=10, restarts=6)
    reached = problem.flip_set_reached(out.adv.flatten(1)[:, :1])
    assert reached[4] and reached[:4].sum() >= 2  # some restarts succeed (seeded starts)
    assert not any(bool((rows == 4).any()) for rows in calls[12:])  # after the first run
    # Steps add up over the runs: a restart success needs the full first run plus its own steps.
    assert (out.iterations[:4][reached[:4]] > 10).all()
    # A failure keeps the best objective found over all runs (the start 0.40 here, by value).
    for row in (~reached).nonzero().flatten().tolist():
        assert float(out.adv[row].flatten()[0]) == pytest.approx(values[row])
    again = run_apgd(problem, away_from_middle, steps=10, restarts=6)
    assert torch.equal(out.adv, again.adv)  # seeded


def test_restarts_on_an_attack(linear_model: nn.Module, make_case: Any) -> None:
    images, targets = make_case(linear_model, n=4)
    attack = MLAU(linear_model, eps=0.02, steps=5, restarts=2, seed=0)
    first, second = attack(images, targets), attack(images, targets)
    assert torch.equal(first.adv, second.adv)
    plain = MLAU(linear_model, eps=0.02, steps=5)(images, targets)
    # Only unsolved images run again, so solved ones keep their result and step count.
    assert torch.equal(first.adv[plain.success], plain.adv[plain.success])
    assert (first.iterations[~plain.success] > 5).all()
    assert (first.success | ~plain.success).all()


def test_preset_sets_every_option_and_explicit_options_go_on_top(
    linear_model: nn.Module,
) -> None:
    plain = MLAC(linear_model)
    official = MLAC(linear_model, preset="official")
    assert (plain.step_size, plain.schedule, plain.reset_momentum, plain.failures) == (
        "2eps",
        "autopgd",
        True,
        "best",
    )
    assert (plain.objective, plain.stop, plain.arithmetic) == ("attack", "image", "fast")
    assert (official.step_size, official.schedule, official.reset_momentum) == (
        0.012,
        "official",
        False,
    )
    assert (official.failures, official.objective, official.stop, official.arithmetic) == (
        "clean",
        "all-labels",
        "batch",
        "official",
    )
    mixed = MLAC(linear_model, preset="official", step_size=0.1, failures="best")
    assert (mixed.step_size, mixed.failures, mixed.schedule) == (0.1, "best", "official")
    assert MLAC(linear_model, preset="official", step_size="2eps").step_size == "2eps"
    assert GMLA(linear_model).step_size == "1eps" and "step_size" not in repr(GMLA(linear_model))
    assert "step_size='2eps'" in repr(GMLA(linear_model, step_size="2.0eps"))
    assert "preset='official'" in repr(mixed) and "step_size=0.1" in repr(mixed)
    assert "schedule" not in repr(mixed)
    assert GMLA(linear_model, preset="official").tau_rule == "official"
    assert GMLA(linear_model).tau_rule == "per-image"
    assert GMLA(linear_model, preset="official", tau_rule="per-image").tau_rule == "per-image"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"preset": "authors"}, ValueError, "preset must be one of 'official'"),
        ({"preset": 1}, ValueError, "preset must be one of"),
        ({"schedule": "croce"}, ValueError, "schedule must be one of 'autopgd', 'official'"),
        ({"failures": "worst"}, ValueError, "failures must be one of 'best', 'clean'"),
        ({"objective": "targets"}, ValueError, "objective must be one of 'attack', 'all-labels'"),
        ({"stop": "never"}, ValueError, "stop must be one of 'image', 'batch'"),
        ({"arithmetic": "exact"}, ValueError, "arithmetic must be one of 'fast', 'official'"),
        ({"step_size": 0}, ValueError, "step_size must be"),
        ({"step_size": -0.1}, ValueError, "step_size must be"),
        ({"step_size": float("nan")}, ValueError, "step_size must be"),
        ({"step_size": "eps"}, ValueError, "step_size must be a number > 0 or a multiple"),
        ({"step_size": "0eps"}, ValueError, "'<k>eps' with k > 0"),
        ({"step_size": "-1eps"}, ValueError, "'<k>eps' with k > 0"),
        ({"step_size": "1e999eps"}, ValueError, "'<k>eps' with k > 0"),
        ({"step_size": "nan eps"}, ValueError, "'<k>eps' with k > 0"),
        ({"step_size": True}, TypeError, "step_size must be a number"),
        ({"reset_momentum": "false"}, TypeError, "reset_momentum must be True or False"),
        ({"restarts": 0}, ValueError, "restarts must be a positive integer"),
        ({"restarts": -2}, ValueError, "restarts must be a positive integer"),
        ({"restarts": 1.5}, ValueError, "restarts must be a positive integer"),
        ({"restarts": True}, ValueError, "restarts must be a positive integer"),
        ({"preset": "official", "schedule": "upstream"}, ValueError, "schedule must be one of"),
    ],
)
def test_bad_loop_options_are_refused(
    linear_model: nn.Module, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        MLAU(linear_model, **options)


def test_numpy_scalars_are_accepted(linear_model: nn.Module) -> None:
    attack = MLAU(linear_model, step_size=np.float32(0.25), restarts=np.int64(2))
    assert attack.step_size == 0.25 and attack.restarts == 2


def test_tau_rule_and_official_arithmetic_need_an_authors_attack(linear_model: nn.Module) -> None:
    with pytest.raises(ValueError, match="tau_rule must be one of 'per-image', 'official'"):
        GMLA(linear_model, tau_rule="batch")

    class Custom(APGDAttack):
        def _direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
            raise NotImplementedError

    with pytest.raises(ValueError, match="arithmetic='official' is not available for"):
        Custom(linear_model, preset="official")
    assert Custom(linear_model, preset="official", arithmetic="fast").schedule == "official"


def test_run_apgd_refuses_bad_options() -> None:
    problem = pixel_problem([0.2], eps=0.1)
    with pytest.raises(ValueError, match="restarts must be an integer >= 0"):
        run_apgd(problem, Recorder(), steps=3, restarts=-1)
    with pytest.raises(TypeError, match="schedule must be a Schedule"):
        run_apgd(problem, Recorder(), steps=3, schedule="fast")  # type: ignore[arg-type]
