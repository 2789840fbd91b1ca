"""The AutoPGD engine shared by MLA-U, MLA-C and GMLA (Croce & Hein, ICML 2020, Algorithm 1).

Schedule, per image (the defaults; each point marked (*) has an option that switches it to the
behaviour of the authors' code, see :class:`APGDAttack` and ``docs/semantics.md``):

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

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mlattack._validation import check_bool, check_int, check_number
from mlattack.losses import per_label_bce

from .base import Attack, AttackProblem, LoopOutput, _check_choice, gradient_failed

__all__ = [
    "PRESETS",
    "APGDAttack",
    "DirectionStep",
    "OfficialGradients",
    "checkpoints",
    "official_direction",
    "official_gradients",
    "run_apgd",
]

MOMENTUM = 0.75
RHO = 0.75
#: The authors' initial step (``2 × 0.006``), whatever ε is.
OFFICIAL_STEP_SIZE = 0.012
#: The ``+1e-9`` the authors add to every gradient norm.
OFFICIAL_NORM_EPSILON = 1e-9

Schedule = Literal["autopgd", "official"]
Failures = Literal["best", "clean"]
Objective = Literal["attack", "all-labels"]
Stop = Literal["image", "batch"]
Arithmetic = Literal["fast", "official"]
OfficialKind = Literal["mla-u", "mla-c", "gmla"]

SCHEDULES: tuple[Schedule, ...] = ("autopgd", "official")
FAILURES: tuple[Failures, ...] = ("best", "clean")
OBJECTIVES: tuple[Objective, ...] = ("attack", "all-labels")
STOPS: tuple[Stop, ...] = ("image", "batch")
ARITHMETICS: tuple[Arithmetic, ...] = ("fast", "official")
#: ``step_size=`` value meaning AutoPGD's rule, twice each image's ε.
RELATIVE_STEP = "2eps"

#: Loop options each preset sets (``tau_rule`` is read by :class:`~mlattack.attacks.gmla.GMLA`).
#: Options passed explicitly are applied on top of the preset.
PRESETS: dict[str, dict[str, Any]] = {
    "official": {
        "step_size": OFFICIAL_STEP_SIZE,
        "schedule": "official",
        "reset_momentum": False,
        "failures": "clean",
        "objective": "all-labels",
        "stop": "batch",
        "arithmetic": "official",
        # GMLA's options (read by :class:`~mlattack.attacks.gmla.GMLA`): the paper's τ rule on BCE.
        "tau_rule": "official",
        "mode": "adaptive",
        "tau": 0.85,
        "loss": "bce",
        "fallback": "none",
        "refresh": 1,
        "repair": False,
    },
}


class DirectionStep(NamedTuple):
    """What an attack's direction function returns for the ``n`` working images."""

    loss: Tensor  # float [n], objective being maximised (detached)
    direction: Tensor  # float [n, ...], ascent direction scaled to unit L∞ norm (detached)
    logits: Tensor  # float [n, C], logits at the evaluated point (detached), for the success check
    failed: Tensor  # bool [n], zero or non-finite gradient


DirectionFn = Callable[[Tensor, Tensor], DirectionStep]
"""``(x, rows) -> DirectionStep``: ``x`` float ``[n, ...]`` the working iterates, ``rows`` int64
``[n]`` their row indices in the :class:`AttackProblem`. One forward pass per call."""


def _check_step_size(value: Any) -> float | None:
    """A finite step ``> 0`` as a float, or ``None`` for :data:`RELATIVE_STEP` (``2ε``)."""
    if isinstance(value, str) and value == RELATIVE_STEP:
        return None
    if isinstance(value, str):
        raise ValueError(f"step_size must be a number > 0 or {RELATIVE_STEP!r}, got {value!r}")
    return check_number(value, "step_size", minimum=0.0, exclusive_minimum=True)


