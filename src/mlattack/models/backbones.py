"""Pluggable feature extractors: normalised images [B, 3, H, W] -> feature maps [B, D, h, w].

Built in: ``"small-cnn"`` (a few conv/BN/ReLU blocks, fast on a CPU) and ``"tiny-resnet"`` (a small
residual net), both to train from scratch; and the backbones of the released multi-label models,
written here with the official key names: ``"tresnet"`` (presets ``"tresnet-m"``, ``"tresnet-l"``,
``"tresnet-xl"``, ``"tresnet-v2-l"``, ``"tresnet-v2-xl"``; :mod:`mlattack.models.tresnet`) and
``"resnet"`` in torchvision's layout (``"resnet-101"``...; :mod:`mlattack.models.resnet`).  Any CNN of ``timm`` (``"timm:tresnet_m"``) or
``torchvision`` (``"torchvision:resnet50"``) works when that library is installed; a bare name
(``"resnet50"``) tries timm first, then torchvision.  Neither library is imported until such a
backbone is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from mlattack.models.backbone_base import IMAGENET_MEAN, IMAGENET_STD, Backbone
from mlattack.models.resnet import RESNET_PRESETS, ResNetBackbone
from mlattack.models.tresnet import TRESNET_PRESETS, TResNetBackbone

ZOO_HINT = "install the optional model zoo: pip install 'mlattack[zoo]'"


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _positive_widths(widths: Sequence[int], name: str) -> tuple[int, ...]:
    values = tuple(int(w) for w in widths)
    if not values or min(values) < 1:
        raise ValueError(
            f"{name} widths must be a non-empty list of positive integers, got {widths}"
        )
    return values


class SmallCNNBackbone(Backbone):
    """Conv-BN-ReLU blocks, each but the last followed by 2x2 max pooling.

    With the default widths a 64x64 image gives an 8x8x128 map for about 16 MMAC (forward), small
    enough to train on two CPU cores in minutes; doubling the early widths costs 3x the time.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), input_size: int = 64) -> None:
        super().__init__()
        self.widths = _positive_widths(widths, "small-cnn")
        layers: list[nn.Module] = []
        in_channels = 3
        for index, width in enumerate(self.widths):
            layers.append(_conv_bn_relu(in_channels, width))
            if index < len(self.widths) - 1:
                layers.append(nn.MaxPool2d(2))
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.out_channels = in_channels
        self.default_input_size = int(input_size)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.features(x)
        return out

    def spec(self) -> dict[str, Any]:
        return {
            "name": "small-cnn",
            "widths": list(self.widths),
            "input_size": self.default_input_size,
        }


def residual_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """A residual block's skip path: the identity, or a strided 1x1 conv + batch norm where the
    block changes the resolution or the channel count."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = residual_shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class TinyResNetBackbone(Backbone):
    """A stem convolution and one residual basic block per width, halving resolution each stage."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64), input_size: int = 64) -> None:
        super().__init__()
        self.widths = _positive_widths(widths, "tiny-resnet")
        self.stem = _conv_bn_relu(3, self.widths[0])
        blocks = []
        in_channels = self.widths[0]
        for index, width in enumerate(self.widths):
            blocks.append(_BasicBlock(in_channels, width, stride=1 if index == 0 else 2))
            in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = in_channels
        self.default_input_size = int(input_size)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.blocks(self.stem(x))
        return out

    def spec(self) -> dict[str, Any]:
        return {
            "name": "tiny-resnet",
            "widths": list(self.widths),
            "input_size": self.default_input_size,
        }


def _import_zoo_library(library: str, backbone: str) -> ModuleType:
    try:
        return importlib.import_module(library)
    except ImportError as error:
        raise ImportError(f"backbone {backbone!r} needs {library}; {ZOO_HINT}") from error


class TimmBackbone(Backbone):
    """Any timm CNN, without its pooling and classifier (``forward_features``)."""

    def __init__(self, model_name: str, *, pretrained: bool = False, **options: Any) -> None:
        super().__init__()
        timm = _import_zoo_library("timm", f"timm:{model_name}")
        self.model_name = model_name
        self.options = dict(options)
        self.net = timm.create_model(
            model_name, pretrained=pretrained, num_classes=0, global_pool="", **options
        )
        self.out_channels = int(self.net.num_features)
        cfg = getattr(self.net, "pretrained_cfg", None) or getattr(self.net, "default_cfg", {})
        self.mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
        self.std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
        self.default_input_size = int(cfg.get("input_size", (3, 224, 224))[-1])

    def forward(self, x: Tensor) -> Tensor:
        features: Tensor = self.net.forward_features(x)
        return _require_feature_map(features, f"timm:{self.model_name}")

    def spec(self) -> dict[str, Any]:
        return {"name": f"timm:{self.model_name}", **self.options}


