"""`mlattack run`: configs from files, checkpoints on disk, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mlattack.cli import main

SMALL_RUN = {
    "name": "cli-small",
    "model": {"checkpoint": "model.pt"},  # relative to the config file
    "dataset": {"name": "synthetic", "options": {"n": 6, "size": 16, "split": "test", "seed": 3}},
    "graph": "model",
    "attacks": [
        {"name": "mla-u", "options": {"steps": 3}},
        {"name": "gmla", "options": {"steps": 3}},
    ],
    "eps": [0.05],
    "target_sets": {"sizes": [1], "mode": "random", "draws": 2},
    "images": {"per_target_set": 2},
    "batch_size": 4,
    "examples": 1,
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: extra threads only add overhead


def _config(folder: Path, **overrides: object) -> Path:
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump({**SMALL_RUN, **overrides}), encoding="utf-8")
    return path


@pytest.mark.slow
def test_run_then_resume_then_refuse_other_config(
    checkpoint_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    config = _config(checkpoint_dir)
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    assert "mlattack report" in capsys.readouterr().out
    assert (out / "results-rank0.sqlite").is_file() and (out / "config.json").is_file()
    assert (
        main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    )  # resume: nothing left

    other = _config(checkpoint_dir, eps=[0.1])
    assert main(["run", str(other), "--out", str(out), "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err


def test_bad_config_names_key_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, batchsize=3)
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "exp.yaml" in err and "unknown key 'batchsize'" in err


def test_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    config = _config(tmp_path)  # no model.pt beside it
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "model.pt" in capsys.readouterr().err


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str = "run") -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"mlattack {command}: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("device", ["cuda", "gpu", "cuda:7", "mps", "meta", "xpu"])
def test_unusable_devices_are_one_line_before_the_folder(
    checkpoint_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    device: str,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out = tmp_path / "run"
    config = _config(checkpoint_dir)
    assert main(["run", str(config), "--out", str(out), "--device", device, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "device" in err and repr(device) in err and not out.exists()
    assert main(["run", str(_config(checkpoint_dir, device=device)), "--out", str(out)]) == 2
    assert "key 'device'" in capsys.readouterr().err or device != "gpu"
    assert not out.exists()


def test_a_busy_folder_exits_2_naming_the_pid(
    checkpoint_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from mlattack.experiments.store import lock_run_dir

    out = tmp_path / "run"
    out.mkdir()
    with lock_run_dir(out):
        assert main(["run", str(_config(checkpoint_dir)), "--out", str(out), "--no-progress"]) == 2
    assert f"folder in use by PID {os.getpid()}" in _one_line_error(capsys)


def test_ctrl_c_before_any_result_does_not_promise_a_resume(
    checkpoint_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlattack.experiments.runner as runner

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_experiment", interrupted)
    assert main(["run", str(_config(checkpoint_dir)), "--out", str(tmp_path / "r")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted before any result was stored"


@pytest.mark.parametrize(
    "content",
    ["name: a\nname: b\n", "a: &x 1\nb: *x\n", "eps: [true]\n", "seed: 1.5\n"],
    ids=["duplicate-key", "alias", "bool-eps", "float-seed"],
)
def test_bad_yaml_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
