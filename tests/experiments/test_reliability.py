"""Start-up, locking and bad data: nothing silently wrong, nothing left behind, one clear error."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from exp_fixtures import LABELS, SIZE, TinyDataset, TinyModel, stored_rows, tiny_config
from PIL import Image

from mlattack.data import ImageFolderDataset
from mlattack.experiments import ExperimentConfig, build_report, run_experiment
from mlattack.experiments.runner import resolve_device
from mlattack.experiments.store import RunDirInUseError, lock_run_dir

SMALL = {
    "target_sets": {"sizes": [1], "mode": "combinations"},
    "eps": [0.1],
    "examples": 1,
    "images": {"per_target_set": 3},
    "attacks": [{"name": "mla-u", "options": {"steps": 3}}],
}


def _config(**overrides: Any) -> ExperimentConfig:
    return ExperimentConfig.from_dict(tiny_config(**{**SMALL, **overrides}))


def _run(out: Path, dataset: Any = None, **overrides: Any) -> Path:
    return run_experiment(
        _config(**overrides), out, model=TinyModel(), dataset=dataset or TinyDataset(),
        progress=False,
    )  # fmt: skip


def test_a_second_writer_is_refused_naming_the_pid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with lock_run_dir(out):
        with pytest.raises(RunDirInUseError, match=f"folder in use by PID {os.getpid()}"):
            _run(out)
        assert not list(out.glob("results-rank*"))  # the refused run wrote nothing
    _run(out)  # released: the run goes ahead


def test_the_lock_is_per_rank(tmp_path: Path) -> None:
    with (
        lock_run_dir(tmp_path, 0),
        lock_run_dir(tmp_path, 1),
        pytest.raises(RunDirInUseError, match="rank 1"),
        lock_run_dir(tmp_path, 1),
    ):
        pass


class _FailingDataset(TinyDataset):
    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 5:
            raise ValueError("the disk went away")
        return super().__getitem__(index)


def test_a_failed_first_run_leaves_no_folder_and_no_config_json(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="the disk went away"):
        _run(out, dataset=_FailingDataset())
    assert not out.exists()
    out.mkdir()  # an existing folder is kept, but gets no config.json without a store
    with pytest.raises(ValueError, match="the disk went away"):
        _run(out, dataset=_FailingDataset())
    assert out.is_dir() and not (out / "config.json").exists()
    _run(out)
    stored = json.loads((out / "config.json").read_text())
    assert stored == json.loads(_config().canonical_json())


def test_bad_options_fail_before_the_run_folder_exists(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="attacks"):
        _run(out, attacks=[{"name": "mla-u", "options": {"steps": -3}}])
    assert not out.exists()


def test_cuda_without_cuda_is_one_clear_error_before_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"'{device}' asked for, but CUDA is not available"):
            _run(tmp_path / "run", device=device)
        assert not (tmp_path / "run").exists()
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        resolve_device("cuda:3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("auto") == torch.device("cuda", 0)


def _write_image(path: Path, value: int) -> None:
    pixels = np.full((SIZE, SIZE, 3), value, dtype=np.uint8)
    pixels[::2, ::3] = 255 - value
    Image.fromarray(pixels).save(path)


@pytest.mark.slow
def test_unreadable_images_are_skipped_counted_and_reported_never_replaced(
    tmp_path: Path,
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    names = ["a.png", "bad1.jpg", "b.png", "bad2.jpg"]
    _write_image(root / "a.png", 40)
    _write_image(root / "b.png", 200)
    for bad in ("bad1.jpg", "bad2.jpg"):
        (root / bad).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    everything = ";".join(LABELS)
    (root / "labels.csv").write_text("".join(f"{n},{everything}\n" for n in names))
    dataset = ImageFolderDataset(root, size=SIZE, label_names=LABELS)
    with pytest.warns(RuntimeWarning, match="skipped 2 unreadable image"):
        run_dir = _run(tmp_path / "run", dataset=dataset, images={"per_target_set": 4})

    db = sqlite3.connect(run_dir / "results-rank0.sqlite")
    meta = {
        k: json.loads(v)
        for k, v in db.execute("SELECT key, value FROM meta")
        if k != "schema_version"
    }
    assert [image_id for image_id, _ in meta["skipped_images"]] == [1, 3]
    assert all("bad" in why for _, why in meta["skipped_images"])
    attacked = {row[0] for row in db.execute("SELECT image_id FROM results")}
    assert attacked and attacked <= {0, 2}
    for ts_id, n_selected in db.execute("SELECT ts_id, n_selected FROM target_sets"):
        ids = [
            r[0]
            for r in db.execute(
                "SELECT image_id FROM results WHERE ts_id = ? AND attack = 'mla-u'", (ts_id,)
            )
        ]
        assert len(ids) == len(set(ids)) == n_selected <= 2  # never an image twice
    db.close()

    page = build_report(run_dir)
    html = page.read_text(encoding="utf-8")
    assert "Unreadable images skipped: 2" in html and "bad2.jpg" in html
    payload = json.loads((page.parent / "report.json").read_text())
    assert [i for i, _ in payload["skipped_images"]["tiny"]] == [1, 3]


@pytest.mark.slow
def test_leftover_partial_store_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "results-rank0.sqlite.partial").write_bytes(b"half a store")
    reference = stored_rows(_run(tmp_path / "reference"))
    assert stored_rows(_run(out)) == reference
    assert not (out / "results-rank0.sqlite.partial").exists()


def test_attack_presets_and_new_options_reach_the_attack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlattack.attacks

    seen: list[dict[str, Any]] = []

    def recording(name: str, model: Any, **options: Any) -> Any:
        seen.append({"name": name, **options})
        raise ValueError("recorded")

    monkeypatch.setattr(mlattack.attacks, "build_attack", recording)
    attacks = [{"name": "gmla", "options": {"preset": "official", "step_size": 0.012, "steps": 3}}]
    with pytest.raises(ValueError, match=r"config key 'attacks\[0\]'.*recorded"):
        _run(tmp_path / "run", attacks=attacks)
    assert seen[0]["name"] == "gmla"
    assert seen[0]["preset"] == "official" and seen[0]["step_size"] == 0.012
    assert seen[0]["eps"] == 0.1 and seen[0]["steps"] == 3
