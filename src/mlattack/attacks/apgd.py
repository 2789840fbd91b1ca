"""The AutoPGD engine shared by MLA-U, MLA-C and GMLA (Croce & Hein, ICML 2020, Algorithm 1).

The engine knows one algorithm; its variable parts are objects: a :class:`Schedule` (the
checkpoint rules) and an :class:`Update` (the momentum step). The attack classes built on it are in
:mod:`mlattack.attacks.apgd_attack`.

Schedule, per image (the defaults; each point marked (*) has an option that switches it to the
behaviour of the authors' code, which lives in :mod:`mlattack.attacks.official`, see
``docs/semantics.md``):

- initial step size ``η = 2ε`` (*); the first step is a plain step
  ``x¹ = P(x⁰ + η d⁰)``, later ones use momentum ``α = 0.75``:
  ``z = P(xᵏ + η dᵏ)``, ``xᵏ⁺¹ = P(xᵏ + α(z − xᵏ) + (1 − α)(xᵏ − xᵏ⁻¹))``, with ``P`` the projection
  onto the ε-ball and ``[0, 1]`` and ``d`` the ascent direction in L∞ geometry given by the attack;
- checkpoints ``w_j = ⌈p_j N⌉`` with ``p₀ = 0``, ``p₁ = 0.22``,
  ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)`` (*);
- at a checkpoint the step is halved and the iterate restarts from the best point found so far when
  (1) fewer than ``ρ = 0.75`` of the steps since the last checkpoint increased the objective, or
  (2) the step size was not reduced at the last checkpoint and the best objective did not improve
  since then (*). On a restart the momentum term is reset (the previous iterate is set to the best
  point) (*).

Per-image bookkeeping: with ``early_stop`` an image stops at the first iterate whose flip set is
entirely on its desired side, and that iterate is returned; without it, the returned iterate is the
best one by (flip set reached, objective). An image that never reaches its flip set is returned as
its best-objective iterate (*). An image whose gradient is zero or not finite stops with
``gradient_failed`` set. Finished images leave the working batch (*), so no forward or backward
pass is spent on them. ``restarts=k`` runs the loop up to ``k`` more times from seeded random
starts on the images that have not reached their flip set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mlattack._validation import check_bool, check_int, check_number
from mlattack.losses import per_label_bce

from .base import AttackProblem, LoopOutput, _check_choice

__all__ = [
    "AUTOPGD_SCHEDULE",
    "AUTOPGD_UPDATE",
    "DirectionFn",
    "DirectionStep",
    "LoopSettings",
    "Schedule",
    "Update",
    "checkpoints",
    "run_apgd",
]

MOMENTUM = 0.75
RHO = 0.75

Failures = Literal["best", "clean"]
Objective = Literal["attack", "all-labels"]

FAILURES: tuple[Failures, ...] = ("best", "clean")
OBJECTIVES: tuple[Objective, ...] = ("attack", "all-labels")
#: ``step_size=`` value meaning AutoPGD's rule, twice each image's ε.
RELATIVE_STEP = "2eps"
#: A step relative to each image's ε: a positive decimal number followed by ``eps``.
_RELATIVE = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?eps")


class DirectionStep(NamedTuple):
    """What an attack's direction function returns for the ``n`` working images."""

    loss: Tensor  # float [n], objective being maximised (detached)
    direction: Tensor  # float [n, ...], ascent direction scaled to unit L∞ norm (detached)
    logits: Tensor  # float [n, C], logits at the evaluated point (detached), for the success check
    failed: Tensor  # bool [n], zero or non-finite gradient


DirectionFn = Callable[[Tensor, Tensor], DirectionStep]
"""``(x, rows) -> DirectionStep``: ``x`` float ``[n, ...]`` the working iterates, ``rows`` int64
``[n]`` their row indices in the :class:`AttackProblem`. One forward pass per call."""


