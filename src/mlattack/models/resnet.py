"""ResNet with Bottleneck blocks in torchvision's layout, as ML-GCN's ``features`` holds it.

ML-GCN keeps ``nn.Sequential(conv1, bn1, relu, maxpool, layer1, ..., layer4)`` of a torchvision
ResNet under ``features``: keys ``features.0.weight`` (conv1), ``features.1.*`` (bn1),
``features.4.0.conv1.weight`` (layer1, block 0)... :class:`ResNetBackbone` has exactly that module
tree, so those tensors load one to one without torchvision. The blocks are torchvision's (stride
on the 3x3 conv, shortcut ``downsample.0`` conv + ``downsample.1`` batch norm); ResNet-101 is
``layers=(3, 4, 23, 3)``, ``width_per_group=64``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mlattack.models.backbone_base import Backbone

RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "resnet-50": {"layers": [3, 4, 6, 3], "width_per_group": 64},
    "resnet-101": {"layers": [3, 4, 23, 3], "width_per_group": 64},
    "resnet-152": {"layers": [3, 8, 36, 3], "width_per_group": 64},
}


class ResNetBottleneck(nn.Module):
    """torchvision's Bottleneck: 1x1, 3x3 (stride), 1x1 (x4), each with batch norm."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, width_per_group: int) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0))
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + residual)


class ResNetBackbone(Backbone):
    """``features = Sequential(conv1, bn1, relu, maxpool, layer1..layer4)`` -> ``[B, 2048, H/32,
    W/32]`` (ImageNet normalisation).

    Args:
        layers: Bottleneck blocks per stage.
        width_per_group: torchvision's ``width_per_group`` (64 for ResNet-50/101/152).
        input_size: the image side the weights expect.
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 23, 3),
        width_per_group: int = 64,
        input_size: int = 448,
    ) -> None:
        super().__init__()
        depths = tuple(int(d) for d in layers)
        if len(depths) != 4 or min(depths) < 1:
            raise ValueError(f"resnet layers must be 4 positive block counts, got {list(layers)}")
        if int(width_per_group) < 1:
            raise ValueError(f"resnet width_per_group must be positive, got {width_per_group!r}")
        if int(input_size) < 32:
            raise ValueError(f"resnet input_size must be at least 32, got {input_size!r}")
        self.layers = depths
        self.width_per_group = int(width_per_group)
        self.default_input_size = int(input_size)
        modules: list[nn.Module] = [
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        in_channels = 64
        for index, depth in enumerate(depths):
            planes = 64 * 2**index
            blocks = []
            for block_index in range(depth):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(ResNetBottleneck(in_channels, planes, stride, self.width_per_group))
                in_channels = planes * ResNetBottleneck.expansion
            modules.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*modules)
        self.out_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.features(x)
        return out

    def spec(self) -> dict[str, Any]:
        return {
            "name": "resnet",
            "layers": list(self.layers),
            "width_per_group": self.width_per_group,
            "input_size": self.default_input_size,
        }


def resnet_spec_from_state_dict(
    state_dict: Mapping[str, Tensor], source: str, prefix: str = "features."
) -> dict[str, Any]:
    """The :class:`ResNetBackbone` options (without ``input_size``) of a ``features.*`` state dict.

    Raises:
        ValueError: naming ``source`` and the key, when the tensors are not such a ResNet.
    """
    stem_key = f"{prefix}0.weight"
    stem = state_dict.get(stem_key)
    if stem is None or list(stem.shape) != [64, 3, 7, 7]:
        shape = None if stem is None else list(stem.shape)
        raise ValueError(
            f"{source}: {stem_key!r} is {shape}, not a ResNet stem conv of shape [64, 3, 7, 7]"
        )
    depths = []
    for stage in range(4, 8):
        stage_prefix = f"{prefix}{stage}."
        indices = {
            int(key[len(stage_prefix) :].split(".", 1)[0])
            for key in state_dict
            if key.startswith(stage_prefix) and key[len(stage_prefix) :].split(".", 1)[0].isdigit()
        }
        if not indices:
            raise ValueError(
                f"{source}: no '{stage_prefix}*' keys: not a ResNet's layer{stage - 3}"
            )
        depths.append(max(indices) + 1)
    first_key = f"{prefix}4.0.conv1.weight"
    first = state_dict.get(first_key)
    if first is None or first.ndim != 4:
        raise ValueError(f"{source}: no {first_key!r}: not a Bottleneck ResNet")
    # layer1's inner width is 64 * width_per_group / 64.
    return {"name": "resnet", "layers": depths, "width_per_group": int(first.shape[0])}
