"""Planning a run: the target sets, the transfer plan, and the work list dealt to the ranks.

Everything here is deterministic given the config and the clean scan (:mod:`.scan`), so every rank
(and every resume) plans the same units with the same ids; only executing them (``units/``) writes
results.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from mlattack.experiments.builders import build_model_from_spec, label_names_of
from mlattack.experiments.config import AttackSpec, ExperimentConfig
from mlattack.experiments.distributed import Ranks
from mlattack.experiments.scan import CleanScan, scan_clean
from mlattack.experiments.targets import (
    TargetSet,
    choose_images,
    draw_target_sets,
    eligible_images,
)

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

# Cost of one attack step on one image relative to MLA-U's (one forward and one backward pass),
# for dealing units to ranks; measured on CPU (GMLA adds a backward pass; ML-DP differentiates each
# label it linearises; MLA-LP also solves a linear program per step).
GRADCORR_COST = 3.0  # per image: two gradients and a forward, about three attack steps


@dataclass(frozen=True)
class _Batch:
    """What every unit has: its id (the marker committed with its records) and its images."""

    unit_id: str
    ts: TargetSet
    image_ids: tuple[int, ...]
    position: int  # index of the first image of this batch within the target set's images


@dataclass(frozen=True)
class AttackUnit(_Batch):
    """One attack on one batch at every ε of the run: one call, which shares the clean forward
    pass and the flip set Ψ across the budgets."""

    attack: AttackSpec
    eps: tuple[float, ...]


@dataclass(frozen=True)
class GradcorrUnit(_Batch):
    """Fig. 8's gradient correlations on one batch."""


@dataclass(frozen=True)
class TransferUnit(_Batch):
    """Fig. 7: perturbations found on the ``source`` model at ``eps``, tried on every model."""

    attack: AttackSpec
    eps: float
    source: str


Unit = AttackUnit | GradcorrUnit | TransferUnit


def plan_target_sets(
    config: ExperimentConfig,
    names: tuple[str, ...],
    graph: LabelGraph,
    outside: tuple[str, ...],
    scan: CleanScan,
) -> list[TargetSet]:
    """The target sets the config draws, each with the images chosen to attack it."""
    on = scan.clean_pred if scan.ground_truth is None else scan.clean_pred & scan.ground_truth
    present = np.asarray(on.any(axis=0), dtype=bool)
    outside_set = set(outside)
    outside_ids = [i for i, n in enumerate(names) if n in outside_set]
    leaves = [int(i) for i in graph.leaves if names[int(i)] not in outside_set]
    usable = on
    if config.images.require_consistent and config.target_sets.mode == "leaves":
        consistent = np.asarray(graph.is_consistent(scan.clean_pred), dtype=bool)
        usable = on & consistent[:, None]
    drawn = draw_target_sets(
        config.target_sets,
        names,
        present=present,
        leaves=leaves,
        outside=outside_ids,
        seed=config.seed,
        image_labels=usable,
    )
    target_sets = []
    for ts_id, labels in enumerate(drawn):
        candidates = eligible_images(
            labels,
            scan.clean_pred,
            scan.ground_truth,
            graph=graph,
            require_consistent=config.images.require_consistent,
        )
        chosen = choose_images(
            candidates, config.images.per_target_set, seed=config.seed, ts_id=ts_id
        )
        target_sets.append(TargetSet(ts_id, labels, chosen, len(candidates)))
    return target_sets


@dataclass
class TransferPlan:
    """Fig. 7's models, their clean predictions, and per source model the images of each target
    set (chosen by that model's own clean predictions, like the main run's)."""

    models: dict[str, nn.Module]
    clean_preds: dict[str, np.ndarray]
    images: dict[str, list[tuple[int, ...]]]


