"""Every attack entry of the shipped configs builds, and the paper configs say which GMLA they run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from torch import nn

from mlattack.attacks import GMLA, build_attack

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
PAPER_CONFIGS = ("voc.yaml", "nus-wide.yaml", "openimages.yaml")


def attack_entries(path: Path) -> list[dict]:
    return list(yaml.safe_load(path.read_text())["attacks"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_every_attack_of_every_config_builds(path: Path) -> None:
    for entry in attack_entries(path):
        build_attack(entry["name"], nn.Linear(2, 2), None, **entry.get("options", {}))


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_run_the_papers_gmla_rule(name: str) -> None:
    path = Path(__file__).parents[2] / "configs" / name
    gmla = [entry for entry in attack_entries(path) if entry["name"] == "gmla"]
    assert len(gmla) == 1
    attack = build_attack("gmla", nn.Linear(2, 2), None, **gmla[0]["options"])
    assert isinstance(attack, GMLA)
    assert (attack.mode, attack.tau, attack.loss, attack.repair) == ("adaptive", 0.85, "bce", False)
    assert "tau=0.85" in repr(attack)
