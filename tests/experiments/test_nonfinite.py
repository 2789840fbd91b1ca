"""A model that is NaN or infinite at the adversarial point: never a success in the store or report."""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from pathlib import Path

import pytest
import torch
from exp_fixtures import LABELS, TinyDataset, TinyModel, tiny_config

from mlattack.experiments import ExperimentConfig, build_report, run_experiment


class _NonfiniteAwayFromTheData(TinyModel):
    """The tiny model, but without autograd and away from every dataset image one logit is ``value``.

    The attack's gradient steps see a finite model; its fresh forward pass at the adversarial
    point (under ``no_grad``) sees the non-finite logit, on a label that is never a target.
    """

    def __init__(self, images: torch.Tensor, label: int, value: float) -> None:
        super().__init__()
        self.images = images
        self.label = label
        self.value = value

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = super().forward(images)
        if torch.is_grad_enabled():
            return logits
        distance = (images.flatten(1)[:, None] - self.images.flatten(1)[None]).abs().amax(dim=2)
        moved = distance.amin(dim=1) > 1e-6
        logits = logits.clone()
        logits[moved, self.label] = self.value
        return logits


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nonfinite_logits_are_no_success_in_the_store_and_are_counted_in_the_report(
    tmp_path: Path, value: float
) -> None:
    dataset = TinyDataset()
    label = LABELS.index("animal")
    config = tiny_config(
        target_sets={"sizes": [1], "mode": "combinations"},
        eps=[0.2],
        attacks=[{"name": "mla-u", "options": {"steps": 5}}],
        examples=0,
    )
    config["target_sets"]["labels"] = ["dog", "cat", "car", "bus"]
    run_dir = run_experiment(
        ExperimentConfig.from_dict(config), tmp_path / "run",
        model=_NonfiniteAwayFromTheData(dataset.images, label, value), dataset=dataset,
        progress=False,
    )  # fmt: skip
    db = sqlite3.connect(run_dir / "results-rank0.sqlite")
    attacked, successes, nonfinite = db.execute(
        "SELECT SUM(attacked), SUM(success) + SUM(semantic_success), SUM(nonfinite_logits) "
        "FROM results"
    ).fetchone()
    db.close()
    assert attacked > 0 and successes == 0 and nonfinite > 0
    page = build_report(run_dir)
    table1 = list(csv.DictReader((page.parent / "table1.csv").open(encoding="utf-8")))
    assert {float(row["fr_naive_mean"]) for row in table1} == {0.0}
    assert {float(row["fr_semantic_mean"]) for row in table1} == {0.0}
    assert sum(int(row["n_nonfinite"]) for row in table1) == nonfinite
    payload = json.loads((page.parent / "report.json").read_text(encoding="utf-8"))
    assert sum(row["n_nonfinite"] for row in payload["per_target_set"]) == nonfinite
    assert f"non-finite logits at the adversarial point: {nonfinite} " in page.read_text(
        encoding="utf-8"
    )


def test_a_transfer_target_with_nonfinite_logits_is_never_fooled(tmp_path: Path) -> None:
    dataset = TinyDataset()
    config = tiny_config(
        target_sets={"sizes": [1], "mode": "combinations", "labels": ["dog", "cat", "car", "bus"]},
        eps=[0.2], attacks=[{"name": "mla-u", "options": {"steps": 5}}], examples=0,
        transfer={"attack": {"name": "mla-u", "options": {"steps": 5}}, "eps": 0.2,
                  "models": [{"name": "tiny", "label": "a"}, {"name": "tiny", "label": "b"}]},
    )  # fmt: skip
    broken = _NonfiniteAwayFromTheData(dataset.images, LABELS.index("animal"), math.nan)
    run_dir = run_experiment(
        ExperimentConfig.from_dict(config), tmp_path / "run", model=TinyModel(), dataset=dataset,
        progress=False, transfer_models={"a": TinyModel(), "b": broken},
    )  # fmt: skip
    db = sqlite3.connect(run_dir / "results-rank0.sqlite")
    by_target = dict(
        db.execute("SELECT target, SUM(fooled AND success) FROM transfer GROUP BY target")
    )
    db.close()
    assert by_target["a"] > 0  # the same perturbations do transfer to the finite model
    assert by_target["b"] == 0
