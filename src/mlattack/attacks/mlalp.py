"""MLA-LP: the multi-label attack by linear programming (Zhou et al., 2020).

Notation of :mod:`mlattack.attacks.mldp`: ``m_c = s_c (f_c(x) − θ)`` is label ``c``'s signed margin
(positive on its desired side). At each iterate the logits of the labels that matter (the flip set
plus the non-targets nearest their threshold, ``max_labels`` rows in all, see
:func:`~mlattack.attacks.mldp.select_labels`) are linearised with Jacobian ``J`` and the step ``r``
solves, per image, the linear program::

    minimise z   over (r, z)
    subject to   −s_c J_c r ≤ m_c − need_c     for every selected label c     (J r ≤ Δ)
                 −z ≤ r_j ≤ z                  for every coordinate j          (z = ‖r‖∞)
                 −x_j ≤ r_j ≤ 1 − x_j          (the image stays in [0, 1], see below)

with SciPy's HiGHS interior-point solver (``method="highs-ipm"``). The required margins are

* flip-set label: ``need_c = κ_c`` (cross to the desired side by ``κ_c``, initially ``margin``);
* other label: ``need_c = min(m_c, margin) − ρ_c`` when it is on its side (stay there, with up to
  ``margin`` of slack used), ``margin − ρ_c`` when it is not (come back).

**Relaxation** (per label): when a step made no progress — the flip-set deficit
``Σ_{c∈Ψ} max(0, margin − m_c)`` did not fall by 0.1 % — the non-target labels whose constraints
were binding in the last program (non-zero dual value) get ``ρ_c ← 2 ρ_c + margin``: they may give
way. When no non-target was binding, the flip-set labels' own margins halve instead
(``κ_c ← max(κ_c / 2, κ_min)``, with ``κ_min = min(margin, robust_margin)``: never below the margin
that keeps a success independent of the batch, see :mod:`mlattack.attacks.mldp`; the loop counts a
flip-set label as flipped from ``κ_min / 2`` on). An infeasible program relaxes every selected non-target the same way and is
solved again (up to :attr:`MLALP.MAX_RESOLVES` times within one step). The ε bound is not part of
the program: each iterate is projected onto the ε-ball (and the base class clips what is
returned), and a step cut by the projection shows up as lack of progress, which relaxes the
program.

**Cost and resolution.** The program has ``d + 1`` variables and ``2d + m`` rows (``d`` the size of
the perturbation), so at 224×224 (``d = 150 528``) one solve took 20–40 s on 2 busy CPU cores.
The perturbation is therefore solved at ``lp_size × lp_size`` per channel (default 112) and
upsampled by nearest neighbour (which keeps ``‖r‖∞`` exact; the Jacobian is taken with respect to
the low-resolution variable, and a cell's ``[0, 1]`` range is that of its block's mean pixel);
images no larger than ``lp_size`` are solved at full resolution.
``lp_size=None`` always uses full resolution. Coarser programs are cheaper but weaker: blocks
average out gradients of mixed sign, so the same change of the logits needs a larger ``‖r‖∞``. On
a 20-label conv net at 224×224 and ε = 8/255, ``lp_size=112`` turned the target off on 4/4 images
in one step, 64 on 1/4 and 32 on 0/4 within 5 steps. See ``benchmarks/bench_mlalp.py`` for
measured seconds per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from scipy.optimize import linprog
from torch import Tensor, nn

from mlattack._validation import check_int, check_number

from .base import AttackProblem
from .mldp import Linearization, LinearizedAttack, robust_margin

__all__ = ["MLALP", "solve_min_linf_step"]


@dataclass
class _RelaxState:
    """Per-call state of MLA-LP, rows indexed like the :class:`AttackProblem`."""

    flip_margin: Tensor  # float64 [b, C], κ_c
    slack: Tensor  # float64 [b, C], ρ_c
    binding: Tensor  # bool [b, C], non-target constraints binding in the last program
    deficit: Tensor  # float64 [b], flip-set deficit at the last step (inf: none yet)


def solve_min_linf_step(
    rows: np.ndarray, bounds: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """Solve ``min ‖r‖∞ s.t. rows·r ≤ bounds, lower ≤ r ≤ upper`` with HiGHS interior point.

    Args:
        rows: float ``[k, d]``, the constraint rows ``A`` (``A r ≤ b``).
        bounds: float ``[k]``, ``b``.
        lower, upper: float ``[d]``, box of ``r``.

    Returns:
        ``(r, duals)``: the step ``[d]`` (None when the program is infeasible or the solver fails)
        and the dual values ``[k]`` of the constraint rows (zeros when there is no solution).
    """
    count, dim = rows.shape
    eye = sparse.identity(dim, format="csr")
    column = sparse.csr_matrix(np.ones((dim, 1)))
    system = sparse.vstack(
        [
            sparse.hstack([sparse.csr_matrix(rows), sparse.csr_matrix((count, 1))]),
            sparse.hstack([eye, -column]),  # r_j − z ≤ 0
            sparse.hstack([-eye, -column]),  # −r_j − z ≤ 0
        ],
        format="csr",
    )
    objective = np.zeros(dim + 1)
    objective[-1] = 1.0
    box = np.column_stack(
        [np.append(lower, 0.0), np.append(upper, np.inf)]
    )  # z ≥ 0, unbounded above
    result = linprog(
        objective,
        A_ub=system,
        b_ub=np.concatenate([bounds, np.zeros(2 * dim)]),
        bounds=box,
        method="highs-ipm",
    )
    if result.status != 0 or result.x is None:
        return None, np.zeros(count)
    return result.x[:dim], np.asarray(result.ineqlin.marginals[:count])


class MLALP(LinearizedAttack):
    """MLA-LP, the linear-programming multi-label attack of Zhou et al. (2020).

    See the module docstring for the program, the relaxation rule and the resolution used.

    Args:
        model, eps, steps, ...: see :class:`~mlattack.attacks.base.Attack` (``steps`` default 20:
            each step is one linear program per image).
        margin: ``κ``, the logit margin by which flip-set labels must cross (and non-targets stay).
        lp_size: the program's perturbation resolution per side (``None``: full resolution).
        max_labels: labels linearised per image and step.
    """

    name = "MLA-LP"
    default_steps = 20
    stop_when_stalled = False  # a cut step relaxes the program instead

    #: Relative fall of the flip-set deficit that counts as progress.
    PROGRESS: ClassVar[float] = 1e-3
    #: Relax-and-solve-again rounds for an infeasible program within one step.
    MAX_RESOLVES: ClassVar[int] = 4
    #: Dual values below this count as non-binding.
    DUAL_TOL: ClassVar[float] = 1e-9

    def __init__(
        self,
        model: nn.Module,
        *,
        margin: float = 0.05,
        lp_size: int | None = 112,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.margin = check_number(margin, "margin", minimum=0.0, exclusive_minimum=True)
        self.lp_size = None if lp_size is None else check_int(lp_size, "lp_size", minimum=1)

    def _smallest_flip_margin(self) -> float:
        """``κ_min``, the floor of the relaxed flip-set margins (module docstring)."""
        return min(self.margin, robust_margin(self.amp))

    def _reach_margin(self) -> float:
        return self._smallest_flip_margin() / 2

    # ------------------------------------------------------------------ resolution
    def _lp_shape(self, x: Tensor) -> tuple[int, int]:
        height, width = x.shape[-2:]
        if self.lp_size is None:
            return height, width
        return min(height, self.lp_size), min(width, self.lp_size)

    def _parametrize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = self._lp_shape(x)
        if shape == tuple(x.shape[-2:]):
            return super()._parametrize(x)
        variable = torch.zeros((*x.shape[:-2], *shape), dtype=x.dtype, device=x.device)
        variable.requires_grad_(True)
        return variable, x + F.interpolate(variable, size=x.shape[-2:], mode="nearest")

    def _to_image(self, step: Tensor, like: Tensor) -> Tensor:
        shape = self._lp_shape(like)
        low = step.view(*like.shape[:-2], *shape)
        if shape == tuple(like.shape[-2:]):
            return low
        return F.interpolate(low, size=like.shape[-2:], mode="nearest")

    def _pixel_box(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per variable ``[n, d]``: the step range that keeps its pixels in ``[0, 1]``.

        At full resolution that is each pixel's own range. A low-resolution cell drives a block of
        pixels; requiring *every* pixel of the block to stay inside would freeze any block holding
        one saturated pixel, so the cell's range keeps the block's mean pixel inside, and pixels
        that leave ``[0, 1]`` are clipped by the projection after the step.
        """
        shape = self._lp_shape(x)
        if shape == tuple(x.shape[-2:]):
            return (-x).flatten(1), (1 - x).flatten(1)
        # The low-resolution cell that nearest-neighbour upsampling copies into each pixel.
        cells = torch.arange(shape[0] * shape[1], dtype=x.dtype, device=x.device).view(1, 1, *shape)
        owner = F.interpolate(cells, size=x.shape[-2:], mode="nearest").long().flatten()
        flat = x.flatten(2)  # [n, channels, H·W]
        size = (*flat.shape[:2], shape[0] * shape[1])
        mean = torch.zeros(size, dtype=x.dtype, device=x.device).scatter_reduce(
            2, owner.expand_as(flat), flat, reduce="mean", include_self=False
        )
        return (-mean).flatten(1), (1 - mean).flatten(1)

    # ------------------------------------------------------------------ the step
    def _start(self, problem: AttackProblem) -> _RelaxState:
        shape = problem.clean_pred.shape
        device = problem.images.device
        return _RelaxState(
            flip_margin=torch.full(shape, self.margin, dtype=torch.float64, device=device),
            slack=torch.zeros(shape, dtype=torch.float64, device=device),
            binding=torch.zeros(shape, dtype=torch.bool, device=device),
            deficit=torch.full((shape[0],), math.inf, dtype=torch.float64, device=device),
        )

    def _relax(self, state: _RelaxState, problem: AttackProblem, lin: Linearization) -> None:
        """Relax the images of ``lin`` whose flip-set deficit did not fall since their last step."""
        flip_set = problem.flip_set[lin.rows]
        margins = lin.margins.double()
        deficit = torch.where(flip_set, (self.margin - margins).clamp_min(0), 0.0).sum(dim=1)
        stuck = deficit > (1 - self.PROGRESS) * state.deficit[lin.rows]
        state.deficit[lin.rows] = deficit
        if not stuck.any():
            return
        rows = lin.rows[stuck]
        binding = state.binding[rows] & ~flip_set[stuck]
        blocked = binding.any(dim=1)
        slack = state.slack[rows]
        state.slack[rows] = torch.where(binding, 2 * slack + self.margin, slack)
        halve = (~blocked).unsqueeze(1) & flip_set[stuck]
        halved = (state.flip_margin[rows] / 2).clamp_min(self._smallest_flip_margin())
        state.flip_margin[rows] = torch.where(halve, halved, state.flip_margin[rows])

    def _needs(self, state: _RelaxState, problem: AttackProblem, lin: Linearization) -> Tensor:
        """``need_c`` of every label ``[n, C]`` (module docstring)."""
        margins = lin.margins.double()
        keep = torch.where(margins > 0, margins.clamp(max=self.margin), self.margin)
        return torch.where(
            problem.flip_set[lin.rows],
            state.flip_margin[lin.rows],
            keep - state.slack[lin.rows],
        )

    def _step(self, state: Any, problem: AttackProblem, lin: Linearization) -> Tensor:
        assert isinstance(state, _RelaxState)
        self._relax(state, problem, lin)
        lower, upper = (bound.double().cpu().numpy() for bound in self._pixel_box(lin.x))
        jacobian = lin.jacobian.double().cpu().numpy()
        step = np.zeros((jacobian.shape[0], jacobian.shape[2]))
        for i in range(len(lin.rows)):
            row = int(lin.rows[i])
            valid = lin.valid[i]
            labels = lin.labels[i][valid]
            signs = lin.signs[i, labels].double().cpu().numpy()
            rows = -signs[:, None] * jacobian[i][valid.cpu().numpy()]
            margins = lin.margins[i, labels].double().cpu().numpy()
            binding = np.zeros(len(labels), dtype=bool)
            for _ in range(self.MAX_RESOLVES + 1):
                need = self._needs(state, problem, lin)[i, labels].cpu().numpy()
                solution, duals = solve_min_linf_step(rows, margins - need, lower[i], upper[i])
                if solution is not None:
                    step[i] = solution
                    binding = np.abs(duals) > self.DUAL_TOL
                    break
                # Infeasible: every selected non-target may give way, then solve again.
                others = labels[~problem.flip_set[row, labels]]
                state.slack[row, others] = 2 * state.slack[row, others] + self.margin
            state.binding[row] = False
            state.binding[row, labels] = torch.as_tensor(binding, device=state.binding.device)
        return torch.as_tensor(step, dtype=lin.x.dtype, device=lin.x.device)
