"""Stages that refine what an attack found, and :class:`Sequential`, an attack followed by stages.

A :class:`Stage` takes the iterates an attack's loop returned and improves them within the same
ε-ball; :class:`Repair` is GMLA's collateral-flip repair as such a stage, usable after any attack::

    Sequential(MLAU(model, eps=0.03), Repair())                 # MLA-U + repair
    Sequential(MLAU(model, eps=0.03), Repair(), graph=graph)    # MLA-U on Ψ + repair
    Repair()(model, result, steps=100)                          # on a result already computed

``GMLA(repair=True)`` (its default) is its search followed by :class:`Repair`.
"""

from __future__ import annotations

import abc
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from mlattack._validation import check_int, check_number
from mlattack.losses import logit_threshold as probability_to_logit

from .base import (
    Attack,
    AttackProblem,
    AttackResult,
    Direction,
    LoopOutput,
    _check_choice,
    _check_feasible,
    _frozen_eval,
    _PreparedModel,
    score_adversarial,
)
from .compute import PassCounter

if TYPE_CHECKING:
    from ..graph import LabelGraph

__all__ = ["Repair", "Sequential", "Stage", "consistent_flip_set", "hinge", "smooth_hinge"]


def hinge(
    logits: Tensor, wanted_on: Tensor, mask: Tensor, margin: float, threshold: float
) -> Tensor:
    """``Σ_{c ∈ mask} max(0, margin − s_c (z_c − θ))`` per image, ``s_c = ±1`` for wanted on/off."""
    signs = wanted_on.to(logits.dtype) * 2 - 1
    shortfall = torch.relu(margin - signs * (logits - threshold))
    return torch.where(mask, shortfall, torch.zeros_like(shortfall)).sum(dim=1)


def smooth_hinge(
    logits: Tensor,
    wanted_on: Tensor,
    mask: Tensor,
    margin: float,
    threshold: float,
    sharpness: float,
) -> Tensor:
    """``Σ_{c ∈ mask} softplus(k (margin − s_c (z_c − θ))) / k`` per image, ``k = sharpness``.

    The hinge of :func:`hinge` smoothed: a label's gradient weight is ``σ(k (margin − s (z − θ)))``,
    which falls smoothly as the label moves past its threshold instead of dropping to 0 at the
    margin. ``k → ∞`` gives the hinge; ``k = 1`` with ``margin = 0`` the binary cross-entropy of the
    label's probability.
    """
    signs = wanted_on.to(logits.dtype) * 2 - 1
    shortfall = torch.nn.functional.softplus(sharpness * (margin - signs * (logits - threshold)))
    return torch.where(mask, shortfall / sharpness, torch.zeros_like(shortfall)).sum(dim=1)


def consistent_flip_set(
    graph: LabelGraph | None,
    clean_pred: Tensor,
    targets: Tensor,
    clean_logits: Tensor,
    direction: Direction,
    who: str,
) -> Tensor:
    """Ψ: the consistent target set of Ω on the clean prediction (paper Section 4.1)."""
    if graph is None:
        raise ValueError(
            f"{who} needs a label graph to compute the flip set; pass graph= or flip_set="
        )
    if len(graph) != targets.shape[1]:
        raise ValueError(
            f"the graph has {len(graph)} labels but the model outputs {targets.shape[1]}"
        )
    flip_set = graph.consistent_target_set(
        clean_pred, targets, direction=direction, logits=clean_logits
    )
    return torch.as_tensor(flip_set, dtype=torch.bool, device=targets.device)


class Stage(abc.ABC):
    """A step after an attack's loop: improves its iterates, never leaving the ε-ball."""

    name: ClassVar[str] = "stage"

    @abc.abstractmethod
    def refine(self, problem: AttackProblem, found: LoopOutput, steps: int) -> LoopOutput:
        """Improve ``found`` (the loop's output for the rows of ``problem``); ``steps`` is the
        attack's step budget, of which ``found.iterations`` are spent."""


#: What the repair's loss pulls on besides Ψ (see :class:`Repair`).
RepairLabels = Literal["flipped", "all"]


