"""The runner can name "MLA-U on Ψ + repair": a config entry with ``flip_set`` and ``repair``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from exp_fixtures import run_tiny, tiny_config

from mlattack.experiments import ExperimentConfig
from mlattack.experiments.aggregate import aggregate, open_run

SMALL = {
    "target_sets": {"sizes": [1], "mode": "combinations", "labels": ["dog", "car"]},
    "eps": [0.1],
    "examples": 0,
    "images": {"per_target_set": 3},
}
ATTACKS = [
    {"name": "mla-u", "options": {"steps": 5}},
    {"name": "mla-u", "options": {"steps": 5}, "flip_set": "consistent", "repair": True},
]


def test_mla_u_on_psi_plus_repair_is_a_configured_control(tmp_path: Path) -> None:
    run_dir = run_tiny(tmp_path / "run", attacks=ATTACKS, **SMALL)
    db = sqlite3.connect(run_dir / "results-rank0.sqlite")
    rows = db.execute("SELECT attack, targets, flip_set FROM results").fetchall()
    names = {name for name, _, _ in rows}
    assert names == {"mla-u", "mla-u on psi + repair"}
    grown = 0
    for name, targets, flip_set in rows:
        if name == "mla-u":
            assert json.loads(flip_set) == json.loads(targets)
        else:  # the consistent target set: a parent joins where no other child supports it
            assert set(json.loads(targets)) <= set(json.loads(flip_set))
            grown += set(json.loads(targets)) < set(json.loads(flip_set))
    assert grown > 0
    db.close()
    run = open_run(run_dir)
    assert run.attack_kinds == {"mla-u": "mla-u", "mla-u on psi + repair": "mla-u"}
    summary = {row["attack"] for row in aggregate([run_dir]).summary}
    assert summary == {"mla-u", "mla-u on psi + repair"}


def test_stage_keys_are_checked_and_keep_old_config_hashes() -> None:
    plain = ExperimentConfig.from_dict(tiny_config())
    assert "flip_set" not in plain.canonical_json() and '"repair"' not in plain.canonical_json()
    staged = ExperimentConfig.from_dict(tiny_config(attacks=ATTACKS))
    assert staged.config_hash() != plain.config_hash()
    with pytest.raises(ValueError, match="flip_set"):
        ExperimentConfig.from_dict(tiny_config(attacks=[{"name": "mla-u", "flip_set": "psi"}]))
    with pytest.raises(ValueError, match="repair is for the other attacks"):
        ExperimentConfig.from_dict(tiny_config(attacks=[{"name": "gmla", "repair": True}]))
