"""Per-label losses on logits shared by the attacks and the metrics.

All losses take **logits** (not probabilities) and use
:func:`torch.nn.functional.binary_cross_entropy_with_logits`, which is numerically stable for large
logits. ``desired`` is the label vector the loss pulls towards (bool or float in ``[0, 1]``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mlattack._validation import check_number

__all__ = ["logit_threshold", "masked_bce", "per_label_bce"]


def logit_threshold(threshold: float) -> float:
    """The logit cut equivalent to ``sigmoid(logit) > threshold`` (the threshold's log-odds).

    Raises:
        TypeError: ``threshold`` is not a number (``None``, a string such as ``"0.5"``, a bool).
        ValueError: ``threshold`` is not a probability in ``(0, 1)``.
    """
    threshold = check_number(
        threshold,
        "threshold",
        minimum=0.0,
        maximum=1.0,
        exclusive_minimum=True,
        exclusive_maximum=True,
    )
    return math.log(threshold / (1.0 - threshold))


def _check_same_shape(logits: Tensor, other: Tensor, what: str) -> None:
    if logits.shape != other.shape:
        raise ValueError(
            f"{what} has shape {tuple(other.shape)} but logits have shape {tuple(logits.shape)}"
        )


def per_label_bce(logits: Tensor, desired: Tensor) -> Tensor:
    """Binary cross-entropy of every (image, label) pair, without reduction.

    Args:
        logits: float ``[B, C]`` (any shape works, ``desired`` must match it).
        desired: bool or float tensor of the same shape: the label values the loss pulls towards.

    Returns:
        float tensor of the shape of ``logits``: ``-log sigmoid(z)`` where the desired value is 1 and
        ``-log(1 - sigmoid(z))`` where it is 0.
    """
    _check_same_shape(logits, desired, "desired")
    return F.binary_cross_entropy_with_logits(logits, desired.to(logits.dtype), reduction="none")


def masked_bce(logits: Tensor, desired: Tensor, mask: Tensor) -> Tensor:
    """Sum of :func:`per_label_bce` over the labels where ``mask`` is True, per image.

    Args:
        logits: float ``[B, C]``.
        desired: bool/float ``[B, C]``, the values pulled towards.
        mask: bool ``[B, C]``, the labels that count (e.g. the flip set Ψ or its complement Ψ̄).

    Returns:
        float ``[B]``; 0 for an image whose mask is empty.
    """
    _check_same_shape(logits, mask, "mask")
    losses = per_label_bce(logits, desired)
    return torch.where(mask.bool(), losses, torch.zeros_like(losses)).sum(dim=-1)
