"""The runner can name "MLA-U on Ψ + repair": a config entry with ``flip_set`` and ``repair``."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from exp_fixtures import TinyModel, run_tiny, tiny_config, tiny_graph

from mlattack.attacks import GMLA, MLAU, Sequential
from mlattack.experiments import ExperimentConfig, build_report
from mlattack.experiments.aggregate import aggregate, open_run
from mlattack.experiments.planning import attack_step_cost
from mlattack.experiments.units.context import configured_attack

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


def test_the_repair_takes_extra_steps_from_the_config(tmp_path: Path) -> None:
    extra = {"flip_set": "consistent", "repair": True, "repair_extra_steps": 20}
    gmla_then = {"name": "gmla", "options": {"steps": 5, "repair": False}, "repair": True,
                 "repair_extra_steps": 20}  # fmt: skip
    config = ExperimentConfig.from_dict(
        tiny_config(attacks=[{"name": "mla-u", "options": {"steps": 5}, **extra}, gmla_then])
    )
    paid, gmla = config.attacks
    assert paid.display_name == "mla-u on psi + repair (+20 steps)"
    assert gmla.display_name == "gmla + repair (+20 steps)"
    model, graph = TinyModel(), tiny_graph()
    for spec, inner in ((paid, MLAU), (gmla, GMLA)):
        attack = configured_attack(config, spec, model, graph, 0.05)
        assert isinstance(attack, Sequential) and isinstance(attack.attack, inner)
        assert [repr(stage) for stage in attack.stages] == [
            "Repair(margin=1.0, labels='flipped', extra_steps=20)"
        ]
    unpaid = ExperimentConfig.from_dict(tiny_config(attacks=ATTACKS))
    assert attack_step_cost(paid) == attack_step_cost(unpaid.attacks[1]) + 20 / 5
    assert "repair_extra_steps" not in unpaid.canonical_json()  # old configs keep their hash

    def refused(entry: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            ExperimentConfig.from_dict(tiny_config(attacks=[entry]))

    refused({"name": "mla-u", "repair_extra_steps": 20}, "repair_extra_steps needs repair")
    for wrong in (-1, 2.5, True, "20"):
        refused({"name": "mla-u", "repair": True, "repair_extra_steps": wrong}, "repair_extra")
    refused({"name": "gmla", "repair": True, "repair_extra_steps": 20}, "options.repair: false")


def test_a_repair_with_extra_steps_runs_and_is_stored(tmp_path: Path) -> None:
    """The entry runs under its own name beside the plain control (what the extra steps do to the
    images: ``tests/attacks/test_stages.py``)."""
    attacks = [
        {"name": "mla-u", "options": {"steps": 5}, "flip_set": "consistent", "repair": True},
        {"name": "mla-u", "options": {"steps": 5}, "flip_set": "consistent", "repair": True,
         "repair_extra_steps": 20},
    ]  # fmt: skip
    run_dir = run_tiny(tmp_path / "run", attacks=attacks, **SMALL)
    db = sqlite3.connect(run_dir / "results-rank0.sqlite")
    rows = db.execute(
        "SELECT attack, ts_id, image_id, success, iterations, backward_passes FROM results"
    ).fetchall()
    db.close()
    by_image: dict[str, dict[tuple[int, int], tuple[int, int]]] = {}
    for name, ts_id, image_id, success, iterations, _ in rows:
        by_image.setdefault(name, {})[(ts_id, image_id)] = (success, iterations)
    unpaid, paid = by_image["mla-u on psi + repair"], by_image["mla-u on psi + repair (+20 steps)"]
    assert unpaid.keys() == paid.keys()
    for key, (success, iterations) in paid.items():
        assert success == unpaid[key][0]  # the repair never loses a success
        assert unpaid[key][1] <= 5 and iterations <= 5 + 20  # the extra steps, at most
    # What the user reads: the report's Table 1, as CSV and HTML, one row per entry.
    page = Path(build_report(run_dir))
    with (page.parent / "table1.csv").open() as handle:
        table1 = {row["attack"]: row for row in csv.DictReader(handle)}
    assert set(table1) == set(by_image)
    html = page.read_text()
    for name, row in table1.items():
        assert f">{name}<" in html
        stored = [backward for attack, *_, backward in rows if attack == name]
        assert float(row["backward_passes_per_image"]) == pytest.approx(
            sum(stored) / len(stored), abs=0.05
        )
        assert f"<td>{float(row['backward_passes_per_image']):.1f}</td>" in html
