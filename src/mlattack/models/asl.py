"""ASL (Ridnik et al., ICCV 2021): asymmetric loss and the TResNet + linear-head model.

The ASL model is a global-pool classifier (TResNet in the paper) trained with
:class:`AsymmetricLoss`; :func:`mlattack.models.load_asl_checkpoint` reads the official checkpoints
(:mod:`mlattack.models.released.asl`). OpenImages models know each output's MID (``label_mids``),
which is how their outputs meet the dataset's labels and the class hierarchy (see
:mod:`mlattack.models.classlist`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlattack._validation import check_int
from mlattack.models.backbones import Backbone
from mlattack.models.base import ModelOptions, MultiLabelModel
from mlattack.models.classlist import check_mids

if TYPE_CHECKING:
    from typing_extensions import Unpack

Reduction = Literal["mean", "sum", "none"]


def _check_gamma(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def _check_clip(clip: float) -> float:
    if not 0 <= clip < 1:
        raise ValueError(f"clip must be in [0, 1), got {clip!r}")
    return float(clip)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss on logits (Ridnik et al. 2021, eq. 4-6).

    With ``p = sigmoid(logit)`` and the shifted probability ``p_m = max(p - clip, 0)``::

        L+ = (1 - p)^gamma_pos * log(p)            for positive labels
        L- = p_m^gamma_neg * log(1 - p_m)          for negative labels
        loss = -(y * L+ + (1 - y) * L-)

    ``gamma_pos = gamma_neg = clip = 0`` gives exactly binary cross-entropy.  Targets may be soft
    (floats in [0, 1]).  ``reduction="mean"`` averages over all B*C entries like
    ``BCEWithLogitsLoss``; the official code sums (``reduction="sum"``).
    """

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.gamma_pos = _check_gamma("gamma_pos", gamma_pos)
        self.gamma_neg = _check_gamma("gamma_neg", gamma_neg)
        self.clip = _check_clip(clip)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.shape != targets.shape:
            raise ValueError(
                f"logits {list(logits.shape)} and targets {list(targets.shape)} must have one shape"
            )
        targets = targets.to(logits.dtype)
        positive = F.logsigmoid(logits)
        if self.gamma_pos > 0:
            positive = positive * torch.sigmoid(-logits).pow(self.gamma_pos)
        if self.clip > 0:
            shifted = (torch.sigmoid(logits) - self.clip).clamp(min=0)
            negative = torch.log1p(-shifted)  # 1 - shifted >= clip, so the log stays finite
        else:
            shifted = torch.sigmoid(logits)
            negative = F.logsigmoid(-logits)
        if self.gamma_neg > 0:
            negative = negative * shifted.pow(self.gamma_neg)
        loss = -(targets * positive + (1 - targets) * negative)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def extra_repr(self) -> str:
        return f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}"


class ASLModel(MultiLabelModel):
    """Backbone + global average pooling + linear head, trained with :class:`AsymmetricLoss`.

    The paper's backbone is TResNet (``backbone="tresnet-l"``, written here; see
    :mod:`mlattack.models.tresnet`); any backbone works. The loss's hyper-parameters are kept with
    the model (``criterion()``, ``config()``).

    Args:
        bottleneck_features: ``None`` for the plain head (``classifier``: D -> C), or the width k
            of the OpenImages model's two-layer head (``bottleneck``: D -> k, then
            ``classifier``: k -> C, nothing in between).
        label_mids: the OpenImages MID of each output (in output order), kept in checkpoints; the
            runner matches outputs to dataset labels and hierarchy nodes by it.
    """

    name = "asl"

    def __init__(
        self,
        backbone: Backbone,
        *,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        bottleneck_features: int | None = None,
        label_mids: Sequence[str] | None = None,
        **options: Unpack[ModelOptions],
    ) -> None:
        super().__init__(backbone, **options)
        self.gamma_pos = _check_gamma("gamma_pos", gamma_pos)
        self.gamma_neg = _check_gamma("gamma_neg", gamma_neg)
        self.clip = _check_clip(clip)
        features = backbone.out_channels
        self.bottleneck_features = bottleneck_features
        if bottleneck_features is None:
            self.bottleneck: nn.Module = nn.Identity()
        else:
            width = check_int(bottleneck_features, "bottleneck_features", minimum=1)
            self.bottleneck = nn.Linear(features, width)
            features = width
        self.classifier = nn.Linear(features, self.num_labels)
        self.label_mids = (
            None
            if label_mids is None
            else check_mids(label_mids, self.num_labels, source="label_mids")
        )

    def head_logits(self, features: Tensor) -> Tensor:
        # The official FastAvgPool2d: a mean over the flattened map.
        pooled = features.view(features.shape[0], features.shape[1], -1).mean(-1)
        logits: Tensor = self.classifier(self.bottleneck(pooled))
        return logits

    def criterion(self, reduction: Reduction = "mean") -> AsymmetricLoss:
        """The loss this model is meant to be trained with."""
        return AsymmetricLoss(self.gamma_pos, self.gamma_neg, self.clip, reduction)

    def head_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "gamma_pos": self.gamma_pos,
            "gamma_neg": self.gamma_neg,
            "clip": self.clip,
        }
        if self.bottleneck_features is not None:
            config["bottleneck_features"] = self.bottleneck_features
        if self.label_mids is not None:
            config["label_mids"] = list(self.label_mids)
        return config
