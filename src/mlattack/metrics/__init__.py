"""Metrics of multi-label attacks: FR_N, FR_S, NT_R, SSIM (``docs/semantics.md``) and gradient correlation."""

from mlattack.metrics.fooling import Metrics, evaluate, summarize
from mlattack.metrics.gradients import gradient_correlation, target_nontarget_gradients
from mlattack.metrics.ssim import ssim_per_image

__all__ = [
    "Metrics",
    "evaluate",
    "gradient_correlation",
    "ssim_per_image",
    "summarize",
    "target_nontarget_gradients",
]
