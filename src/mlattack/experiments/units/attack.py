"""Attack units: one attack on one batch at every ε -> a result row per image and ε (+ examples).

The attack is called once with all the budgets (``attack(images, targets, eps=[...])``, increasing),
so the clean forward pass and the flip set Ψ are computed once; each budget's result is the one a
call at that budget alone gives.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.image import imsave

from mlattack.experiments.planning import Unit
from mlattack.experiments.store import encode_labels, label_mask
from mlattack.experiments.units.context import Records, UnitContext, nan_to_none, to_numpy

EXAMPLES_DIR = "examples"


def run_attack(unit: Unit, context: UnitContext) -> Records:
    assert unit.attack is not None
    images = context.load(unit.image_ids)
    increasing = sorted(unit.eps)
    attack = context.attack(unit.attack, context.model, increasing[0])
    started = time.perf_counter()
    results = attack(images, context.targets(unit), eps=increasing)
    # The call's time, shared by its images and budgets.
    seconds = (time.perf_counter() - started) / (len(unit.image_ids) * len(increasing))
    records: Records = {"results": [], "examples": []}
    by_eps = dict(zip(increasing, results, strict=True))
    for eps in unit.eps:  # the config's order
        rows, examples = _records_at(unit, context, images, by_eps[eps], eps, seconds)
        records["results"] += rows
        records["examples"] += examples
    return records


def _records_at(
    unit: Unit, context: UnitContext, images: torch.Tensor, result: Any, eps: float, seconds: float
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    from mlattack.metrics import evaluate

    assert unit.attack is not None
    # SSIM is NaN for images smaller than its window: the store records NaN, no need to warn
    # once per batch.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        metrics = evaluate(result, context.graph)
    delta = (result.adv - images).flatten(1)
    linf = to_numpy(delta.abs().amax(dim=1))
    l2 = to_numpy(delta.norm(dim=1))
    ssim = to_numpy(metrics.ssim_per_image)
    attacked = to_numpy(result.attacked)
    success = to_numpy(metrics.success)
    semantic = to_numpy(metrics.semantic_success)
    nt = to_numpy(metrics.nt_flip_fraction)
    iterations = to_numpy(result.iterations)
    forward_passes = to_numpy(result.forward_passes)
    backward_passes = to_numpy(result.backward_passes)
    grad_failed = to_numpy(result.gradient_failed)
    clean, adv = to_numpy(result.clean_pred), to_numpy(result.adv_pred)
    targets, flip = to_numpy(result.targets), to_numpy(result.flip_set)
    name = unit.attack.display_name
    rows = [
        (
            unit.ts.ts_id, image_id, name, eps, bool(attacked[b]), bool(success[b]),
            bool(semantic[b]), nan_to_none(float(nt[b])), float(linf[b]), float(l2[b]),
            nan_to_none(float(ssim[b])), int(iterations[b]), seconds, bool(grad_failed[b]),
            encode_labels(clean[b]), encode_labels(adv[b]), encode_labels(targets[b]), encode_labels(flip[b]),
            int(forward_passes[b]), int(backward_passes[b]),
        )
        for b, image_id in enumerate(unit.image_ids)
    ]  # fmt: skip
    examples = _save_examples(unit, context, eps, images, result.adv, clean, adv, flip)
    return rows, examples


def _save_examples(
    unit: Unit,
    context: UnitContext,
    eps: float,
    images: torch.Tensor,
    adv_images: torch.Tensor,
    clean: np.ndarray,
    adv: np.ndarray,
    flip: np.ndarray,
) -> list[tuple[Any, ...]]:
    """Figs. 9-10's images: the first ``examples`` images of the first target sets, as NPZ + PNG."""
    if unit.ts.ts_id not in context.example_sets or unit.position >= context.config.examples:
        return []
    assert unit.attack is not None
    folder = context.run_dir / EXAMPLES_DIR
    folder.mkdir(exist_ok=True)
    rows = []
    keep = min(len(unit.image_ids), context.config.examples - unit.position)
    for b in range(keep):
        image_id = unit.image_ids[b]
        name = f"ts{unit.ts.ts_id}_img{image_id}_{_slug(unit.attack.display_name)}_eps{eps:g}.npz"
        clean_image = to_numpy(images[b]).astype(np.float32)
        delta = to_numpy(adv_images[b]).astype(np.float32) - clean_image
        _atomic_savez(
            folder / name,
            clean=clean_image.astype(np.float16),
            delta=delta,
            clean_pred=clean[b],
            adv_pred=adv[b],
            targets=label_mask(unit.ts.labels, context.num_labels),
            flip_set=flip[b],
        )
        adv_image = np.clip(clean_image + delta, 0.0, 1.0).transpose(1, 2, 0)
        imsave(folder / name.replace(".npz", ".png"), adv_image)
        rows.append(
            (unit.ts.ts_id, image_id, unit.attack.display_name, eps, f"{EXAMPLES_DIR}/{name}")
        )
    return rows


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    partial.replace(path)
