"""GMLA, the generalized multi-label attack (Mahmood & Elhamifar, CVPR 2024).

Two parts:

1. the flip set Ψ is the consistent target set of Ω on the clean prediction
   (:meth:`LabelGraph.consistent_target_set`, paper Section 4.1), unless the caller gives one;
2. an AutoPGD loop whose direction moves Ψ while keeping the loss on Ψ̄ constant to first order
   (paper eq. 10-11, see :func:`gmla_direction`). The tracked objective is ``−L_t`` (notation of
   :mod:`mlattack.attacks.mla`): the projection takes care of the other labels.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from .apgd import APGDAttack, DirectionStep
from .base import AttackProblem, gradient_failed
from .mla import evaluate_objectives

if TYPE_CHECKING:
    from ..graph import LabelGraph

__all__ = ["GMLA", "gmla_direction"]

Mode = Literal["adaptive", "projection"]


def _inverse_norms(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """Row L2 norms ``[n]`` and their inverses (0 for a zero row)."""
    norms = torch.linalg.vector_norm(vectors, dim=1)
    inverse = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
    return norms, inverse


def gmla_direction(
    g_t: Tensor, g_nt: Tensor, *, tau: float = 0.85, mode: Mode = "adaptive"
) -> tuple[Tensor, Tensor]:
    """The GMLA step direction of every image, and which images used the projection (eq. 10).

    Args:
        g_t: float ``[n, ...]``, ``−∇ₓ L_t``: the direction that moves Ψ towards ``y*``.
        g_nt: float ``[n, ...]``, ``∇ₓ L_nt``: the direction that disturbs the other labels.
        tau: the projection is used where ``cos(g_t, g_nt) ≥ tau``.
        mode: ``"adaptive"`` (eq. 10 or 11 per image by ``tau``) or ``"projection"`` (always eq. 10).

    Returns:
        ``(d, projected)``: ``d`` of the shape of ``g_t`` with ``‖d‖∞ = 1`` (0 where ``g_t`` is 0),
        ``projected`` bool ``[n]``.

    With ``ĝ = g/‖g‖₂`` (0 for a zero gradient) and ``ν = sgn(g_t)``:

    - eq. 10: ``d = Pν/‖Pν‖∞`` with ``P = I − ĝ_nt ĝ_ntᵀ``; computed as ``ν − ĝ_nt(ĝ_ntᵀν)`` so that
      ``P`` (a d×d matrix) is never formed. ``g_ntᵀ d = 0``: the loss on Ψ̄ is constant to first order.
    - eq. 11: ``d = sgn(ĝ_t − ĝ_nt)``: ascend ``−L_t`` and descend ``L_nt`` with equal weight.

    Only per-image scalars are formed besides a few passes over the gradients: ``ĝ`` is never
    materialised (``ĝ_nt(ĝ_ntᵀν) = g_nt (g_ntᵀν)/‖g_nt‖²`` and ``sgn(ĝ_t − ĝ_nt) =
    sgn(g_t − (‖g_t‖/‖g_nt‖) g_nt)``), and a branch no image takes is not computed.
    """
    if mode not in ("adaptive", "projection"):
        raise ValueError(f"mode must be 'adaptive' or 'projection', got {mode!r}")
    shape = g_t.shape
    g_t, g_nt = g_t.flatten(1), g_nt.flatten(1)
    norm_t, inverse_t = _inverse_norms(g_t)
    _, inverse_nt = _inverse_norms(g_nt)
    if mode == "projection":
        projected = torch.ones(g_t.shape[0], dtype=torch.bool, device=g_t.device)
    else:
        cosine = torch.linalg.vecdot(g_t, g_nt) * inverse_t * inverse_nt
        projected = cosine >= tau
    projection: Tensor | None = None
    combined: Tensor | None = None
    if bool(projected.any()):
        nu = g_t.sign()
        # eq. 10: Pν = ν − ĝ_nt (ĝ_ntᵀ ν), then scaled to unit L∞ norm.
        # Scaled twice rather than by the squared inverse, which overflows for tiny gradients.
        coefficient = torch.linalg.vecdot(g_nt, nu) * inverse_nt * inverse_nt
        p_nu = torch.addcmul(nu, g_nt, coefficient.unsqueeze(1), value=-1.0)
        peak = p_nu.abs().amax(dim=1)
        inverse_peak = torch.where(peak > 0, 1.0 / torch.where(peak > 0, peak, 1.0), 0.0)
        projection = p_nu * inverse_peak.unsqueeze(1)
    if not bool(projected.all()):
        # eq. 11: sgn(ĝ_t − ĝ_nt) = sgn(g_t − (‖g_t‖/‖g_nt‖) g_nt); 0 where g_t = 0.
        ratio = (norm_t * inverse_nt).unsqueeze(1)
        combined = torch.addcmul(g_t, g_nt, ratio, value=-1.0).sign()
    if projection is None:
        assert combined is not None
        direction = combined
    elif combined is None:
        direction = projection
    else:
        direction = torch.where(projected.unsqueeze(1), projection, combined)
    return direction.view(shape), projected


class GMLA(APGDAttack):
    """GMLA: flip the consistent target set Ψ of Ω and leave the other labels alone.

    Args:
        model: the multi-label classifier (returns logits).
        graph: the label graph (labels in the model's output order). May be ``None`` only when every
            call passes ``flip_set=``.
        tau: cosine threshold of the adaptive rule: project (eq. 10) where ``cos(g_t, g_nt) ≥ tau``,
            else step along ``sgn(ĝ_t − ĝ_nt)`` (eq. 11).
        mode: ``"adaptive"`` or ``"projection"`` (always eq. 10).
        **options: the shared options of :class:`~mlattack.attacks.base.Attack`.
    """

    name = "GMLA"

    def __init__(
        self,
        model: nn.Module,
        graph: LabelGraph | None = None,
        *,
        tau: float = 0.85,
        mode: Mode = "adaptive",
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau):
            raise ValueError(f"tau must be a finite number, got {tau!r}")
        if mode not in ("adaptive", "projection"):
            raise ValueError(f"mode must be 'adaptive' or 'projection', got {mode!r}")
        self.graph = graph
        self.tau = float(tau)
        self.mode: Mode = mode

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, tau={self.tau}, mode={self.mode!r})"

    def _flip_set(self, clean_pred: Tensor, targets: Tensor, clean_logits: Tensor) -> Tensor:
        """Ψ: the consistent target set of Ω on the clean prediction (paper Section 4.1)."""
        if self.graph is None:
            raise ValueError(
                "GMLA needs a label graph to compute the flip set; pass graph= or flip_set="
            )
        if len(self.graph) != targets.shape[1]:
            raise ValueError(
                f"the graph has {len(self.graph)} labels but the model outputs {targets.shape[1]}"
            )
        flip_set = self.graph.consistent_target_set(
            clean_pred, targets, direction=self.direction, logits=clean_logits
        )
        return torch.as_tensor(flip_set, dtype=torch.bool, device=targets.device)

    def _direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
        objectives = evaluate_objectives(self.model, problem, x, rows)
        # Both gradients from the same forward pass; the parameters are frozen by the base class,
        # so each backward computes input gradients only.
        (g_t,) = torch.autograd.grad(-objectives.target_loss.sum(), objectives.x, retain_graph=True)
        (g_nt,) = torch.autograd.grad(objectives.nontarget_loss.sum(), objectives.x)
        direction, _ = gmla_direction(g_t, g_nt, tau=self.tau, mode=self.mode)
        return DirectionStep(
            loss=-objectives.target_loss.detach(),
            direction=direction,
            logits=objectives.logits.detach(),
            failed=gradient_failed(g_t) | ~torch.isfinite(g_nt).flatten(1).all(dim=1),
        )
