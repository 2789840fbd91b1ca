"""ML-DP (Song et al., 2018) and the linearise-and-solve loop it shares with MLA-LP.

Both attacks work on the logits directly. At an iterate ``x`` each label ``c`` has a *signed
margin* ``m_c = s_c (f_c(x) − θ)`` with ``s_c = +1`` when its desired value ``y*_c`` is on and
``−1`` when it is off (``θ`` the logit threshold), so a label is on its desired side when
``m_c > 0`` (exactly: when ``(f_c > θ) == y*_c``). Flip-set labels want to cross, the other
labels want to stay. Each step linearises the logits of the labels that matter,
``f(x + r) ≈ f(x) + J r``, and solves a small problem on ``J`` (least L2 norm for ML-DP, least L∞
norm by linear programming for MLA-LP).

**Labels that matter** (:func:`select_labels`): every flip-set label, plus the non-target labels
closest to the threshold (smallest ``|f_c − θ|``) up to ``max_labels`` rows in all, re-chosen at
every step. A non-target far from its threshold cannot be pushed across by one small step, and the
ones that come close enter the selection at the next step. With ``C ≤ max_labels`` every label is
used.

**Jacobian rows** (:func:`label_jacobian`) are vector-Jacobian products with one-hot cotangents
(one row per selected label, all images at once): on accelerators one batched call
(``torch.autograd.grad(..., is_grads_batched=True)``); on CPU one backward pass per row, which
measured 1.8× faster there (small conv net, 8 images at 32×32, 20 rows: 27 ms against 49 ms),
as DESIGN §6 found for input gradients. Models whose operations lack a batching rule fall back to
the per-row passes.

**Reached, with a margin.** A flip-set label counts as flipped inside the loop only when its
signed margin is at least the attack's *reach margin* ``δ`` (:meth:`LinearizedAttack._reach_margin`,
in logits), not merely positive. Both attacks aim further than ``δ``. The reason is that the base
class scores what is returned by a fresh forward pass of the whole batch, and a float model does not
give bit-identical logits for an image alone and inside a batch (BLAS and convolution kernels block
and sum differently by batch size; about 1e-7 relative in float32). A linearise-and-solve step lands
its labels *exactly* where it aimed, so an iterate aimed at the threshold itself would flip or not
with the batch. ``δ`` is far above that noise (:data:`FLOAT32_MARGIN`, :data:`AMP_MARGIN` under
``amp``), so the success of an image does not depend on the batch it is attacked in.

**Loop** (:class:`LinearizedAttack`): every image keeps its best iterate by (number of flip-set
labels not reached, then number of other labels off their side, then the flip set's total logit
shortfall ``Σ_{c∈Ψ} max(0, δ − m_c)``); it stops when the flip set is reached (``early_stop``) or
every label is on its desired side, when its gradient is zero or not finite, its logits are not
finite or its step is not finite (all three ``gradient_failed``), or when a step no longer moves it.
An iterate with a NaN or infinite logit is never kept as the best. Iterates are projected onto the
ε-ball and ``[0, 1]`` after every step; finished images leave the working batch.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mlattack._validation import check_int, check_number

from .base import Attack, AttackProblem, LoopOutput, gradient_failed

__all__ = [
    "AMP_MARGIN",
    "FLOAT32_MARGIN",
    "MLDP",
    "Linearization",
    "LinearizedAttack",
    "label_jacobian",
    "robust_margin",
    "select_labels",
]

#: Default logit margin of the linearised attacks in full precision: ~1e5 times the batch-dependent
#: rounding of float32 logits (module docstring), small next to logits (0.25 % of probability at 0.5).
FLOAT32_MARGIN = 0.01
#: The same under ``amp``: bfloat16 keeps 8 significant bits, so forward passes of one image in two
#: batches can differ by a few hundredths of a logit.
AMP_MARGIN = 0.1


def robust_margin(amp: str | None) -> float:
    """The default margin for an attack with the given ``amp`` option (module docstring)."""
    return FLOAT32_MARGIN if amp is None else AMP_MARGIN


def select_labels(
    logits: Tensor, flip_set: Tensor, logit_threshold: float, max_labels: int
) -> tuple[Tensor, Tensor]:
    """The labels linearised at a step: the flip set, then the non-targets nearest the threshold.

    Args:
        logits: float ``[n, C]``.
        flip_set: bool ``[n, C]``.
        logit_threshold: ``θ``.
        max_labels: rows per image (raised to the flip-set size where the flip set is larger).

    Returns:
        ``(labels, valid)``: int64 ``[n, m]`` label indices and bool ``[n, m]`` (False for padding),
        ``m = min(C, max(max_labels, max |Ψ_i|))``. A row's choice does not depend on the others.
    """
    num_labels = logits.shape[1]
    flip_count = flip_set.sum(dim=1)
    per_row = flip_count.clamp(min=max_labels).clamp(max=num_labels)
    width = int(per_row.max()) if per_row.numel() else 0
    distance = (logits.detach() - logit_threshold).abs()
    priority = torch.where(flip_set, torch.full_like(distance, -math.inf), distance)
    labels = priority.argsort(dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=logits.device) < per_row.unsqueeze(1)
    return labels, valid


def label_jacobian(
    logits: Tensor,
    leaf: Tensor,
    labels: Tensor,
    valid: Tensor,
    *,
    batched: bool | None = None,
    on_batched: Callable[[int], None] | None = None,
) -> Tensor:
    """Rows ``∂ logits[i, labels[i, k]] / ∂ leaf[i]`` by vector-Jacobian products.

    Images must not interact inside the model (true in eval mode), so the gradient of the batch sum
    of one logit per image gives every image's row at once.

    Args:
        logits: float ``[n, C]`` computed from ``leaf`` (attached to the autograd graph).
        leaf: the tensor ``[n, ...]`` the rows are taken with respect to (requires grad).
        labels: int64 ``[n, m]``.
        valid: bool ``[n, m]``; rows of padding come back zero.
        batched: one batched VJP call (True) or one backward pass per row (False); ``None`` picks
            batched off the CPU (see the module docstring).
        on_batched: called with ``m`` when the batched call ran (``m`` backward passes in one
            call, which a pass counter sees as one).

    Returns:
        float ``[n, m, d]`` with ``d`` the size of one ``leaf`` row.
    """
    one_hot = nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
    cotangents = (one_hot * valid.unsqueeze(-1).to(logits.dtype)).transpose(0, 1)  # [m, n, C]
    if batched is None:
        batched = leaf.device.type != "cpu"
    rows: Tensor | None = None
    if batched:
        try:
            (rows,) = torch.autograd.grad(
                logits, leaf, cotangents, retain_graph=True, is_grads_batched=True
            )
        except RuntimeError:  # an operation without a vmap rule: per-row passes below
            rows = None
        if rows is not None and on_batched is not None:
            on_batched(cotangents.shape[0])
    if rows is None:
        rows = torch.stack(
            [
                torch.autograd.grad(logits, leaf, cotangent, retain_graph=True)[0]
                for cotangent in cotangents
            ]
        )
    return rows.transpose(0, 1).flatten(2)


@dataclass(frozen=True)
class Linearization:
    """The logits of the working images at their iterates and the Jacobian rows of chosen labels.

    ``margins`` are the signed margins ``s_c (f_c − θ)`` of all ``C`` labels; ``labels``/``valid``
    come from :func:`select_labels`, ``jacobian`` is taken with respect to the attack's perturbation
    variable (see :meth:`LinearizedAttack._parametrize`).
    """

    rows: Tensor  # int64 [n], rows of the AttackProblem
    x: Tensor  # float [n, ...], the iterates (detached)
    logits: Tensor  # float [n, C] (detached)
    margins: Tensor  # float [n, C]
    signs: Tensor  # float [n, C], +1 desired on, -1 desired off
    labels: Tensor  # int64 [n, m]
    valid: Tensor  # bool [n, m]
    jacobian: Tensor  # float [n, m, d]

    def selected(self, values: Tensor) -> Tensor:
        """``values[i, labels[i, k]]`` for a per-label tensor ``[n, C]``."""
        return values.gather(1, self.labels)


class LinearizedAttack(Attack):
    """The loop shared by ML-DP and MLA-LP (module docstring); subclasses write only :meth:`_step`.

    Args:
        model, eps, steps, ...: see :class:`~mlattack.attacks.base.Attack`.
        max_labels: labels linearised per image and step (module docstring: labels that matter).
    """

    #: Stop an image whose step leaves it where it was (the next step would be the same).
    stop_when_stalled: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, max_labels: int = 32, **options: Any) -> None:
        super().__init__(model, **options)
        self.max_labels = check_int(max_labels, "max_labels", minimum=1)

    # ------------------------------------------------------------------ subclass hooks
    def _start(self, problem: AttackProblem) -> Any:
        """Per-call state handed to every :meth:`_step` (``None`` unless overridden)."""
        return None

    def _parametrize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(variable, inputs)``: the perturbation variable (zeros, requires grad) and the model
        input ``x + U(variable)`` it spans; by default the full-resolution perturbation itself."""
        variable = torch.zeros_like(x, requires_grad=True)
        return variable, x + variable

    def _to_image(self, step: Tensor, like: Tensor) -> Tensor:
        """Map a step ``[n, d]`` of the perturbation variable to image space (shaped like
        ``like``)."""
        return step.view_as(like)

    def _reach_margin(self) -> float:
        """``δ``: the logit margin beyond the threshold from which a flip-set label counts as
        flipped inside the loop (module docstring: reached, with a margin)."""
        return 0.0

    @abc.abstractmethod
    def _step(self, state: Any, problem: AttackProblem, lin: Linearization) -> Tensor:
        """The step ``[n, d]`` of the perturbation variable for the working images of ``lin``."""

    # ------------------------------------------------------------------ the loop
    def _attack(self, problem: AttackProblem) -> LoopOutput:
        batch, num_labels = problem.clean_pred.shape
        device = problem.images.device
        theta = problem.logit_threshold
        signs = problem.desired.to(problem.images.dtype) * 2 - 1
        x = problem.random_start() if self.random_start else problem.images.clone()
        best = x.clone()
        best_score = torch.full((batch,), math.inf, dtype=torch.float64, device=device)
        iterations = torch.zeros(batch, dtype=torch.int64, device=device)
        failed = torch.zeros(batch, dtype=torch.bool, device=device)
        running = torch.ones(batch, dtype=torch.bool, device=device)
        state = self._start(problem)
        reach = self._reach_margin()
        progress = tqdm(total=self.steps, desc=self.name, disable=not self.verbose, leave=False)
        for step in range(self.steps + 1):
            rows = running.nonzero().flatten()
            if rows.numel() == 0:
                break
            last = step == self.steps
            if last:  # only the final iterates remain to be scored
                with torch.no_grad(), problem.rows(rows):
                    logits = problem.model(x[rows])
            else:
                variable, inputs = self._parametrize(x[rows])
                with problem.rows(rows):
                    logits = problem.model(inputs)
            finite = torch.isfinite(logits.detach()).all(dim=1)
            on_side = (logits.detach() > theta) == problem.desired[rows]
            signed = signs[rows] * (logits.detach() - theta)
            flip_set = problem.flip_set[rows]
            flip_missing = (flip_set & ~(on_side & (signed >= reach))).sum(dim=1)
            others_off = (~flip_set & ~on_side).sum(dim=1)
            shortfall = (
                torch.where(flip_set, (reach - signed).clamp_min(0), 0.0).sum(dim=1).double()
            )
            # Lexicographic: reaching the flip set first, then disturbing fewer other labels, then
            # (for images that fail) the flip set's total logit shortfall, squashed into [0, 1).
            score = flip_missing * (num_labels + 1) + others_off + shortfall / (1 + shortfall)
            score = torch.where(finite, score, math.inf)  # a NaN iterate is never the best
            better = score < best_score[rows]
            best[rows[better]] = x[rows[better]]
            best_score[rows[better]] = score[better]
            done = finite & (flip_missing == 0) & ((others_off == 0) | self.early_stop)
            running[rows[done]] = False
            if last or done.all():
                break
            progress.update(1)
            rows_in_batch = rows
            if problem.max_backward is not None:
                # The next linearisation costs up to max_labels backward passes per image.
                over = ~done & ~problem.within_budget(rows, self.max_labels)
                running[rows[over]] = False
                done = done | over
                if done.all():
                    break
            work = (~done).nonzero().flatten()
            rows = rows[work]
            logits_work = logits.detach()[work]
            labels, valid = select_labels(logits_work, flip_set[work], theta, self.max_labels)
            # Rows of finished images stay zero (no cotangent), so one backward serves the batch.
            full_labels = torch.zeros(
                (logits.shape[0], labels.shape[1]), dtype=torch.int64, device=device
            )
            full_valid = torch.zeros_like(full_labels, dtype=torch.bool)
            full_labels[work], full_valid[work] = labels, valid
            # Every row of the batch goes through each backward pass: one per selected label.
            jacobian = label_jacobian(
                logits,
                variable,
                full_labels,
                full_valid,
                on_batched=partial(_count_batched, problem, rows_in_batch),
            )[work].detach()
            bad = gradient_failed(jacobian.flatten(1)) | ~finite[work]
            failed[rows[bad]] = True
            running[rows[bad]] = False
            keep = ~bad
            if not keep.any():
                continue
            rows = rows[keep]
            current = x[rows]
            lin = Linearization(
                rows=rows,
                x=current,
                logits=logits_work[keep],
                margins=signs[rows] * (logits_work[keep] - theta),
                signs=signs[rows],
                labels=labels[keep],
                valid=valid[keep],
                jacobian=jacobian[keep],
            )
            update = self._step(state, problem, lin).to(x.dtype)
            solved = torch.isfinite(update).all(dim=1)
            if not solved.all():  # e.g. an overflowing Gram matrix: stop where the image is
                failed[rows[~solved]] = True
                running[rows[~solved]] = False
                update = torch.where(solved.unsqueeze(1), update, 0.0)
            moved = problem.project(current + self._to_image(update, current), rows)
            iterations[rows] += 1
            if self.stop_when_stalled:
                stalled = (moved == current).flatten(1).all(dim=1)
                # The stalled iterate was already scored: nothing new to evaluate.
                running[rows[stalled]] = False
            x[rows] = moved
        progress.close()
        return LoopOutput(adv=best, iterations=iterations, gradient_failed=failed)


