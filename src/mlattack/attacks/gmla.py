"""GMLA, the generalized multi-label attack (Mahmood & Elhamifar, CVPR 2024).

Two parts:

1. the flip set Ψ is the consistent target set of Ω on the clean prediction
   (:meth:`LabelGraph.consistent_target_set`, paper Section 4.1), unless the caller gives one;
2. an AutoPGD loop that moves Ψ to its desired side. The tracked objective is ``−L_t`` (notation of
   :mod:`mlattack.attacks.mla`). A repair then spends the steps an image did not need on the
   labels of Ψ̄ that flipped on the way.

How the loop steps, and how the objectives are written, are options (``mode``, ``loss``,
``fallback``, ``repair``, ``refresh``, ``step_size``); the defaults were chosen by measurement on
some seeds and reported on others (``benchmarks/gmla_heldout.py``, ``docs/semantics.md``, "Which
GMLA is the default"):

- ``mode="unconstrained"``: the sign step of ``−L_t`` on Ψ alone, one backward pass per step. At
  equal backward passes it reaches Ψ more often than any step held against the other labels: the
  paper's eq. 10 (``mode="projection"``), its L∞-steepest form (``mode="steepest"``, two backward
  passes a step), one constraint per nearby label (``mode="multi"``), the paper's τ rule
  (``mode="adaptive"``), or a hinge on the labels within a margin of flipping (tried, not kept:
  it halves the collateral flips and loses a third of the successes at |Ω| ≥ 3);
- ``loss="smooth-margin"``: the hinge ``max(0, margin − s(z − θ))`` of each label of Ψ smoothed as
  ``softplus(k(margin − s(z − θ)))/k`` (``sharpness`` k = 1.5, margin 1 logit). A label's pull
  weakens smoothly once it is past its threshold and fades beyond the margin. It ties the paper's
  BCE (``k = 1``, margin 0) on the development models, and reaches Ψ sooner than the hard hinge
  (``loss="margin"``), which pulls every unreached label equally. Where Ψ is out of reach (a parent
  with evidence of its own that ε cannot turn off: the test suite's trained hierarchy), BCE keeps
  spending the sign step on that parent and returns Ω still on in two thirds of the images, the
  smoothed hinge in 7 %;
- ``step_size="1eps"``: a first step of ε, not AutoPGD's 2ε (see :attr:`GMLA.loop_defaults`);
- ``fallback="none"``: one search loop for all the steps;
- ``repair=True``: the steps an image did not need to reach Ψ are spent on turning back the labels
  of Ψ̄ that flipped on the way, keeping Ψ reached;
- ``refresh=r``: the protected gradients are recomputed every ``r`` steps only ("lazy").
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from mlattack._validation import check_bool, check_int, check_number

from .apgd import DirectionStep
from .apgd_attack import APGDAttack
from .base import AttackProblem, LoopOutput, _check_choice, gradient_failed
from .mla import evaluate_objectives
from .official import official_step
from .stages import Repair, Stage, consistent_flip_set, hinge, smooth_hinge

if TYPE_CHECKING:
    from ..graph import LabelGraph

__all__ = [
    "GMLA",
    "gmla_direction",
    "multi_constraint_direction",
    "steepest_constrained_direction",
]

Mode = Literal["unconstrained", "steepest", "adaptive", "projection", "multi"]
Loss = Literal["smooth-margin", "margin", "bce"]
Fallback = Literal["unconstrained", "projection", "projection-then-unconstrained", "none"]
MODES: tuple[Mode, ...] = ("unconstrained", "steepest", "multi", "projection", "adaptive")
LOSSES: tuple[Loss, ...] = ("smooth-margin", "margin", "bce")
#: The loops each fallback runs, in order, on the images still unsolved before each.
FALLBACK_STAGES: dict[Fallback, tuple[str, ...]] = {
    "unconstrained": ("unconstrained",),
    "projection": ("projection",),
    "projection-then-unconstrained": ("projection", "unconstrained"),
    "none": (),
}
FALLBACKS: tuple[Fallback, ...] = tuple(FALLBACK_STAGES)
#: The measured defaults (``docs/semantics.md``); ``preset="official"`` overrides them.
DEFAULTS: dict[str, Any] = {
    "mode": "unconstrained",
    "tau": 0.85,
    "k": 3,
    "loss": "smooth-margin",
    "margin": 1.0,
    "sharpness": 1.5,
    "fallback": "none",
    "fallback_share": 0.5,
    "refresh": 1,
    "tau_rule": "per-image",
    "repair": True,
}
#: ``"per-image"``: each image's cosine decides; ``"official"``: the authors' batch quirk on top.
TauRule = Literal["per-image", "official"]
#: Each option that only some variants use, and which: given to another, it is refused.
USED_BY: dict[str, str] = {
    "tau": "mode='adaptive'",
    "tau_rule": "mode='adaptive'",
    "k": "mode='multi'",
    "margin": "loss='smooth-margin' or 'margin' (arithmetic='fast'), the repair (repair=True) and "
    "the fallbacks",
    "sharpness": "loss='smooth-margin' (arithmetic='fast')",
    "fallback_share": "a fallback other than 'none'",
    "loss": "arithmetic='fast' (arithmetic='official' always uses 'bce')",
    "refresh": "a mode with protected gradients (not 'unconstrained') and arithmetic='fast'",
}


def _inverse_norms(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """Row L2 norms ``[n]`` and their inverses (0 for a zero row)."""
    norms = torch.linalg.vector_norm(vectors, dim=1)
    inverse = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
    return norms, inverse


def gmla_direction(
    g_t: Tensor,
    g_nt: Tensor,
    *,
    tau: float = 0.85,
    mode: Mode = "adaptive",
    count_nonzero_quirk: bool = False,
) -> tuple[Tensor, Tensor]:
    """The GMLA step direction of every image, and which images used the projection (eq. 10).

    Args:
        g_t: float ``[n, ...]``, ``−∇ₓ L_t``: the direction that moves Ψ towards ``y*``.
        g_nt: float ``[n, ...]``, ``∇ₓ L_nt``: the direction that disturbs the other labels.
        tau: the projection is used where ``cos(g_t, g_nt) ≥ tau``.
        mode: ``"adaptive"`` (eq. 10 or 11 per image by ``tau``) or ``"projection"`` (always eq. 10).
            (``"multi"`` is :func:`multi_constraint_direction`.)
        count_nonzero_quirk: the authors' batch rule (adaptive mode): no row projects unless a row
            other than row 0 of the batch qualifies (their code counts the non-zero *indices*).

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
    _check_choice(mode, "mode", ("adaptive", "projection"))
    shape = g_t.shape
    g_t, g_nt = g_t.flatten(1), g_nt.flatten(1)
    norm_t, inverse_t = _inverse_norms(g_t)
    _, inverse_nt = _inverse_norms(g_nt)
    if mode == "projection":
        projected = torch.ones(g_t.shape[0], dtype=torch.bool, device=g_t.device)
    else:
        cosine = torch.linalg.vecdot(g_t, g_nt) * inverse_t * inverse_nt
        projected = cosine >= tau
        if count_nonzero_quirk and not bool(projected[1:].any()):
            projected = torch.zeros_like(projected)
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


