"""``build_dataset(name, **kwargs)``: datasets by the names configs and the CLI use."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from mlattack.data.folder import ImageFolderDataset
from mlattack.data.nuswide import NUSWideDataset
from mlattack.data.openimages import OpenImagesDataset
from mlattack.data.synthetic import SyntheticScenes
from mlattack.data.voc import VOCDataset

DATASETS: dict[str, type[Dataset[Any]]] = {
    "synthetic": SyntheticScenes,
    "voc": VOCDataset,
    "nus-wide": NUSWideDataset,
    "openimages": OpenImagesDataset,
    "folder": ImageFolderDataset,
}


def build_dataset(name: str, **kwargs: Any) -> Dataset[Any]:
    """The dataset registered as ``name`` (see :data:`DATASETS`), built with ``kwargs``.

    A ``graph`` keyword may be a LabelGraph, ``"builtin:NAME"`` or a graph JSON path (file datasets).
    """
    try:
        cls = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise TypeError(f"dataset {name!r}: {exc}") from exc
