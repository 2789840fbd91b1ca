"""The common shell of every trainable multi-label model: pixels in [0,1] -> logits [B, C].

Preprocessing (resize to ``input_size`` and mean/std normalisation) lives inside the model so that
attacks can work directly in pixel space.  A model is a backbone (spatial feature map) plus a head
that each family defines in :meth:`MultiLabelModel.head_logits`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlattack._validation import check_int
from mlattack.models.backbones import Backbone, build_backbone

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

ModelT = TypeVar("ModelT", bound="MultiLabelModel")


class ModelOptions(TypedDict, total=False):
    """The keyword options every family passes on to :class:`MultiLabelModel` (see there)."""

    num_labels: int | None
    label_names: Sequence[str] | None
    graph: LabelGraph | None
    input_size: int | None
    mean: Sequence[float] | None
    std: Sequence[float] | None


def resolve_label_names(
    num_labels: int | None,
    label_names: Sequence[str] | None,
    graph: LabelGraph | None,
) -> tuple[str, ...]:
    """Settle the output labels from whichever of count, names and graph were given.

    The graph's labels must be the model's outputs in the same order; with nothing but a count the
    labels are called ``label_0``, ``label_1``, ...
    """
    names: tuple[str, ...] | None = None
    if label_names is not None:
        if isinstance(label_names, str):
            raise TypeError("label_names must be a sequence of strings, not a single string")
        names = tuple(str(name) for name in label_names)
    if graph is not None:
        graph_names = tuple(graph.names)
        if names is None:
            names = graph_names
        elif names != graph_names:
            if len(names) != len(graph_names):
                raise ValueError(
                    f"label_names has {len(names)} labels but the graph has {len(graph_names)}"
                )
            position = next(
                i for i, (a, b) in enumerate(zip(names, graph_names, strict=True)) if a != b
            )
            raise ValueError(
                f"label_names and graph disagree at output {position}: "
                f"{names[position]!r} vs graph label {graph_names[position]!r} "
                "(the graph must list the model's labels in output order)"
            )
    if names is None:
        if num_labels is None:
            raise ValueError("give num_labels, label_names or graph to fix the model's outputs")
        check_int(num_labels, "num_labels", minimum=1)
        return tuple(f"label_{i}" for i in range(num_labels))
    if num_labels is not None and num_labels != len(names):
        raise ValueError(f"num_labels={num_labels} but {len(names)} label names were given")
    check_int(len(names), "num_labels", minimum=1)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"label name {name!r} appears more than once")
        seen.add(name)
    return names


def resize_square(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of ``[B, 3, H, W]`` to ``size`` x ``size``, differentiable in ``images``.

    Antialiased only when shrinking (the plain kernel is cheaper and enough otherwise); images
    already of that size are returned as they are.
    """
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    shrinking = height > size or width > size
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking
    )


def check_images(images: Tensor) -> None:
    """Raise a clear error unless ``images`` is a float tensor shaped [B, 3, H, W]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [B, 3, H, W], got {list(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got dtype {images.dtype}")


class MultiLabelModel(nn.Module, abc.ABC):
    """Backbone + multi-label head, with preprocessing inside.

    Attributes:
        label_names: output labels, in logit order.
        graph: the label graph the model was built on (labels in output order), or ``None``.
        input_size: images are resized to ``input_size`` x ``input_size`` before the backbone.
        backbone: the feature extractor (:class:`~mlattack.models.backbones.Backbone`).
    """

    name: ClassVar[str]
    pixel_mean: Tensor
    pixel_std: Tensor

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_labels: int | None = None,
        label_names: Sequence[str] | None = None,
        graph: LabelGraph | None = None,
        input_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.label_names = resolve_label_names(num_labels, label_names, graph)
        self.graph = graph
        size = backbone.default_input_size if input_size is None else input_size
        self.input_size = check_int(size, "input_size", minimum=8)
        self.backbone = backbone
        mean_values = _channel_triple("mean", backbone.mean if mean is None else mean)
        std_values = _channel_triple("std", backbone.std if std is None else std)
        if min(std_values) <= 0:
            raise ValueError(f"std must be positive per channel, got {list(std_values)}")
        self.mean = mean_values
        self.std = std_values
        # Not persistent: the values live in config(), so state_dicts hold only learned weights.
        self.register_buffer("pixel_mean", torch.tensor(mean_values).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(std_values).view(1, 3, 1, 1), False)

    @classmethod
    def build(
        cls: type[ModelT],
        *,
        backbone: str | Mapping[str, Any] = "small-cnn",
        pretrained_backbone: bool = False,
        **options: Any,
    ) -> ModelT:
        """Build the backbone from its name/spec, then the model (``options`` go to ``__init__``)."""
        return cls(build_backbone(backbone, pretrained=pretrained_backbone), **options)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], graph: LabelGraph | None) -> MultiLabelModel:
        """An untrained model with the architecture ``config`` describes (for checkpoints)."""
        options = {key: value for key, value in config.items() if key != "name"}
        return cls.build(graph=graph, **options)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """How pixels are prepared inside the model (JSON-able, recorded in checkpoints)."""
        return {
            "input_range": [0.0, 1.0],
            "input_size": self.input_size,
            "resize": "bilinear (antialiased when shrinking)",
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def preprocess(self, images: Tensor) -> Tensor:
        """Resize to ``input_size`` and normalise; differentiable in ``images``."""
        return (resize_square(images, self.input_size) - self.pixel_mean) / self.pixel_std

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[B, C]`` for images ``[B, 3, H, W]`` with values in [0, 1]."""
        check_images(images)
        return self.head_logits(self.backbone(self.preprocess(images)))

    @abc.abstractmethod
    def head_logits(self, features: Tensor) -> Tensor:
        """Map the backbone's feature map ``[B, D, h, w]`` to logits ``[B, C]``."""

    def head_config(self) -> dict[str, Any]:
        """The family's own hyper-parameters for :meth:`config` (JSON-able)."""
        return {}

    def config(self) -> dict[str, Any]:
        """JSON-able description that, with the state dict, rebuilds the model."""
        return {
            "name": self.name,
            "num_labels": self.num_labels,
            "label_names": list(self.label_names),
            "backbone": self.backbone.spec(),
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            **self.head_config(),
        }

    def extra_repr(self) -> str:
        return f"labels={self.num_labels}, input_size={self.input_size}"


def _channel_triple(what: str, values: Sequence[float]) -> tuple[float, float, float]:
    triple = tuple(float(v) for v in values)
    if len(triple) != 3:
        raise ValueError(f"{what} must have 3 values (one per RGB channel), got {list(values)}")
    return triple[0], triple[1], triple[2]
