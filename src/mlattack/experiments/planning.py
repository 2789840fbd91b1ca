"""Planning a run: the clean scan, the target sets, and the work list dealt to the ranks.

Everything here is deterministic given the config, the model and the dataset, so every rank (and
every resume) plans the same units with the same ids; only executing them (``units/``) writes
results. The clean scan is sharded across joined ranks and gathered (:mod:`.distributed`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mlattack.data.images import UnreadableImageError
from mlattack.experiments.builders import build_model_from_spec, label_names_of
from mlattack.experiments.config import AttackSpec, ExperimentConfig
from mlattack.experiments.distributed import Ranks
from mlattack.experiments.store import fault_point
from mlattack.experiments.targets import (
    TargetSet,
    choose_images,
    draw_target_sets,
    eligible_images,
)
from mlattack.losses import logit_threshold

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

# Cost of one attack step on one image relative to MLA-U's (one forward and one backward pass),
# for dealing units to ranks; measured on CPU (GMLA adds a backward pass; ML-DP differentiates each
# label it linearises; MLA-LP also solves a linear program per step).
GRADCORR_COST = 3.0  # per image: two gradients and a forward, about three attack steps


@dataclass(frozen=True)
class Unit:
    """One committed piece of work: an attack on one batch at every ε of the run (one call, which
    shares the clean forward pass and the flip set Ψ across the budgets), or a gradcorr/transfer
    batch (``eps`` holds the transfer budget)."""

    unit_id: str
    kind: str  # "attack" | "gradcorr" | "transfer"
    ts: TargetSet
    image_ids: tuple[int, ...]
    position: int  # index of the first image of this batch within the target set's images
    attack: AttackSpec | None = None
    eps: tuple[float, ...] = ()
    source: str | None = None


@dataclass
class CleanScan:
    """Clean predictions (and ground truth) of the scanned images, as bool numpy arrays."""

    clean_pred: np.ndarray  # [N, C]; all False for skipped images, so they are never eligible
    ground_truth: np.ndarray | None  # [N, C]
    skipped: dict[int, str]  # image id -> why it could not be read

    def digest(self) -> str:
        """A hash of the scan (predictions, ground truth, skipped images): ranks that agree on it
        attacked the same images for the same target sets."""
        digest = hashlib.sha256(json.dumps(list(self.clean_pred.shape)).encode())
        digest.update(np.packbits(self.clean_pred).tobytes())
        if self.ground_truth is not None:
            digest.update(b"ground truth")
            digest.update(np.packbits(self.ground_truth).tobytes())
        digest.update(json.dumps(sorted(self.skipped)).encode())
        return digest.hexdigest()[:16]


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype images are given to ``model`` in: its parameters' floating dtype (float32 for a
    model without floating parameters)."""
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.is_floating_point():
        return parameter.dtype
    return torch.float32


@dataclass
class _ScanShard:
    """One rank's share of a scan: images ``first`` to ``stop``, label rows packed to bits."""

    first: int
    stop: int
    clean: np.ndarray
    truth: np.ndarray | None
    skipped: dict[int, str]


def scan_clean(
    model: nn.Module,
    dataset: Dataset[Any],
    n_images: int,
    columns: torch.Tensor | None,
    config: ExperimentConfig,
    device: torch.device,
    ranks: Ranks,
    *,
    progress: bool,
    what: str,
) -> CleanScan:
    """The clean predictions of the first ``n_images``: joined ranks each scan a contiguous share
    of the batches (the same batches a single rank scans, so the same numbers) and gather them."""
    starts = range(0, n_images, config.batch_size)
    share = ranks.share(len(starts)) if ranks.joined else range(len(starts))
    first = starts[share.start] if len(share) else n_images
    stop = min(starts[share.stop - 1] + config.batch_size, n_images) if len(share) else n_images
    shard = _scan_range(
        model, dataset, first, stop, columns, config, device, progress=progress, what=what
    )
    num_labels = len(label_names_of(model))
    clean = np.zeros((n_images, num_labels), dtype=bool)
    truth = None if columns is None else np.zeros((n_images, num_labels), dtype=bool)
    skipped: dict[int, str] = {}
    for part in ranks.gather(shard):
        rows = slice(part.first, part.stop)
        clean[rows] = np.unpackbits(part.clean, axis=1, count=num_labels).astype(bool)
        if truth is not None and part.truth is not None:
            truth[rows] = np.unpackbits(part.truth, axis=1, count=num_labels).astype(bool)
        skipped.update(part.skipped)
    if skipped:
        warnings.warn(
            f"{what}: skipped {len(skipped)} unreadable image(s) of {n_images} "
            f"(e.g. {next(iter(skipped.values()))}); they are listed in the store",
            RuntimeWarning,
            stacklevel=2,
        )
    return CleanScan(clean, truth, dict(sorted(skipped.items())))


