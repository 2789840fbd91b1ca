"""Held-out GMLA benchmark (issue 15): does the default win on models and draws it was not chosen on?

Models are trained in-script (``mlattack train``; the settings of ``benchmarks/train_synthetic.py``
for the standard scenes, of the demo's packaged model for the dense ones) and split in two:

- **choice** models: the standard-scenes model of seed 0 (the one ``gmla_ablation.py`` uses) and the
  packaged dense-scenes model, test images of dataset seed 1; and the standard-scenes models of
  seeds 11 and 19 and dense-scenes models of seeds 7 and 23, test images of dataset seed 101 (the
  held-out split of version 0.2.0: once its results had been seen, it could only serve to choose).
  GMLA's default is chosen here (``--split choice`` adds the candidate variants to the table).
- **held-out** models: standard-scenes models of seeds 29 and 31 and dense-scenes models of seeds
  37 and 41, none used anywhere else; test images from dataset seed 202. The must-reach lines of
  issue 15 are read from these only.

Cells: direction (off, on, mixed) × |Ω| (1-2 on the standard scenes, 3-5 on the dense ones; mixed
needs |Ω| ≥ 2) × ε (0.01, 0.03), 50 steps. Each image of a cell gets its own random Ω among its leaves
(off: predicted and truly present; on: predicted and truly absent; mixed: ⌈|Ω|/2⌉ off, the rest on),
the same Ω for every attack and ε. Every attack runs on the same images: MLA-U, MLA-C, MLA-U on Ψ
(MLA-U given GMLA's flip set Ψ), MLA-U on Ψ + repair (GMLA's repair stage after it), budget-matched
MLA-U on Ψ (as many steps as the most backward passes default GMLA spent on one image of the batch),
the official preset, GMLA ``mode="steepest"`` (the default of 0.1), GMLA ``loss="margin"`` with
AutoPGD's first step 2ε (the default of 0.2.0), MLA-U on Ψ with GMLA's first step ε (what the step
size alone buys) and default GMLA; then default
GMLA again stopped at the median backward passes MLA-U on Ψ used on the batch (``max_backward=``,
checked never to spend more), beside MLA-U on Ψ's images that succeeded within that budget.

Compute is counted, not assumed: every model call goes through :class:`PassCounter`, which tells the
images apart by their clean image (an iterate stays within ε of it) and counts per image each forward
pass and each backward pass through the input. Per cell, pooled over the models of the split, the
table gives FR_N, FR_S and NT_R with bootstrap 95 % intervals over images, the mean and median
backward passes per image, and the paired counts against default GMLA (images that are semantic
successes only under default GMLA / only under the row's attack). FR_S against backward passes is
drawn as anytime curves in a PNG: the share of images that are semantic successes when the attack
is stopped at b backward passes. For default GMLA the points are runs stopped there
(``max_backward=b``, b in :data:`ANYTIME_BUDGETS`); for an attack that stops at its first success
the curve of its successes within b passes is exact; for another attack that keeps repairing it is
drawn dashed, a lower bound. The must-reach lines are printed as PASS/FAIL.

``--photos`` measures the packaged photos on the ImageNet-WordNet model in one setting
(``--photo-setting LABEL_SET:CROPS:EPS_IN_255THS:STEPS``, default :data:`CHOSEN_PHOTO`, where MLA-U's
FR_S falls to 0.84 and the attacks separate at about a minute an attack), ``--photo-scan`` MLA-U
and default GMLA in several settings.

Run: ``python benchmarks/gmla_heldout.py`` (held-out split: about 10 minutes on 2 CPU cores, 7 of
them attacks, the rest training four models), ``--split choice``, ``--quick`` (under one
minute), ``--checkpoints DIR`` to keep and reuse the trained models, ``--save FILE`` to pickle the
per-image records.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning (see train_synthetic.py); set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from gmla_ablation import bootstrap, photo_leaf_pairs  # noqa: E402
from mlattack import GMLA, MLAC, MLAU, evaluate  # noqa: E402
from mlattack import models as mlattack_models  # noqa: E402
from mlattack.attacks import Attack, AttackResult, Repair, Sequential  # noqa: E402
from mlattack.attacks.base import AttackProblem, LoopOutput  # noqa: E402
from mlattack.data import SyntheticScenes  # noqa: E402
from mlattack.graph import LabelGraph  # noqa: E402
from synthetic_table1 import train_checkpoint  # noqa: E402

STEPS = 50
PACKAGED_DENSE = "packaged"
DEFAULT = "GMLA default"
PSI = "MLA-U on Ψ"
PSI_REPAIR = "MLA-U on Ψ + repair"
BUDGET_PSI = "MLA-U on Ψ, budget-matched"
STEEPEST = "GMLA mode='steepest' (0.1)"
HINGE = "GMLA loss='margin', 2ε (0.2.0)"
#: MLA-U on Ψ with GMLA's first step (ε): how much of the default's lead the step size alone buys.
PSI_STEP = "MLA-U on Ψ, first step ε"
#: Default GMLA run with as many backward passes as MLA-U on Ψ's median in its batch, and MLA-U
#: on Ψ's successes within that many.
AT_BUDGET = "GMLA default at Ψ's median budget"
PSI_AT_BUDGET = "MLA-U on Ψ within that budget"
#: The budgets default GMLA is also stopped at, for its exact anytime curve.
ANYTIME_BUDGETS = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class ModelSpec:
    """A model of a split: scenes, training seed (``None``: the packaged dense model)."""

    dense: bool
    seed: int | None
    #: The dataset seed of the model's test images.
    data_seed: int

    @property
    def name(self) -> str:
        scenes = "dense" if self.dense else "standard"
        return f"{scenes} {'packaged' if self.seed is None else f'seed {self.seed}'}"


SPLITS: dict[str, tuple[ModelSpec, ...]] = {
    "choice": (
        ModelSpec(False, 0, 1),  # dataset seed 1 is the ablation's
        ModelSpec(True, None, 1),
        ModelSpec(False, 11, 101),
        ModelSpec(False, 19, 101),
        ModelSpec(True, 7, 101),
        ModelSpec(True, 23, 101),
    ),
    "heldout": (
        ModelSpec(False, 29, 202),
        ModelSpec(False, 31, 202),
        ModelSpec(True, 37, 202),
        ModelSpec(True, 41, 202),
    ),
}
SIZES = {False: (1, 2), True: (3, 4, 5)}
DIRECTIONS = ("off", "on", "mixed")


# ------------------------------------------------------------------------------ counting passes
class _CountBackward(torch.autograd.Function):
    """Identity on the model input whose backward counts one backward pass for each of its rows."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, rows: Tensor, counts: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rows, ctx.counts = rows, counts
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        ctx.counts.index_add_(0, ctx.rows, torch.ones_like(ctx.rows))
        return grad, None, None


