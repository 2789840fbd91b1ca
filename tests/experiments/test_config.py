"""Experiment configs: shipped files parse; bad files fail with the key and the file named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from exp_fixtures import tiny_config

from mlattack.experiments import ExperimentConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_configs_are_shipped() -> None:
    names = {p.name for p in CONFIGS}
    assert {
        "voc.yaml",
        "nus-wide.yaml",
        "openimages.yaml",
        "synthetic-small.yaml",
        "photos-small.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_parses(path: Path) -> None:
    config = ExperimentConfig.from_yaml(path)
    assert config.attacks and config.eps


def test_paper_settings_in_shipped_configs() -> None:
    by_name = {p.stem: ExperimentConfig.from_yaml(p) for p in CONFIGS}
    for name in ("voc", "nus-wide"):
        assert by_name[name].eps[0] == 0.01
        assert by_name[name].target_sets.sizes == [1, 2]
        assert all(a.options["steps"] == 300 for a in by_name[name].attacks)
    openimages = by_name["openimages"]
    assert openimages.eps[0] == 0.05
    assert openimages.target_sets.sizes == [1, 2, 3, 4, 5]
    assert openimages.target_sets.mode == "openimages"


def test_unknown_top_level_key_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, tiny_config(epsilon=[0.1]))
    with pytest.raises(ValueError, match=r"exp\.yaml") as info:
        ExperimentConfig.from_yaml(path)
    assert "unknown key 'epsilon'" in str(info.value)


def test_unknown_nested_key_names_its_path(tmp_path: Path) -> None:
    path = _write(tmp_path, tiny_config(images={"per_target_sets": 3}))
    with pytest.raises(ValueError, match=r"unknown key 'images\.per_target_sets'"):
        ExperimentConfig.from_yaml(path)


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, tiny_config(batch_size="many"))
    with pytest.raises(ValueError, match=r"key 'batch_size'"):
        ExperimentConfig.from_yaml(path)
    path = _write(tmp_path, tiny_config(eps=["big"]))
    with pytest.raises(ValueError, match=r"key 'eps\.0'"):
        ExperimentConfig.from_yaml(path)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown attack 'pgd'"):
        ExperimentConfig.from_dict(tiny_config(attacks=[{"name": "pgd"}]))
    with pytest.raises(ValueError, match="eps values must be >= 0"):
        ExperimentConfig.from_dict(tiny_config(eps=[-0.1]))
    with pytest.raises(ValueError, match="target_sets.sizes"):
        ExperimentConfig.from_dict(tiny_config(target_sets={"sizes": [0]}))
    with pytest.raises(ValueError, match="set by the runner"):
        ExperimentConfig.from_dict(tiny_config(attacks=[{"name": "gmla", "options": {"eps": 0.1}}]))
    with pytest.raises(ValueError, match="exactly one of 'name' or 'checkpoint'"):
        ExperimentConfig.from_dict(tiny_config(model={"name": "x", "checkpoint": "y.pt"}))
    with pytest.raises(ValueError, match="distinct names"):
        ExperimentConfig.from_dict(tiny_config(attacks=[{"name": "gmla"}, {"name": "gmla"}]))


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, [1, 2])
    with pytest.raises(ValueError, match="must be a mapping"):
        ExperimentConfig.from_yaml(path)
    path.write_text("model: [unclosed", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML"):
        ExperimentConfig.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        ExperimentConfig.from_yaml(tmp_path / "missing.yaml")


def test_hash_identifies_the_config() -> None:
    a = ExperimentConfig.from_dict(tiny_config())
    b = ExperimentConfig.from_dict(tiny_config())
    c = ExperimentConfig.from_dict(tiny_config(seed=1))
    assert a.config_hash() == b.config_hash() != c.config_hash()
    assert ExperimentConfig.model_validate_json(a.canonical_json()) == a


def test_device_is_not_part_of_the_identity() -> None:
    cpu = ExperimentConfig.from_dict(tiny_config(device="cpu"))
    gpu = ExperimentConfig.from_dict(tiny_config(device="cuda"))
    assert cpu.config_hash() == gpu.config_hash()


def test_a_binary_file_is_named_as_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(ValueError, match=r"binary\.yaml: not valid YAML"):
        ExperimentConfig.from_yaml(path)
