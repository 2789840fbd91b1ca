"""The AutoPGD engine shared by MLA-U, MLA-C and GMLA (Croce & Hein, ICML 2020, Algorithm 1).

Schedule, per image:

- initial step size ``η = 2ε``; the first step is a plain step
  ``x¹ = P(x⁰ + η d⁰)``, later ones use momentum ``α = 0.75``:
  ``z = P(xᵏ + η dᵏ)``, ``xᵏ⁺¹ = P(xᵏ + α(z − xᵏ) + (1 − α)(xᵏ − xᵏ⁻¹))``, with ``P`` the projection
  onto the ε-ball and ``[0, 1]`` and ``d`` the ascent direction in L∞ geometry given by the attack;
- checkpoints ``w_j = ⌈p_j N⌉`` with ``p₀ = 0``, ``p₁ = 0.22``,
  ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``;
- at a checkpoint the step is halved and the iterate restarts from the best point found so far when
  (1) fewer than ``ρ = 0.75`` of the steps since the last checkpoint increased the objective, or
  (2) the step size was not reduced at the last checkpoint and the best objective did not improve
  since then. On a restart the momentum term is reset (the previous iterate is set to the best point).

Per-image bookkeeping: with ``early_stop`` an image stops at the first iterate whose flip set is
entirely on its desired side, and that iterate is returned; without it, the returned iterate is the
best one by (flip set reached, objective). An image whose gradient is zero or not finite stops with
``gradient_failed`` set. Finished images leave the working batch, so no forward or backward pass is
spent on them.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .base import Attack, AttackProblem, LoopOutput

__all__ = ["APGDAttack", "DirectionStep", "checkpoints", "run_apgd"]

MOMENTUM = 0.75
RHO = 0.75


class DirectionStep(NamedTuple):
    """What an attack's direction function returns for the ``n`` working images."""

    loss: Tensor  # float [n], objective being maximised (detached)
    direction: Tensor  # float [n, ...], ascent direction scaled to unit L∞ norm (detached)
    logits: Tensor  # float [n, C], logits at the evaluated point (detached), for the success check
    failed: Tensor  # bool [n], zero or non-finite gradient


DirectionFn = Callable[[Tensor, Tensor], DirectionStep]
"""``(x, rows) -> DirectionStep``: ``x`` float ``[n, ...]`` the working iterates, ``rows`` int64
``[n]`` their row indices in the :class:`AttackProblem`. One forward pass per call."""


def checkpoints(steps: int) -> list[int]:
    """The checkpoint iterations ``w_1 < w_2 < ... <= steps`` of the AutoPGD schedule (``w_0 = 0``)."""
    previous, current = 0.0, 0.22
    result: list[int] = []
    while current <= 1.0:
        # The small tolerance keeps e.g. 0.22 * 100 = 22.000000000000004 at 22.
        iteration = math.ceil(current * steps - 1e-9)
        if iteration > (result[-1] if result else 0):
            result.append(iteration)
        previous, current = current, current + max(current - previous - 0.03, 0.06)
    return [w for w in result if w <= steps]


def _broadcast(per_image: Tensor, like: Tensor) -> Tensor:
    return per_image.view(-1, *([1] * (like.dim() - 1)))