class PassCounter(nn.Module):
    """Wraps a model and counts, per image of the current batch, forward and backward passes.

    :meth:`start` gives the clean images; an input row is the image whose clean version is nearest
    in L∞ (an attack's iterate stays within its ε of it).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.clean: Tensor | None = None
        self.forward_passes = torch.zeros(0, dtype=torch.int64)
        self.backward_passes = torch.zeros(0, dtype=torch.int64)

    def start(self, clean: Tensor) -> None:
        self.clean = clean.detach().flatten(1)
        self.forward_passes = torch.zeros(len(clean), dtype=torch.int64)
        self.backward_passes = torch.zeros(len(clean), dtype=torch.int64)

    def forward(self, x: Tensor) -> Tensor:
        if self.clean is None:
            return self.inner(x)
        with torch.no_grad():
            flat = x.detach().flatten(1).to(self.clean.dtype)
            rows = torch.stack([(self.clean - row).abs().amax(dim=1).argmin() for row in flat])
        self.forward_passes.index_add_(0, rows, torch.ones_like(rows))
        if torch.is_grad_enabled() and x.requires_grad:
            x = _CountBackward.apply(x, rows, self.backward_passes)
        return self.inner(x)


# ------------------------------------------------------------------------------ attacks
class SearchThenRepair(GMLA):
    """Prototype: GMLA whose search is one sign step per backward pass, then GMLA's repair.

    ``guard=None``: the step ascends ``−L_t`` alone (``loss="bce"``: MLA-U on Ψ exactly;
    ``loss="margin"``: the hinge on Ψ). ``guard=δ``: it also descends the hinge of the labels
    outside Ψ that are within ``δ`` logits of their threshold (the labels at risk), one backward
    pass of the summed objective. ``step="scaled"``: the gradient at unit L∞ norm instead of its sign.
    """

    def __init__(
        self, *args: Any, guard: float | None = None, step: str = "sign", **options: Any
    ) -> None:
        super().__init__(*args, **options)
        self.step = step
        self.guard = guard

    def _search(self, problem: AttackProblem) -> LoopOutput:
        return self._loop(problem, lambda x, rows: self._guarded(problem, x, rows), self.steps)

    def _guarded(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> Any:
        from mlattack.attacks.apgd import DirectionStep
        from mlattack.attacks.base import gradient_failed
        from mlattack.attacks.mla import evaluate_objectives
        from mlattack.attacks.stages import hinge as _hinge

        objectives = evaluate_objectives(problem.model, problem, x, rows)
        logits, threshold = objectives.logits, problem.logit_threshold
        flip_set = problem.flip_set[rows]
        if self.loss == "margin":
            target = _hinge(logits, problem.desired[rows], flip_set, self.margin, threshold)
        else:
            target = objectives.target_loss
        objective = -target
        if self.guard is not None:
            guarded = _hinge(logits, problem.clean_pred[rows], ~flip_set, self.guard, threshold)
            objective = objective - guarded
        (gradient,) = torch.autograd.grad(objective.sum(), objectives.x)
        failed = gradient_failed(gradient) & (target.detach() > 0)
        flat = gradient.flatten(1)
        peak = flat.abs().amax(dim=1, keepdim=True)
        if self.step == "scaled":  # the gradient at unit L∞ norm: small entries move little
            direction = flat / torch.where(peak > 0, peak, torch.ones_like(peak))
        else:
            direction = flat.sign()
        return DirectionStep(
            loss=-target.detach(),
            direction=direction.view_as(gradient),
            logits=logits.detach(),
            failed=failed,
        )


def _psi_then(repair: Repair) -> Factory:
    return lambda m, g, s, d: Sequential(MLAU(m, steps=s, direction=d), repair, graph=g)


#: name -> (factory(model, graph, steps, direction), whether the attack is given Ψ).
Factory = Callable[[nn.Module, LabelGraph, int, str], Attack]


def _gmla(**options: Any) -> Factory:
    return lambda model, graph, steps, direction: GMLA(
        model, graph=graph, steps=steps, direction=direction, **options
    )


def _prototype(**options: Any) -> Factory:
    return lambda model, graph, steps, direction: SearchThenRepair(
        model, graph=graph, steps=steps, direction=direction, **options
    )


ATTACKS: dict[str, tuple[Factory, bool]] = {
    DEFAULT: (_gmla(), False),
    "MLA-U": (lambda m, g, s, d: MLAU(m, steps=s, direction=d), False),
    "MLA-C": (lambda m, g, s, d: MLAC(m, steps=s, direction=d), False),
    PSI: (lambda m, g, s, d: MLAU(m, steps=s, direction=d), True),
    PSI_REPAIR: (_psi_then(Repair()), False),
    "official preset": (_gmla(preset="official"), False),
    STEEPEST: (_gmla(mode="steepest"), False),
    HINGE: (_gmla(loss="margin", step_size="2eps"), False),
    PSI_STEP: (lambda m, g, s, d: MLAU(m, steps=s, direction=d, step_size="1eps"), True),
}
#: The rows whose images stop at their first success: their curve of successes within b passes is
#: exact. The others keep repairing (or, official, stay in the batch), so theirs is a lower bound.
STOPS_AT_FIRST_SUCCESS = frozenset({"MLA-U", "MLA-C", PSI, PSI_STEP, BUDGET_PSI})
#: The variants the default is chosen among (``--split choice``).
CANDIDATES: dict[str, tuple[Factory, bool]] = {
    "GMLA loss='bce'": (_gmla(loss="bce"), False),
    "GMLA first step 2ε": (_gmla(step_size="2eps"), False),
    "GMLA first step ε/2": (_gmla(step_size="0.5eps"), False),
    "GMLA sharpness=1": (_gmla(sharpness=1.0), False),
    "GMLA sharpness=2": (_gmla(sharpness=2.0), False),
    "GMLA sharpness=1.5, margin=2": (_gmla(margin=2.0), False),
    "Ψ + previous repair (all labels)": (_psi_then(Repair(labels="all")), False),
    "guard 0.5 + repair": (_prototype(loss="margin", guard=0.5), False),
    "scaled step + repair": (_prototype(loss="margin", step="scaled"), False),
}


# ------------------------------------------------------------------------------ data and cells
@dataclass
class Records:
    """Per-image outcomes of one attack in one cell, pooled over models."""

    success: list[bool] = field(default_factory=list)
    semantic: list[bool] = field(default_factory=list)
    nt: list[float] = field(default_factory=list)
    backward: list[int] = field(default_factory=list)
    forward: list[int] = field(default_factory=list)
    seconds: float = 0.0
    #: Per image, the backward-pass budget it was given (the rows at Ψ's median budget only).
    budget: list[int] = field(default_factory=list)
    #: Default GMLA only: per budget b of :data:`ANYTIME_BUDGETS`, whether each image is a semantic
    #: success when the attack is stopped at b backward passes (``max_backward=b``).
    exact_within: dict[int, list[bool]] = field(default_factory=dict)

    def add(
        self, result: AttackResult, graph: LabelGraph, counter: PassCounter, seconds: float
    ) -> None:
        metrics = evaluate(result, graph)
        self.success += [bool(s) for s in metrics.success]
        self.semantic += [bool(s) for s in metrics.semantic_success]
        self.nt += [float(v) for v in metrics.nt_flip_fraction]
        self.backward += counter.backward_passes.tolist()
        self.forward += counter.forward_passes.tolist()
        self.seconds += seconds

    def fr_s(self) -> float:
        return float(np.mean(self.semantic)) if self.semantic else math.nan

    def nt_r(self) -> float:
        values = [v for v in self.nt if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    def fr_s_within(self, budget: float) -> float:
        """The share of images that end as semantic successes within ``budget`` backward passes."""
        hits = [s and b <= budget for s, b in zip(self.semantic, self.backward, strict=True)]
        return float(np.mean(hits)) if hits else math.nan


Cell = tuple[str, int, float]  # direction, |Ω|, ε


def load_split(
    split: str, checkpoints: Path, args: argparse.Namespace
) -> Iterator[tuple[ModelSpec, nn.Module]]:
    for spec in SPLITS[split]:
        if spec.seed is None:
            path = Path(mlattack_models.__file__).parent / "synthetic-dense-small-cnn.pt"
        else:
            suffix = "-quick" if args.quick else ""
            path = checkpoints / f"{'dense' if spec.dense else 'standard'}-{spec.seed}{suffix}.pt"
            if not path.exists():
                started = time.perf_counter()
                quick = {"n_train": 1500, "epochs": 2} if args.quick else {}
                train_checkpoint(
                    path, threads=args.threads, seed=spec.seed, dense=spec.dense, **quick
                )
                print(f"  trained {spec.name} in {time.perf_counter() - started:.0f} s", flush=True)
        yield spec, mlattack_models.load(path).eval()


def draw_omegas(
    pred: Tensor, truth: Tensor, leaves: list[int], direction: str, size: int, count: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Up to ``count`` image indices and a random Ω ``[count, C]`` of ``size`` leaves for each."""
    rng = np.random.default_rng(seed)
    present = pred[:, leaves] & truth[:, leaves]
    absent = ~pred[:, leaves] & ~truth[:, leaves]
    n_off = {"off": size, "on": 0, "mixed": math.ceil(size / 2)}[direction]
    n_on = size - n_off
    rows, omegas = [], []
    for i in rng.permutation(len(pred)).tolist():
        on_side = np.flatnonzero(absent[i].numpy())
        off_side = np.flatnonzero(present[i].numpy())
        if len(off_side) < n_off or len(on_side) < n_on:
            continue
        chosen = [
            *rng.choice(off_side, n_off, replace=False),
            *rng.choice(on_side, n_on, replace=False),
        ]
        omega = torch.zeros(pred.shape[1], dtype=torch.bool)
        omega[[leaves[j] for j in chosen]] = True
        rows.append(i)
        omegas.append(omega)
        if len(rows) == count:
            break
    if not rows:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, pred.shape[1], dtype=torch.bool)
    return torch.tensor(rows), torch.stack(omegas)