def multi_constraint_direction(g_t: Tensor, protected: Tensor, valid: Tensor) -> Tensor:
    """eq. 10 with one constraint per protected label: ``d = Pν/‖Pν‖∞``, ``ν = sgn(g_t)``.

    ``P`` projects orthogonally to the span of the protected gradients ``J_1 … J_k`` of each image,
    so that to first order none of those labels' logits moves (eq. 10 keeps only their *sum* of
    losses constant, which lets one label rise while another falls). ``P`` is never formed: the
    span gets an orthonormal basis ``Q`` by a batched reduced QR, and ``Pν = ν − Q(Qᵀν)``.

    Args:
        g_t: float ``[n, ...]``, the direction that moves Ψ towards ``y*``.
        protected: float ``[n, k, ...]``, the gradients to stay orthogonal to.
        valid: bool ``[n, k]``: which of them count (an image may have fewer than ``k``).

    Returns:
        ``d`` of the shape of ``g_t``, ``‖d‖∞ = 1`` (0 where ``Pν`` is 0).
    """
    n = g_t.shape[0]
    # QR has no half-precision kernels, and the basis wants at least float32 accuracy anyway.
    work = torch.promote_types(g_t.dtype, torch.float32)
    nu = g_t.flatten(1).sign().to(work)
    columns = protected.flatten(2).transpose(1, 2).to(work)  # [n, D, k]
    usable = valid & (torch.linalg.vector_norm(columns, dim=1) > 0)
    # Usable columns first: QR still returns a unit vector for a zero column, and one in the middle
    # would take part of the later columns with it; at the end it is simply left out.
    order = torch.sort((~usable).to(torch.int8), dim=1, stable=True).indices
    columns = columns.gather(2, order.unsqueeze(1).expand_as(columns))
    basis, _ = torch.linalg.qr(columns)
    basis = basis * usable.gather(1, order).unsqueeze(1).to(work)
    p_nu = nu - torch.bmm(basis, torch.bmm(basis.transpose(1, 2), nu.unsqueeze(2))).squeeze(2)
    peak = p_nu.abs().amax(dim=1, keepdim=True)
    direction = p_nu / torch.where(peak > 0, peak, torch.ones_like(peak))
    return direction.to(g_t.dtype).view(n, *g_t.shape[1:])


