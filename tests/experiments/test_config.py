"""Experiment configs: shipped files parse; bad files fail with the key and the file named."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
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
    with pytest.raises(ValueError, match=r"key 'eps\.0': Input should be greater than 0"):
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


@pytest.mark.parametrize("eps", [[0.0], [8], [1.5], [float("nan")], [float("inf")]])
def test_eps_outside_zero_one_is_refused(eps: list[float]) -> None:
    with pytest.raises(ValueError, match=r"key 'eps\.0'"):
        ExperimentConfig.from_dict(tiny_config(eps=eps))
    transfer = {"models": [{"name": "a"}, {"name": "b"}], "attack": {"name": "gmla"}, "eps": eps[0]}
    with pytest.raises(ValueError, match=r"key 'transfer\.eps'"):
        ExperimentConfig.from_dict(tiny_config(transfer=transfer))


def test_eps_of_one_and_numpy_scalars_are_accepted() -> None:
    config = ExperimentConfig.from_dict(tiny_config(eps=[1.0, np.float64(0.25)], seed=np.int64(3)))
    assert config.eps == [1.0, 0.25] and config.seed == 3


@pytest.mark.parametrize(
    ("overrides", "key", "shown"),
    [
        ({"eps": [True]}, "eps.0", "got True"),
        ({"eps": ["1"]}, "eps.0", "got '1'"),
        ({"seed": 1.5}, "seed", "got 1.5"),
        ({"seed": True}, "seed", "got True"),
        ({"seed": -1}, "seed", "got -1"),
        ({"batch_size": "16"}, "batch_size", "got '16'"),
        ({"gradient_correlation": "false"}, "gradient_correlation", "got 'false'"),
        ({"images": {"require_consistent": "no"}}, "images.require_consistent", "got 'no'"),
        ({"target_sets": {"sizes": [1.0]}}, "target_sets.sizes.0", "got 1.0"),
        ({"threshold": "0.5"}, "threshold", "got '0.5'"),
    ],
)
def test_no_type_coercion(overrides: dict[str, object], key: str, shown: str) -> None:
    with pytest.raises(ValueError, match=rf"key '{re.escape(key)}'.*{re.escape(shown)}"):
        ExperimentConfig.from_dict(tiny_config(**overrides))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed": -1}, "dataset option 'seed' must be in"),
        ({"seed": float("inf")}, "dataset option 'seed' must be an integer"),
        ({"seed": "abc"}, "dataset option 'seed' must be an integer"),
        ({"size": 10**12}, "dataset option 'size' must be in"),
        ({"split": []}, "dataset option 'split' must be a string"),
        ({"n": 0}, "dataset option 'n' must be"),
    ],
)
def test_shared_dataset_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=rf"key 'dataset\.options'.*{message}"):
        ExperimentConfig.from_dict(tiny_config(dataset={"name": "synthetic", "options": options}))


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nseed: 1\nseed: 2\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"dup\.yaml: not valid YAML \(line 3, column 1\): duplicate key 'seed'"
    ):
        ExperimentConfig.from_yaml(path)
    path.write_text("model: {name: a, name: b}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate key 'name'"):
        ExperimentConfig.from_yaml(path)


def test_yaml_alias_bomb_is_refused_before_expansion(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)
    ]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(
        ValueError,
        match=r"bomb\.yaml: not valid YAML \(line 2, .*\): aliases \(\*a\) are not allowed",
    ):
        ExperimentConfig.from_yaml(path)
    assert time.perf_counter() - started < 1.0


@pytest.mark.slow
def test_deep_nesting_is_refused_with_its_key(tmp_path: Path) -> None:
    nested: object = 1
    for _ in range(40):
        nested = {"x": nested}
    with pytest.raises(ValueError, match=r"key 'model\.options\.x(\.x)*' nests more than"):
        ExperimentConfig.from_dict(tiny_config(model={"name": "tiny", "options": nested}))
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ValueError, match=r"deep\.yaml: not valid YAML"):
        ExperimentConfig.from_yaml(path)


@pytest.mark.parametrize("name", ["../../x", "/abs", "a/b", "..", ".hidden", "", "a\\b", "x" * 200])
def test_run_names_cannot_leave_runs(name: str) -> None:
    with pytest.raises(ValueError, match="key 'name'.*plain folder name"):
        ExperimentConfig.from_dict(tiny_config(name=name))


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_devices_are_refused(device: str) -> None:
    with pytest.raises(ValueError, match="key 'device'.*unknown device"):
        ExperimentConfig.from_dict(tiny_config(device=device))
    with pytest.raises(ValueError, match=r"(?s)--device.*unknown device"):
        ExperimentConfig.from_dict(tiny_config()).with_device(device)


def test_device_defaults_to_auto() -> None:
    assert ExperimentConfig.from_dict(tiny_config()).device == "auto"


def test_attack_presets_and_new_options_pass_through() -> None:
    attacks = [
        {"name": "gmla", "options": {"preset": "official", "step_size": 0.012}},
        {"name": "mla-u", "label": "u", "options": {"preset": None}},
    ]
    config = ExperimentConfig.from_dict(tiny_config(attacks=attacks))
    assert config.attacks[0].options == {"preset": "official", "step_size": 0.012}


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (
            {"name": "gmla", "options": {"preset": "offical"}},
            r"preset must be one of \['official'\]",
        ),
        ({"name": "gmla", "options": {"preset": 1}}, "preset must be one of"),
        ({"name": "ml-dp", "options": {"preset": "official"}}, "ml-dp has no presets"),
    ],
)
def test_bad_presets_are_refused(attack: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=rf"key 'attacks\.0'.*{message}"):
        ExperimentConfig.from_dict(tiny_config(attacks=[attack]))


def test_device_is_not_part_of_the_identity() -> None:
    cpu = ExperimentConfig.from_dict(tiny_config(device="cpu"))
    gpu = ExperimentConfig.from_dict(tiny_config(device="cuda"))
    assert cpu.config_hash() == gpu.config_hash()


def test_a_binary_file_is_named_as_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(ValueError, match=r"binary\.yaml: not valid YAML"):
        ExperimentConfig.from_yaml(path)


@pytest.mark.parametrize("section", ["attacks", "model"])
@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("x" * 600, "label is 600 characters long"),
    ],
)
def test_attack_and_model_labels_are_valid_text(section: str, label: str, message: str) -> None:
    entry = {"name": "gmla"} if section == "attacks" else tiny_config()["model"]
    value = [{**entry, "label": label}] if section == "attacks" else {**entry, "label": label}
    with pytest.raises(ValueError, match=rf"key '{section}.*{message}"):
        ExperimentConfig.from_dict(tiny_config(**{section: value}))


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_a_5000_digit_integer_is_refused_naming_the_file_and_line(
    tmp_path: Path, suffix: str
) -> None:
    import json

    path = tmp_path / f"big.{suffix}"
    text = json.dumps({"name": "big", "model": {"name": "tiny"}, "seed": 0}, indent=1)
    path.write_text(text.replace('"seed": 0', f'"seed": -{"9" * 5000}'))
    with pytest.raises(
        ValueError, match=r"big\.\w+: not valid YAML \(line \d+, .*an integer of 5000 digits"
    ):
        ExperimentConfig.from_yaml(path)


def test_a_5000_digit_integer_in_a_json_option_is_one_line() -> None:
    import argparse

    from mlattack.cli.train import _json_object

    with pytest.raises(argparse.ArgumentTypeError, match="an integer of 5000 digits"):
        _json_object('{"a": ' + "1" * 5000 + "}")
    with pytest.raises(argparse.ArgumentTypeError, match="not valid JSON"):
        _json_object("[" * 100_000)
    assert _json_object('{"a": 12}') == {"a": 12}


@pytest.mark.parametrize(
    "overrides",
    [{"attacks": [{"name": "mla-u", "label": "a\udc80"}]}, {"model": {"name": "tiny\ud800"}},
     {"dataset": {"name": "tiny", "options": {"k\udc80": 1}}}],
)  # fmt: skip
def test_a_lone_surrogate_is_refused_naming_the_key(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"<dict>: key '.*' holds text that is not valid Unicode"):
        ExperimentConfig.from_dict(tiny_config(**overrides))
