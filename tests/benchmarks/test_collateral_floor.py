"""``benchmarks/gmla_collateral_floor.py``'s polish: it only improves a GMLA output, and does."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mlattack import GMLA, models
from mlattack.attacks import AttackResult
from mlattack.data import SyntheticScenes

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_polish_keeps_every_success_and_never_adds_a_collateral_flip() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from gmla_collateral_floor import THRESHOLD_LOGIT, polish
    finally:
        sys.path.remove(str(BENCHMARKS))
    model = models.load(Path(models.__file__).parent / "synthetic-dense-small-cnn.pt").eval()
    scenes = SyntheticScenes(40, size=48, seed=5, split="test", dense=True)
    images = torch.stack([scenes[i][0] for i in range(len(scenes))])
    with torch.no_grad():
        pred = model(images) > THRESHOLD_LOGIT
    leaves = torch.tensor([int(i) for i in model.graph.leaves])
    rows = pred[:, leaves].sum(1).argsort(descending=True)[:6]  # the most crowded scenes
    targets = torch.zeros(len(rows), pred.shape[1], dtype=torch.bool)
    for row, image in enumerate(rows.tolist()):
        targets[row, leaves[pred[image, leaves]][:3]] = True  # three leaves on, to turn off
    eps = 0.03
    # The search alone (no repair) leaves collateral flips for the polish to work on.
    found = GMLA(model, graph=model.graph, steps=20, repair=False)(images[rows], targets, eps=eps)
    assert bool(found.success.any())
    polished = polish(model, found, eps, steps=15)

    assert torch.equal(polished.success, found.success)
    assert float((polished.adv - polished.images).abs().max()) <= eps + 1e-6
    assert float(polished.adv.min()) >= 0 and float(polished.adv.max()) <= 1
    with torch.no_grad():
        assert torch.equal(polished.adv_logits, model(polished.adv))
    outside = ~found.flip_set

    def collateral(result: AttackResult) -> torch.Tensor:
        return ((result.adv_pred != result.clean_pred) & outside).sum(1)

    assert bool((collateral(polished) <= collateral(found)).all())
    assert int(collateral(polished).sum()) < int(collateral(found).sum())
    unchanged = ~found.success
    assert torch.equal(polished.adv[unchanged], found.adv[unchanged])