def steepest_constrained_direction(g_t: Tensor, g_nt: Tensor) -> Tensor:
    """The L∞-steepest ascent of ``g_t`` that does not increase ``L_nt`` to first order.

    ``d = argmax ⟨g_t, d⟩`` subject to ``‖d‖∞ ≤ 1`` and ``⟨g_nt, d⟩ ≤ 0``. Where ``sgn(g_t)`` already
    satisfies the constraint it is the answer; elsewhere the dual gives ``d = sgn(g_t − λ g_nt)`` with
    the smallest ``λ > 0`` that meets it, i.e. a fractional knapsack: the coordinates where ``g_t``
    dominates ``g_nt`` most (largest ``g_t,i / g_nt,i``) keep ``sgn(g_t)`` while the weight ``|g_nt,i|``
    they carry is at most half of ``‖g_nt‖₁``, every other coordinate descends ``L_nt``, and one
    boundary coordinate takes the fraction that makes ``⟨g_nt, d⟩ = 0`` exactly.

    Args:
        g_t: float ``[n, ...]``, the direction that moves Ψ towards ``y*``.
        g_nt: float ``[n, ...]``, the gradient of the loss on the protected labels.

    Returns:
        ``d`` of the shape of ``g_t``, ``‖d‖∞ = 1`` (0 where ``g_t`` and ``g_nt`` are both 0).
    """
    shape = g_t.shape
    g_t, g_nt = g_t.flatten(1), g_nt.flatten(1)
    direction = g_t.sign()
    active = (torch.linalg.vecdot(g_nt, direction) > 0).nonzero().flatten()
    if active.numel() == 0:
        return direction.view(shape)
    t, nt = g_t[active], g_nt[active]
    weight = nt.abs()
    aligned = t * nt > 0  # where sgn(g_t) raises L_nt
    ratio = torch.where(aligned, t / torch.where(aligned, nt, 1.0), -math.inf)
    # The aligned coordinates by decreasing ratio (the others, at −inf, come last).
    ordered, order = ratio.sort(dim=1, descending=True)
    carried = weight.gather(1, order).cumsum(dim=1)
    half = weight.sum(dim=1, keepdim=True) / 2
    kept = ((carried <= half) & (ordered > -math.inf)).sum(dim=1, keepdim=True)
    has_boundary = kept < aligned.sum(dim=1, keepdim=True)
    # λ: the ratio of the first coordinate that cannot keep sgn(g_t) (−inf: every aligned one can).
    lam = torch.where(
        has_boundary, ordered.gather(1, kept.clamp(max=ordered.shape[1] - 1)), -math.inf
    )
    keep = ratio > lam
    step = torch.where(keep | (nt == 0), t.sign(), -nt.sign())
    # The coordinates at λ (one, barring ties) share the fraction that makes ⟨g_nt, d⟩ = 0 exactly.
    boundary = has_boundary & (ratio == lam)
    tied = torch.where(boundary, weight, 0.0).sum(dim=1, keepdim=True)
    before = torch.where(keep, weight, 0.0).sum(dim=1, keepdim=True)
    fraction = ((2 * half - 2 * before - tied) / torch.where(tied > 0, tied, 1.0)).clamp(-1.0, 1.0)
    step = torch.where(boundary, fraction * nt.sign(), step)
    direction[active] = step
    return direction.view(shape)


