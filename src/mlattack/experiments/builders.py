"""Turning config sections into objects: models, datasets, and the label graph aligned to a model."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mlattack.experiments.config import DatasetSpec, ModelSpec

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

IMAGENET_HIERARCHY = "imagenet-hierarchy"
SAMPLE_PHOTOS = "sample-photos"
SAMPLE_PHOTO_SIZE = 256  # the side the packaged photos are resized to unless a config says


def label_names_of(model: nn.Module) -> tuple[str, ...]:
    """The model's output label names (every mlattack model has ``label_names``)."""
    names = getattr(model, "label_names", None)
    if names is None:
        raise ValueError(
            f"{type(model).__name__} has no 'label_names'; mlattack models name their outputs"
        )
    return tuple(str(n) for n in names)


def dataset_length(dataset: Dataset[Any]) -> int:
    return len(dataset)  # type: ignore[arg-type]


def _existing(path: Path, base_dir: Path | None) -> Path:
    """``path`` as given when it exists (or is absolute), else relative to ``base_dir``."""
    if path.exists() or path.is_absolute() or base_dir is None:
        return path
    return base_dir / path


@contextmanager
def config_key(key: str) -> Iterator[None]:
    """Prefix a bad-option error (an unexpected or ill-typed keyword) with the config key it came from."""
    try:
        yield
    except TypeError as exc:
        raise TypeError(f"config key '{key}': {exc}") from exc


def build_model_from_spec(spec: ModelSpec, *, base_dir: Path | None = None) -> nn.Module:
    """The model a :class:`ModelSpec` describes (checkpoint paths are relative to ``base_dir``)."""
    from mlattack import models

    if spec.checkpoint is not None:
        path = _existing(Path(spec.checkpoint), base_dir)
        if not path.is_file():
            raise FileNotFoundError(
                f"model checkpoint not found: {spec.checkpoint} (train one with 'mlattack train')"
            )
        return models.load(path)
    assert spec.name is not None
    with config_key("model.options"):
        if spec.name == IMAGENET_HIERARCHY:
            from mlattack.models.imagenet import ImageNetHierarchyModel

            return ImageNetHierarchyModel(**spec.options)
        return models.build_model(spec.name, **spec.options)