def _count_batched(problem: AttackProblem, rows: Tensor, width: int) -> None:
    """A batched Jacobian of ``width`` rows is ``width`` backward passes; the model saw one."""
    problem.add_backward(rows, width - 1)


class MLDP(LinearizedAttack):
    """ML-DP, the multi-label DeepFool of Song et al. (2018).

    At each iterate the logits of the selected labels are linearised and the step is the least-L2
    solution of the active constraints, ``r = J_Aᵀ (J_A J_Aᵀ)⁺ (t_A − f_A)``. ``A`` holds the
    selected flip-set labels less than ``margin`` beyond their threshold and the selected other
    labels off their side. A flip-set label is moved to ``t_c = θ + s_c (overshoot · |θ − f_c| +
    margin)``: ``(1 + overshoot)`` times the way to its threshold (DeepFool's overshoot, exact on a
    linear model) plus ``margin`` beyond it; another label off its side is moved back to
    ``θ + s_c · overshoot · |θ − f_c|``. Selected labels that this step would push off their side
    (to first order) join ``A`` with that rule, which for them means stopping
    ``overshoot · |θ − f_c|`` short of the threshold, and the step is recomputed, so it satisfies
    every selected linear constraint. The iterate is then projected onto the ε-ball and ``[0, 1]``.

    ``margin`` is what keeps ML-DP off the threshold (module docstring: reached, with a margin):
    the relative overshoot alone shrinks with the remaining distance, and on a curved model the
    last steps land within ~1e-7 of the threshold. The loop counts a label as flipped from
    ``margin / 2`` on (half is left for the linearisation error), so every success holds by at
    least ``margin / 2`` in the loop's own forward pass.

    Args:
        model, eps, steps, ...: see :class:`~mlattack.attacks.base.Attack` (``steps`` default 50).
        overshoot: relative overshoot of each step (DeepFool's 0.02), ``>= 0``.
        margin: absolute logit margin ``> 0`` by which flip-set labels are pushed past their
            threshold; ``None``: :func:`robust_margin` (0.01, or 0.1 under ``amp``).
        max_labels: labels linearised per image and step (see the module docstring).
    """

    name = "ML-DP"
    default_steps = 50

    #: ``(J_A J_Aᵀ)⁺`` drops eigenvalues below this fraction of the largest (nearly parallel rows).
    PINV_RTOL: ClassVar[float] = 1e-8

    def __init__(
        self,
        model: nn.Module,
        *,
        overshoot: float = 0.02,
        margin: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.overshoot = check_number(overshoot, "overshoot", minimum=0.0)
        self.margin = (
            robust_margin(self.amp)
            if margin is None
            else check_number(margin, "margin", minimum=0.0, exclusive_minimum=True)
        )

    def _reach_margin(self) -> float:
        return self.margin / 2

    def _step(self, state: Any, problem: AttackProblem, lin: Linearization) -> Tensor:
        jacobian = lin.jacobian
        gram = torch.bmm(jacobian, jacobian.transpose(1, 2)).double()
        logits = lin.selected(lin.logits).double()
        signs = lin.selected(lin.signs).double()
        margins = lin.selected(lin.margins).double()
        in_flip_set = problem.flip_set[lin.rows].gather(1, lin.labels)
        to_threshold = problem.logit_threshold - logits  # θ − f, [n, m]
        beyond = self.overshoot * to_threshold.abs() + torch.where(in_flip_set, self.margin, 0.0)
        needed = to_threshold + signs * beyond  # t − f
        active = lin.valid & torch.where(in_flip_set, margins < self.margin, margins <= 0)
        coefficients = torch.zeros_like(needed)
        for _ in range(lin.labels.shape[1]):
            coefficients = _masked_min_norm(gram, needed, active, self.PINV_RTOL)
            change = (gram @ coefficients.unsqueeze(2)).squeeze(2)  # J r on the selected labels
            predicted = signs * (change - to_threshold)  # first-order margins after the step
            joining = lin.valid & ~active & (predicted < 0)
            if not joining.any():
                break
            active |= joining
        return torch.bmm(coefficients.to(jacobian.dtype).unsqueeze(1), jacobian).squeeze(1)


def _masked_min_norm(gram: Tensor, needed: Tensor, active: Tensor, rtol: float) -> Tensor:
    """Coefficients ``c`` with ``c_A = (G_AA)⁺ b_A`` and zero elsewhere, per image (batched).

    Inactive rows and columns are replaced by a diagonal block at the image's own scale, which keeps
    them decoupled from the active block and keeps the pseudo-inverse's relative cut-off meaningful
    at that scale.
    """
    pair = active.unsqueeze(2) & active.unsqueeze(1)
    scale = gram.diagonal(dim1=1, dim2=2).amax(dim=1).clamp_min(1e-300)
    eye = torch.eye(gram.shape[1], dtype=gram.dtype, device=gram.device)
    filler = eye * (~active).to(gram.dtype).unsqueeze(2) * scale.view(-1, 1, 1)
    masked = torch.where(pair, gram, torch.zeros_like(gram)) + filler
    inverse = torch.linalg.pinv(masked, rtol=rtol, hermitian=True)
    return (inverse @ torch.where(active, needed, 0.0).unsqueeze(2)).squeeze(2)