def flip_set_of(graph: LabelGraph, logits: Tensor, targets: Tensor, direction: str) -> Tensor:
    psi = graph.consistent_target_set(logits > 0, targets, direction=direction, logits=logits)
    return torch.as_tensor(psi, dtype=torch.bool)


@dataclass(frozen=True)
class Batch:
    """The images of one cell at one ε, with what every attack on them shares."""

    counter: PassCounter
    graph: LabelGraph
    images: Tensor
    targets: Tensor
    eps: float
    steps: int
    direction: str


def run_attack(
    name: str, factory: Factory, give_psi: bool, batch: Batch
) -> tuple[AttackResult, float]:
    counter, images, targets = batch.counter, batch.images, batch.targets
    attack = factory(counter, batch.graph, batch.steps, batch.direction)
    flip_set = None
    if give_psi:
        with torch.no_grad():
            logits = counter.inner(images)
        flip_set = flip_set_of(batch.graph, logits, targets, batch.direction)
    counter.start(images)
    started = time.perf_counter()
    result = attack(images, targets, eps=batch.eps, flip_set=flip_set)
    seconds = time.perf_counter() - started
    counter.clean = None
    reported = result.backward_passes.cpu()
    if not torch.equal(reported, counter.backward_passes):
        print(f"  note: {name}: AttackResult.backward_passes {reported.tolist()} differ from the "
              f"benchmark's count {counter.backward_passes.tolist()}")  # fmt: skip
    return result, seconds


