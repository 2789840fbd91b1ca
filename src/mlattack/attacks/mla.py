"""MLA-U and MLA-C: the unconstrained and constrained multi-label sign-gradient attacks.

Notation (DESIGN §3.2, Mahmood & Elhamifar, CVPR 2024, Section 3): ``y`` is the clean prediction,
``y* = y`` with the flip set Ψ toggled, ``Ψ̄`` the other labels, and all losses are binary
cross-entropy on logits::

    L_t(x')  = Σ_{c ∈ Ψ} BCE(f_c(x'), y*_c)      (small when Ψ is on its desired side)
    L_nt(x') = Σ_{c ∈ Ψ̄} BCE(f_c(x'), y_c)       (grows when the other labels are disturbed)
    g_t  = −∇ₓ L_t,     g_nt = ∇ₓ L_nt

An ascent step along ``g_t`` moves Ψ towards ``y*``; a step along ``−g_nt`` keeps Ψ̄ where it was.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..losses import masked_bce
from .apgd import DirectionStep
from .apgd_attack import APGDAttack
from .base import AttackProblem, gradient_failed

__all__ = ["MLAC", "MLAU", "Objectives", "evaluate_objectives"]


class Objectives(NamedTuple):
    """One forward pass at ``x`` (which requires grad) and the two label losses of every image."""

    x: Tensor  # the leaf the gradients are taken with respect to
    logits: Tensor  # [n, C], attached to the graph
    target_loss: Tensor  # [n], L_t
    nontarget_loss: Tensor  # [n], L_nt


def evaluate_objectives(
    model: nn.Module, problem: AttackProblem, x: Tensor, rows: Tensor
) -> Objectives:
    """Forward ``x`` (rows ``rows`` of ``problem``) once and build ``L_t`` and ``L_nt`` on it."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    flip_set = problem.flip_set[rows]
    target_loss = masked_bce(logits, problem.desired[rows], flip_set)
    nontarget_loss = masked_bce(logits, problem.clean_pred[rows], ~flip_set)
    return Objectives(x, logits, target_loss, nontarget_loss)


def _sign_step(objective: Tensor, objectives: Objectives) -> DirectionStep:
    """Ascent direction ``sgn(∇ₓ objective)`` (the L∞ steepest ascent) from one backward pass."""
    (gradient,) = torch.autograd.grad(objective.sum(), objectives.x)
    return DirectionStep(
        loss=objective.detach(),
        direction=gradient.sign(),
        logits=objectives.logits.detach(),
        failed=gradient_failed(gradient),
    )


class MLAU(APGDAttack):
    """MLA-U, the unconstrained multi-label attack (paper eq. 1).

    Maximises ``−L_t`` with steps along ``sgn(g_t)``, ignoring what happens to the other labels.
    """

    name = "MLA-U"
    official_kind = "mla-u"

    def _direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
        objectives = evaluate_objectives(problem.model, problem, x, rows)
        # eq. 1: x ← x + η sgn(g_t), g_t = −∇ L_t.
        return _sign_step(-objectives.target_loss, objectives)


class MLAC(APGDAttack):
    """MLA-C, the constrained multi-label attack (paper eq. 3).

    Maximises ``−L_t − L_nt``: flip Ψ while making the other labels more confident, with steps
    along ``sgn(g_t − g_nt)`` (one backward pass of the summed objective gives ``g_t − g_nt``).
    ``preset="official"`` and the loop options are those of
    :class:`~mlattack.attacks.apgd.APGDAttack`.
    """

    name = "MLA-C"
    official_kind = "mla-c"

    def _direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
        objectives = evaluate_objectives(problem.model, problem, x, rows)
        # eq. 3: x ← x + η sgn(g_t − g_nt) = x + η sgn(∇(−L_t − L_nt)).
        return _sign_step(-objectives.target_loss - objectives.nontarget_loss, objectives)