def checkpoints(steps: int, schedule: Schedule = "autopgd") -> list[int]:
    """The checkpoint iterations ``w_1 < w_2 < ... <= steps`` (``w_0 = 0``).

    ``"autopgd"``: Croce & Hein's ``w_j = ⌈p_j N⌉`` (module docstring). ``"official"``: the
    authors' integer intervals, starting at ``⌊0.22 N⌋`` and shrinking by ``⌊0.03 N⌋`` **twice**
    per checkpoint down to ``⌊0.06 N⌋`` (each at least 1): 6, 10, 12, 13, ..., 30 for N = 30.
    """
    check_int(steps, "steps", minimum=1)
    _check_choice(schedule, "schedule", SCHEDULES)
    result: list[int] = []
    if schedule == "official":
        interval = max(int(0.22 * steps), 1)
        shortest = max(int(0.06 * steps), 1)
        decrement = max(int(0.03 * steps), 1)
        at = interval
        while at <= steps:
            result.append(at)
            interval = max(max(interval - decrement, shortest) - decrement, shortest)
            at += interval
        return result
    previous, current = 0.0, 0.22
    while current <= 1.0:
        # The small tolerance keeps e.g. 0.22 * 100 = 22.000000000000004 at 22.
        iteration = math.ceil(current * steps - 1e-9)
        if iteration > (result[-1] if result else 0):
            result.append(iteration)
        previous, current = current, current + max(current - previous - 0.03, 0.06)
    return result