class TorchvisionBackbone(Backbone):
    """A torchvision classifier cut before its global pooling.

    ResNet-like models (``avgpool`` + ``fc``) keep every child before ``avgpool``; VGG, DenseNet,
    EfficientNet, MobileNet and ConvNeXt keep their ``features`` module.
    """

    def __init__(self, model_name: str, *, pretrained: bool = False, **options: Any) -> None:
        super().__init__()
        torchvision = _import_zoo_library("torchvision", f"torchvision:{model_name}")
        self.model_name = model_name
        self.options = dict(options)
        weights = "DEFAULT" if pretrained else None
        full = torchvision.models.get_model(model_name, weights=weights, **options)
        children = dict(full.named_children())
        if "avgpool" in children and "fc" in children:
            kept = []
            for child_name, child in children.items():
                if child_name == "avgpool":
                    break
                kept.append(child)
            self.net: nn.Module = nn.Sequential(*kept)
        elif "features" in children:
            self.net = children["features"]
        else:
            raise ValueError(
                f"torchvision model {model_name!r} has neither avgpool+fc nor a 'features' module; "
                "use a timm name or a CNN such as resnet50"
            )
        self.default_input_size = 224
        was_training = self.net.training
        self.net.eval()
        with torch.no_grad():
            probe = self.net(torch.zeros(1, 3, 64, 64))
        self.net.train(was_training)
        self.out_channels = int(_require_feature_map(probe, f"torchvision:{model_name}").shape[1])

    def forward(self, x: Tensor) -> Tensor:
        features: Tensor = self.net(x)
        return features

    def spec(self) -> dict[str, Any]:
        return {"name": f"torchvision:{self.model_name}", **self.options}


def _require_feature_map(features: Tensor, backbone: str) -> Tensor:
    if features.ndim != 4:
        raise ValueError(
            f"backbone {backbone!r} gives features of shape {list(features.shape)}; "
            "multi-label heads need a spatial map [B, D, h, w] (use a CNN backbone)"
        )
    return features


BUILTIN_BACKBONES: dict[str, type[Backbone]] = {
    "small-cnn": SmallCNNBackbone,
    "tiny-resnet": TinyResNetBackbone,
}


def _official_backbones() -> tuple[dict[str, type[Backbone]], dict[str, dict[str, Any]]]:
    """The backbones written after the official models, and their named presets."""
    classes: dict[str, type[Backbone]] = {"tresnet": TResNetBackbone, "resnet": ResNetBackbone}
    presets = {
        **{name: {"name": "tresnet", **preset} for name, preset in TRESNET_PRESETS.items()},
        **{name: {"name": "resnet", **preset} for name, preset in RESNET_PRESETS.items()},
    }
    return classes, presets


def _library_available(library: str) -> bool:
    try:
        return importlib.util.find_spec(library) is not None
    except ValueError:  # a module injected into sys.modules without a spec
        return library in sys.modules


def build_backbone(
    spec: str | Mapping[str, Any], *, pretrained: bool = False, **options: Any
) -> Backbone:
    """Build a backbone from a name or a spec dict (as given by :meth:`Backbone.spec`).

    ``options`` override the spec's fields.  ``pretrained`` asks timm/torchvision for their
    pretrained weights (it may download them); built-in backbones have none.
    """
    if isinstance(spec, str):
        fields: dict[str, Any] = {"name": spec}
    elif isinstance(spec, Mapping):
        fields = dict(spec)
    else:
        raise TypeError(f"backbone must be a name or a spec dict, got {type(spec).__name__}")
    fields.update(options)
    name = fields.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone spec needs a 'name', got {fields!r}")
    official, presets = _official_backbones()
    if name in presets:
        fields = {**presets[name], **fields}
        name = fields.pop("name")
    if name in official:
        if pretrained:
            raise ValueError(
                f"backbone {name!r} has no built-in pretrained weights; load a released "
                "checkpoint (load_asl_checkpoint, load_mldecoder_checkpoint, load_mlgcn_checkpoint)"
            )
        try:
            return official[name](**fields)
        except TypeError as error:
            raise TypeError(f"bad options for backbone {name!r}: {error}") from error
    if name in BUILTIN_BACKBONES:
        if pretrained:
            raise ValueError(f"backbone {name!r} has no pretrained weights; train it instead")
        try:
            return BUILTIN_BACKBONES[name](**fields)
        except TypeError as error:
            raise TypeError(f"bad options for backbone {name!r}: {error}") from error
    library, _, model_name = name.partition(":")
    if not model_name:
        library, model_name = "", name
    if library == "timm":
        return TimmBackbone(model_name, pretrained=pretrained, **fields)
    if library == "torchvision":
        return TorchvisionBackbone(model_name, pretrained=pretrained, **fields)
    if library:
        raise ValueError(
            f"unknown backbone library {library!r} in {name!r}; use 'timm:' or 'torchvision:'"
        )
    if _library_available("timm"):
        return TimmBackbone(model_name, pretrained=pretrained, **fields)
    if _library_available("torchvision"):
        return TorchvisionBackbone(model_name, pretrained=pretrained, **fields)
    raise ImportError(
        f"unknown backbone {name!r}: built-in backbones are {sorted(BUILTIN_BACKBONES)}; "
        f"other names need timm or torchvision ({ZOO_HINT})"
    )
