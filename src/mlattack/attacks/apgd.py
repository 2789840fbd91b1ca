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
    return result


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

    # Iterates are never written in place, so the clean images can serve as the start.
    x = problem.random_start() if random_start else images
    rows = torch.arange(batch, device=device)
    evaluation = direction_fn(x, rows)
    loss = _finite_or_minus_inf(evaluation.loss)
    direction = _clean_direction(evaluation)
    reached = problem.flip_set_reached(evaluation.logits, rows)
    lower, upper = problem.bounds()
    # Per-image state of the working rows; compaction indexes every entry alike.
    state: dict[str, Tensor] = {
        "rows": rows,
        "lower": lower,
        "upper": upper,
        "x": x,
        "previous_x": x,
        "direction": direction,
        "loss": loss,
        "step_size": 2 * problem.eps.to(images.dtype),
        "best_x": x,
        "best_direction": direction,
        "best_loss": loss,
        "improving_steps": torch.zeros(batch, dtype=torch.int64, device=device),
        "best_loss_at_check": loss,
        "reduced_at_check": torch.zeros(batch, dtype=torch.bool, device=device),
    }
    if not early_stop:
        # The iterate to return, ranked by (flip set reached, objective). With early stop it is
        # the reaching iterate itself, or else the best-objective one, so no extra copy is kept.
        state.update(keep_x=x, keep_loss=loss, keep_reached=reached)
    checks = set(checkpoints(steps))
    last_check = 0

    progress = tqdm(total=steps, desc=description, disable=not verbose, leave=False)
    iteration = 0
    while True:
        # Finish the rows that stop here; the first write wins (rows stay when not compacting).
        stop = evaluation.failed | (iteration == steps)
        if early_stop:
            stop = stop | reached
        stop = stop & ~finished[state["rows"]]
        if bool(stop.any()):
            if early_stop:
                returned = torch.where(_broadcast(reached, state["x"]), state["x"], state["best_x"])
            else:
                returned = state["keep_x"]
            target = state["rows"][stop]
            out_adv[target] = returned[stop]
            out_iterations[target] = iteration
            out_failed[target] = evaluation.failed[stop]
            finished[target] = True
            if bool(finished.all()):
                break
            if compact:
                working = ~finished[state["rows"]]
                state = {key: value[working] for key, value in state.items()}

        # One AutoPGD step (Croce & Hein 2020, eq. 2-3): plain on the first step, momentum later.
        x, previous_x, rows = state["x"], state["previous_x"], state["rows"]
        lower, upper = state["lower"], state["upper"]
        step = _broadcast(state["step_size"], x)
        z = torch.clamp(torch.addcmul(x, step, state["direction"]), lower, upper)
        if iteration == 0:
            x_new = z
        else:
            momentum = torch.lerp(x, z, MOMENTUM).add_(x - previous_x, alpha=1 - MOMENTUM)
            x_new = torch.clamp(momentum, lower, upper)
        iteration += 1
        progress.update(1)

        evaluation = direction_fn(x_new, rows)
        loss = _finite_or_minus_inf(evaluation.loss)
        direction = _clean_direction(evaluation)
        reached = problem.flip_set_reached(evaluation.logits, rows)
        state["improving_steps"] = state["improving_steps"] + (loss > state["loss"]).long()
        improved = loss > state["best_loss"]
        state.update(
            previous_x=x,
            x=x_new,
            direction=direction,
            loss=loss,
            best_x=_select(improved, x_new, state["best_x"]),
            best_direction=_select(improved, direction, state["best_direction"]),
            best_loss=torch.maximum(loss, state["best_loss"]),
        )
        if not early_stop:
            keep_reached = state["keep_reached"]
            better = (reached & ~keep_reached) | (
                (reached == keep_reached) & (loss > state["keep_loss"])
            )
            state.update(
                keep_x=_select(better, x_new, state["keep_x"]),
                keep_loss=torch.where(better, loss, state["keep_loss"]),
                keep_reached=keep_reached | reached,
            )

        if iteration in checks:
            # Conditions (1) and (2) of Croce & Hein 2020, Section 3.2.
            too_few_improving = state["improving_steps"] < RHO * (iteration - last_check)
            stalled = ~state["reduced_at_check"] & (
                state["best_loss"] <= state["best_loss_at_check"]
            )
            reduce = too_few_improving | stalled
            restart = _broadcast(reduce, x_new)
            best_x = state["best_x"]
            state.update(
                step_size=torch.where(reduce, state["step_size"] / 2, state["step_size"]),
                x=torch.where(restart, best_x, state["x"]),
                previous_x=torch.where(restart, best_x, state["previous_x"]),
                direction=torch.where(restart, state["best_direction"], state["direction"]),
                loss=torch.where(reduce, state["best_loss"], state["loss"]),
                reduced_at_check=reduce,
                best_loss_at_check=state["best_loss"],
                improving_steps=torch.zeros_like(state["improving_steps"]),
            )
            last_check = iteration
        if verbose:
            progress.set_postfix(working=int(state["rows"].numel()), refresh=False)
    progress.close()
    return LoopOutput(adv=out_adv, iterations=out_iterations, gradient_failed=out_failed)


def _select(rows: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """``new`` on the rows where ``rows`` is True, ``old`` elsewhere (no copy when all agree).

    The state tensors are never written in place, so sharing one between entries is safe.
    """
    if bool(rows.all()):
        return new
    if not bool(rows.any()):
        return old
    return torch.where(_broadcast(rows, new), new, old)


def _finite_or_minus_inf(loss: Tensor) -> Tensor:
    """Non-finite objectives never count as progress."""
    return torch.where(torch.isfinite(loss), loss, torch.full_like(loss, -math.inf))


def _clean_direction(evaluation: DirectionStep) -> Tensor:
    """The direction with NaNs zeroed (failed rows stop anyway; without compaction they keep going)."""
    if bool(evaluation.failed.any()):
        return torch.nan_to_num(evaluation.direction, nan=0.0, posinf=0.0, neginf=0.0)
    return evaluation.direction


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
