"""Tiny model, dataset and configs for the experiments tests (importable by subprocess scripts)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mlattack.graph import LabelGraph

LABELS = ("animal", "dog", "cat", "vehicle", "car", "bus")
EDGES = (("animal", "dog"), ("animal", "cat"), ("vehicle", "car"), ("vehicle", "bus"))
SIZE = 12


def tiny_graph(names: tuple[str, ...] = LABELS) -> LabelGraph:
    return LabelGraph(names, [(names[LABELS.index(p)], names[LABELS.index(c)]) for p, c in EDGES])


class TinyModel(nn.Module):
    """A linear multi-label model over 3x8x8 images; each label reads its own block of pixels."""

    def __init__(self, names: tuple[str, ...] = LABELS, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(3 * SIZE * SIZE, len(names))
        with torch.no_grad():
            self.linear.weight.copy_(
                torch.randn(len(names), 3 * SIZE * SIZE, generator=generator) * 0.3
            )
            self.linear.bias.copy_(-self.linear.weight.sum(dim=1) * 0.5 + 0.4)
        self.label_names = tuple(names)
        self.graph = tiny_graph(names)
        self.input_size = SIZE

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))

    def config(self) -> dict[str, Any]:
        return {"name": "tiny"}


class TinyDataset(torch.utils.data.Dataset):
    """Random images whose ground truth is the tiny model's clean prediction (so most are eligible)."""

    num_skipped = 0

    def __init__(self, n: int = 24, seed: int = 0, names: tuple[str, ...] = LABELS) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, SIZE, SIZE, generator=generator)
        with torch.no_grad():
            self.labels = TinyModel(names)(self.images) > 0
        self.label_names = tuple(names)
        self.graph = tiny_graph(names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def tiny_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "tiny",
        "model": {"name": "tiny"},
        "dataset": {"name": "tiny"},
        "attacks": [
            {"name": "mla-u", "options": {"steps": 5}},
            {"name": "gmla", "options": {"steps": 5}},
        ],
        "eps": [0.05, 0.2],
        "target_sets": {"sizes": [1, 2], "mode": "combinations"},
        "images": {"per_target_set": 5},
        "batch_size": 3,
        "seed": 0,
        "examples": 2,
    }
    config.update(overrides)
    return config


def stored_rows(run_dir: Any, table: str = "results") -> list[tuple[Any, ...]]:
    """All rows of ``table`` across a run's rank stores, sorted, without the timing column."""
    import sqlite3
    from pathlib import Path

    rows: list[tuple[Any, ...]] = []
    for path in sorted(Path(run_dir).glob("results-rank*.sqlite")):
        db = sqlite3.connect(path)
        cursor = db.execute(f"SELECT * FROM {table}")
        keep = [i for i, column in enumerate(cursor.description) if column[0] != "seconds"]
        rows.extend(tuple(row[i] for i in keep) for row in cursor)
        db.close()
    return sorted(rows, key=repr)


def run_tiny(out_dir: Any, *, progress: bool = False, **overrides: Any) -> Any:
    from mlattack.experiments import ExperimentConfig, run_experiment

    config = ExperimentConfig.from_dict(tiny_config(**overrides))
    return run_experiment(
        config, out_dir, model=TinyModel(), dataset=TinyDataset(), progress=progress
    )


def run_tiny_with_report(out_dir: str, config: dict[str, Any], kill_at: str | None) -> None:
    """A tiny run with transfer models, then its report; ``kill_at`` sets the store's fault point
    (the crash test runs this in a child process that SIGKILLs itself there)."""
    import os

    from mlattack.experiments import ExperimentConfig, build_report, run_experiment
    from mlattack.experiments.store import FAULT_ENV

    torch.set_num_threads(1)
    os.environ.pop(FAULT_ENV, None)
    if kill_at is not None:
        os.environ[FAULT_ENV] = kill_at
    run_dir = run_experiment(
        ExperimentConfig.from_dict(config), out_dir, model=TinyModel(), dataset=TinyDataset(),
        progress=False, transfer_models={"m0": TinyModel(seed=0), "m1": TinyModel(seed=1)},
    )  # fmt: skip
    build_report(run_dir)
