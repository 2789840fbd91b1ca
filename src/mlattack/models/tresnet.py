"""TResNet (Ridnik et al., WACV 2021) with the official repositories' module and key names.

Written here so that the released ASL and ML-Decoder checkpoints load with torch alone (no timm, no
``inplace_abn``): the state-dict keys are exactly the official ones (``body.conv1.0.weight``,
``body.layer2.0.conv1.0.1.running_var``, ...), so a released ``body.*`` tensor loads one to one.

What the official model computes, and how it is reproduced here:

* **Stem.** ``SpaceToDepth(4)`` (``x.view(N, C, H/4, 4, W/4, 4).permute(0, 3, 5, 1, 2, 4)``: not
  ``nn.PixelUnshuffle``, whose channel order differs), then a 3x3 conv on the 48 channels.
* **InPlaceABN.** Every conv is ``Sequential(Conv2d(bias=False), InPlaceABN)``. :class:`InPlaceABN`
  computes, like the package, ``act((x - mean) / sqrt(var + eps) * (|weight| + eps) + bias)`` with
  the *signed* stored weight, eps 1e-5, and ``act`` leaky-ReLU (slope 0.01 in the stem, 0.001 in the
  blocks) or the identity (the last conv of a block and the shortcut convs).
* **Anti-aliased downsampling.** A stride-2 conv is the stride-1 conv followed by a fixed depthwise
  ``[1,2,1]^T [1,2,1] / 16`` filter with reflect padding 1 and stride 2 (not in the state dict).
  The shortcut of a stride-2 block is ``AvgPool2d(2, ceil_mode=True, count_include_pad=False)``
  then a 1x1 conv.
* **SE.** Global mean, 1x1 conv, ReLU, 1x1 conv, sigmoid, multiply; after conv2 in both block
  kinds, in stages 1-3 only, on ``planes`` channels reduced to ``max(planes // 4, 64)``
  (BasicBlock) or ``max(4 planes // 8, 64)`` (Bottleneck).
* **Variants.** v1 (ASL's M/L/XL and ML-Decoder's M: BasicBlock in stages 1-2) and v2 (ML-Decoder's
  "tresnet_l"/"tresnet_xl": Bottleneck everywhere); see :data:`TRESNET_PRESETS`.

InPlaceABN 1.1.0 (ML-Decoder's files) keeps a ``num_batches_tracked`` counter per layer and 1.0.12
(ASL's) does not: ``batch_counters`` says which layout a backbone has, so both load strictly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlattack.models.backbone_base import Backbone

INPLACE_ABN_EPS = 1e-5
STEM_SLOPE = 1e-2
BLOCK_SLOPE = 1e-3
FIRST_BLOCKS = ("basic", "bottleneck")

# name -> blocks per stage, stem width "planes" (int(64 * width_factor) of the official
# factories) and the first two stages' block.
TRESNET_PRESETS: dict[str, dict[str, Any]] = {
    "tresnet-m": {"layers": [3, 4, 11, 3], "planes": 64, "first_block": "basic"},
    "tresnet-l": {"layers": [4, 5, 18, 3], "planes": 76, "first_block": "basic"},
    "tresnet-xl": {"layers": [4, 5, 24, 3], "planes": 83, "first_block": "basic"},
    "tresnet-v2-l": {"layers": [3, 4, 23, 3], "planes": 64, "first_block": "bottleneck"},
    "tresnet-v2-xl": {"layers": [3, 8, 34, 5], "planes": 64, "first_block": "bottleneck"},
}


class InPlaceABN(nn.Module):
    """InPlaceABN's computation with plain torch: batch norm scaled by ``|weight| + eps``, then
    leaky-ReLU (``slope``) or nothing (``slope=None``).

    The stored ``weight`` is signed, as in the package; training updates the running statistics
    like ``BatchNorm2d`` (``momentum`` 0.1).
    """

    num_batches_tracked: Tensor | None
    running_mean: Tensor
    running_var: Tensor

    def __init__(self, channels: int, *, slope: float | None, batch_counter: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.slope = slope
        self.eps = INPLACE_ABN_EPS
        self.momentum = 0.1
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        if batch_counter:
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.num_batches_tracked = None

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        out = F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight.abs() + self.eps,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )
        if self.slope is None:
            return out
        return F.leaky_relu(out, self.slope)

    def extra_repr(self) -> str:
        activation = "identity" if self.slope is None else f"leaky_relu({self.slope})"
        return f"{self.channels}, eps={self.eps}, activation={activation}"


def conv_abn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    slope: float | None,
    batch_counter: bool,
) -> nn.Sequential:
    """``Sequential(Conv2d(bias=False), InPlaceABN)``: keys ``0.weight`` and ``1.*``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        InPlaceABN(out_channels, slope=slope, batch_counter=batch_counter),
    )


