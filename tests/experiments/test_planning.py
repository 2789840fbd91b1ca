"""The work list: one attack unit per batch covers every ε in one call, with per-ε rows equal to
runs at each ε alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from exp_fixtures import run_tiny, stored_rows

SMALL = {
    "target_sets": {"sizes": [1], "mode": "combinations", "max_sets": 3},
    "images": {"per_target_set": 3},
    "examples": 1,
}


@pytest.mark.slow
def test_one_call_at_every_eps_equals_one_run_per_eps(tmp_path: Path) -> None:
    both = run_tiny(tmp_path / "both", eps=[0.2, 0.05], **SMALL)  # not increasing: config order
    alone = [run_tiny(tmp_path / f"eps{eps}", eps=[eps], **SMALL) for eps in (0.2, 0.05)]
    for table in ("results", "examples"):
        assert stored_rows(both, table) == sorted(
            (row for run in alone for row in stored_rows(run, table)), key=repr
        ), table
    with sqlite3.connect(both / "results-rank0.sqlite") as db:
        units = db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        batches = db.execute("SELECT COUNT(DISTINCT ts_id) FROM results").fetchone()[0]
        eps = {e for (e,) in db.execute("SELECT DISTINCT eps FROM results")}
    assert eps == {0.2, 0.05}
    assert units == batches * 2  # one unit per batch and attack, not per ε


def test_a_float64_model_is_scanned_and_attacked_in_float64(tmp_path: Path) -> None:
    from exp_fixtures import TinyDataset, TinyModel, tiny_config

    from mlattack.experiments import ExperimentConfig, run_experiment

    config = ExperimentConfig.from_dict(tiny_config(eps=[0.1], **SMALL))
    run_dir = run_experiment(
        config, tmp_path / "run", model=TinyModel().double(), dataset=TinyDataset(), progress=False
    )
    assert stored_rows(run_dir)  # the clean scan fed float64 images to the float64 model
