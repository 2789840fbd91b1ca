"""Structural similarity between clean and adversarial images (torchmetrics, not hand-rolled)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

__all__ = ["SSIM_KERNEL_SIZE", "SSIM_SIGMA", "ssim_per_image"]

SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5


def ssim_per_image(clean: Tensor, adv: Tensor) -> Tensor:
    """SSIM of each adversarial image against its clean image.

    Gaussian window of size 11 and σ 1.5, data range 1 (images in ``[0, 1]``), the usual constants
    ``k1 = 0.01``, ``k2 = 0.03``; the per-channel maps are averaged over channels and pixels.

    Args:
        clean: float ``[B, 3, H, W]`` in ``[0, 1]`` with ``H, W ≥ 11``.
        adv: float tensor of the same shape.

    Returns:
        float ``[B]`` on the device of ``clean`` (1 for identical images).
    """
    if not isinstance(clean, Tensor) or not isinstance(adv, Tensor):
        raise TypeError("clean and adv must be torch tensors")
    if clean.dim() != 4:
        raise ValueError(f"clean must have shape [B, 3, H, W], got {tuple(clean.shape)}")
    if clean.shape != adv.shape:
        raise ValueError(
            f"adv has shape {tuple(adv.shape)} but clean has shape {tuple(clean.shape)}"
        )
    if min(clean.shape[-2:]) < SSIM_KERNEL_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_KERNEL_SIZE}×{SSIM_KERNEL_SIZE} pixels, "
            f"got {tuple(clean.shape[-2:])}"
        )
    if clean.shape[0] == 0:
        return torch.empty(0, dtype=clean.dtype, device=clean.device)
    with torch.no_grad():
        values = structural_similarity_index_measure(
            adv.detach().to(clean.dtype),
            clean.detach(),
            gaussian_kernel=True,
            sigma=SSIM_SIGMA,
            kernel_size=SSIM_KERNEL_SIZE,
            reduction="none",
            data_range=1.0,
        )
    assert isinstance(values, Tensor)  # a single tensor without return_full_image
    return values.reshape(-1)
