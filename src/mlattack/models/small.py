"""The plain multi-label classifier: backbone, global average pooling, one linear layer.

Registered as ``"small-cnn"``: with the default ``small-cnn`` backbone it is the small fast model
used by tests and demos; with any other backbone it is the usual BCE baseline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from mlattack.models.backbones import Backbone
from mlattack.models.base import ModelOptions, MultiLabelModel

if TYPE_CHECKING:
    from typing_extensions import Unpack


class GlobalPoolClassifier(MultiLabelModel):
    """logits = W · mean_{h,w}(backbone(x)) + b."""

    name = "small-cnn"

    def __init__(self, backbone: Backbone, **options: Unpack[ModelOptions]) -> None:
        super().__init__(backbone, **options)
        self.classifier = nn.Linear(backbone.out_channels, self.num_labels)

    def head_logits(self, features: Tensor) -> Tensor:
        logits: Tensor = self.classifier(features.mean(dim=(2, 3)))
        return logits