def check_step_size(value: object) -> float | str:
    """A finite step ``> 0`` as a float, or a step relative to each image's ε, ``"<k>eps"`` with
    ``k > 0`` (``"2eps"``: AutoPGD's rule), as its canonical string (``"1.0eps"`` → ``"1eps"``)."""
    if isinstance(value, str):
        factor = relative_step_factor(value) if _RELATIVE.fullmatch(value) else 0.0
        if not 0 < factor < math.inf:
            raise ValueError(
                "step_size must be a number > 0 or a multiple of each image's ε written "
                f"'<k>eps' with k > 0 (e.g. {RELATIVE_STEP!r}), got {value!r}"
            )
        return f"{factor:g}eps"
    return check_number(value, "step_size", minimum=0.0, exclusive_minimum=True)


def relative_step_factor(step_size: str) -> float:
    """``k`` of a checked relative step ``"<k>eps"``."""
    return float(step_size.removesuffix("eps"))


def checkpoints(steps: int) -> list[int]:
    """Croce & Hein's checkpoint iterations ``w_j = ⌈p_j N⌉`` (module docstring), ``w_0 = 0``."""
    check_int(steps, "steps", minimum=1)
    result: list[int] = []
    previous, current = 0.0, 0.22
    while current <= 1.0:
        # The small tolerance keeps e.g. 0.22 * 100 = 22.000000000000004 at 22.
        iteration = math.ceil(current * steps - 1e-9)
        if iteration > (result[-1] if result else 0):
            result.append(iteration)
        previous, current = current, current + max(current - previous - 0.03, 0.06)
    return result


class Schedule:
    """AutoPGD's checkpoint rules (Croce & Hein 2020, Section 3.2); subclasses change single rules
    (:class:`~mlattack.attacks.official.OfficialSchedule`)."""

    name: ClassVar[str] = "autopgd"
    #: Whether the first checkpoint behaves as if the step had just been reduced (no stall test).
    starts_reduced: ClassVar[bool] = False

    def checkpoints(self, steps: int) -> list[int]:
        """The checkpoint iterations ``w_1 < w_2 < ... <= steps``."""
        return checkpoints(steps)

    def too_few_improving(self, improving_steps: Tensor, window: int) -> Tensor:
        """Condition (1): fewer than ``ρ`` of the ``window`` steps since the last checkpoint
        increased the objective."""
        return improving_steps < RHO * window

    def first_reference(self, loss: Tensor) -> Tensor:
        """The objective the first step is compared with, from the start's objective ``loss``."""
        return loss

    def reference_after_check(self, reduced: Tensor, best_loss: Tensor, loss: Tensor) -> Tensor:
        """The objective the next step is compared with after a checkpoint: that of the point
        restarted from where the step was reduced."""
        return torch.where(reduced, best_loss, loss)

    def __repr__(self) -> str:
        return repr(self.name)


class Update:
    """AutoPGD's iterate update: a plain step at first, with momentum later (Croce & Hein 2020,
    eq. 2-3); subclasses evaluate it otherwise (:class:`~mlattack.attacks.official.OfficialUpdate`)."""

    name: ClassVar[str] = "fast"

    def __call__(
        self,
        x: Tensor,
        previous_x: Tensor,
        direction: Tensor,
        step: Tensor,
        bounds: tuple[Tensor, Tensor],
        *,
        first: bool,
    ) -> Tensor:
        """The next iterate from ``x`` along ``direction`` (``step`` broadcast per image), inside
        ``bounds = (lower, upper)``."""
        lower, upper = bounds
        z = torch.clamp(self.gradient_step(x, step, direction), lower, upper)
        return torch.clamp(self.momentum(x, previous_x, z, first=first), lower, upper)

    def gradient_step(self, x: Tensor, step: Tensor, direction: Tensor) -> Tensor:
        """``x + step * direction``, before clamping."""
        return torch.addcmul(x, step, direction)

    def momentum(self, x: Tensor, previous_x: Tensor, z: Tensor, *, first: bool) -> Tensor:
        """The iterate from ``x`` and the clamped gradient step ``z``, before clamping: ``z`` at the
        first step (clamping it again changes nothing), then ``x + α (z − x) + (1 − α)(x − x_prev)``
        with ``α`` = MOMENTUM."""
        if first:
            return z
        return torch.lerp(x, z, MOMENTUM).add_(x - previous_x, alpha=1 - MOMENTUM)

    def __repr__(self) -> str:
        return repr(self.name)


