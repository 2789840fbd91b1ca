"""Subsets that keep a dataset's label metadata, and a seeded train/validation split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset


class LabelledSubset(Dataset[tuple[Tensor, Tensor]]):
    """The items of ``dataset`` at ``indices``, keeping ``label_names``, ``graph``,
    ``correlated_pairs`` (when the dataset has them) and a ``labels`` matrix restricted to the subset.
    ``num_skipped`` is the parent's (skipping happens there)."""

    def __init__(self, dataset: Dataset[Any], indices: Sequence[int]) -> None:
        size = len(dataset)  # type: ignore[arg-type]
        bad = [i for i in indices if not 0 <= int(i) < size]
        if bad:
            raise IndexError(f"subset indices out of range for {size} items: {bad[:5]}")
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.label_names: tuple[str, ...] = tuple(getattr(dataset, "label_names", ()))
        self.graph = getattr(dataset, "graph", None)
        if hasattr(dataset, "correlated_pairs"):
            self.correlated_pairs = list(dataset.correlated_pairs)

    @property
    def num_skipped(self) -> int:
        return int(getattr(self.dataset, "num_skipped", 0))

    @property
    def labels(self) -> Tensor:
        return self.dataset.labels[torch.tensor(self.indices, dtype=torch.long)]  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.dataset[self.indices[index]]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        chosen = [self.indices[i] for i in indices]
        fetch = getattr(self.dataset, "__getitems__", None)
        if fetch is not None:
            return fetch(chosen)
        return [self.dataset[i] for i in chosen]


def split_dataset(
    dataset: Dataset[Any], val_fraction: float, *, seed: int = 0
) -> tuple[LabelledSubset, LabelledSubset]:
    """A seeded random ``(train, val)`` split with ``round(val_fraction * len)`` validation items."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    size = len(dataset)  # type: ignore[arg-type]
    n_val = round(val_fraction * size)
    if not 0 < n_val < size:
        raise ValueError(
            f"cannot split {size} items with val_fraction={val_fraction}: one side would be empty"
        )
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    return LabelledSubset(dataset, sorted(order[n_val:])), LabelledSubset(
        dataset, sorted(order[:n_val])
    )
