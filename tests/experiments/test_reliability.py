"""Start-up, locking and bad data: nothing silently wrong, nothing left behind, one clear error."""

from __future__ import annotations

import errno
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


def test_ranks_of_another_world_size_are_refused_while_one_runs(tmp_path: Path) -> None:
    with lock_run_dir(tmp_path, 1, 2), lock_run_dir(tmp_path, 0, 2):  # a run of two ranks
        for rank, world in ((0, 1), (2, 3)):
            with (
                pytest.raises(RunDirInUseError, match="WORLD_SIZE=2"),
                lock_run_dir(tmp_path, rank, world),
            ):
                pass
    with (
        lock_run_dir(tmp_path, 0, 1),  # the old ranks are gone
        pytest.raises(RunDirInUseError, match="WORLD_SIZE=1"),
        lock_run_dir(tmp_path, 1, 2),
    ):
        pass


def test_a_resume_with_another_world_size_is_refused_while_an_old_rank_runs(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    _run(out)
    before = stored_rows(out)
    # rank 1 of an older two-rank run still runs
    with lock_run_dir(out, 1, 2), pytest.raises(RunDirInUseError, match="WORLD_SIZE=2"):
        _run(out)
    assert stored_rows(out) == before


def test_a_copied_rank_store_is_refused_by_the_report_naming_both_files(tmp_path: Path) -> None:
    import shutil

    from mlattack.experiments import StoreError

    out = _run(tmp_path / "run")
    shutil.copy(out / "results-rank0.sqlite", out / "results-rank1.sqlite")
    with pytest.raises(StoreError, match=r"results-rank0\.sqlite and .*results-rank1\.sqlite both"):
        build_report(out)


def test_the_loser_of_a_first_run_race_never_deletes_the_winners_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    out.mkdir()  # the winner created the folder ...
    with lock_run_dir(out):  # ... and holds it
        (out / "winner.txt").write_text("the winner's work")
        real_exists = Path.exists
        # the loser looked before the winner created the folder
        monkeypatch.setattr(
            Path, "exists", lambda self: False if self == out else real_exists(self)
        )
        with pytest.raises(RunDirInUseError):
            _run(out)
        monkeypatch.undo()
        assert (out / "winner.txt").read_text() == "the winner's work"


@pytest.mark.parametrize("planted", [".lock-rank0", ".lock-world1", "config.json.partial-rank0"])
def test_files_a_run_writes_never_follow_a_planted_link(tmp_path: Path, planted: str) -> None:
    out = tmp_path / "run"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / planted).symlink_to(victim)
    if planted.startswith(".lock"):
        with pytest.raises(OSError, match="symbolic link"):
            _run(out)
        (out / planted).unlink()
    _run(out)
    assert victim.read_text() == "precious"
    assert not (out / "config.json").is_symlink()


def test_a_planted_examples_link_is_not_followed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "examples").symlink_to(elsewhere)
    with pytest.raises(OSError, match="symbolic link"):
        _run(out)
    assert list(elsewhere.iterdir()) == []


class _FlakyDataset(TinyDataset):
    """The tiny data set, but image 5 fails to read (an I/O error) the first ``failures`` times."""

    def __init__(self, failures: int, transient: bool = True) -> None:
        super().__init__()
        self.failures = failures
        self.transient = transient

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 5 and self.failures > 0:
            self.failures -= 1
            from mlattack.data import UnreadableImageError

            cause = OSError(errno.EIO if self.transient else errno.ENOENT, "read error")
            raise UnreadableImageError("cannot read image 5.jpg") from cause
        return super().__getitem__(index)


def test_a_transient_read_error_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mlattack.experiments.reading.RETRY_PAUSE_S", 0.0)
    out = _run(tmp_path / "run", dataset=_FlakyDataset(failures=2))
    assert json.loads(_meta(out)["skipped_images"]) == []
    assert stored_rows(out) == stored_rows(_run(tmp_path / "clean"))


def test_a_resume_keeps_an_image_skipped_that_reads_again(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flaky = _FlakyDataset(failures=10**6, transient=False)
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable image"):
        _run(out, dataset=flaky, examples=0)
    before = stored_rows(out)
    with pytest.warns(RuntimeWarning, match="1 image.* read now .*stay skipped"):
        _run(out, dataset=TinyDataset(), examples=0)  # image 5 reads again: resumed, not refused
    assert stored_rows(out) == before
    assert [i for i, _ in json.loads(_meta(out)["skipped_images"])] == [5]


def test_a_resume_that_cannot_read_an_image_it_read_before_names_it(tmp_path: Path) -> None:
    from mlattack.experiments import StoreError

    out = _run(tmp_path / "run")
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(StoreError, match=r"cannot be read now \(ids \[5\]"),
    ):
        _run(out, dataset=_FlakyDataset(failures=10**6, transient=False))


