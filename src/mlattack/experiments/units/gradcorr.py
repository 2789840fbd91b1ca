"""Gradient-correlation units (Fig. 8): cos(g_t, g_nt) of MLA-C's and GMLA's objectives."""

from __future__ import annotations

import torch

from mlattack.experiments.planning import GradcorrUnit
from mlattack.experiments.units.context import Records, UnitContext, nan_to_none, to_numpy


def run_gradcorr(unit: GradcorrUnit, context: UnitContext) -> Records:
    from mlattack.metrics import gradient_correlation

    images = context.load(unit.image_ids)
    clean = torch.from_numpy(context.scan.clean_pred[list(unit.image_ids)]).to(context.device)
    targets = context.targets(unit)
    flip_set = torch.as_tensor(context.graph.consistent_target_set(clean, targets))
    # MLA-C's objective moves Ω, GMLA's moves Ψ ⊇ Ω: that is what Fig. 8 compares.
    cosines = gradient_correlation(
        context.model, images, flip_set, targets=targets, clean_pred=clean,
        threshold=context.config.threshold,
    )  # fmt: skip
    mla_c, gmla = to_numpy(cosines["mla-c"]), to_numpy(cosines["gmla"])
    rows = [
        (unit.ts.ts_id, image_id, nan_to_none(float(mla_c[b])), nan_to_none(float(gmla[b])))
        for b, image_id in enumerate(unit.image_ids)
    ]
    return {"gradcorr": rows}
