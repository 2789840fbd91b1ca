"""What every backbone is: the :class:`Backbone` interface and the ImageNet normalisation.

Apart from :mod:`mlattack.models.backbones` (the catalogue that builds backbones by name) so that
the backbones written after the official models (:mod:`.tresnet`, :mod:`.resnet`) can subclass it
without importing the catalogue that lists them.
"""

from __future__ import annotations

import abc
from typing import Any

from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Backbone"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module, abc.ABC):
    """A feature extractor with what a model needs to wrap it.

    Attributes:
        out_channels: D, the channel count of the feature map.
        default_input_size: the image side the backbone expects.
        mean, std: the per-channel normalisation its weights expect.
    """

    out_channels: int
    default_input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able description; ``build_backbone(spec)`` rebuilds the same architecture."""