def _meta(run_dir: Path) -> dict[str, str]:
    db = sqlite3.connect(run_dir / "results-rank0.sqlite")
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    db.close()
    return meta


def test_example_files_of_distinct_rows_never_collide(tmp_path: Path) -> None:
    import numpy as np

    from mlattack.experiments.units.attack import example_file_name, file_slug

    eps = [0.05, 0.0500001]  # equal to 6 significant digits
    attacks = [
        {"name": "mla-u", "label": "u/1", "options": {"steps": 3}},
        {"name": "mla-u", "label": "u_1", "options": {"steps": 3}},
    ]
    out = _run(tmp_path / "run", eps=eps, attacks=attacks, examples=2)
    db = sqlite3.connect(out / "results-rank0.sqlite")
    rows = db.execute("SELECT attack, eps, path FROM examples").fetchall()
    db.close()
    paths = [path for _, _, path in rows]
    assert len(rows) == 2 * 2 * 2 * 2 and len(set(paths)) == len(paths)  # sets x images x ...
    assert len(list((out / "examples").glob("*.npz"))) == len(paths)
    for _, budget, path in rows:
        with np.load(out / path) as stored:
            assert np.abs(stored["delta"]).max() <= budget + 1e-6
    assert file_slug("u/1") != file_slug("u_1") != file_slug("u_2f_1")
    assert example_file_name(0, 1, "x", 0.05) != example_file_name(0, 1, "x", 0.0500001)
    long = [file_slug("a" * 300), file_slug("a" * 299 + "b")]
    assert long[0] != long[1] and all(len(s) <= 80 for s in long)


class _UnreadableDataset(TinyDataset):
    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from mlattack.data import UnreadableImageError

        raise UnreadableImageError(f"cannot read image {index}.jpg")


def test_a_run_with_every_image_unreadable_is_an_error_saying_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(ValueError, match=r"every one of the 24 scanned images is unreadable"),
    ):
        _run(out, dataset=_UnreadableDataset())
    assert not out.exists()


def test_a_run_where_no_target_set_has_an_image_is_an_error_saying_so(tmp_path: Path) -> None:
    dataset = TinyDataset()
    dataset.labels[:] = False  # the ground truth holds no label: no image is eligible
    out = tmp_path / "run"
    target_sets = {"sizes": [1], "mode": "combinations", "only_present": False}
    with pytest.raises(ValueError, match=r"6 target set\(s\) of size 1 drawn, and none has an"):
        _run(out, dataset=dataset, target_sets=target_sets)
    assert not out.exists()
    with pytest.raises(ValueError, match=r"no target set drawn"):
        _run(out, dataset=dataset)  # only_present: no label is present, no set is drawn


def test_images_dropped_by_validation_are_counted_in_the_report(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    names = ["a.png", "bad1.jpg", "b.png", "bad2.jpg", "bad3.jpg"]
    _write_image(root / "a.png", 40)
    _write_image(root / "b.png", 200)
    for bad in names[1::2] + ["bad3.jpg"]:
        (root / bad).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    everything = ";".join(LABELS)
    (root / "labels.csv").write_text("".join(f"{n},{everything}\n" for n in names))
    with pytest.warns(RuntimeWarning, match="dropping an unreadable image"):
        dataset = ImageFolderDataset(root, size=SIZE, label_names=LABELS, validate=True)
    run_dir = _run(tmp_path / "run", dataset=dataset, images={"per_target_set": 4})
    page = build_report(run_dir)
    assert "Unreadable images skipped: 3 " in page.read_text(encoding="utf-8")
    payload = json.loads((page.parent / "report.json").read_text(encoding="utf-8"))
    assert payload["dropped_unreadable"] == {"tiny": 3} and payload["skipped_images"]["tiny"] == []


def test_a_model_that_is_nan_everywhere_is_named_not_an_empty_report(tmp_path: Path) -> None:
    model = TinyModel()
    with torch.no_grad():
        model.linear.weight[0, 0] = float("nan")
    out = tmp_path / "run"
    with (
        pytest.warns(RuntimeWarning, match="output on 24 of the 24 read images holds a NaN"),
        pytest.raises(ValueError, match=r"config key 'model': .* every one of the 24 read images"),
    ):
        run_experiment(_config(), out, model=model, dataset=TinyDataset(), progress=False)
    assert not out.exists()


def test_a_world_lock_held_exclusively_is_refused_in_one_line(tmp_path: Path) -> None:
    import fcntl

    from mlattack.experiments.layout import world_lock_path

    handle = os.open(world_lock_path(tmp_path, 1), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)  # what a run of another size does while it checks
        with (
            pytest.raises(RunDirInUseError, match="in use by a run of another number of ranks"),
            lock_run_dir(tmp_path, 0, 1),
        ):
            pass
    finally:
        os.close(handle)