def _scan_range(
    model: nn.Module,
    dataset: Dataset[Any],
    first: int,
    stop: int,
    columns: torch.Tensor | None,
    config: ExperimentConfig,
    device: torch.device,
    *,
    progress: bool,
    what: str,
) -> _ScanShard:
    logit_cut = logit_threshold(config.threshold)
    num_labels = len(label_names_of(model))
    clean = np.zeros((stop - first, num_labels), dtype=bool)
    truth = None if columns is None else np.zeros((stop - first, num_labels), dtype=bool)
    skipped: dict[int, str] = {}
    batches = range(first, stop, config.batch_size)
    for start in tqdm(batches, desc=what, disable=not progress, unit="batch"):
        fault_point("scan")
        items: dict[int, tuple[Any, Any]] = {}
        for i in range(start, min(start + config.batch_size, stop)):
            try:
                items[i] = dataset[i]
            except UnreadableImageError as exc:
                skipped[i] = str(exc)  # left all False: never eligible, never attacked
        if not items:
            continue
        rows = [i - first for i in items]
        images = torch.stack([image for image, _ in items.values()])
        images = images.to(device=device, dtype=input_dtype(model))
        with torch.no_grad():
            clean[rows] = (model(images) > logit_cut).cpu().numpy()
        if columns is not None and truth is not None:
            labels = torch.stack([torch.as_tensor(label) for _, label in items.values()]).bool()
            padded = torch.cat([labels, torch.zeros(len(rows), 1, dtype=torch.bool)], dim=1)
            truth[rows] = padded[:, columns].numpy()  # column -1 = the all-False pad
    packed_truth = None if truth is None else np.packbits(truth, axis=1)
    return _ScanShard(first, stop, np.packbits(clean, axis=1), packed_truth, skipped)


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
    drawn = draw_target_sets(
        config.target_sets,
        names,
        present=present,
        leaves=leaves,
        outside=outside_ids,
        seed=config.seed,
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
            progress=progress, what=f"clean predictions ({name})",
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
                units.append(Unit(unit_id, "attack", ts, ids, start, spec, every_eps))
            if config.gradient_correlation:
                units.append(Unit(f"gradcorr:{tag}", "gradcorr", ts, ids, start))
    if config.transfer is not None:
        for source, per_ts in transfer_images.items():
            for ts, image_ids in zip(target_sets, per_ts, strict=True):
                for start, ids in _chunks(image_ids, config.batch_size):
                    units.append(
                        Unit(
                            f"transfer:{source}:{ts.ts_id}:{start}", "transfer", ts, ids, start,
                            config.transfer.attack, (config.transfer.eps,), source,
                        )
                    )  # fmt: skip
    return units


def _attack_steps(spec: AttackSpec) -> int:
    from mlattack.attacks.registry import attack_entry

    steps = spec.options.get("steps")
    return int(steps) if steps is not None else attack_entry(spec.name).default_steps


def attack_step_cost(spec: AttackSpec) -> float:
    """The cost of one step of ``spec``'s attack relative to MLA-U's, from the attack registry
    (the repair stage, when asked for, adds at most one MLA-U step per step)."""
    from mlattack.attacks.registry import attack_entry

    cost = attack_entry(spec.name).step_cost
    return cost + 1.0 if spec.repair else cost


def unit_cost(unit: Unit, config: ExperimentConfig) -> float:
    """Estimated cost of a unit in MLA-U image-steps: attack × steps × batch (× budgets)."""
    images = len(unit.image_ids)
    if unit.kind == "gradcorr":
        return GRADCORR_COST * images
    assert unit.attack is not None
    steps = _attack_steps(unit.attack) * len(unit.eps)
    cost = attack_step_cost(unit.attack) * steps * images
    if unit.kind == "transfer" and config.transfer is not None:
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
    "attack_step_cost",
    "CleanScan",
    "TransferPlan",
    "Unit",
    "deal_units",
    "plan_target_sets",
    "plan_transfer",
    "scan_clean",
    "unit_cost",
    "work_list",
]