AUTOPGD_SCHEDULE = Schedule()
AUTOPGD_UPDATE = Update()


@dataclass(frozen=True)
class LoopSettings:
    """How :func:`run_apgd` runs (see its arguments)."""

    steps: int
    early_stop: bool = True
    compact: bool = True
    step_size: float | str = RELATIVE_STEP  # a number, or "<k>eps": k times each image's ε
    schedule: Schedule = AUTOPGD_SCHEDULE
    update: Update = AUTOPGD_UPDATE
    reset_momentum: bool = True
    failures: Failures = "best"
    objective: Objective = "attack"
    verbose: bool = False


class _RunResult(NamedTuple):
    """One pass of the loop over some rows, in the order of those rows."""

    adv: Tensor  # float [n, ...], the returned iterate
    iterations: Tensor  # int64 [n], steps taken
    failed: Tensor  # bool [n], stopped on a gradient failure
    reached: Tensor  # bool [n], the returned iterate has the flip set on its desired side
    loss: Tensor  # float [n], objective of the returned iterate (-inf when returned clean)


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
    step_size: float | str = RELATIVE_STEP,
    schedule: Schedule = AUTOPGD_SCHEDULE,
    update: Update = AUTOPGD_UPDATE,
    reset_momentum: bool = True,
    failures: Failures = "best",
    objective: Objective = "attack",
    restarts: int = 0,
) -> LoopOutput:
    """Run the AutoPGD loop (see the module docstring) on every row of ``problem``.

    Args:
        problem: the attacked images and their flip sets (from :class:`~mlattack.attacks.base.Attack`).
        direction_fn: the attack's objective and ascent direction, see :data:`DirectionFn`.
        steps: the iteration budget ``N`` (``N + 1`` evaluations at most: the start and ``N`` steps).
        early_stop: stop an image at the first iterate that reaches its flip set.
        random_start: start from a random point of the ε-ball instead of the clean image.
        compact: drop finished images from the working batch. Turning it off keeps computing on them
            (their results are frozen all the same), as the authors' loop does.
        verbose: tqdm progress bar over iterations.
        description: label of the progress bar.
        step_size: the initial step, a number ``> 0`` or ``"<k>eps"``, ``k`` times each image's ε
            (``"2eps"``: AutoPGD's rule).
        schedule: the checkpoint rules, a :class:`Schedule` (AutoPGD's by default).
        update: the iterate update, an :class:`Update` (AutoPGD's by default).
        reset_momentum: a restart from the best point also resets the momentum term.
        failures: return an image that never reaches its flip set as its ``"best"``-objective
            iterate or ``"clean"``.
        objective: the tracked objective: the attack's own (``"attack"``) or ``Σ_c −BCE(f_c,
            y*_c)`` over all labels (``"all-labels"``).
        restarts: further runs from seeded random starts on the rows that did not reach their flip
            set; each image keeps its best result (reached first, then objective).

    Returns:
        the returned iterate, iterations taken (summed over runs) and the gradient-failure flag (of
        the kept run) of every row.
    """
    check_int(steps, "steps", minimum=1)
    check_int(restarts, "restarts", minimum=0)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    if not isinstance(update, Update):
        raise TypeError(f"update must be an Update, got {type(update).__name__}")
    settings = LoopSettings(
        steps=steps,
        early_stop=check_bool(early_stop, "early_stop"),
        compact=check_bool(compact, "compact"),
        step_size=check_step_size(step_size),
        schedule=schedule,
        update=update,
        reset_momentum=check_bool(reset_momentum, "reset_momentum"),
        failures=_check_choice(failures, "failures", FAILURES),
        objective=_check_choice(objective, "objective", OBJECTIVES),
        verbose=check_bool(verbose, "verbose"),
    )
    rows = torch.arange(problem.images.shape[0], device=problem.images.device)
    start = problem.random_start() if random_start else problem.images
    kept = _Run(problem, direction_fn, settings, rows, start).run(description)
    adv, iterations, failed, reached, loss = (value.clone() for value in kept)
    for restart in range(1, restarts + 1):
        # A restart costs at least one more evaluation: images at their budget are not restarted.
        unsolved = (~reached & problem.within_budget(None, 1)).nonzero().flatten()
        if unsolved.numel() == 0:
            break
        seeded = replace(problem, seed=_restart_seed(problem.seed, restart))
        start = seeded.random_start()[unsolved]
        again = _Run(problem, direction_fn, settings, unsolved, start).run(
            f"{description} restart {restart}"
        )
        better = again.reached | (again.loss > loss[unsolved])
        winners = unsolved[better]
        adv[winners] = again.adv[better]
        failed[winners] = again.failed[better]
        reached[winners] = again.reached[better]
        loss[winners] = again.loss[better]
        iterations[unsolved] += again.iterations
    return LoopOutput(adv=adv, iterations=iterations, gradient_failed=failed)