class SamplePhotos(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The packaged real photos, resized to ``size``; no ground truth (``has_ground_truth=False``).

    Target sets on these images are chosen from the clean prediction alone.
    """

    has_ground_truth = False
    num_skipped = 0
    graph = None

    def __init__(
        self,
        label_names: tuple[str, ...],
        *,
        size: int = SAMPLE_PHOTO_SIZE,
        names: list[str] | None = None,
    ):
        from mlattack.data.photos import sample_photos

        photos = sample_photos(size)
        chosen = names if names is not None else sorted(photos)
        unknown = [n for n in chosen if n not in photos]
        if unknown:
            raise ValueError(f"unknown sample photos {unknown}; available: {sorted(photos)}")
        self.photo_names = list(chosen)
        self.label_names = tuple(label_names)
        self._images = [photos[n] for n in chosen]

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._images[index], torch.zeros(len(self.label_names), dtype=torch.bool)


def build_dataset_from_spec(spec: DatasetSpec, model: nn.Module) -> Dataset[Any]:
    """The dataset a :class:`DatasetSpec` describes; OpenImages labels are read by the model's MIDs
    when it knows them (``label_mids``), so no display name decides which output a label is."""
    from mlattack.data import build_dataset
    from mlattack.models.classlist import model_mids

    options = dict(spec.options)
    mid_to_label = model_mids(model) if spec.name == "openimages" else None
    if mid_to_label is not None and "mid_to_name" not in options:
        options.pop("class_descriptions", None)
        options["mid_to_name"] = mid_to_label
    with config_key("dataset.options"):
        if spec.name == SAMPLE_PHOTOS:
            return sample_photo_dataset(label_names_of(model), **options)
        return build_dataset(spec.name, **options)


def sample_photo_dataset(
    label_names: tuple[str, ...],
    *,
    ground_truth: bool = False,
    size: int = SAMPLE_PHOTO_SIZE,
    **options: Any,
) -> Dataset[Any]:
    """The ``sample-photos`` dataset: with ``ground_truth=True`` the photos' hand-written labels
    (:class:`~mlattack.data.photos.PhotoDataset`, closed upward through the graph of the
    manifest's label vocabulary; every model label must belong to it), else :class:`SamplePhotos`
    (no ground truth: target sets come from the clean predictions alone)."""
    from mlattack._validation import check_bool
    from mlattack.data.photos import PhotoDataset

    if check_bool(ground_truth, "ground_truth"):
        return PhotoDataset(label_names, size=size, **options)
    return SamplePhotos(label_names, size=size, **options)


def resolve_graph(
    spec: str, model: nn.Module, dataset: Dataset[Any], *, base_dir: Path | None = None
) -> tuple[LabelGraph, tuple[str, ...]]:
    """The graph named by ``spec``, aligned to the model's label order.

    ``spec``: ``model`` / ``dataset`` (their ``.graph``), or what
    :func:`mlattack.graph_sources.load_graph` reads (``builtin:NAME``, ``label-set:NAME``,
    ``openimages:DIR``, the path of a LabelGraph JSON file; relative to ``base_dir`` when not found
    as given). An OpenImages hierarchy is matched to the model's outputs by MID when the model
    knows its outputs' MIDs.

    Returns ``(graph, outside)``: ``graph`` has exactly the model's labels in output order; labels the
    source graph does not know become isolated nodes and are listed in ``outside`` (the OpenImages
    rule draws part of each target set among them).
    """
    from mlattack.graph_sources import load_graph
    from mlattack.models.classlist import model_mids, relabel_graph_by_mid

    if spec == "model":
        source = getattr(model, "graph", None)
        what = "the model"
    elif spec == "dataset":
        source = getattr(dataset, "graph", None)
        what = "the dataset"
    else:
        source = load_graph(spec, base_dir=base_dir)
        what = spec
        mid_to_label = model_mids(model) if spec.startswith("openimages:") else None
        if mid_to_label is not None:  # match hierarchy nodes to outputs by MID, not by name
            source = relabel_graph_by_mid(source, mid_to_label)
    if source is None:
        raise ValueError(f"config key 'graph': {what} has no label graph; name one explicitly")
    return align_graph(source, label_names_of(model), what=what)


def align_graph(
    source: LabelGraph, names: tuple[str, ...], *, what: str = "the graph"
) -> tuple[LabelGraph, tuple[str, ...]]:
    from mlattack.graph import LabelGraph

    known = set(source.names)
    inside = [n for n in names if n in known]
    outside = tuple(n for n in names if n not in known)
    if not inside:
        raise ValueError(f"{what} shares no label with the model's {len(names)} labels")
    if not outside and tuple(source.names) == names:
        return source, ()
    sub = source.subgraph(inside)
    edges = [(sub.names[p], sub.names[c]) for p, c in sub.edges.tolist()]
    if outside:
        warnings.warn(
            f"{len(outside)} model labels are not in {what} and count as isolated labels "
            f"(e.g. {list(outside[:3])})",
            stacklevel=2,
        )
    return LabelGraph(names, edges), outside


def ground_truth_columns(dataset: Dataset[Any], names: tuple[str, ...]) -> torch.Tensor | None:
    """Index of each model label in the dataset's label vector (-1 when absent), or None."""
    if not getattr(dataset, "has_ground_truth", True):
        return None
    data_names = tuple(getattr(dataset, "label_names", ()))
    if data_names == names:
        return torch.arange(len(names))
    position = {n: i for i, n in enumerate(data_names)}
    columns = torch.tensor([position.get(n, -1) for n in names])
    if bool((columns < 0).all()):
        raise ValueError(
            f"the dataset's labels share no name with the model's (dataset: {list(data_names[:5])}..., "
            f"model: {list(names[:5])}...)"
        )
    missing = [n for n, c in zip(names, columns.tolist(), strict=True) if c < 0]
    if missing:
        warnings.warn(
            f"{len(missing)} model labels are not dataset labels and are never ground truth "
            f"(e.g. {missing[:3]})",
            stacklevel=2,
        )
    return columns