def split_cells(
    split: str, checkpoints: Path, args: argparse.Namespace
) -> Iterator[tuple[ModelSpec, nn.Module, str, int, Tensor, Tensor]]:
    """The cells of a split, model by model: ``(spec, model, direction, |Ω|, images, Ω)``, each
    image with its own random Ω among its leaves, drawn from the cell's own seed."""
    for spec, model in load_split(split, checkpoints, args):
        size_px = 48 if spec.dense else 32
        dataset = SyntheticScenes(
            args.n_test, size=size_px, seed=spec.data_seed, split="test", dense=spec.dense
        )
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        truth = torch.stack([dataset[i][1] for i in range(len(dataset))]).bool()
        with torch.no_grad():
            pred = model(images) > 0
        leaves = [int(i) for i in model.graph.leaves]
        started = time.perf_counter()
        for direction in DIRECTIONS:
            for size in SIZES[spec.dense]:
                if direction == "mixed" and size < 2:
                    continue
                seed = zlib.crc32(f"{spec.data_seed} {spec.name} {direction} {size}".encode())
                rows, omegas = draw_omegas(pred, truth, leaves, direction, size, args.images, seed)
                if len(rows) == 0:
                    print(f"  {spec.name}: no image for {direction} |Ω|={size}")
                    continue
                yield spec, model, direction, size, images[rows], omegas
        print(f"  {spec.name}: attacks {time.perf_counter() - started:.0f} s", flush=True)


