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
and Ω, whatever the attack; Ω may mix labels to turn off and on) whose prediction changed; an image
whose Ψ covers every label has no such share and is left out of that mean (``n_nt`` counts the
images averaged). ``SSIM`` averages :func:`~mlattack.metrics.ssim.ssim_per_image` over ``A``. A
mean over an empty set is NaN.

Options (all keyword-only; ``preset="official"`` sets the authors' choices, and an option given
explicitly is applied on top of the preset):

* ``nt_denominator``: ``"successful"`` (default, eq. 13: the mean over ``A``) or ``"attacked"``
  (the authors' ``cvpr24/compute_asr.py``: the mean over ``I``, where a failed image counts its
  changed labels over all labels);
* ``official_closure``: Ψ of NT_R computed with ``LabelGraph.consistent_target_set(...,
  official_closure=True)``, the authors' ``compute_tree_off_loss`` on inconsistent clean
  predictions (default False; formerly ``repair=``, a name now kept for GMLA's repair stage);
* ``ssim_pooling``: how SSIM is averaged when a result holds several target sets (rows with
  different Ω): ``"images"`` (default, and the authors' way) pools every image of ``A``, each
  counting once; ``"target_sets"`` averages per target set first, then over the sets with a
  success, as mlattack's reports do across units. One target set per result gives the same
  value either way.

The authors report FR_N, FR_S and NT_R per target set, then their mean and population standard
deviation over the sets, and SSIM pooled over the successful images of all sets:
:func:`summarize` does that from one :class:`Metrics` per target set.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from mlattack._validation import check_bool
from mlattack.attacks.base import AttackResult
from mlattack.graph import LabelGraph
from mlattack.metrics.ssim import SSIM_KERNEL_SIZE, ssim_per_image

__all__ = [
    "NT_DENOMINATORS",
    "PRESETS",
    "SSIM_POOLINGS",
    "Metrics",
    "NtDenominator",
    "SsimPooling",
    "evaluate",
    "summarize",
]

NtDenominator = Literal["successful", "attacked"]
SsimPooling = Literal["images", "target_sets"]
NT_DENOMINATORS: tuple[NtDenominator, ...] = ("successful", "attacked")
SSIM_POOLINGS: tuple[SsimPooling, ...] = ("images", "target_sets")
#: The option values each preset sets (``None``: mlattack's defaults, eq. 12-13 of the paper).
PRESETS: dict[str | None, dict[str, Any]] = {
    None: {"nt_denominator": "successful", "official_closure": False, "ssim_pooling": "images"},
    "official": {"nt_denominator": "attacked", "official_closure": True, "ssim_pooling": "images"},
}


@dataclass(frozen=True)
class Metrics:
    """The metrics of one attack result, with the counts behind every figure.

    Attributes:
        fr_naive: ``FR_N = n_success / n_images`` (NaN when ``n_images == 0``).
        fr_semantic: ``FR_S = n_semantic / n_images`` (NaN when ``n_images == 0``).
        nt_rate: ``NT_R``, mean of ``nt_flip_fraction`` over its ``n_nt`` defined values (NaN
            when there are none).
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
        nt_flip_fraction: float ``[B]``, the per-image share of changed labels in Ψ̄ (NaN where
            Ψ̄ is empty); outside ``A`` it is NaN, except with ``nt_denominator="attacked"``,
            where a failed attacked image has its share of changed labels among all labels.
        ssim_per_image: float ``[B]`` (NaN outside ``A``).
        nt_denominator: the ``nt_denominator`` option the figures were computed with.
        ssim_pooling: the ``ssim_pooling`` option.
        official_closure: the ``official_closure`` option.
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
    nt_denominator: NtDenominator = "successful"
    ssim_pooling: SsimPooling = "images"
    official_closure: bool = False

    def summary(self) -> dict[str, float | int | str | bool]:
        """The scalar figures, counts and options (JSON-able), without the per-image arrays."""
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
            "nt_denominator": self.nt_denominator,
            "ssim_pooling": self.ssim_pooling,
            "official_closure": self.official_closure,
        }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _nanmean(values: np.ndarray) -> tuple[float, int]:
    finite = values[~np.isnan(values)]
    return (float(finite.mean()) if finite.size else math.nan), int(finite.size)


def _check_result(result: AttackResult, graph: LabelGraph) -> None:
    if not isinstance(result, AttackResult):
        raise TypeError(f"result must be an AttackResult, got {type(result).__name__}")
    if not isinstance(graph, LabelGraph):
        raise TypeError(f"graph must be a LabelGraph, got {type(graph).__name__}")
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


def _choice(value: Any, name: str, allowed: Sequence[Any]) -> Any:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _resolve_options(
    preset: str | None,
    nt_denominator: str | None,
    ssim_pooling: str | None,
    official_closure: bool | None,
) -> dict[str, Any]:
    """The preset's option values with the options given explicitly applied on top."""
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        allowed = ", ".join(repr(name) for name in PRESETS)
        raise ValueError(f"preset must be one of {allowed}, got {preset!r}")
    options = dict(PRESETS[preset])
    if nt_denominator is not None:
        options["nt_denominator"] = _choice(nt_denominator, "nt_denominator", NT_DENOMINATORS)
    if ssim_pooling is not None:
        options["ssim_pooling"] = _choice(ssim_pooling, "ssim_pooling", SSIM_POOLINGS)
    if official_closure is not None:
        options["official_closure"] = check_bool(official_closure, "official_closure")
    return options


def _mean_over_target_sets(values: Tensor, targets: Tensor) -> float:
    """Mean over the distinct rows of ``targets`` of the mean of their finite ``values``."""
    finite = ~torch.isnan(values)
    if not finite.any():
        return math.nan
    _, group = torch.unique(targets[finite], dim=0, return_inverse=True)
    sums = torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(
        0, group, values[finite]
    )
    counts = torch.bincount(group).double()
    return float((sums / counts).mean())


def evaluate(
    result: AttackResult,
    graph: LabelGraph,
    *,
    preset: Literal["official"] | None = None,
    nt_denominator: NtDenominator | None = None,
    ssim_pooling: SsimPooling | None = None,
    official_closure: bool | None = None,
    repair: None = None,
) -> Metrics:
    """FR_N, FR_S, NT_R and SSIM of ``result`` (see the module docstring for the exact sets).

    Args:
        result: what an attack returned (SSIM compares ``result.images`` with ``result.adv``; it is
            NaN, with a warning, for images smaller than the SSIM window).
        graph: the label graph of the attacked model (labels in output order).
        preset: ``None`` (mlattack's definitions, eq. 12-13) or ``"official"``, the authors'
            metric script: ``nt_denominator="attacked"``, ``official_closure=True``,
            ``ssim_pooling="images"``.  With ``preset="official"`` and one target set per
            result, FR_N, FR_S and NT_R equal the per-set values of ``cvpr24/compute_asr.py``.
        nt_denominator: ``"successful"`` or ``"attacked"`` (module docstring); ``None``: the
            preset's.
        ssim_pooling: ``"images"`` or ``"target_sets"`` (module docstring); ``None``: the
            preset's.
        official_closure: compute Ψ for NT_R with the authors' closure (module docstring);
            ``None``: the preset's.
        repair: the former name of ``official_closure``, refused with a ``TypeError`` naming it.

    Returns:
        a :class:`Metrics`, which records the options used.

    Raises:
        ValueError: an unknown preset or option value (the message lists the allowed ones),
            shapes that disagree, or a graph of another label count.
        TypeError: ``result`` is not an :class:`AttackResult`, ``graph`` not a
            :class:`LabelGraph`, ``official_closure`` not a bool, ``repair`` given.
    """
    if repair is not None:
        raise TypeError(
            "evaluate(repair=...) was renamed official_closure=... (the authors' closure of Ψ)"
        )
    options = _resolve_options(preset, nt_denominator, ssim_pooling, official_closure)
    _check_result(result, graph)
    clean_pred = result.clean_pred.bool()
    adv_pred = result.adv_pred.bool()
    targets = result.targets.bool()
    attacked = result.attacked.bool()
    batch, labels = clean_pred.shape
    ssim_measurable = min(result.images.shape[-2:]) >= SSIM_KERNEL_SIZE

    changed = adv_pred != clean_pred
    success = attacked & (changed | ~targets).all(dim=1)
    semantic = torch.zeros_like(success)
    nt_fraction = torch.full((batch,), math.nan, dtype=torch.float64)
    ssim_values = torch.full((batch,), math.nan, dtype=torch.float64)
    if success.any():
        local = graph.is_consistent(adv_pred[success], around=targets[success])
        semantic[success] = torch.as_tensor(local, dtype=torch.bool, device=success.device)
        psi = graph.consistent_target_set(
            clean_pred[success],
            targets[success],
            direction="mixed",
            logits=result.clean_logits[success],
            official_closure=options["official_closure"],
        )
        outside = ~torch.as_tensor(psi, dtype=torch.bool, device=targets.device)
        size = outside.sum(dim=1)
        moved = (changed[success] & outside).sum(dim=1)
        fraction = moved.double() / size.double()
        nt_fraction[success.cpu()] = torch.where(size > 0, fraction, math.nan).cpu()
        if ssim_measurable:
            ssim_values[success.cpu()] = (
                ssim_per_image(result.images[success], result.adv[success]).double().cpu()
            )
    failed = (attacked & ~success).cpu()
    if options["nt_denominator"] == "attacked" and failed.any() and labels:
        # the authors' script: a failure's mask is every label, the targets included
        nt_fraction[failed] = changed.cpu()[failed].sum(dim=1).double() / labels
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
    if options["ssim_pooling"] == "target_sets":
        ssim = _mean_over_target_sets(ssim_values, targets.cpu())
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
        nt_denominator=options["nt_denominator"],
        ssim_pooling=options["ssim_pooling"],
        official_closure=options["official_closure"],
    )


def summarize(
    per_set: Sequence[Metrics], *, ssim_pooling: SsimPooling = "target_sets"
) -> dict[str, float | int]:
    """Mean and population standard deviation (``ddof=0``) over target sets, the authors' way.

    Args:
        per_set: one :class:`Metrics` per target set (one :func:`evaluate` call each).
        ssim_pooling: ``"target_sets"`` (default): SSIM's mean and std over the sets' SSIM
            values; ``"images"`` (the authors' script): over the successful images of all sets
            pooled, each image counting once.

    Returns:
        ``{"<metric>_mean", "<metric>_std"}`` for ``fr_naive``, ``fr_semantic``, ``nt_rate`` and
        ``ssim``, and ``n_sets``.  Sets where a figure is NaN (no attacked image, no success)
        are left out of that figure; a figure NaN everywhere gives NaN.
    """
    if isinstance(per_set, Metrics) or not isinstance(per_set, Sequence):
        raise TypeError(f"per_set must be a sequence of Metrics, got {type(per_set).__name__}")
    for position, metrics in enumerate(per_set):
        if not isinstance(metrics, Metrics):
            raise TypeError(f"per_set[{position}] must be a Metrics, got {type(metrics).__name__}")
    _choice(ssim_pooling, "ssim_pooling", SSIM_POOLINGS)
    columns: dict[str, np.ndarray] = {
        name: np.array([getattr(metrics, name) for metrics in per_set], dtype=np.float64)
        for name in ("fr_naive", "fr_semantic", "nt_rate", "ssim")
    }
    if ssim_pooling == "images":
        pooled = [metrics.ssim_per_image[metrics.success] for metrics in per_set]
        columns["ssim"] = np.concatenate(pooled) if pooled else np.zeros(0)
    summary: dict[str, float | int] = {"n_sets": len(per_set)}
    for name, values in columns.items():
        finite = values[~np.isnan(values)]
        summary[f"{name}_mean"] = float(finite.mean()) if finite.size else math.nan
        summary[f"{name}_std"] = float(finite.std()) if finite.size else math.nan
    return summary
