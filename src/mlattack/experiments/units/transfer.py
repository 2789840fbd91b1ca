"""Transfer units (Fig. 7): a perturbation found on one model, scaled to ε, tried on every model."""

from __future__ import annotations

import torch

from mlattack.experiments.planning import TransferUnit
from mlattack.experiments.units.context import Records, UnitContext, to_numpy


def run_transfer(unit: TransferUnit, context: UnitContext) -> Records:
    eps = unit.eps
    models = context.transfer.models
    images = context.load(unit.image_ids)
    targets = context.targets(unit)
    result = context.attack(unit.attack, models[unit.source], eps)(images, targets)
    fooled = to_numpy(result.success & result.attacked)
    delta = result.adv - images
    # Scale each perturbation so that its L-inf norm is exactly eps (the paper's Fig. 7 setting).
    norm = delta.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    moved = (images + delta * (eps / norm)).clamp(0.0, 1.0)
    columns = list(unit.ts.labels)
    rows = []
    for name, other in models.items():
        with torch.no_grad():
            logits = other(moved)
        adv_pred = logits > context.logit_threshold
        finite = torch.isfinite(logits).all(dim=1)  # a NaN compares False: never a flip
        clean = torch.from_numpy(context.transfer.clean_preds[name][list(unit.image_ids)])
        clean = clean.to(context.device)
        eligible = clean[:, columns].all(dim=1)
        success = eligible & finite & ~adv_pred[:, columns].any(dim=1)
        consistent = torch.as_tensor(
            context.graph.is_consistent(adv_pred, around=targets), device=context.device
        )
        semantic = success & consistent
        for b, image_id in enumerate(unit.image_ids):
            rows.append(
                (unit.source, name, unit.attack.display_name, eps, unit.ts.ts_id, image_id,
                 bool(fooled[b]), bool(eligible[b]), bool(success[b]), bool(semantic[b]))
            )  # fmt: skip
    return {"transfer": rows}