def measure_split(
    split: str,
    attacks: dict[str, tuple[Factory, bool]],
    args: argparse.Namespace,
    checkpoints: Path,
) -> dict[Cell, dict[str, Records]]:
    table: dict[Cell, dict[str, Records]] = {}
    for _, model, direction, size, images, omegas in split_cells(split, checkpoints, args):
        counter = PassCounter(model)
        for eps in args.eps:
            batch = Batch(counter, model.graph, images, omegas, eps, args.steps, direction)
            cell = table.setdefault((direction, size, eps), {})
            for name, (factory, give_psi) in attacks.items():
                run = batch
                if name == BUDGET_PSI:
                    default = cell[DEFAULT].backward[-len(images) :]
                    run = replace(batch, steps=max(args.steps, max(default)))
                result, seconds = run_attack(name, factory, give_psi, run)
                cell.setdefault(name, Records()).add(result, model.graph, counter, seconds)
            if DEFAULT in attacks and PSI in attacks:
                at_budget(cell, batch)
            if DEFAULT in attacks:
                exact_anytime(cell[DEFAULT], batch)
    return table


def at_budget(cell: dict[str, Records], batch: Batch) -> None:
    """The compute-fair rows: default GMLA stopped at the median backward passes MLA-U on Ψ used on
    this batch (``max_backward=``), and MLA-U on Ψ's images that ended as semantic successes
    within that budget."""
    psi, n, counter = cell[PSI], len(batch.images), batch.counter
    budget = int(np.median(psi.backward[-n:]))
    result, seconds = run_attack(AT_BUDGET, _gmla(max_backward=budget), False, batch)
    if int(counter.backward_passes.max()) > budget:
        print(f"  note: {AT_BUDGET} spent up to {int(counter.backward_passes.max())} backward "
              f"passes against a budget of {budget}")  # fmt: skip
    ours = cell.setdefault(AT_BUDGET, Records())
    ours.add(result, batch.graph, counter, seconds)
    ours.budget += [budget] * n
    within = cell.setdefault(PSI_AT_BUDGET, Records())
    for index in range(len(psi.semantic) - n, len(psi.semantic)):
        kept = psi.backward[index] <= budget
        within.success.append(psi.success[index] and kept)
        within.semantic.append(psi.semantic[index] and kept)
        within.nt.append(psi.nt[index] if kept else math.nan)
        within.backward.append(min(psi.backward[index], budget))
        within.forward.append(psi.forward[index])


def exact_anytime(default: Records, batch: Batch) -> None:
    """Default GMLA stopped at each budget of :data:`ANYTIME_BUDGETS` (``max_backward=``). Its
    trajectory does not depend on the budget, which only cuts it, so these are exact points of its
    anytime curve; counting a repairing attack's successes at its final pass count would only give
    a lower bound."""
    for budget in ANYTIME_BUDGETS:
        result, _ = run_attack(DEFAULT, _gmla(max_backward=budget), False, batch)
        semantic = evaluate(result, batch.graph).semantic_success
        default.exact_within.setdefault(budget, []).extend(bool(s) for s in semantic)


