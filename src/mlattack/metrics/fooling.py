"""Fooling rates, non-target flip rate and SSIM of an attack (DESIGN §3.3, the paper's eq. 12–13).

Denominators, all per result (one batch, or the concatenation of batches of one target-set size):

* ``I`` — the attacked images (``result.attacked``; images skipped by ``on_invalid="skip"`` are not
  in any denominator);
* ``A ⊆ I`` — the images where every label of Ω flipped (recomputed from ``clean_pred`` and
  ``adv_pred``);
* ``A_G ⊆ A`` — those whose adversarial prediction is locally consistent around Ω
  (``graph.is_consistent(adv_pred, around=targets)``).

``FR_N = |A| / |I|``, ``FR_S = |A_G| / |I|``. ``NT_R`` averages, over the images of ``A``, the share
of the labels outside the consistent target set Ψ (computed by the graph from the clean prediction
and Ω, whatever the attack) whose prediction changed; an image whose Ψ covers every label has no
such share and is left out of that mean (``n_nt`` counts the images averaged). ``SSIM`` averages
:func:`~mlattack.metrics.ssim.ssim_per_image` over ``A``. A mean over an empty set is NaN.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from mlattack.attacks.base import AttackResult
from mlattack.metrics.ssim import SSIM_KERNEL_SIZE, ssim_per_image

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

__all__ = ["Metrics", "evaluate"]


@dataclass(frozen=True)
class Metrics:
    """The metrics of one attack result, with the counts behind every figure.

    Attributes:
        fr_naive: ``FR_N = n_success / n_images`` (NaN when ``n_images == 0``).
        fr_semantic: ``FR_S = n_semantic / n_images`` (NaN when ``n_images == 0``).
        nt_rate: ``NT_R``, mean of ``nt_flip_fraction`` over the ``n_nt`` images of ``A`` whose
            Ψ̄ is not empty (NaN when there are none).
        ssim: mean of ``ssim_per_image`` over the ``n_ssim`` images of ``A`` (NaN when there are
            none, or when :func:`evaluate` got no clean images).
        n_total: images in the result, attacked or not.
        n_images: ``|I|``, the attacked images (denominator of both fooling rates).
        n_success: ``|A|``.
        n_semantic: ``|A_G|``.
        n_nt: images averaged in ``nt_rate``.
        n_ssim: images averaged in ``ssim``.
        success: bool ``[B]``, membership of ``A``.
        semantic_success: bool ``[B]``, membership of ``A_G``.
        nt_flip_fraction: float ``[B]``, the per-image share of changed labels in Ψ̄ (NaN outside
            ``A`` and where Ψ̄ is empty).
        ssim_per_image: float ``[B]`` (NaN outside ``A``).
    """

    fr_naive: float
    fr_semantic: float
    nt_rate: float
    ssim: float
    n_total: int
    n_images: int
    n_success: int
    n_semantic: int
    n_nt: int
    n_ssim: int
    success: np.ndarray
    semantic_success: np.ndarray
    nt_flip_fraction: np.ndarray
    ssim_per_image: np.ndarray

    def summary(self) -> dict[str, float | int]:
        """The scalar figures and counts (JSON-able), without the per-image arrays."""
        return {
            "fr_naive": self.fr_naive,
            "fr_semantic": self.fr_semantic,
            "nt_rate": self.nt_rate,
            "ssim": self.ssim,
            "n_total": self.n_total,
            "n_images": self.n_images,
            "n_success": self.n_success,
            "n_semantic": self.n_semantic,
            "n_nt": self.n_nt,
            "n_ssim": self.n_ssim,
        }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _nanmean(values: np.ndarray) -> tuple[float, int]:
    finite = values[~np.isnan(values)]
    return (float(finite.mean()) if finite.size else math.nan), int(finite.size)


def _consistent_target_sets(
    graph: LabelGraph, clean_pred: Tensor, targets: Tensor, clean_logits: Tensor
) -> Tensor:
    """Ψ of each row; the direction of a row follows its targets (all on: "off", all off: "on")."""
    turn_off = (targets & ~clean_pred).sum(dim=1) == 0
    turn_on = (targets & clean_pred).sum(dim=1) == 0
    mixed = ~turn_off & ~turn_on
    if mixed.any():
        raise ValueError(
            f"rows {mixed.nonzero().flatten().tolist()} (among the successful images) mix targets "
            f"that are predicted present and absent; a target set has one direction"
        )
    flip_set = torch.zeros_like(targets)
    directions: tuple[tuple[Tensor, Literal["off", "on"]], ...] = (
        (turn_off, "off"),
        (turn_on & ~turn_off, "on"),
    )
    for rows, direction in directions:
        if rows.any():
            psi = graph.consistent_target_set(
                clean_pred[rows], targets[rows], direction=direction, logits=clean_logits[rows]
            )
            flip_set[rows] = torch.as_tensor(psi, dtype=torch.bool, device=targets.device)
    return flip_set


def _check_result(result: AttackResult, graph: LabelGraph) -> None:
    if not isinstance(result, AttackResult):
        raise TypeError(f"result must be an AttackResult, got {type(result).__name__}")
    batch, labels = result.clean_pred.shape
    for field in ("adv_pred", "targets"):
        shape = tuple(getattr(result, field).shape)
        if shape != (batch, labels):
            raise ValueError(f"result.{field} has shape {shape}, expected {(batch, labels)}")
    if result.images.shape != result.adv.shape:
        raise ValueError(
            f"result.images has shape {tuple(result.images.shape)} but result.adv has shape "
            f"{tuple(result.adv.shape)}"
        )
    if len(graph) != labels:
        raise ValueError(
            f"the graph has {len(graph)} labels but the result has {labels}; "
            f"pass the graph of the attacked model (labels in output order)"
        )


def evaluate(result: AttackResult, graph: LabelGraph) -> Metrics:
    """FR_N, FR_S, NT_R and SSIM of ``result`` (see the module docstring for the exact sets).

    Args:
        result: what an attack returned (SSIM compares ``result.images`` with ``result.adv``; it is
            NaN, with a warning, for images smaller than the SSIM window).
        graph: the label graph of the attacked model (labels in output order).

    Returns:
        a :class:`Metrics`.
    """
    _check_result(result, graph)
    clean_pred = result.clean_pred.bool()
    adv_pred = result.adv_pred.bool()
    targets = result.targets.bool()
    attacked = result.attacked.bool()
    batch = clean_pred.shape[0]
    ssim_measurable = min(result.images.shape[-2:]) >= SSIM_KERNEL_SIZE

    changed = adv_pred != clean_pred
    success = attacked & (changed | ~targets).all(dim=1)
    semantic = torch.zeros_like(success)
    nt_fraction = torch.full((batch,), math.nan, dtype=torch.float64)
    ssim_values = torch.full((batch,), math.nan, dtype=torch.float64)
    if success.any():
        local = graph.is_consistent(adv_pred[success], around=targets[success])
        semantic[success] = torch.as_tensor(local, dtype=torch.bool, device=success.device)
        psi = _consistent_target_sets(
            graph, clean_pred[success], targets[success], result.clean_logits[success]
        )
        outside = ~psi
        size = outside.sum(dim=1)
        moved = (changed[success] & outside).sum(dim=1)
        fraction = moved.double() / size.double()
        nt_fraction[success.cpu()] = torch.where(size > 0, fraction, math.nan).cpu()
        if ssim_measurable:
            ssim_values[success.cpu()] = (
                ssim_per_image(result.images[success], result.adv[success]).double().cpu()
            )
    if not ssim_measurable:
        warnings.warn(
            f"images of {tuple(result.images.shape[-2:])} pixels are smaller than the "
            f"{SSIM_KERNEL_SIZE}-pixel SSIM window: SSIM is NaN",
            UserWarning,
            stacklevel=2,
        )

    n_images = int(attacked.sum())
    n_success = int(success.sum())
    n_semantic = int(semantic.sum())
    nt_rate, n_nt = _nanmean(nt_fraction.numpy())
    ssim, n_ssim = _nanmean(ssim_values.numpy())
    return Metrics(
        fr_naive=_ratio(n_success, n_images),
        fr_semantic=_ratio(n_semantic, n_images),
        nt_rate=nt_rate,
        ssim=ssim,
        n_total=batch,
        n_images=n_images,
        n_success=n_success,
        n_semantic=n_semantic,
        n_nt=n_nt,
        n_ssim=n_ssim,
        success=success.cpu().numpy(),
        semantic_success=semantic.cpu().numpy(),
        nt_flip_fraction=nt_fraction.numpy(),
        ssim_per_image=ssim_values.numpy(),
    )