def _broadcast(per_image: Tensor, like: Tensor) -> Tensor:
    return per_image.view(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class _LoopSettings:
    steps: int
    early_stop: bool
    compact: bool
    step_size: float | None
    schedule: Schedule
    reset_momentum: bool
    failures: Failures
    objective: Objective
    arithmetic: Arithmetic
    verbose: bool


class _Run(NamedTuple):
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
    schedule: Schedule = "autopgd",
    reset_momentum: bool = True,
    failures: Failures = "best",
    objective: Objective = "attack",
    arithmetic: Arithmetic = "fast",
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
        step_size: the initial step, a number ``> 0`` or ``"2eps"`` (twice each image's ε).
        schedule: ``"autopgd"`` or ``"official"`` checkpoint bookkeeping (:class:`APGDAttack`).
        reset_momentum: a restart from the best point also resets the momentum term.
        failures: return an image that never reaches its flip set as its ``"best"``-objective
            iterate or ``"clean"``.
        objective: the tracked objective: the attack's own (``"attack"``) or ``Σ_c −BCE(f_c,
            y*_c)`` over all labels (``"all-labels"``).
        arithmetic: ``"official"`` evaluates the update in the authors' float32 order.
        restarts: further runs from seeded random starts on the rows that did not reach their flip
            set; each image keeps its best result (reached first, then objective).

    Returns:
        the returned iterate, iterations taken (summed over runs) and the gradient-failure flag (of
        the kept run) of every row.
    """
    check_int(steps, "steps", minimum=1)
    check_int(restarts, "restarts", minimum=0)
    settings = _LoopSettings(
        steps=steps,
        early_stop=check_bool(early_stop, "early_stop"),
        compact=check_bool(compact, "compact"),
        step_size=_check_step_size(step_size),
        schedule=_check_choice(schedule, "schedule", SCHEDULES),
        reset_momentum=check_bool(reset_momentum, "reset_momentum"),
        failures=_check_choice(failures, "failures", FAILURES),
        objective=_check_choice(objective, "objective", OBJECTIVES),
        arithmetic=_check_choice(arithmetic, "arithmetic", ARITHMETICS),
        verbose=check_bool(verbose, "verbose"),
    )
    rows = torch.arange(problem.images.shape[0], device=problem.images.device)
    start = problem.random_start() if random_start else problem.images
    kept = _run_once(problem, direction_fn, rows, start, settings, description)
    adv, iterations, failed, reached, loss = (value.clone() for value in kept)
    for restart in range(1, restarts + 1):
        unsolved = (~reached).nonzero().flatten()
        if unsolved.numel() == 0:
            break
        seeded = replace(problem, seed=_restart_seed(problem.seed, restart))
        start = seeded.random_start()[unsolved]
        again = _run_once(
            problem, direction_fn, unsolved, start, settings, f"{description} restart {restart}"
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


def _run_once(
    problem: AttackProblem,
    direction_fn: DirectionFn,
    rows: Tensor,
    start: Tensor,
    settings: _LoopSettings,
    description: str,
) -> _Run:
    """One AutoPGD run on rows ``rows`` of ``problem`` from ``start`` (float ``[n, ...]``)."""
    count = rows.numel()
    device = start.device
    official = settings.schedule == "official"
    clean = problem.images[rows]
    out_adv = clean.clone()
    out_iterations = torch.zeros(count, dtype=torch.int64, device=device)
    out_failed = torch.zeros(count, dtype=torch.bool, device=device)
    out_reached = torch.zeros(count, dtype=torch.bool, device=device)
    # Objectives are at least float32 (under autocast the logits are, whatever the images' dtype).
    loss_dtype = torch.promote_types(start.dtype, torch.float32)
    out_loss = torch.full((count,), -math.inf, dtype=loss_dtype, device=device)
    finished = torch.zeros(count, dtype=torch.bool, device=device)

    def evaluate(x: Tensor, working_rows: Tensor) -> tuple[DirectionStep, Tensor, Tensor, Tensor]:
        evaluation = direction_fn(x, working_rows)
        if settings.objective == "all-labels":
            tracked = per_label_bce(evaluation.logits, problem.desired[working_rows]).neg().sum(1)
        else:
            tracked = evaluation.loss
        reached = problem.flip_set_reached(evaluation.logits, working_rows)
        return evaluation, _finite_or_minus_inf(tracked), _clean_direction(evaluation), reached

    evaluation, loss, direction, reached = evaluate(start, rows)
    lower, upper = problem.bounds()
    if settings.step_size is None:
        step_size = 2 * problem.eps[rows].to(start.dtype)
    else:
        step_size = torch.full((count,), settings.step_size, dtype=start.dtype, device=device)
    # Per-image state of the working rows; compaction indexes every entry alike.
    state: dict[str, Tensor] = {
        "slot": torch.arange(count, device=device),
        "rows": rows,
        "lower": lower[rows],
        "upper": upper[rows],
        "clean": clean,
        "x": start,
        "previous_x": start,
        "direction": direction,
        # The objective each step is compared with to count improving steps. The authors compare
        # the first step with an unwritten (zero) entry of their loss buffer.
        "loss": torch.zeros_like(loss) if official else loss,
        "step_size": step_size,
        "best_x": start,
        "best_direction": direction,
        "best_loss": loss,
        "improving_steps": torch.zeros(count, dtype=torch.int64, device=device),
        "best_loss_at_check": loss,
        # The authors start as if the step had been reduced: no stall test at the first checkpoint.
        "reduced_at_check": torch.full((count,), official, dtype=torch.bool, device=device),
    }
    if not settings.early_stop:
        # The iterate to return, ranked by (flip set reached, objective). With early stop it is
        # the reaching iterate itself, or else the best-objective one, so no extra copy is kept.
        state.update(keep_x=start, keep_loss=loss, keep_reached=reached)
    checks = set(checkpoints(settings.steps, settings.schedule))
    last_check = 0

    def finish_stopped(
        iteration: int, evaluation: DirectionStep, loss: Tensor, reached: Tensor
    ) -> bool:
        """Write out the rows that stop at this iterate (before any checkpoint restart moves
        ``state["x"]``); compact the batch. True when every row has finished."""
        nonlocal state
        stop = evaluation.failed | (iteration == settings.steps)
        if settings.early_stop:
            stop = stop | reached
        stop = stop & ~finished[state["slot"]]
        if not bool(stop.any()):
            return False
        if settings.early_stop:
            returned_reached = reached
            returned_x = torch.where(_broadcast(reached, state["x"]), state["x"], state["best_x"])
            returned_loss = torch.where(reached, loss, state["best_loss"])
        else:
            returned_reached = state["keep_reached"]
            returned_x, returned_loss = state["keep_x"], state["keep_loss"]
        if settings.failures == "clean":
            returned_x = torch.where(
                _broadcast(returned_reached, returned_x), returned_x, state["clean"]
            )
            returned_loss = torch.where(returned_reached, returned_loss, -math.inf)
        slots = state["slot"][stop]
        out_adv[slots] = returned_x[stop]
        out_iterations[slots] = iteration
        out_failed[slots] = evaluation.failed[stop]
        out_reached[slots] = returned_reached[stop]
        out_loss[slots] = returned_loss[stop]
        finished[slots] = True
        if bool(finished.all()):
            return True
        if settings.compact:
            working = ~finished[state["slot"]]
            state = {key: value[working] for key, value in state.items()}
        return False

    progress = tqdm(
        total=settings.steps, desc=description, disable=not settings.verbose, leave=False
    )
    iteration = 0
    done = finish_stopped(iteration, evaluation, loss, reached)
    while not done:
        x_new = _step(state, first=iteration == 0, arithmetic=settings.arithmetic)
        iteration += 1
        progress.update(1)

        evaluation, loss, direction, reached = evaluate(x_new, state["rows"])
        state["improving_steps"] = state["improving_steps"] + (loss > state["loss"]).long()
        improved = loss > state["best_loss"]
        state.update(
            previous_x=state["x"],
            x=x_new,
            direction=direction,
            loss=loss,
            best_x=_select(improved, x_new, state["best_x"]),
            best_direction=_select(improved, direction, state["best_direction"]),
            best_loss=torch.maximum(loss, state["best_loss"]),
        )
        if not settings.early_stop:
            keep_reached = state["keep_reached"]
            better = (reached & ~keep_reached) | (
                (reached == keep_reached) & (loss > state["keep_loss"])
            )
            state.update(
                keep_x=_select(better, x_new, state["keep_x"]),
                keep_loss=torch.where(better, loss, state["keep_loss"]),
                keep_reached=keep_reached | reached,
            )
        done = finish_stopped(iteration, evaluation, loss, reached)
        if done:
            break
        if iteration in checks:
            _checkpoint(state, iteration - last_check, settings)
            last_check = iteration
        if settings.verbose:
            progress.set_postfix(working=int(state["rows"].numel()), refresh=False)
    progress.close()
    return _Run(out_adv, out_iterations, out_failed, out_reached, out_loss)


def _step(state: dict[str, Tensor], *, first: bool, arithmetic: Arithmetic) -> Tensor:
    """The next iterate: a plain step at first, with momentum later (Croce & Hein 2020, eq. 2-3)."""
    x, previous_x = state["x"], state["previous_x"]
    lower, upper = state["lower"], state["upper"]
    step = _broadcast(state["step_size"], x)
    if arithmetic == "official":
        # The authors' expression, evaluated in their order (α = 1 at the first step).
        alpha = 1.0 if first else MOMENTUM
        z = torch.clamp(x + step * state["direction"], lower, upper)
        return torch.clamp(x + (z - x) * alpha + (x - previous_x) * (1 - alpha), lower, upper)
    z = torch.clamp(torch.addcmul(x, step, state["direction"]), lower, upper)
    if first:
        return z
    momentum = torch.lerp(x, z, MOMENTUM).add_(x - previous_x, alpha=1 - MOMENTUM)
    return torch.clamp(momentum, lower, upper)


def _checkpoint(state: dict[str, Tensor], window: int, settings: _LoopSettings) -> None:
    """Halve the step and restart from the best point where conditions (1) or (2) hold
    (Croce & Hein 2020, Section 3.2), in place on ``state``."""
    if settings.schedule == "official":
        too_few_improving = state["improving_steps"] <= RHO * window
    else:
        too_few_improving = state["improving_steps"] < RHO * window
    stalled = ~state["reduced_at_check"] & (state["best_loss"] <= state["best_loss_at_check"])
    reduce = too_few_improving | stalled
    restart = _broadcast(reduce, state["x"])
    best_x = state["best_x"]
    state.update(
        step_size=torch.where(reduce, state["step_size"] / 2, state["step_size"]),
        x=torch.where(restart, best_x, state["x"]),
        direction=torch.where(restart, state["best_direction"], state["direction"]),
        reduced_at_check=reduce,
        best_loss_at_check=state["best_loss"],
        improving_steps=torch.zeros_like(state["improving_steps"]),
    )
    if settings.reset_momentum:
        state["previous_x"] = torch.where(restart, best_x, state["previous_x"])
    if settings.schedule == "autopgd":
        # The next step is compared with the objective of the point restarted from; the authors
        # compare it with the objective of the abandoned iterate.
        state["loss"] = torch.where(reduce, state["best_loss"], state["loss"])


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


# ---------------------------------------------------------------------------------------------
# The authors' direction arithmetic (their ``attackstep``), for ``arithmetic="official"``.


class OfficialGradients(NamedTuple):
    """The gradient quantities of the authors' code at one point, in their sign convention.

    With ``ℓ_c = −BCE(f_c(x), y*_c)`` (ascended): ``g1 = ∇ₓ Σ_{c∈Ψ} ℓ_c`` and
    ``g2 = ∇ₓ Σ_{c∉Ψ} ℓ_c`` (``= −g_nt``), each normalised as ``ĝ = g / (‖g‖₂ + 1e-9)``.
    """

    per_label_loss: Tensor  # float [n, C], ℓ (detached)
    logits: Tensor  # float [n, C] (detached)
    unit_flip: Tensor  # float [n, D], ĝ1
    norm_flip: Tensor  # float [n, 1], ‖g1‖₂ + 1e-9
    unit_other: Tensor  # float [n, D], ĝ2
    norm_other: Tensor  # float [n, 1], ‖g2‖₂ + 1e-9
    failed: Tensor  # bool [n], g1 zero or not finite, or g2 not finite


def official_gradients(
    model: nn.Module, problem: AttackProblem, x: Tensor, rows: Tensor
) -> OfficialGradients:
    """One forward pass at ``x`` (rows ``rows``) and ``g1``, ``g2`` by two backward passes."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = per_label_bce(logits, problem.desired[rows]).neg()
    flip_set = problem.flip_set[rows]
    (g1,) = torch.autograd.grad(torch.mul(loss, flip_set).sum(), x, retain_graph=True)
    (g2,) = torch.autograd.grad(torch.mul(loss, ~flip_set).sum(), x)
    g1, g2 = g1.flatten(1), g2.flatten(1)
    norm_flip = torch.linalg.vector_norm(g1, dim=1)[:, None] + OFFICIAL_NORM_EPSILON
    norm_other = torch.linalg.vector_norm(g2, dim=1)[:, None] + OFFICIAL_NORM_EPSILON
    return OfficialGradients(
        per_label_loss=loss.detach(),
        logits=logits.detach(),
        unit_flip=g1 / norm_flip,
        norm_flip=norm_flip,
        unit_other=g2 / norm_other,
        norm_other=norm_other,
        failed=gradient_failed(g1) | ~torch.isfinite(g2).all(dim=1),
    )


def official_direction(
    kind: OfficialKind,
    gradients: OfficialGradients,
    *,
    tau: float = 0.85,
    count_nonzero_quirk: bool = True,
    projection_only: bool = False,
) -> tuple[Tensor, Tensor]:
    """The authors' step direction ``[n, D]`` and which rows projected, evaluated as they do.

    - ``"mla-u"``: ``sgn(‖g1‖ ĝ1)``; ``"mla-c"``: ``sgn(‖g1‖ ĝ1 + ‖g2‖ ĝ2)``;
    - ``"gmla"``: ``sgn(‖g1‖ (ĝ1 + ĝ2))``, or where ``ĝ1·ĝ2 ≤ −tau`` (i.e. ``cos(g_t, g_nt) ≥ tau``)
      ``P / (‖P‖∞ + 1e-9)`` with ``P = sgn(ĝ1) − ĝ2 (ĝ2·sgn(ĝ1))``. With ``count_nonzero_quirk`` no
      row projects unless some row other than row 0 qualifies (the authors count the non-zero
      *indices* of the qualifying rows). ``projection_only`` projects every row.
    """
    _check_choice(kind, "kind", ("mla-u", "mla-c", "gmla"))
    unit_flip, norm_flip = gradients.unit_flip, gradients.norm_flip
    unit_other = gradients.unit_other
    none = torch.zeros(unit_flip.shape[0], dtype=torch.bool, device=unit_flip.device)
    scaled = unit_flip * norm_flip
    if kind == "mla-u":
        return scaled.sign(), none
    if kind == "mla-c":
        return (scaled + unit_other * gradients.norm_other).sign(), none
    summed = (scaled + unit_other * norm_flip).sign()
    if projection_only:
        projected = ~none
    else:
        projected = torch.mul(unit_flip, unit_other).sum(1) <= -tau
        if count_nonzero_quirk and not bool(projected[1:].any()):
            projected = none
    if not bool(projected.any()):
        return summed, projected
    nu = unit_flip.sign()
    coefficient = torch.mul(unit_other, nu).sum(1)[:, None]
    p = nu - unit_other * coefficient
    p = p / (torch.linalg.vector_norm(p, ord=math.inf, dim=1)[:, None] + OFFICIAL_NORM_EPSILON)
    return torch.where(projected[:, None], p, summed), projected


# ---------------------------------------------------------------------------------------------

#: The loop options of :class:`APGDAttack` when neither passed nor set by a preset.
_DEFAULTS: dict[str, Any] = {
    "step_size": RELATIVE_STEP,
    "schedule": "autopgd",
    "reset_momentum": True,
    "failures": "best",
    "objective": "attack",
    "stop": "image",
    "arithmetic": "fast",
}


class APGDAttack(Attack):
    """An attack whose loop is :func:`run_apgd`; subclasses give :meth:`_direction`.

    The loop options below default to the AutoPGD loop of Croce & Hein (module docstring). Each
    can be switched to the behaviour of the authors' code (Mahmood & Elhamifar, CVPR 2024), and
    ``preset="official"`` switches them all (``docs/semantics.md``, "Official mode"). An option
    passed explicitly is applied on top of the preset: ``MLAC(model, preset="official",
    step_size=0.1)`` is the official loop with a first step of 0.1.

    Args:
        model: the multi-label classifier (returns logits).
        preset: ``None`` or ``"official"`` (every option below at the authors' value).
        step_size: the initial step: a number ``> 0``, or ``"2eps"`` (twice each image's ε,
            default). Official: 0.012.
        schedule: ``"autopgd"`` (default) or ``"official"``: the authors' checkpoints (intervals
            shrunk twice per checkpoint), oscillation test ``≤ ρ·window`` instead of ``<``, first
            step compared with 0, no stall test at the first checkpoint, and steps after a restart
            compared with the abandoned iterate.
        reset_momentum: a restart also resets the momentum term (default ``True``; official
            ``False``).
        failures: an image that never reaches its flip set is returned as its ``"best"``-objective
            iterate (default) or ``"clean"`` (official).
        objective: the objective tracked for the step-size tests and the best point: the attack's
            own (``"attack"``, default) or ``Σ_c −BCE(f_c, y*_c)`` over ``"all-labels"``
            (official).
        stop: ``"image"`` (default): finished images leave the working batch; ``"batch"``
            (official): they stay in it, their results frozen, until every image has finished
            (only the batch-dependent τ quirk of GMLA can tell the two apart).
        arithmetic: ``"fast"`` (default) or ``"official"``: gradients, directions and the update
            evaluated as the authors' code does, in float32 order (two backward passes for
            MLA-C); needed to reproduce their iterates bit for bit.
        restarts: ``None`` (default) or ``k ≥ 1``: rerun the loop up to ``k`` times from seeded
            random starts on the images that have not reached their flip set; each image keeps
            its best result. ``iterations`` then counts the steps of every run.
        **options: the shared options of :class:`~mlattack.attacks.base.Attack`.
    """

    default_steps = 100
    #: The authors' attack type this class reproduces under ``arithmetic="official"``.
    official_kind: ClassVar[OfficialKind | None] = None
    #: Drop finished images from the working batch (off only to measure what that saves).
    _compact_finished: bool = True

    def __init__(
        self,
        model: nn.Module,
        *,
        preset: str | None = None,
        step_size: float | str | None = None,
        schedule: Schedule | None = None,
        reset_momentum: bool | None = None,
        failures: Failures | None = None,
        objective: Objective | None = None,
        stop: Stop | None = None,
        arithmetic: Arithmetic | None = None,
        restarts: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        if preset is not None:
            _check_choice(preset, "preset", tuple(PRESETS))
        self.preset = preset
        #: The initial step; ``None`` means twice each image's ε.
        self.step_size = _check_step_size(
            self._preset_value("step_size", step_size, _DEFAULTS["step_size"])
        )
        self.schedule: Schedule = _check_choice(
            self._preset_value("schedule", schedule, _DEFAULTS["schedule"]), "schedule", SCHEDULES
        )
        self.reset_momentum = check_bool(
            self._preset_value("reset_momentum", reset_momentum, _DEFAULTS["reset_momentum"]),
            "reset_momentum",
        )
        self.failures: Failures = _check_choice(
            self._preset_value("failures", failures, _DEFAULTS["failures"]), "failures", FAILURES
        )
        self.objective: Objective = _check_choice(
            self._preset_value("objective", objective, _DEFAULTS["objective"]),
            "objective",
            OBJECTIVES,
        )
        self.stop: Stop = _check_choice(
            self._preset_value("stop", stop, _DEFAULTS["stop"]), "stop", STOPS
        )
        self.arithmetic: Arithmetic = _check_choice(
            self._preset_value("arithmetic", arithmetic, _DEFAULTS["arithmetic"]),
            "arithmetic",
            ARITHMETICS,
        )
        if self.arithmetic == "official" and self.official_kind is None:
            raise ValueError(
                f"arithmetic='official' is not available for {self.name}: the authors' code has "
                "no such attack; use arithmetic='fast'"
            )
        self.restarts = None if restarts is None else check_int(restarts, "restarts", minimum=1)

    def _preset_value(self, name: str, given: Any, default: Any) -> Any:
        """``given`` when passed (not ``None``), else the preset's value, else ``default``."""
        if given is not None:
            return given
        if self.preset is None:
            return default
        return PRESETS[self.preset].get(name, default)

    def _loop_options(self) -> dict[str, Any]:
        return {
            "step_size": RELATIVE_STEP if self.step_size is None else self.step_size,
            "schedule": self.schedule,
            "reset_momentum": self.reset_momentum,
            "failures": self.failures,
            "objective": self.objective,
            "stop": self.stop,
            "arithmetic": self.arithmetic,
        }

    def __repr__(self) -> str:
        """The shared options, the preset, and the loop options that differ from it."""
        shown = [f"preset={self.preset!r}"] if self.preset is not None else []
        for name, value in self._loop_options().items():
            if value != self._preset_value(name, None, _DEFAULTS[name]):
                shown.append(f"{name}={value!r}")
        if self.restarts is not None:
            shown.append(f"restarts={self.restarts}")
        base = super().__repr__()
        return f"{base[:-1]}, {', '.join(shown)})" if shown else base

    @abc.abstractmethod
    def _direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
        """Objective, ascent direction and logits at ``x`` for rows ``rows``, from one forward."""

    def _official_direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
        """:meth:`_direction` in the authors' arithmetic (``arithmetic="official"``)."""
        return self._official_step(problem, x, rows)

    def _official_step(
        self, problem: AttackProblem, x: Tensor, rows: Tensor, **gmla_options: Any
    ) -> DirectionStep:
        """The authors' gradients and :func:`official_direction` of :attr:`official_kind`; the
        objective is the attack's own (``Σ_{c∈Ψ} ℓ_c``, all labels for MLA-C)."""
        assert self.official_kind is not None
        gradients = official_gradients(self.model, problem, x, rows)
        direction, _ = official_direction(self.official_kind, gradients, **gmla_options)
        loss = gradients.per_label_loss
        if self.official_kind != "mla-c":
            loss = torch.where(problem.flip_set[rows], loss, torch.zeros_like(loss))
        return DirectionStep(
            loss=loss.sum(1),
            direction=direction.view(x.shape),
            logits=gradients.logits,
            failed=gradients.failed,
        )

    def _attack(self, problem: AttackProblem) -> LoopOutput:
        direction = self._official_direction if self.arithmetic == "official" else self._direction
        return self._loop(problem, lambda x, rows: direction(problem, x, rows), self.steps)

    def _loop(self, problem: AttackProblem, direction_fn: DirectionFn, steps: int) -> LoopOutput:
        """:func:`run_apgd` of ``steps`` steps along ``direction_fn`` with this attack's options."""
        return run_apgd(
            problem,
            direction_fn,
            steps=steps,
            early_stop=self.early_stop,
            random_start=self.random_start,
            compact=self._compact_finished and self.stop == "image",
            verbose=self.verbose,
            description=self.name,
            step_size=RELATIVE_STEP if self.step_size is None else self.step_size,
            schedule=self.schedule,
            reset_momentum=self.reset_momentum,
            failures=self.failures,
            objective=self.objective,
            arithmetic=self.arithmetic,
            restarts=0 if self.restarts is None else self.restarts,
        )