# ------------------------------------------------------------------------------ reporting
def interval(values: list[float], digits: int) -> str:
    mean, low, high = bootstrap(values)
    if math.isnan(mean):
        return f"{'-':>19}"
    return f"{mean:.{digits}f} [{low:.{digits}f},{high:.{digits}f}]".rjust(19)


def print_table(table: dict[Cell, dict[str, Records]]) -> None:
    for (direction, size, eps), cell in sorted(table.items()):
        n = len(next(iter(cell.values())).semantic)
        print(f"\n{direction}, |Ω| = {size}, ε = {eps:g}: {n} images")
        print(f"    {'attack':<30}{'FR_N':>6}{'FR_S [95% CI]':>19}{'NT_R [95% CI]':>19}"
              f"{'bw mean':>8}{'median':>7}{'+def/+row':>10}{'s/img':>7}")  # fmt: skip
        ours = cell.get(DEFAULT, next(iter(cell.values()))).semantic
        for name, rec in cell.items():
            only_default = sum(a and not b for a, b in zip(ours, rec.semantic, strict=True))
            only_row = sum(b and not a for a, b in zip(ours, rec.semantic, strict=True))
            paired = "" if name == DEFAULT else f"{only_default}/{only_row}"
            print(
                f"    {name:<30}{np.mean(rec.success):>6.2f}"
                f"{interval([float(s) for s in rec.semantic], 2)}{interval(rec.nt, 3)}"
                f"{np.mean(rec.backward):>8.1f}{np.median(rec.backward):>7.0f}{paired:>10}"
                f"{rec.seconds / max(len(rec.semantic), 1):>7.3f}"
            )


def pooled(
    table: dict[Cell, dict[str, Records]], keep: Callable[[Cell], bool]
) -> dict[str, Records]:
    out: dict[str, Records] = {}
    for key, cell in sorted(table.items()):
        if not keep(key):
            continue
        for name, rec in cell.items():
            total = out.setdefault(name, Records())
            total.success += rec.success
            total.semantic += rec.semantic
            total.nt += rec.nt
            total.backward += rec.backward
            total.forward += rec.forward
            total.seconds += rec.seconds
            for budget, hits in rec.exact_within.items():
                total.exact_within.setdefault(budget, []).extend(hits)
    return out


def print_summary(table: dict[Cell, dict[str, Records]]) -> None:
    """One line per attack and direction, pooled over |Ω| and ε."""
    print("\nPooled over |Ω| and ε (FR_S / NT_R / mean backward passes per image):")
    names = list(next(iter(table.values())))
    print(f"    {'attack':<30}" + "".join(f"{d:>24}" for d in DIRECTIONS))
    pools = {d: pooled(table, lambda key, d=d: key[0] == d) for d in DIRECTIONS}
    for name in names:
        cells = []
        for direction in DIRECTIONS:
            rec = pools[direction].get(name)
            cells.append(
                f"{rec.fr_s():.3f} / {rec.nt_r():.4f} / {np.mean(rec.backward):>4.0f}".rjust(24)
                if rec
                else f"{'-':>24}"
            )
        print(f"    {name:<30}" + "".join(cells))