class SpaceToDepth(nn.Module):
    """``[N, C, H, W] -> [N, 16 C, H/4, W/4]`` in TResNet's channel order (block row, block
    column, then channel)."""

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        x = x.view(n, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(n, c * 16, h // 4, w // 4)


class AntiAliasDownsample(nn.Module):
    """Depthwise ``[1,2,1]^T [1,2,1] / 16`` blur with reflect padding 1 and stride 2.

    The filter is a constant made in ``forward`` (the official layer does not store it either),
    so the module has no state and builds on any device.
    """

    def forward(self, x: Tensor) -> Tensor:
        taps = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
        kernel = taps[:, None] * taps[None, :]
        kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, stride=2, groups=x.shape[1])


class SqueezeExcitation(nn.Module):
    """Channel gates from the global mean: ``x * sigmoid(fc2(relu(fc1(mean(x)))))``."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.view(x.shape[0], x.shape[1], -1).mean(-1).view(x.shape[0], x.shape[1], 1, 1)
        gates = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))
        return x * gates


def _maybe_anti_aliased(conv: nn.Sequential, stride: int) -> nn.Sequential:
    return conv if stride == 1 else nn.Sequential(conv, AntiAliasDownsample())


class TResNetBlock(nn.Module):
    """What both TResNet blocks share: the main convolutions ``conv1``, ``conv2`` (``conv3`` in the
    bottleneck), the optional squeeze-excitation after ``conv2``, the shortcut and the residual
    ReLU. Subclasses add their convolutions in :meth:`add_convolutions`."""

    expansion: ClassVar[int]
    # The squeeze-excitation's reduced width is max(planes // se_divisor, 64).
    se_divisor: ClassVar[int]
    conv1: nn.Module
    conv2: nn.Module

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        shortcut: nn.Module | None,
        *,
        use_se: bool,
        batch_counter: bool,
    ) -> None:
        super().__init__()
        self.add_convolutions(in_channels, planes, stride, batch_counter)
        self.downsample = shortcut
        width = max(planes // self.se_divisor, 64)
        self.se = SqueezeExcitation(planes, width) if use_se else None

    def add_convolutions(
        self, in_channels: int, planes: int, stride: int, batch_counter: bool
    ) -> None:
        raise NotImplementedError

    def after_excitation(self, out: Tensor) -> Tensor:
        """What follows the squeeze-excitation before the residual sum."""
        return out

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        return torch.relu(self.after_excitation(out) + residual)


class TResNetBasicBlock(TResNetBlock):
    expansion = 1
    se_divisor = 4

    def add_convolutions(
        self, in_channels: int, planes: int, stride: int, batch_counter: bool
    ) -> None:
        conv1 = conv_abn(in_channels, planes, 3, slope=BLOCK_SLOPE, batch_counter=batch_counter)
        self.conv1 = _maybe_anti_aliased(conv1, stride)
        self.conv2 = conv_abn(planes, planes, 3, slope=None, batch_counter=batch_counter)


class TResNetBottleneck(TResNetBlock):
    expansion = 4
    se_divisor = 2  # the official planes * expansion // 8

    def add_convolutions(
        self, in_channels: int, planes: int, stride: int, batch_counter: bool
    ) -> None:
        counter = batch_counter
        self.conv1 = conv_abn(in_channels, planes, 1, slope=BLOCK_SLOPE, batch_counter=counter)
        conv2 = conv_abn(planes, planes, 3, slope=BLOCK_SLOPE, batch_counter=counter)
        self.conv2 = _maybe_anti_aliased(conv2, stride)
        self.conv3 = conv_abn(planes, planes * 4, 1, slope=None, batch_counter=counter)

    def after_excitation(self, out: Tensor) -> Tensor:
        return self.conv3(out)


def _stage(
    block: type[TResNetBlock],
    in_channels: int,
    planes: int,
    depth: int,
    *,
    stride: int,
    use_se: bool,
    batch_counter: bool,
) -> nn.Sequential:
    out_channels = planes * block.expansion
    shortcut: nn.Module | None = None
    if stride != 1 or in_channels != out_channels:
        parts: list[nn.Module] = []
        if stride == 2:
            parts.append(nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False))
        parts.append(
            conv_abn(in_channels, out_channels, 1, slope=None, batch_counter=batch_counter)
        )
        shortcut = nn.Sequential(*parts)
    blocks = [
        block(in_channels, planes, stride, shortcut, use_se=use_se, batch_counter=batch_counter)
    ]
    for _ in range(1, depth):
        blocks.append(
            block(out_channels, planes, 1, None, use_se=use_se, batch_counter=batch_counter)
        )
    return nn.Sequential(*blocks)


def _check_tresnet_options(
    layers: Sequence[int], planes: int, first_block: str, input_size: int
) -> tuple[int, int, int, int]:
    depths = tuple(int(d) for d in layers)
    if len(depths) != 4 or min(depths) < 1:
        raise ValueError(f"tresnet layers must be 4 positive block counts, got {list(layers)}")
    if int(planes) < 1:
        raise ValueError(f"tresnet planes must be positive, got {planes!r}")
    if first_block not in FIRST_BLOCKS:
        raise ValueError(f"tresnet first_block must be one of {FIRST_BLOCKS}, got {first_block!r}")
    check_tresnet_input_size(input_size)
    return depths[0], depths[1], depths[2], depths[3]


def check_tresnet_input_size(input_size: object, source: str = "input_size") -> int:
    """``input_size`` if TResNet can take it (a multiple of 32, at least 32), else ValueError."""
    if isinstance(input_size, bool) or not isinstance(input_size, int):
        raise TypeError(f"{source} must be an integer, got {input_size!r}")
    if input_size < 32 or input_size % 32:
        raise ValueError(
            f"{source}={input_size} is not supported by TResNet: the side must be a multiple of "
            "32 (space-to-depth by 4, then three stride-2 stages)"
        )
    return input_size


class TResNetBackbone(Backbone):
    """TResNet body (``self.body``, official names) without pooling: ``[B, 3, H, W] ->
    [B, 32 planes, H/32, W/32]``.

    Args:
        layers: blocks per stage (4 numbers).
        planes: the stem width, ``int(64 * width_factor)`` of the official factories.
        first_block: ``"basic"`` (v1) or ``"bottleneck"`` (v2) for the first two stages.
        input_size: the image side (a multiple of 32).
        batch_counters: InPlaceABN >= 1.1.0's ``num_batches_tracked`` buffers (ML-Decoder's files).

    Its weights expect pixels in [0, 1] without normalisation (mean 0, std 1), like the official
    models.
    """

    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def __init__(
        self,
        layers: Sequence[int] = (4, 5, 18, 3),
        planes: int = 76,
        first_block: str = "basic",
        input_size: int = 448,
        batch_counters: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(batch_counters, bool):
            raise TypeError(f"batch_counters must be a bool, got {batch_counters!r}")
        self.layers = _check_tresnet_options(layers, planes, first_block, input_size)
        self.planes = int(planes)
        self.first_block = first_block
        self.batch_counters = batch_counters
        self.default_input_size = int(input_size)
        first = TResNetBasicBlock if first_block == "basic" else TResNetBottleneck
        counter = batch_counters
        stages: list[tuple[str, nn.Module]] = [
            ("SpaceToDepth", SpaceToDepth()),
            ("conv1", conv_abn(48, self.planes, 3, slope=STEM_SLOPE, batch_counter=counter)),
        ]
        in_channels = self.planes
        blocks = (first, first, TResNetBottleneck, TResNetBottleneck)
        for index, (block, depth) in enumerate(zip(blocks, self.layers, strict=True)):
            planes_here = self.planes * 2**index
            stage = _stage(
                block,
                in_channels,
                planes_here,
                depth,
                stride=1 if index == 0 else 2,
                use_se=index < 3,
                batch_counter=counter,
            )
            stages.append((f"layer{index + 1}", stage))
            in_channels = planes_here * block.expansion
        self.body = nn.Sequential(OrderedDict(stages))
        self.out_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(
                f"TResNet needs image sides that are multiples of 32, got {list(x.shape[-2:])}"
            )
        out: Tensor = self.body(x)
        return out

    def variant(self) -> str | None:
        """The preset name this architecture is (``"tresnet-l"``...), or ``None``."""
        return tresnet_variant(self.layers, self.planes, self.first_block)

    def spec(self) -> dict[str, Any]:
        return {
            "name": "tresnet",
            "layers": list(self.layers),
            "planes": self.planes,
            "first_block": self.first_block,
            "input_size": self.default_input_size,
            "batch_counters": self.batch_counters,
        }


def tresnet_variant(layers: Sequence[int], planes: int, first_block: str) -> str | None:
    """The name in :data:`TRESNET_PRESETS` of this architecture, or ``None`` for another one."""
    for name, preset in TRESNET_PRESETS.items():
        if (
            list(layers) == preset["layers"]
            and planes == preset["planes"]
            and first_block == preset["first_block"]
        ):
            return name
    return None


def tresnet_spec_from_state_dict(
    state_dict: Mapping[str, Tensor], source: str, prefix: str = "body."
) -> dict[str, Any]:
    """The :class:`TResNetBackbone` options (without ``input_size``) that an official
    ``body.*`` state dict was made with, read from its tensors.

    Raises:
        ValueError: naming ``source`` and the key, when the tensors are not a TResNet body.
    """
    stem_key = f"{prefix}conv1.0.weight"
    stem = state_dict.get(stem_key)
    if stem is None or stem.ndim != 4:
        raise ValueError(f"{source}: no TResNet stem {stem_key!r} (a [planes, 48, 3, 3] tensor)")
    if stem.shape[1] != 48:
        raise ValueError(
            f"{source}: {stem_key!r} has shape {list(stem.shape)}; TResNet's stem sees 48 "
            "channels (3 x 16 after space-to-depth)"
        )
    depths = []
    for stage in range(1, 5):
        stage_prefix = f"{prefix}layer{stage}."
        indices = {
            int(key[len(stage_prefix) :].split(".", 1)[0])
            for key in state_dict
            if key.startswith(stage_prefix) and key[len(stage_prefix) :].split(".", 1)[0].isdigit()
        }
        if not indices:
            raise ValueError(f"{source}: no '{stage_prefix}*' keys: not a TResNet body")
        depths.append(max(indices) + 1)
    bottleneck = f"{prefix}layer1.0.conv3.0.weight" in state_dict
    # A partial set of counters is reported by the strict load as missing keys.
    counters = any(key.endswith(".num_batches_tracked") for key in state_dict)
    return {
        "name": "tresnet",
        "layers": depths,
        "planes": int(stem.shape[0]),
        "first_block": "bottleneck" if bottleneck else "basic",
        "batch_counters": counters,
    }