def run_apgd(
    problem: AttackProblem,
    direction_fn: DirectionFn,
    *,
    steps: int,
    early_stop: bool = True,
    random_start: bool = False,
    compact: bool = True,
    verbose: bool = False,
    description: str = "APGD",
) -> LoopOutput:
    """Run the AutoPGD loop (see the module docstring) on every row of ``problem``.

    Args:
        problem: the attacked images and their flip sets (from :class:`~mlattack.attacks.base.Attack`).
        direction_fn: the attack's objective and ascent direction, see :data:`DirectionFn`.
        steps: the iteration budget ``N`` (``N + 1`` evaluations at most: the start and ``N`` steps).
        early_stop: stop an image at the first iterate that reaches its flip set.
        random_start: start from a random point of the ε-ball instead of the clean image.
        compact: drop finished images from the working batch. Turning it off keeps computing on them
            (their results are frozen all the same); it exists to measure what compaction saves.
        verbose: tqdm progress bar over iterations.
        description: label of the progress bar.

    Returns:
        the returned iterate, iterations taken and the gradient-failure flag of every row.
    """
    images = problem.images
    batch = images.shape[0]
    device = images.device
    out_adv = images.clone()
    out_iterations = torch.zeros(batch, dtype=torch.int64, device=device)
    out_failed = torch.zeros(batch, dtype=torch.bool, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    rows = torch.arange(batch, device=device)
    x = problem.random_start() if random_start else images.clone()
    evaluation = direction_fn(x, rows)
    direction = torch.nan_to_num(evaluation.direction)
    loss = evaluation.loss
    # Candidate to return: ranked by (flip set reached, objective).
    keep_x, keep_reached = x.clone(), problem.flip_set_reached(evaluation.logits, rows)
    keep_loss = torch.where(torch.isfinite(loss), loss, torch.full_like(loss, -math.inf))
    best_x, best_loss, best_direction = x.clone(), keep_loss.clone(), direction.clone()
    step_size = 2 * problem.eps.to(images.dtype)
    previous_x = x.clone()
    improving_steps = torch.zeros(batch, dtype=torch.int64, device=device)
    best_loss_at_check = best_loss.clone()
    reduced_at_check = torch.zeros(batch, dtype=torch.bool, device=device)
    checks = set(checkpoints(steps))
    last_check = 0

    def finish(local: Tensor, iteration: int) -> None:
        """Write the returned iterate of the working rows ``local`` (first write wins)."""
        local = local & ~finished[rows]
        if local.any():
            target = rows[local]
            out_adv[target] = keep_x[local]
            out_iterations[target] = iteration
            out_failed[target] = evaluation.failed[local]
            finished[target] = True

    progress = tqdm(total=steps, desc=description, disable=not verbose, leave=False)
    iteration = 0
    while True:
        stop_now = evaluation.failed | (
            keep_reached if early_stop else torch.zeros_like(keep_reached)
        )
        finish(stop_now | torch.full_like(stop_now, iteration == steps), iteration)
        if bool(finished.all()):
            break
        if compact:
            working = ~finished[rows]
            if not bool(working.all()):
                rows = rows[working]
                x, previous_x, direction = x[working], previous_x[working], direction[working]
                loss, step_size, improving_steps = (
                    loss[working],
                    step_size[working],
                    improving_steps[working],
                )
                keep_x, keep_reached, keep_loss = (
                    keep_x[working],
                    keep_reached[working],
                    keep_loss[working],
                )
                best_x, best_loss, best_direction = (
                    best_x[working],
                    best_loss[working],
                    best_direction[working],
                )
                best_loss_at_check = best_loss_at_check[working]
                reduced_at_check = reduced_at_check[working]

        # One AutoPGD step (Croce & Hein 2020, eq. 2-3): plain on the first step, momentum later.
        alpha = 1.0 if iteration == 0 else MOMENTUM
        step = _broadcast(step_size, x)
        z = problem.project(x + step * direction, rows)
        candidate = problem.project(x + alpha * (z - x) + (1 - alpha) * (x - previous_x), rows)
        previous_x, x = x, candidate
        iteration += 1
        progress.update(1)

        evaluation = direction_fn(x, rows)
        new_loss = evaluation.loss
        finite = torch.isfinite(new_loss)
        improving_steps += (finite & (new_loss > loss)).long()
        loss = new_loss
        direction = torch.nan_to_num(evaluation.direction)

        improved = finite & (loss > best_loss)
        best_x = torch.where(_broadcast(improved, x), x, best_x)
        best_direction = torch.where(_broadcast(improved, x), direction, best_direction)
        best_loss = torch.where(improved, loss, best_loss)

        reached = problem.flip_set_reached(evaluation.logits, rows)
        better = finite & (
            (reached & ~keep_reached) | ((reached == keep_reached) & (loss > keep_loss))
        )
        keep_x = torch.where(_broadcast(better, x), x, keep_x)
        keep_loss = torch.where(better, loss, keep_loss)
        keep_reached = keep_reached | (better & reached)

        if iteration in checks:
            # Conditions (1) and (2) of Croce & Hein 2020, Section 3.2.
            too_few_improving = improving_steps < RHO * (iteration - last_check)
            stalled = ~reduced_at_check & (best_loss <= best_loss_at_check)
            reduce = too_few_improving | stalled
            step_size = torch.where(reduce, step_size / 2, step_size)
            restart = _broadcast(reduce, x)
            x = torch.where(restart, best_x, x)
            previous_x = torch.where(restart, best_x, previous_x)
            direction = torch.where(restart, best_direction, direction)
            loss = torch.where(reduce, best_loss, loss)
            reduced_at_check = reduce
            best_loss_at_check = best_loss.clone()
            improving_steps = torch.zeros_like(improving_steps)
            last_check = iteration
        if verbose:
            progress.set_postfix(working=int(rows.numel()), refresh=False)
    progress.close()
    return LoopOutput(adv=out_adv, iterations=out_iterations, gradient_failed=out_failed)


class APGDAttack(Attack):
    """An attack whose loop is :func:`run_apgd`; subclasses give only :meth:`_direction`."""

    default_steps = 100
    #: Drop finished images from the working batch (off only to measure what that saves).
    _compact_finished: bool = True

    @abc.abstractmethod
    def _direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
        """Objective, ascent direction and logits at ``x`` for rows ``rows``, from one forward."""

    def _attack(self, problem: AttackProblem) -> LoopOutput:
        return run_apgd(
            problem,
            lambda x, rows: self._direction(problem, x, rows),
            steps=self.steps,
            early_stop=self.early_stop,
            random_start=self.random_start,
            compact=self._compact_finished,
            verbose=self.verbose,
            description=self.name,
        )
