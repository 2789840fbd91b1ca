"""What every kind of unit needs: the model, the data, the scan, and the attacks as configured."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from mlattack.experiments.builders import label_names_of
from mlattack.experiments.config import AttackSpec, ExperimentConfig
from mlattack.experiments.planning import TransferPlan, Unit
from mlattack.experiments.reading import read_item
from mlattack.experiments.scan import CleanScan, input_dtype
from mlattack.experiments.targets import TargetSet
from mlattack.losses import logit_threshold

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

Records = dict[str, list[tuple[Any, ...]]]  # store table -> rows, committed with the unit


def configured_attack(
    config: ExperimentConfig, spec: AttackSpec, model: nn.Module, graph: LabelGraph, eps: float
) -> Any:
    """The attack ``spec`` names, with the run's threshold and seed, skipping ineligible images,
    on the flip set and followed by the stages the spec asks for."""
    from mlattack.attacks import Repair, Sequential, build_attack

    options = {"threshold": config.threshold, "seed": config.seed, **spec.options}
    attack = build_attack(spec.name, model, graph=graph, eps=eps, on_invalid="skip", **options)
    if spec.flip_set == "own" and not spec.repair:
        return attack
    stages = (Repair(extra_steps=spec.repair_extra_steps),) if spec.repair else ()
    return Sequential(attack, *stages, graph=graph if spec.flip_set == "consistent" else None)


@dataclass
class UnitContext:
    """Everything a unit reads; built once per rank."""

    config: ExperimentConfig
    model: nn.Module
    dataset: Dataset[Any]
    graph: LabelGraph
    scan: CleanScan
    run_dir: Path
    device: torch.device
    target_sets: list[TargetSet]
    transfer: TransferPlan
    example_sets: set[int] = field(init=False)

    def __post_init__(self) -> None:
        with_images = sorted(ts.ts_id for ts in self.target_sets if ts.image_ids)
        self.example_sets = set(with_images[: self.config.example_target_sets])

    @property
    def num_labels(self) -> int:
        return len(label_names_of(self.model))

    @property
    def logit_threshold(self) -> float:
        return logit_threshold(self.config.threshold)

    def load(self, image_ids: tuple[int, ...]) -> torch.Tensor:
        """The images on the attacked model's device, in its parameters' floating dtype."""
        images = torch.stack([read_item(self.dataset, i)[0] for i in image_ids])
        return images.to(device=self.device, dtype=input_dtype(self.model))

    def targets(self, unit: Unit) -> torch.Tensor:
        """The unit's target set Ω as a bool mask ``[batch, C]``."""
        targets = torch.zeros(
            len(unit.image_ids), self.num_labels, dtype=torch.bool, device=self.device
        )
        targets[:, list(unit.ts.labels)] = True
        return targets

    def attack(self, spec: AttackSpec, model: nn.Module, eps: float) -> Any:
        return configured_attack(self.config, spec, model, self.graph, eps)


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def nan_to_none(value: float) -> float | None:
    """NaN as SQL NULL."""
    return None if math.isnan(value) else float(value)