def _restart_seed(seed: int | None, restart: int) -> int | None:
    """A seed of its own for each restart (``None`` keeps the global RNG)."""
    # hash() of a tuple of ints is deterministic across processes (only str hashing is salted).
    return None if seed is None else hash((seed, restart)) % 2**63


class _Evaluation(NamedTuple):
    """The direction function's answer at the working iterates, as the loop reads it."""

    step: DirectionStep
    loss: Tensor  # float [n], the tracked objective (-inf where not finite)
    direction: Tensor  # float [n, ...], NaNs zeroed
    reached: Tensor  # bool [n], the flip set is on its desired side


@dataclass
class _Working:
    """Per-image state of the working rows; compaction indexes every tensor alike.

    No tensor is written in place, so sharing one between fields is safe.
    """

    slot: Tensor  # int64 [n], position in the run's outputs
    rows: Tensor  # int64 [n], rows of the AttackProblem
    lower: Tensor  # float [n, ...], feasible set
    upper: Tensor
    clean: Tensor  # float [n, ...], the clean images
    x: Tensor  # the current iterate
    previous_x: Tensor  # the iterate before it (momentum)
    direction: Tensor  # the ascent direction at x
    loss: Tensor  # float [n], the objective the next step is compared with
    step_size: Tensor  # float [n]
    best_x: Tensor  # the best-objective iterate, its direction and objective
    best_direction: Tensor
    best_loss: Tensor
    improving_steps: Tensor  # int64 [n], steps that improved since the last checkpoint
    best_loss_at_check: Tensor  # best objective at the last checkpoint
    reduced_at_check: Tensor  # bool [n], the step was reduced at the last checkpoint
    # Without early stop: the iterate to return, ranked by (flip set reached, objective). With early
    # stop it is the reaching iterate itself, or else the best-objective one: no copy is kept.
    keep_x: Tensor | None = None
    keep_loss: Tensor | None = None
    keep_reached: Tensor | None = None

    def select(self, working: Tensor) -> _Working:
        """The state of the rows where ``working`` is True."""
        picked: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            picked[item.name] = None if value is None else value[working]
        return _Working(**picked)