def plan_transfer(
    config: ExperimentConfig,
    given: dict[str, nn.Module],
    names: tuple[str, ...],
    dataset: Dataset[Any],
    n_scan: int,
    columns: torch.Tensor | None,
    graph: LabelGraph,
    target_sets: list[TargetSet],
    ranks: Ranks,
    *,
    device: torch.device,
    base: Path | None,
    progress: bool,
    keep_skipped: dict[int, str] | None = None,
) -> TransferPlan:
    plan = TransferPlan({}, {}, {})
    if config.transfer is None:
        return plan
    for spec in config.transfer.models:
        name = spec.display_name
        other = given.get(name) or build_model_from_spec(spec, base_dir=base)
        other = other.to(device).eval()
        if label_names_of(other) != names:
            raise ValueError(
                f"config key 'transfer.models': {name} has other labels than the attacked model; "
                f"transfer needs one label space"
            )
        plan.models[name] = other
        scan = scan_clean(
            other, dataset, n_scan, columns, config, device, ranks,
            progress=progress, what=f"clean predictions ({name})", keep_skipped=keep_skipped,
        )  # fmt: skip
        plan.clean_preds[name] = scan.clean_pred
        plan.images[name] = [
            choose_images(
                eligible_images(
                    ts.labels,
                    scan.clean_pred,
                    scan.ground_truth,
                    graph=graph,
                    require_consistent=config.images.require_consistent,
                ),
                config.images.per_target_set,
                seed=config.seed,
                ts_id=ts.ts_id,
            )  # fmt: skip
            for ts in target_sets
        ]
    return plan


def _chunks(items: Sequence[int], size: int) -> Iterator[tuple[int, tuple[int, ...]]]:
    for start in range(0, len(items), size):
        yield start, tuple(items[start : start + size])


def work_list(
    config: ExperimentConfig,
    target_sets: list[TargetSet],
    transfer_images: dict[str, list[tuple[int, ...]]],
) -> list[Unit]:
    """Every unit of the run, in a fixed order (target set, batch, attack; then transfer)."""
    units: list[Unit] = []
    every_eps = tuple(config.eps)
    for ts in target_sets:
        for start, ids in _chunks(ts.image_ids, config.batch_size):
            tag = f"{ts.ts_id}:{start}"
            for spec in config.attacks:
                unit_id = f"attack:{tag}:{spec.display_name}"
                units.append(AttackUnit(unit_id, ts, ids, start, spec, every_eps))
            if config.gradient_correlation:
                units.append(GradcorrUnit(f"gradcorr:{tag}", ts, ids, start))
    if config.transfer is not None:
        for source, per_ts in transfer_images.items():
            for ts, image_ids in zip(target_sets, per_ts, strict=True):
                for start, ids in _chunks(image_ids, config.batch_size):
                    units.append(
                        TransferUnit(
                            f"transfer:{source}:{ts.ts_id}:{start}", ts, ids, start,
                            config.transfer.attack, config.transfer.eps, source,
                        )
                    )  # fmt: skip
    return units


def _attack_steps(spec: AttackSpec) -> int:
    from mlattack.attacks.registry import attack_entry

    steps = spec.options.get("steps")
    return int(steps) if steps is not None else attack_entry(spec.name).default_steps


def attack_step_cost(spec: AttackSpec) -> float:
    """The cost of one step of ``spec``'s attack relative to MLA-U's, from the attack registry
    (the repair stage, when asked for, adds at most one MLA-U step per step, and its extra steps
    spread over the attack's steps)."""
    from mlattack.attacks.registry import attack_entry

    cost = attack_entry(spec.name).step_cost
    if not spec.repair:
        return cost
    return cost + 1.0 + spec.repair_extra_steps / _attack_steps(spec)


def unit_cost(unit: Unit, config: ExperimentConfig) -> float:
    """Estimated cost of a unit in MLA-U image-steps: attack × steps × batch (× budgets)."""
    images = len(unit.image_ids)
    if isinstance(unit, GradcorrUnit):
        return GRADCORR_COST * images
    budgets = len(unit.eps) if isinstance(unit, AttackUnit) else 1
    cost = attack_step_cost(unit.attack) * _attack_steps(unit.attack) * budgets * images
    if isinstance(unit, TransferUnit) and config.transfer is not None:
        cost += len(config.transfer.models) * images  # one forward per model tried
    return cost


def deal_units(costs: Sequence[float], world: int) -> list[list[int]]:
    """Unit indices per rank, dealt by cost: the costliest unit first, each to the rank with the
    least work so far (ties to the lower rank); each rank keeps its units in work-list order."""
    loads = [(0.0, rank) for rank in range(world)]
    shares: list[list[int]] = [[] for _ in range(world)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(loads)
        shares[rank].append(index)
        heapq.heappush(loads, (load + costs[index], rank))
    return [sorted(share) for share in shares]


__all__ = [
    "AttackUnit",
    "GradcorrUnit",
    "attack_step_cost",
    "TransferPlan",
    "TransferUnit",
    "Unit",
    "deal_units",
    "plan_target_sets",
    "plan_transfer",
    "unit_cost",
    "work_list",
]