def anytime_figure(table: dict[Cell, dict[str, Records]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    eps_values = sorted({key[2] for key in table})
    fig = Figure(figsize=(4.2 * len(DIRECTIONS), 3.4 * len(eps_values)))
    axes = fig.subplots(len(eps_values), len(DIRECTIONS), squeeze=False)
    for i, eps in enumerate(eps_values):
        for j, direction in enumerate(DIRECTIONS):
            ax = axes[i][j]
            pool = pooled(table, lambda key, d=direction, e=eps: key[0] == d and key[2] == e)
            for name, rec in pool.items():
                if not rec.backward or name in (AT_BUDGET, PSI_AT_BUDGET):
                    continue
                if rec.exact_within:  # exact at the marked budgets, then the full run
                    most = max(rec.backward)
                    budgets = [b for b in sorted(rec.exact_within) if b < most]
                    shares = [float(np.mean(rec.exact_within[b])) for b in budgets]
                    ax.plot([*budgets, most], [*shares, rec.fr_s()], marker="o", linewidth=2.2,
                            label=f"{name} (exact at the dots)")  # fmt: skip
                    continue
                budgets = np.arange(0, max(rec.backward) + 1)
                exact = name in STOPS_AT_FIRST_SUCCESS
                ax.plot(budgets, [rec.fr_s_within(b) for b in budgets], linewidth=1.2,
                        linestyle="-" if exact else "--",
                        label=name if exact else f"{name} (lower bound)")  # fmt: skip
            ax.set_title(f"{direction}, ε = {eps:g}, |Ω| pooled", fontsize=9)
            ax.set_xlabel("backward passes per image")
            ax.set_ylabel("FR_S within the budget")
            ax.set_xscale("symlog", linthresh=10)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nanytime curves: {path}")


def check(label: str, ok: bool, detail: str) -> bool:
    print(f"  {'PASS' if ok else 'FAIL'}  {label}: {detail}")
    return ok


def nt_check(label: str, ours: float, limit: float, detail: str) -> list[bool]:
    """An NT_R line; NT_R is over successful images, so with none on our side there is no line."""
    if math.isnan(ours):
        print(f"  n/a   {label}: no successful image")
        return []
    return [check(label, math.isnan(limit) or ours <= limit + 1e-12, detail)]


def must_reach(table: dict[Cell, dict[str, Records]]) -> list[bool]:
    """The synthetic must-reach lines of issue 15, per cell."""
    print("\nMust reach (issue 15), per cell (direction, |Ω|, ε):")
    results = []
    for (direction, size, eps), cell in sorted(table.items()):
        where = f"{direction} |Ω|={size} ε={eps:g}"
        ours = cell[DEFAULT]
        fr, nt = ours.fr_s(), ours.nt_r()
        best = max(cell[PSI].fr_s(), cell[PSI_REPAIR].fr_s())
        nt_u, nt_repair = cell["MLA-U"].nt_r(), cell[PSI_REPAIR].nt_r()
        at_budget, psi_at_budget = cell[AT_BUDGET].fr_s(), cell[PSI_AT_BUDGET].fr_s()
        budget = float(np.median(cell[AT_BUDGET].budget))
        results += [
            check(f"{where} FR_S ≥ max(Ψ, Ψ+repair) − 0.02", fr >= best - 0.02,
                  f"{fr:.3f} vs {best:.3f}"),
            *nt_check(f"{where} NT_R ≤ 0.5 × MLA-U's", nt, 0.5 * nt_u,
                      f"{nt:.4f} vs 0.5 × {nt_u:.4f}"),
            *nt_check(f"{where} NT_R ≤ Ψ+repair's", nt, nt_repair, f"{nt:.4f} vs {nt_repair:.4f}"),
            check(f"{where} FR_S at Ψ's median backward passes ≥ Ψ's within them − 0.05",
                  at_budget >= psi_at_budget - 0.05,
                  f"{at_budget:.3f} vs {psi_at_budget:.3f}, median budget {budget:.0f} "
                  f"(Ψ in full {cell[PSI].fr_s():.3f})"),
        ]  # fmt: skip
    return results


# ------------------------------------------------------------------------------ photos
@dataclass(frozen=True)
class PhotoSetting:
    label_set: str
    crops: int
    eps: float  # in 1/255
    steps: int
    size: int = 224

    def describe(self) -> str:
        return (f"label set {self.label_set}, {self.crops} crop(s), ε = {self.eps:g}/255, "
                f"{self.steps} steps, {self.size} px")  # fmt: skip


def parse_photo_setting(text: str) -> PhotoSetting:
    label_set, crops, eps, steps = text.split(":")
    return PhotoSetting(label_set, int(crops), float(eps), int(steps))


#: MLA-U on Ψ + repair is left out: it runs default GMLA's computation.
PHOTO_ATTACKS = ("MLA-U", "MLA-C", PSI, "official preset", DEFAULT)
CHOSEN_PHOTO = "objects:2:0.5:20"


def photo_part(
    settings: list[PhotoSetting],
    attacks: dict[str, tuple[Factory, bool]],
    names: tuple[str, ...] = PHOTO_ATTACKS,
) -> list[bool]:
    from mlattack.data import sample_photos
    from mlattack.models import ImageNetHierarchyModel

    results = []
    for setting in settings:
        model = ImageNetHierarchyModel(setting.label_set, crops=setting.crops).eval()
        graph = model.graph
        images = torch.stack(list(sample_photos(setting.size).values()))
        rows, omegas = photo_leaf_pairs(model, graph, images)
        targets = torch.zeros(len(rows), len(graph), dtype=torch.bool)
        targets[torch.arange(len(rows)), torch.tensor(omegas)] = True
        picked = images[torch.tensor(rows)]
        print(f"\nphotos: {setting.describe()}: {len(rows)} (photo, most specific label) pairs")
        counter = PassCounter(model)
        batch = Batch(counter, graph, picked, targets, setting.eps / 255, setting.steps, "off")
        cell: dict[str, Records] = {}
        for name in names:
            factory, give_psi = attacks[name]
            result, seconds = run_attack(name, factory, give_psi, batch)
            rec = cell.setdefault(name, Records())
            rec.add(result, graph, counter, seconds)
            print(f"    {name:<30}FR_N {np.mean(rec.success):.2f}  FR_S "
                  f"{interval([float(s) for s in rec.semantic], 2)}  NT_R {interval(rec.nt, 4)}  "
                  f"bw/img {np.mean(rec.backward):5.1f}  {rec.seconds:6.1f} s", flush=True)  # fmt: skip
        fr_u, fr_g = cell["MLA-U"].fr_s(), cell[DEFAULT].fr_s()
        nt_u, nt_g = cell["MLA-U"].nt_r(), cell[DEFAULT].nt_r()
        results += [
            check("photos: FR_S(MLA-U) ≤ 0.85", fr_u <= 0.85, f"{fr_u:.3f}"),
            check("photos: FR_S(default) > FR_S(MLA-U)", fr_g > fr_u, f"{fr_g:.3f} vs {fr_u:.3f}"),
            check("photos: NT_R(default) ≤ NT_R(MLA-U)", nt_g <= nt_u, f"{nt_g:.4f} vs {nt_u:.4f}"),
        ]
    return results


PHOTO_SCAN = (
    "objects:1:0.5:20", "objects:1:0.25:20", "objects:2:0.5:20", "imagenet-auto:1:0.5:20",
    "objects:5:0.5:20",
)  # fmt: skip


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose a split's models and cells (:func:`split_cells`)."""
    parser.add_argument("--split", choices=tuple(SPLITS), default="heldout")
    parser.add_argument("--checkpoints", type=Path, help="keep/reuse the trained models here")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.03])
    parser.add_argument("--images", type=int, default=8, help="images per model and cell")
    parser.add_argument("--n-test", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_split_arguments(parser)
    parser.add_argument("--figure", type=Path, default=Path("gmla_heldout_anytime.png"))
    parser.add_argument("--save", type=Path, help="pickle the per-image records here")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--photos", action="store_true", help="the photos in --photo-setting")
    parser.add_argument("--photo-setting", type=parse_photo_setting, action="append",
                        help="LABEL_SET:CROPS:EPS_IN_255THS:STEPS (default " + CHOSEN_PHOTO + ")")  # fmt: skip
    parser.add_argument("--photo-scan", action="store_true", help="the photos in several settings")
    parser.add_argument("--attacks", nargs="+", help="only these attacks (and the default)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.steps, args.eps, args.n_test = 3, 10, [0.03], 200
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    attacks = dict(ATTACKS)
    if args.split == "choice":
        attacks.update(CANDIDATES)
    if args.attacks:
        attacks = {k: v for k, v in attacks.items() if k in args.attacks}
    if not args.attacks or BUDGET_PSI in args.attacks:
        attacks[BUDGET_PSI] = ATTACKS[PSI]
    results: list[bool] = []
    if not args.no_synthetic:
        with tempfile.TemporaryDirectory() as scratch:
            checkpoints = args.checkpoints or Path(scratch)
            checkpoints.mkdir(parents=True, exist_ok=True)
            models = ", ".join(f"{s.name} (test images of dataset seed {s.data_seed})"
                               for s in SPLITS[args.split])  # fmt: skip
            print(f"split {args.split}: models {models}; {args.steps} steps")
            table = measure_split(args.split, attacks, args, checkpoints)
        if args.save:
            with args.save.open("wb") as handle:
                pickle.dump(table, handle)
        print_table(table)
        print_summary(table)
        anytime_figure(table, args.figure, f"{args.split} split: FR_S against backward passes")
        needed = {DEFAULT, PSI, PSI_REPAIR, "MLA-U"}
        if needed <= set(next(iter(table.values()))):
            results += must_reach(table)
    if args.photos or args.photo_scan:
        settings = args.photo_setting or [parse_photo_setting(CHOSEN_PHOTO)]
        if args.photo_scan:
            settings = [parse_photo_setting(text) for text in PHOTO_SCAN]
        # The scan looks for separation: MLA-U against the default only.
        names = ("MLA-U", DEFAULT) if args.photo_scan else PHOTO_ATTACKS
        results += photo_part(settings, {**ATTACKS, **attacks}, names)
    print(f"\n{sum(results)} of {len(results)} checks pass ({args.split} split)")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0 if all(results) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