class _Run:
    """One AutoPGD run on rows ``rows`` of ``problem`` from ``start`` (float ``[n, ...]``)."""

    def __init__(
        self,
        problem: AttackProblem,
        direction_fn: DirectionFn,
        settings: LoopSettings,
        rows: Tensor,
        start: Tensor,
    ) -> None:
        self.problem = problem
        self.direction_fn = direction_fn
        self.settings = settings
        count = rows.numel()
        device = start.device
        clean = problem.images[rows]
        # Outputs, in the order of ``rows``.
        self.adv = clean.clone()
        self.iterations = torch.zeros(count, dtype=torch.int64, device=device)
        self.failed = torch.zeros(count, dtype=torch.bool, device=device)
        self.reached = torch.zeros(count, dtype=torch.bool, device=device)
        # Objectives are at least float32 (under autocast the logits are, whatever the images' dtype).
        loss_dtype = torch.promote_types(start.dtype, torch.float32)
        self.loss = torch.full((count,), -math.inf, dtype=loss_dtype, device=device)
        self.finished = torch.zeros(count, dtype=torch.bool, device=device)

        self.cost = torch.zeros(count, dtype=torch.int64, device=device)
        self.evaluation = self._evaluate(start, rows)
        loss, direction = self.evaluation.loss, self.evaluation.direction
        lower, upper = problem.bounds()
        if isinstance(settings.step_size, str):
            factor = relative_step_factor(settings.step_size)
            step_size = factor * problem.eps[rows].to(start.dtype)
        else:
            step_size = torch.full((count,), settings.step_size, dtype=start.dtype, device=device)
        schedule = settings.schedule
        self.state = _Working(
            slot=torch.arange(count, device=device),
            rows=rows,
            lower=lower[rows],
            upper=upper[rows],
            clean=clean,
            x=start,
            previous_x=start,
            direction=direction,
            loss=schedule.first_reference(loss),
            step_size=step_size,
            best_x=start,
            best_direction=direction,
            best_loss=loss,
            improving_steps=torch.zeros(count, dtype=torch.int64, device=device),
            best_loss_at_check=loss,
            reduced_at_check=torch.full(
                (count,), schedule.starts_reduced, dtype=torch.bool, device=device
            ),
        )
        if not settings.early_stop:
            self.state.keep_x = start
            self.state.keep_loss = loss
            self.state.keep_reached = self.evaluation.reached
        self.checks = set(schedule.checkpoints(settings.steps))

    def run(self, description: str) -> _RunResult:
        settings = self.settings
        progress = tqdm(
            total=settings.steps, desc=description, disable=not settings.verbose, leave=False
        )
        iteration, last_check = 0, 0
        done = self._finish_stopped(iteration)
        while not done:
            state = self.state
            x_new = settings.update(
                state.x,
                state.previous_x,
                state.direction,
                _broadcast(state.step_size, state.x),
                (state.lower, state.upper),
                first=iteration == 0,
            )
            iteration += 1
            progress.update(1)
            self.evaluation = self._evaluate(x_new, state.rows)
            self._advance(x_new)
            done = self._finish_stopped(iteration)
            if done:
                break
            if iteration in self.checks:
                self._checkpoint(iteration - last_check)
                last_check = iteration
            if settings.verbose:
                progress.set_postfix(working=int(self.state.rows.numel()), refresh=False)
        progress.close()
        return _RunResult(self.adv, self.iterations, self.failed, self.reached, self.loss)

    def _evaluate(self, x: Tensor, rows: Tensor) -> _Evaluation:
        budget = self.problem.max_backward is not None
        spent = self.problem.backward_spent(rows) if budget else None
        with self.problem.rows(rows):
            step = self.direction_fn(x, rows)
        if spent is not None:
            # What an evaluation costs, to stop an image before the next one would exceed it.
            self.cost = self.problem.backward_spent(rows) - spent
        if self.settings.objective == "all-labels":
            tracked = per_label_bce(step.logits, self.problem.desired[rows]).neg().sum(1)
        else:
            tracked = step.loss
        reached = self.problem.flip_set_reached(step.logits, rows)
        return _Evaluation(step, _finite_or_minus_inf(tracked), _clean_direction(step), reached)

    def _advance(self, x_new: Tensor) -> None:
        """Move the working rows to ``x_new``, evaluated as :attr:`evaluation`."""
        state, evaluation = self.state, self.evaluation
        loss, direction = evaluation.loss, evaluation.direction
        state.improving_steps = state.improving_steps + (loss > state.loss).long()
        improved = loss > state.best_loss
        state.previous_x = state.x
        state.x = x_new
        state.direction = direction
        state.loss = loss
        state.best_x = _select(improved, x_new, state.best_x)
        state.best_direction = _select(improved, direction, state.best_direction)
        state.best_loss = torch.maximum(loss, state.best_loss)
        if not self.settings.early_stop:
            assert state.keep_x is not None and state.keep_loss is not None
            assert state.keep_reached is not None
            reached, keep_reached = evaluation.reached, state.keep_reached
            better = (reached & ~keep_reached) | (
                (reached == keep_reached) & (loss > state.keep_loss)
            )
            state.keep_x = _select(better, x_new, state.keep_x)
            state.keep_loss = torch.where(better, loss, state.keep_loss)
            state.keep_reached = keep_reached | reached

    def _finish_stopped(self, iteration: int) -> bool:
        """Write out the rows that stop at this iterate (before any checkpoint restart moves
        ``state.x``); compact the batch. True when every row has finished."""
        settings, state, evaluation = self.settings, self.state, self.evaluation
        failed, reached, loss = evaluation.step.failed, evaluation.reached, evaluation.loss
        stop = failed | (iteration == settings.steps)
        if settings.early_stop:
            stop = stop | reached
        if self.problem.max_backward is not None:
            stop = stop | ~self.problem.within_budget(state.rows, self.cost)
        stop = stop & ~self.finished[state.slot]
        if not bool(stop.any()):
            return False
        if settings.early_stop:
            returned_reached = reached
            returned_x = torch.where(_broadcast(reached, state.x), state.x, state.best_x)
            returned_loss = torch.where(reached, loss, state.best_loss)
        else:
            assert state.keep_x is not None and state.keep_loss is not None
            assert state.keep_reached is not None
            returned_reached = state.keep_reached
            returned_x, returned_loss = state.keep_x, state.keep_loss
        if settings.failures == "clean":
            returned_x = torch.where(
                _broadcast(returned_reached, returned_x), returned_x, state.clean
            )
            returned_loss = torch.where(returned_reached, returned_loss, -math.inf)
        slots = state.slot[stop]
        self.adv[slots] = returned_x[stop]
        self.iterations[slots] = iteration
        self.failed[slots] = failed[stop]
        self.reached[slots] = returned_reached[stop]
        self.loss[slots] = returned_loss[stop]
        self.finished[slots] = True
        if bool(self.finished.all()):
            return True
        if settings.compact:
            self.state = state.select(~self.finished[state.slot])
        return False

    def _checkpoint(self, window: int) -> None:
        """Halve the step and restart from the best point where conditions (1) or (2) hold
        (Croce & Hein 2020, Section 3.2)."""
        state, schedule = self.state, self.settings.schedule
        too_few_improving = schedule.too_few_improving(state.improving_steps, window)
        stalled = ~state.reduced_at_check & (state.best_loss <= state.best_loss_at_check)
        reduce = too_few_improving | stalled
        restart = _broadcast(reduce, state.x)
        best_x = state.best_x
        state.step_size = torch.where(reduce, state.step_size / 2, state.step_size)
        state.x = torch.where(restart, best_x, state.x)
        state.direction = torch.where(restart, state.best_direction, state.direction)
        state.reduced_at_check = reduce
        state.best_loss_at_check = state.best_loss
        state.improving_steps = torch.zeros_like(state.improving_steps)
        if self.settings.reset_momentum:
            state.previous_x = torch.where(restart, best_x, state.previous_x)
        state.loss = schedule.reference_after_check(reduce, state.best_loss, state.loss)


def _broadcast(per_image: Tensor, like: Tensor) -> Tensor:
    return per_image.view(-1, *([1] * (like.dim() - 1)))


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
