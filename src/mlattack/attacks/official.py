"""The authors' code (Mahmood & Elhamifar, CVPR 2024), reproduced apart from the algorithms.

Everything that exists only to give the iterates of the authors' implementation bit for bit lives
here, so that the AutoPGD engine (:mod:`mlattack.attacks.apgd`) and the attacks keep one meaning:

- :class:`OfficialSchedule`: their checkpoint bookkeeping (intervals shrunk twice per checkpoint, an
  inclusive oscillation test, the first step compared with 0, no stall test at the first checkpoint,
  steps after a restart compared with the abandoned iterate);
- :class:`OfficialUpdate`: their momentum update, evaluated in their float32 order;
- :func:`official_gradients` and :func:`official_direction`: their gradients (normalised with a
  ``+1e-9``) and their step directions of MLA-U, MLA-C and GMLA (with the batch quirk of their τ
  rule), and :func:`official_step`, the engine's direction function built from them;
- :data:`OFFICIAL`: the ``preset="official"`` façade, the loop options (and GMLA's options) that
  select all of the above. ``docs/semantics.md``, "Official mode", lists each difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from mlattack.losses import per_label_bce

from .apgd import MOMENTUM, RHO, DirectionStep, Schedule, Update
from .base import AttackProblem, _check_choice, gradient_failed

__all__ = [
    "OFFICIAL",
    "OFFICIAL_NORM_EPSILON",
    "OFFICIAL_SCHEDULE",
    "OFFICIAL_STEP_SIZE",
    "OFFICIAL_UPDATE",
    "PRESETS",
    "OfficialGradients",
    "OfficialSchedule",
    "OfficialUpdate",
    "Preset",
    "official_checkpoints",
    "official_direction",
    "official_gradients",
    "official_step",
]

#: The authors' initial step (``2 × 0.006``), whatever ε is.
OFFICIAL_STEP_SIZE = 0.012
#: The ``+1e-9`` the authors add to every gradient norm.
OFFICIAL_NORM_EPSILON = 1e-9

OfficialKind = Literal["mla-u", "mla-c", "gmla"]


def official_checkpoints(steps: int) -> list[int]:
    """The authors' checkpoint iterations: integer intervals starting at ``⌊0.22 N⌋`` and shrinking
    by ``⌊0.03 N⌋`` **twice** per checkpoint down to ``⌊0.06 N⌋`` (each at least 1): 6, 10, 12,
    13, ..., 30 for N = 30."""
    interval = max(int(0.22 * steps), 1)
    shortest = max(int(0.06 * steps), 1)
    decrement = max(int(0.03 * steps), 1)
    result: list[int] = []
    at = interval
    while at <= steps:
        result.append(at)
        interval = max(max(interval - decrement, shortest) - decrement, shortest)
        at += interval
    return result


class OfficialSchedule(Schedule):
    """The authors' checkpoint bookkeeping (see the module docstring)."""

    name = "official"
    # The authors start as if the step had been reduced: no stall test at the first checkpoint.
    starts_reduced = True

    def checkpoints(self, steps: int) -> list[int]:
        return official_checkpoints(steps)

    def too_few_improving(self, improving_steps: Tensor, window: int) -> Tensor:
        return improving_steps <= RHO * window

    def first_reference(self, loss: Tensor) -> Tensor:
        # The authors compare the first step with an unwritten (zero) entry of their loss buffer.
        return torch.zeros_like(loss)

    def reference_after_check(self, reduced: Tensor, best_loss: Tensor, loss: Tensor) -> Tensor:
        # The next step is compared with the objective of the abandoned iterate.
        return loss


class OfficialUpdate(Update):
    """The authors' momentum update, evaluated in their order (``α = 1`` at the first step)."""

    name = "official"

    def gradient_step(self, x: Tensor, step: Tensor, direction: Tensor) -> Tensor:
        return x + step * direction

    def momentum(self, x: Tensor, previous_x: Tensor, z: Tensor, *, first: bool) -> Tensor:
        alpha = 1.0 if first else MOMENTUM
        return x + (z - x) * alpha + (x - previous_x) * (1 - alpha)


OFFICIAL_SCHEDULE = OfficialSchedule()
OFFICIAL_UPDATE = OfficialUpdate()


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


def official_step(
    kind: OfficialKind,
    model: nn.Module,
    problem: AttackProblem,
    x: Tensor,
    rows: Tensor,
    **gmla_options: Any,
) -> DirectionStep:
    """The engine's direction function in the authors' arithmetic: their gradients and
    :func:`official_direction` of ``kind``; the objective is the attack's own (``Σ_{c∈Ψ} ℓ_c``, all
    labels for MLA-C). Two backward passes per call."""
    gradients = official_gradients(model, problem, x, rows)
    direction, _ = official_direction(kind, gradients, **gmla_options)
    loss = gradients.per_label_loss
    if kind != "mla-c":
        loss = torch.where(problem.flip_set[rows], loss, torch.zeros_like(loss))
    return DirectionStep(
        loss=loss.sum(1),
        direction=direction.view(x.shape),
        logits=gradients.logits,
        failed=gradients.failed,
    )


@dataclass(frozen=True)
class Preset:
    """A named set of option values: ``loop`` for every AutoPGD attack, ``gmla`` for GMLA only.

    An option passed explicitly to an attack is applied on top of its preset.
    """

    loop: dict[str, Any] = field(default_factory=dict)
    gmla: dict[str, Any] = field(default_factory=dict)


#: ``preset="official"``: the authors' loop, arithmetic and GMLA (the paper's τ rule on BCE).
OFFICIAL = Preset(
    loop={
        "step_size": OFFICIAL_STEP_SIZE,
        "schedule": "official",
        "reset_momentum": False,
        "failures": "clean",
        "objective": "all-labels",
        "stop": "batch",
        "arithmetic": "official",
    },
    gmla={
        "tau_rule": "official",
        "mode": "adaptive",
        "tau": 0.85,
        "loss": "bce",
        "fallback": "none",
        "refresh": 1,
        "repair": False,
    },
)

#: The presets by name (``preset=`` of the AutoPGD attacks).
PRESETS: dict[str, Preset] = {"official": OFFICIAL}