class Repair(Stage):
    """Spend each image's unused steps on turning back the labels outside Ψ that flipped.

    An image with some label outside Ψ off its clean side after ``i`` of its ``steps`` steps takes
    up to ``steps − i + extra_steps`` more signed-gradient steps from there on the sum of the hinge
    losses (``margin``) towards the desired side of Ψ's labels and of the labels outside Ψ that are
    flipped at the current iterate, which pulls them back (``labels="flipped"``, default), or of
    every label outside Ψ, which also keeps the unflipped ones away from their threshold
    (``labels="all"``, the previous repair: measured to leave about 1.5 times as many collateral
    flips at |Ω| ≥ 3, ``benchmarks/gmla_heldout.py``). The step shrinks linearly from ``ε/2`` to
    ``ε/20`` over the image's remaining steps.

    An iterate replaces the returned one only where every label of Ψ that the attack's point had on
    its desired side still is (all of Ψ where the attack reached Ψ; Ω too where it turned Ω but not
    all of Ψ) and fewer labels outside Ψ are flipped, so success is never lost and collateral flips
    never grow; an image with no label of Ψ moved is left as it is, and an image stops once none is
    flipped. One forward and one backward pass per step, counted in ``iterations`` (and a forward
    pass more for the images that go on where others stop, so that no image pays a backward pass it
    does not use); an image stops where another step would exceed ``max_backward``.

    By default the repair costs nothing beyond the attack's ``steps``: it uses only the steps an
    image did not need, so an image that reached Ψ late, or not at all, is left with its collateral
    flips. ``extra_steps`` buys fewer collateral flips with more compute: each image may take that
    many steps more (``benchmarks/gmla_collateral_floor.py`` measures the trade,
    ``docs/semantics.md``).

    Args:
        margin: the hinge margin in logits (default 1.0, a number > 0).
        labels: ``"flipped"`` (default) or ``"all"``, see above.
        extra_steps: repair steps each image may take beyond the attack's unused ones (default 0,
            an int ≥ 0).
    """

    name = "repair"

    def __init__(
        self, *, margin: float = 1.0, labels: RepairLabels = "flipped", extra_steps: int = 0
    ) -> None:
        self.margin = check_number(margin, "margin", minimum=0.0, exclusive_minimum=True)
        self.labels: RepairLabels = _check_choice(labels, "labels", ("flipped", "all"))
        self.extra_steps = check_int(extra_steps, "extra_steps", minimum=0)

    def __repr__(self) -> str:
        extra = f", extra_steps={self.extra_steps}" if self.extra_steps else ""
        return f"Repair(margin={self.margin}, labels={self.labels!r}{extra})"

    def refine(self, problem: AttackProblem, found: LoopOutput, steps: int) -> LoopOutput:
        threshold = problem.logit_threshold
        model = problem.model
        budget = steps + self.extra_steps - found.iterations.to(problem.flip_set.device)
        rows = ((budget > 0) & ~found.gradient_failed).nonzero().flatten()
        if rows.numel() == 0:
            return found
        adv, iterations = found.adv.clone(), found.iterations.clone()
        # The working set: problem rows, their iterates, best flip counts and remaining budgets.
        x, budget = found.adv[rows].detach(), budget[rows]
        eps = problem.eps.to(x.dtype)
        shape = (-1, *([1] * (x.dim() - 1)))
        for step in range(int(budget.max()) + 1):
            x = x.detach().requires_grad_(True)
            with problem.rows(rows):
                logits = model(x)
            desired = problem.desired[rows]
            wrong_side = (logits.detach() > threshold) != desired
            flipped = (wrong_side & ~problem.flip_set[rows]).sum(1)
            finite = torch.isfinite(logits.detach()).all(dim=1)
            if step == 0:
                # The labels of Ψ the found point has on their desired side (all of Ψ where it
                # reached Ψ) are kept there; only images with some and with collateral flips go on.
                held = problem.flip_set[rows] & ~wrong_side & finite[:, None]
                best, live = flipped, held.any(dim=1) & (flipped > 0)
            else:
                better = ~(wrong_side & held).any(dim=1) & finite & (flipped < best)
                adv[rows[better]] = x.detach()[better]
                best = torch.where(better, flipped, best)
                live = (best > 0) & (step < budget)
            if problem.max_backward is not None:
                live &= problem.within_budget(rows, 1)
            if not bool(live.any()):
                break
            if not bool(live.all()):
                # Only the images that go on pay a backward pass: they run through the model again
                # on their own (a forward pass is cheaper than a batch-wide backward pass).
                rows, budget, best, held = rows[live], budget[live], best[live], held[live]
                x = x.detach()[live].requires_grad_(True)
                with problem.rows(rows):
                    logits = model(x)
                desired = problem.desired[rows]
                wrong_side = (logits.detach() > threshold) != desired
                live = torch.ones_like(live[live])
            if self.labels == "flipped":
                pulled = problem.flip_set[rows] | wrong_side
            else:
                pulled = torch.ones_like(desired)
            loss = hinge(logits, desired, pulled, self.margin, threshold)
            (gradient,) = torch.autograd.grad(loss.sum(), x)
            live &= torch.isfinite(gradient).flatten(1).all(dim=1)
            rows, budget, best, held = rows[live], budget[live], best[live], held[live]
            iterations[rows] += 1
            left = 1 - step / budget.to(x.dtype)
            size = (eps[rows] * (0.05 + 0.45 * left)).view(shape)
            with torch.no_grad():
                x = problem.project(x.detach()[live] - size * gradient[live].sign(), rows)
        return LoopOutput(adv=adv, iterations=iterations, gradient_failed=found.gradient_failed)

    def __call__(
        self,
        model: nn.Module,
        result: AttackResult,
        *,
        steps: int,
        threshold: float = 0.5,
        eps: float | None = None,
    ) -> AttackResult:
        """Repair a result already computed: each attacked image gets up to
        ``steps − result.iterations + extra_steps`` repair steps; the returned result is scored by a
        fresh forward pass. ``threshold`` must be the attack's. The ε-ball is that of ``eps``, the
        attack's budget (give it to get the numbers of :class:`Sequential` exactly), or of
        ``result.eps``, which holds the budget rounded to the images' dtype (float32 rounds 0.1 up
        by 1.5e-9).

        Raises:
            ValueError: ``result.flip_set`` is missing (the repair needs the attack's flip set Ψ),
                ``steps`` is not a positive integer, or ``threshold`` does not give
                ``result.clean_pred``.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(result, AttackResult):
            raise TypeError(f"result must be an AttackResult, got {type(result).__name__}")
        flip_set = getattr(result, "flip_set", None)
        if not isinstance(flip_set, Tensor) or flip_set.shape != result.targets.shape:
            raise ValueError(
                "the repair needs the attack's flip set: result.flip_set must be a bool [B, C] "
                f"tensor, got {flip_set if flip_set is None else type(flip_set).__name__}"
            )
        check_int(steps, "steps", minimum=1)
        if eps is None:
            budget = result.eps.double()
        else:
            value = check_number(eps, "eps", minimum=0.0, maximum=1.0, exclusive_minimum=True)
            budget = torch.full_like(result.eps, value, dtype=torch.float64)
        theta = probability_to_logit(threshold)
        if not torch.equal(result.clean_logits > theta, result.clean_pred):
            raise ValueError(
                f"threshold={threshold} does not give the result's clean prediction: pass the "
                "attack's threshold"
            )
        attacked = result.attacked
        adv = result.adv.clone()
        iterations = result.iterations.clone()
        forward_passes = result.forward_passes.clone()
        backward_passes = result.backward_passes.clone()
        # As in every attack call: the model sees copies of its inputs, so a model that writes into
        # its input cannot move the returned images.
        running = _PreparedModel(model, adv.device.type, None, False, upcast_half_logits=True)
        problem: AttackProblem | None = None
        with _frozen_eval(model):
            if attacked.any():
                problem = AttackProblem(
                    images=result.images[attacked],
                    eps=budget[attacked],
                    clean_logits=result.clean_logits[attacked],
                    clean_pred=result.clean_pred[attacked],
                    targets=result.targets[attacked],
                    flip_set=flip_set[attacked].bool(),
                    desired=result.clean_pred[attacked] ^ flip_set[attacked].bool(),
                    logit_threshold=theta,
                    seed=None,
                    model=PassCounter.around(running, int(attacked.sum()), adv.device),
                )
                found = LoopOutput(
                    adv=result.adv[attacked],
                    iterations=result.iterations[attacked],
                    gradient_failed=result.gradient_failed[attacked],
                )
                with torch.enable_grad():
                    out = self.refine(problem, found, steps)
                adv[attacked] = problem.project(out.adv.detach())
                iterations[attacked] = out.iterations
                assert isinstance(problem.model, PassCounter)
                forward_passes[attacked] += problem.model.forward_passes
                backward_passes[attacked] += problem.model.backward_passes
            with torch.no_grad():
                adv_logits = running(adv).detach()
        _check_feasible(adv, result.images, attacked, problem)
        adv_pred, success, nonfinite = score_adversarial(
            adv_logits, result.clean_pred, result.targets, attacked, theta
        )
        return replace(
            result,
            adv=adv,
            adv_pred=adv_pred,
            adv_logits=adv_logits,
            iterations=iterations,
            success=success,
            nonfinite_logits=nonfinite,
            name=f"{result.name}+{self.name}",
            forward_passes=forward_passes,
            backward_passes=backward_passes,
        )


#: The shared options of :class:`~mlattack.attacks.base.Attack` a :class:`Sequential` takes over.
_SHARED = (
    "eps",
    "steps",
    "threshold",
    "early_stop",
    "random_start",
    "seed",
    "verbose",
    "direction",
    "on_invalid",
    "amp",
    "channels_last",
    "compile",
    "max_backward",
)


class Sequential(Attack):
    """An attack followed by stages, as one attack (one clean and one final forward pass).

    The composite takes over the attack's model and shared options (``eps``, ``steps``, ...): the
    stages run on the iterates its loop returns, with the steps it did not spend. The flip set Ψ is
    the attack's own, or with ``graph=`` the consistent target set of Ω (as GMLA's): "MLA-U on Ψ".

    Args:
        attack: the first attack (any :class:`~mlattack.attacks.base.Attack`).
        *stages: :class:`Stage` objects applied in order (e.g. :class:`Repair`).
        graph: attack the consistent target set of Ω instead of the attack's own flip set.
    """

    def __init__(self, attack: Attack, *stages: Stage, graph: LabelGraph | None = None) -> None:
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be an Attack, got {type(attack).__name__}")
        for stage in stages:
            if not isinstance(stage, Stage):
                raise TypeError(f"stages must be Stage objects, got {type(stage).__name__}")
        options: dict[str, Any] = {name: getattr(attack, name) for name in _SHARED}
        super().__init__(attack.model, **options)
        self.attack = attack
        self.stages = stages
        self.graph = graph
        on_psi = " on Psi" if graph is not None else ""
        self.name = attack.name + on_psi + "".join(f"+{stage.name}" for stage in stages)

    def __repr__(self) -> str:
        parts = [repr(self.attack), *(repr(stage) for stage in self.stages)]
        if self.graph is not None:
            parts.append("graph=...")
        return f"Sequential({', '.join(parts)})"

    def _flip_set(self, clean_pred: Tensor, targets: Tensor, clean_logits: Tensor) -> Tensor:
        if self.graph is None:
            return self.attack._flip_set(clean_pred, targets, clean_logits)
        return consistent_flip_set(
            self.graph, clean_pred, targets, clean_logits, self.direction, self.name
        )

    def _attack(self, problem: AttackProblem) -> LoopOutput:
        out = self.attack._attack(problem)
        for stage in self.stages:
            out = stage.refine(problem, out, self.steps)
        return out