class GMLA(APGDAttack):
    """GMLA: flip the consistent target set Ψ of Ω and leave the other labels alone.

    Args:
        model: the multi-label classifier (returns logits).
        graph: the label graph (labels in the model's output order). May be ``None`` only when every
            call passes ``flip_set=``.
        mode: how the search steps: ``"unconstrained"`` (default) the sign step of ``−L_t`` on Ψ
            alone, one backward pass per step (MLA-U's step on Ψ); or held against the other
            labels: ``"steepest"`` the summed non-target loss, as the L∞-steepest step that cannot
            raise it to first order (:func:`steepest_constrained_direction`, two backward passes a
            step); ``"projection"`` the same loss by eq. 10's projection; ``"multi"`` the ``k``
            non-target labels nearest their threshold, one constraint each
            (:func:`multi_constraint_direction`); ``"adaptive"`` the paper's rule, eq. 10 where
            ``cos(g_t, g_nt) ≥ tau`` and eq. 11 elsewhere.
        tau: cosine threshold of ``mode="adaptive"`` (default 0.85).
        k: number of protected labels of ``mode="multi"`` (default 3, an int ≥ 1).
        loss: the loss of Ψ's labels and of the protected labels: ``"smooth-margin"`` (default)
            the smoothed hinge ``softplus(k(margin − s(z − θ)))/k`` of each label
            (:func:`~mlattack.attacks.stages.smooth_hinge`); ``"margin"`` the hinge
            ``max(0, margin − s(z − θ))``, so that labels already beyond ``margin`` neither pull nor
            get defended; ``"bce"``: the paper's binary cross-entropies.
        margin: the margin in logits of both hinges (default 1.0, a number > 0).
        sharpness: ``k`` of ``loss="smooth-margin"`` (default 1.5, a number > 0; larger is nearer
            the hinge).
        fallback: what happens to images whose flip set is not reached after
            ``ceil((1 − fallback_share)·steps)`` steps: ``"none"`` (default) keep the one loop for all
            the steps; ``"unconstrained"`` attack them again from the clean image along
            ``sgn(g_t)`` on Ψ for the remaining steps; ``"projection"`` the same with eq. 10;
            ``"projection-then-unconstrained"`` the two in turn, each for half of the remaining
            steps. An image keeps a later result when it reaches Ψ or ends nearer to it.
        fallback_share: the share of the steps left to the fallback (default 0.5, in ``(0, 1)``).
        refresh: recompute the protected gradients every ``refresh`` steps only (default 1: every
            step); between refreshes the last ones are reused, which saves their backward passes.
            Refused with ``mode="unconstrained"``, which has none.
        repair: spend the steps an image did not need to reach Ψ on turning back the labels
            outside Ψ that flipped, without losing Ψ (default ``True``): the search is followed by the
            :class:`~mlattack.attacks.stages.Repair` stage (with this ``margin``).
        tau_rule: ``"per-image"`` or ``"official"`` (the authors' batch quirk, see
            :func:`gmla_direction`); default ``"per-image"``, ``"official"`` under
            ``preset="official"``.
        **options: ``preset`` and the loop options of :class:`~mlattack.attacks.apgd.APGDAttack`,
            and the shared options of :class:`~mlattack.attacks.base.Attack`.

    ``preset="official"`` sets ``mode="adaptive"``, ``loss="bce"``, ``fallback="none"``,
    ``repair=False`` and ``refresh=1`` with the authors' loop; an option given explicitly is applied
    on top of it.

    No option is silently ignored: one the chosen variant does not use (``tau`` or ``tau_rule``
    without ``mode="adaptive"``, ``k`` without ``mode="multi"``, ``fallback_share`` without a
    fallback, ``margin`` with neither a hinge loss, the repair nor a fallback, ``sharpness`` without
    ``loss="smooth-margin"``, ``loss`` other than ``"bce"`` or ``refresh`` under
    ``arithmetic="official"``) raises a ``ValueError`` naming it
    and the variant that uses it (see :data:`USED_BY`); ``repr`` shows every option that acts.
    """

    name = "GMLA"
    official_kind = "gmla"
    #: A first step of ε rather than AutoPGD's 2ε: from the clean image both land on a corner of
    #: the ε-ball, but later steps then move a pixel by ε instead of across the whole ball, which
    #: ended as a semantic success sooner and more often on the development models
    #: (``docs/semantics.md``).
    loop_defaults = MappingProxyType({**APGDAttack.loop_defaults, "step_size": "1eps"})

    def __init__(
        self,
        model: nn.Module,
        graph: LabelGraph | None = None,
        *,
        mode: Mode | None = None,
        tau: float | None = None,
        k: int | None = None,
        loss: Loss | None = None,
        margin: float | None = None,
        sharpness: float | None = None,
        fallback: Fallback | None = None,
        fallback_share: float | None = None,
        refresh: int | None = None,
        tau_rule: TauRule | None = None,
        repair: bool | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)

        def resolved(name: str, given: Any) -> Any:
            return self._preset_value(name, given, DEFAULTS[name])

        self.graph = graph
        self.mode: Mode = _check_choice(resolved("mode", mode), "mode", MODES)
        tau_value = resolved("tau", tau)
        self.tau = check_number(tau_value, "tau", minimum=-1.0, maximum=1.0)
        self.k = check_int(resolved("k", k), "k", minimum=1)
        self.loss: Loss = _check_choice(resolved("loss", loss), "loss", LOSSES)
        self.margin = check_number(
            resolved("margin", margin), "margin", minimum=0.0, exclusive_minimum=True
        )
        self.sharpness = check_number(
            resolved("sharpness", sharpness), "sharpness", minimum=0.0, exclusive_minimum=True
        )
        self.fallback: Fallback = _check_choice(
            resolved("fallback", fallback), "fallback", FALLBACKS
        )
        self.fallback_share = check_number(
            resolved("fallback_share", fallback_share),
            "fallback_share",
            minimum=0.0,
            maximum=1.0,
            exclusive_minimum=True,
            exclusive_maximum=True,
        )
        self.refresh = check_int(resolved("refresh", refresh), "refresh", minimum=1)
        self.repair = check_bool(resolved("repair", repair), "repair")
        self.tau_rule: TauRule = _check_choice(
            resolved("tau_rule", tau_rule), "tau_rule", ("per-image", "official")
        )
        if self.arithmetic == "official":
            self._check_official()
        given = {
            "tau": tau,
            "tau_rule": tau_rule,
            "k": k,
            "margin": margin,
            "sharpness": sharpness,
            "fallback_share": fallback_share,
            "loss": loss,
            "refresh": refresh,
        }
        for name, value in given.items():
            if value is not None and not self._uses(name):
                raise ValueError(
                    f"{name}={value!r} is not used by this GMLA ({self._variant()}): {name} is "
                    f"used by {USED_BY[name]}"
                )
        #: What runs after the search (:class:`~mlattack.attacks.stages.Repair` with ``repair``).
        self.stages: tuple[Stage, ...] = (Repair(margin=self.margin),) if self.repair else ()

    def _check_official(self) -> None:
        """``arithmetic="official"`` runs the authors' GMLA: one loop of eq. 10/11 on BCE."""
        wrong = {
            "mode": (
                self.mode,
                self.mode in ("adaptive", "projection"),
                "'adaptive' or 'projection'",
            ),
            "loss": (self.loss, self.loss == "bce", "'bce'"),
            "fallback": (self.fallback, self.fallback == "none", "'none'"),
            "repair": (self.repair, not self.repair, "False"),
        }
        for name, (value, fits, needed) in wrong.items():
            if not fits:
                raise ValueError(
                    f"arithmetic='official' reproduces the authors' GMLA only: {name} must be "
                    f"{needed} with it, got {name}={value!r} (or use arithmetic='fast')"
                )

    def _uses(self, name: str) -> bool:
        """Whether option ``name`` acts in this configuration (see :data:`USED_BY`)."""
        official = self.arithmetic == "official"
        uses = {
            "tau": self.mode == "adaptive",
            "tau_rule": self.mode == "adaptive",
            "k": self.mode == "multi" and not official,
            "margin": (self.loss != "bce" and not official)
            or self.repair
            or self.fallback != "none",
            "sharpness": self.loss == "smooth-margin" and not official,
            "fallback_share": self.fallback != "none",
            "loss": not official or self.loss == "bce",
            "refresh": not official and self.mode != "unconstrained",
        }
        return uses[name]

    def _variant(self) -> str:
        return (
            f"mode={self.mode!r}, loss={self.loss!r}, fallback={self.fallback!r}, "
            f"repair={self.repair!r}, arithmetic={self.arithmetic!r}"
        )

    def __repr__(self) -> str:
        shown = [f"mode={self.mode!r}"]
        if self._uses("tau"):
            shown.append(f"tau={self.tau}")
            shown.append(f"tau_rule={self.tau_rule!r}")
        if self._uses("k"):
            shown.append(f"k={self.k}")
        shown.append(f"loss={self.loss!r}")
        if self._uses("margin"):
            shown.append(f"margin={self.margin}")
        if self._uses("sharpness"):
            shown.append(f"sharpness={self.sharpness}")
        shown.append(f"fallback={self.fallback!r}")
        if self._uses("fallback_share"):
            shown.append(f"fallback_share={self.fallback_share}")
        if self._uses("refresh"):
            shown.append(f"refresh={self.refresh}")
        shown.append(f"repair={self.repair}")
        return f"{super().__repr__()[:-1]}, {', '.join(shown)})"

    def _flip_set(self, clean_pred: Tensor, targets: Tensor, clean_logits: Tensor) -> Tensor:
        """Ψ: the consistent target set of Ω on the clean prediction (paper Section 4.1)."""
        return consistent_flip_set(
            self.graph, clean_pred, targets, clean_logits, self.direction, "GMLA"
        )

    # ------------------------------------------------------------------ the loop
    def _attack(self, problem: AttackProblem) -> LoopOutput:
        out = self._search(problem)
        for stage in self.stages:
            out = stage.refine(problem, out, self.steps)
        return out

    def _search(self, problem: AttackProblem) -> LoopOutput:
        """The constrained loop, then the fallback stages on the images it left unsolved."""
        stages = FALLBACK_STAGES[self.fallback]
        if not stages:
            return self._loop_along(problem, self.mode, self.steps)
        first = max(1, math.ceil((1 - self.fallback_share) * self.steps))
        out = self._loop_along(problem, self.mode, first)
        adv, failed = out.adv.clone(), out.gradient_failed.clone()
        iterations = out.iterations.clone()
        with torch.no_grad():
            logits = problem.model(adv)
        left = self.steps - first
        for number, mode in enumerate(stages):
            steps = math.ceil(left / (len(stages) - number))
            left -= steps
            # An image whose gradient failed stopped where no gradient helps: it is not retried,
            # nor one whose budget of backward passes (max_backward) is spent.
            retried = ~problem.flip_set_reached(logits) & ~failed & problem.within_budget(None, 1)
            unsolved = retried.nonzero().flatten()
            if steps == 0 or unsolved.numel() == 0:
                continue
            retry = problem.subset(unsolved)
            again = self._loop_along(retry, mode, steps)
            with torch.no_grad():
                retry_logits = retry.model(again.adv)
            before = self._target_shortfall(retry, logits[unsolved])
            after = self._target_shortfall(retry, retry_logits)
            better = retry.flip_set_reached(retry_logits) | (after < before)
            winners = unsolved[better]
            adv[winners] = again.adv[better]
            # Kept up to date for the next stage instead of a new forward pass over every image.
            logits[winners] = retry_logits[better]
            failed[winners] = again.gradient_failed[better]
            iterations[unsolved] += again.iterations
        return LoopOutput(adv=adv, iterations=iterations, gradient_failed=failed)

    def _loop_along(self, problem: AttackProblem, mode: str, steps: int) -> LoopOutput:
        """One AutoPGD loop of ``steps`` steps along the direction of ``mode``."""
        if self.arithmetic == "official":
            return self._loop(
                problem, lambda x, rows: self._official_direction(problem, x, rows), steps
            )
        # The lazy-refresh cache belongs to this loop alone: nothing of a call stays on the attack.
        cache = _ProtectedCache(self.refresh)
        return self._loop(
            problem, lambda x, rows: self._mode_direction(problem, x, rows, mode, cache), steps
        )

    def _target_shortfall(self, problem: AttackProblem, logits: Tensor) -> Tensor:
        """How far Ψ is from its desired side (the hinge with this attack's margin), per image."""
        return hinge(
            logits, problem.desired, problem.flip_set, self.margin, problem.logit_threshold
        )

    # ------------------------------------------------------------------ directions
    def _direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
        return self._mode_direction(problem, x, rows, self.mode, _ProtectedCache(1))

    def _mode_direction(
        self,
        problem: AttackProblem,
        x: Tensor,
        rows: Tensor,
        mode: str,
        cache: _ProtectedCache,
    ) -> DirectionStep:
        objectives = evaluate_objectives(problem.model, problem, x, rows)
        logits, threshold = objectives.logits, problem.logit_threshold
        flip_set, clean_pred = problem.flip_set[rows], problem.clean_pred[rows]
        if self.loss == "bce":
            target_loss = objectives.target_loss
        else:
            target_loss = self._label_loss(logits, problem.desired[rows], flip_set, threshold)
        if mode == "unconstrained":
            (g_t,) = torch.autograd.grad(-target_loss.sum(), objectives.x)
            direction = g_t.sign()
            nontarget_failed = torch.zeros_like(flip_set[:, 0])
        elif mode == "multi":
            g_t, protected, valid = self._protected_logit_gradients(
                objectives.x, logits, target_loss, flip_set, threshold, rows, cache, problem
            )
            direction = multi_constraint_direction(g_t, protected, valid)
            nontarget_failed = ~torch.isfinite(protected).flatten(1).all(dim=1)
        else:
            if self.loss == "bce":
                nontarget_loss = objectives.nontarget_loss
            else:
                nontarget_loss = self._label_loss(logits, clean_pred, ~flip_set, threshold)
            g_t, g_nt = self._summed_gradients(
                objectives.x, target_loss, nontarget_loss, rows, cache
            )
            if mode == "steepest":
                direction = steepest_constrained_direction(g_t, g_nt)
            else:
                direction, _ = gmla_direction(
                    g_t,
                    g_nt,
                    tau=self.tau,
                    mode="adaptive" if mode == "adaptive" else "projection",
                    count_nonzero_quirk=self.tau_rule == "official",
                )
            nontarget_failed = ~torch.isfinite(g_nt).flatten(1).all(dim=1)
        loss = target_loss.detach()
        # A (smoothed) hinge of Ψ beyond its margin has a zero (or underflowing) gradient on purpose:
        # Ψ is reached, which is not a failure.
        unreached = ~problem.flip_set_reached(logits.detach(), rows)
        failed = (gradient_failed(g_t) & unreached) | nontarget_failed
        return DirectionStep(loss=-loss, direction=direction, logits=logits.detach(), failed=failed)

    def _label_loss(
        self, logits: Tensor, wanted_on: Tensor, mask: Tensor, threshold: float
    ) -> Tensor:
        """The (smoothed) hinge of ``loss`` over the labels of ``mask``, per image."""
        if self.loss == "smooth-margin":
            return smooth_hinge(logits, wanted_on, mask, self.margin, threshold, self.sharpness)
        return hinge(logits, wanted_on, mask, self.margin, threshold)

    def _summed_gradients(
        self,
        x: Tensor,
        target_loss: Tensor,
        nontarget_loss: Tensor,
        rows: Tensor,
        cache: _ProtectedCache,
    ) -> tuple[Tensor, Tensor]:
        """``g_t`` and ``g_nt`` from one forward pass (``g_nt`` reused between refreshes)."""
        if not cache.due(rows, 1, x):
            (g_t,) = torch.autograd.grad(-target_loss.sum(), x)
            assert cache.gradients is not None
            return g_t, cache.gradients[rows, 0]
        # The parameters are frozen by the base class: each backward computes input gradients only.
        (g_t,) = torch.autograd.grad(-target_loss.sum(), x, retain_graph=True)
        (g_nt,) = torch.autograd.grad(nontarget_loss.sum(), x)
        if cache.gradients is not None:
            cache.gradients = cache.gradients.index_put((rows, torch.zeros_like(rows)), g_nt)
        return g_t, g_nt

    def _protected_logit_gradients(
        self,
        x: Tensor,
        logits: Tensor,
        target_loss: Tensor,
        flip_set: Tensor,
        threshold: float,
        rows: Tensor,
        cache: _ProtectedCache,
        problem: AttackProblem,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``g_t`` and the logit gradients of the ``k`` non-targets nearest their threshold.

        All ``k + 1`` input gradients come from one batched backward pass
        (``is_grads_batched``); between refreshes only ``g_t`` is computed. The ``k`` nearest are
        protected however far they are: leaving out those beyond the hinge margin was measured to
        let several times more of them flip (``benchmarks/gmla_ablation.py``).
        """
        n, labels = logits.shape
        width = min(self.k, labels)
        if not cache.due(rows, width, x):
            (g_t,) = torch.autograd.grad(-target_loss.sum(), x)
            assert cache.gradients is not None and cache.valid is not None
            return g_t, cache.gradients[rows], cache.valid[rows]
        distance = torch.where(flip_set, math.inf, (logits.detach() - threshold).abs())
        nearest_distance, nearest = distance.topk(width, dim=1, largest=False)
        valid = torch.isfinite(nearest_distance)
        cotangents = logits.new_zeros((width + 1, n, labels))
        (cotangents[0],) = torch.autograd.grad(-target_loss.sum(), logits, retain_graph=True)
        cotangents[1:].scatter_(2, nearest.T.unsqueeze(2), 1.0)
        (gradients,) = torch.autograd.grad(logits, x, cotangents, is_grads_batched=True)
        problem.add_backward(rows, width)  # counted as one by the model's hook: width + 1 in all
        g_t = gradients[0]
        protected = gradients[1:].transpose(0, 1)  # [n, k, ...]
        if cache.gradients is not None and cache.valid is not None:
            cache.gradients = cache.gradients.index_put((rows,), protected)
            cache.valid = cache.valid.index_put((rows,), valid)
        return g_t, protected, valid

    def _official_direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
        """The authors' GMLA step (:func:`~mlattack.attacks.official.official_direction`)."""
        return official_step(
            "gmla",
            problem.model,
            problem,
            x,
            rows,
            tau=self.tau,
            count_nonzero_quirk=self.tau_rule == "official",
            projection_only=self.mode == "projection",
        )


class _ProtectedCache:
    """The protected gradients of one loop's rows for the lazy refresh (``refresh > 1``).

    Created per loop, so that an attack object keeps nothing of a call (reentrant).
    """

    def __init__(self, refresh: int) -> None:
        self.refresh = refresh
        self.gradients: Tensor | None = None  # float [rows, width, ...]
        self.valid: Tensor | None = None  # bool [rows, width]
        self.calls = 0

    def due(self, rows: Tensor, width: int, like: Tensor) -> bool:
        """Whether this call recomputes the protected gradients (and sets up the cache)."""
        due = self.gradients is None or self.calls % self.refresh == 0
        self.calls += 1
        if self.refresh > 1 and self.gradients is None:
            size = int(rows.max()) + 1 if rows.numel() else 0
            self.gradients = like.new_zeros((max(size, 1), width, *like.shape[1:]))
            self.valid = torch.zeros(self.gradients.shape[:2], dtype=torch.bool, device=like.device)
        return due
