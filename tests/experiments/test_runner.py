"""The runner: one row per (target set, image, attack, eps), deterministic, resumable, shardable."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from exp_fixtures import LABELS, TinyDataset, TinyModel, run_tiny, stored_rows, tiny_config

from mlattack.experiments import ExperimentConfig, StoreError, run_experiment
from mlattack.experiments.aggregate import aggregate

SMALL = {
    "target_sets": {"sizes": [1], "mode": "combinations"},
    "eps": [0.1],
    "examples": 1,
    "images": {"per_target_set": 3},
}


def _db(run_dir: Path, rank: int = 0) -> sqlite3.Connection:
    return sqlite3.connect(run_dir / f"results-rank{rank}.sqlite")


def test_one_row_per_target_set_image_attack_eps(tmp_path: Path) -> None:
    run_dir = run_tiny(tmp_path / "run", **SMALL)
    db = _db(run_dir)
    sets = db.execute("SELECT ts_id, n_selected FROM target_sets").fetchall()
    expected = sum(n for _, n in sets) * 2  # two attacks, one eps
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == expected
    rows = db.execute(
        "SELECT targets, clean_pred, flip_set, attacked, linf FROM results"
    ).fetchall()
    for targets, clean, flip, attacked, linf in rows:
        assert attacked == 1 and linf <= 0.1 + 1e-6
        assert set(json.loads(targets)) <= set(json.loads(clean)) and set(
            json.loads(targets)
        ) <= set(json.loads(flip))
    config = db.execute("SELECT value FROM meta WHERE key = 'config_hash'").fetchone()[0]
    assert ExperimentConfig.from_dict(tiny_config(**SMALL)).config_hash() in config


def test_deterministic_and_rerun_adds_nothing(tmp_path: Path) -> None:
    first = stored_rows(run_tiny(tmp_path / "a", **SMALL))
    assert first == stored_rows(run_tiny(tmp_path / "b", **SMALL))
    assert first == stored_rows(run_tiny(tmp_path / "a", **SMALL))  # completed run: nothing to do


def test_other_config_in_out_dir_is_refused_until_forced(tmp_path: Path) -> None:
    run_tiny(tmp_path / "run", **SMALL)
    with pytest.raises(StoreError, match="different config.*--force"):
        run_tiny(tmp_path / "run", **{**SMALL, "eps": [0.2]})
    config = ExperimentConfig.from_dict(tiny_config(**{**SMALL, "eps": [0.2]}))
    run_experiment(
        config,
        tmp_path / "run",
        model=TinyModel(),
        dataset=TinyDataset(),
        progress=False,
        force=True,
    )
    eps = {row[0] for row in _db(tmp_path / "run").execute("SELECT eps FROM results")}
    assert eps == {0.2}


def test_target_set_size_larger_than_label_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size 7 is larger than the 6 labels"):
        run_tiny(tmp_path / "run", target_sets={"sizes": [7]})


def test_zero_eligible_target_set_is_recorded(tmp_path: Path) -> None:
    # All 6 labels together are never predicted at once: that set has no eligible image.
    run_dir = run_tiny(
        tmp_path / "run",
        target_sets={"sizes": [1, 6], "mode": "combinations", "only_present": False},
        eps=[0.1],
    )
    empty = aggregate([run_dir]).empty_sets
    assert [e["labels"] for e in empty] == [list(LABELS)]
    assert (
        _db(run_dir)
        .execute("SELECT COUNT(*) FROM results WHERE ts_id = ?", (empty[0]["ts_id"],))
        .fetchone()[0]
        == 0
    )


def test_require_consistent_keeps_consistent_clean_predictions(tmp_path: Path) -> None:
    images = {"per_target_set": 6, "require_consistent": True}
    run_dir = run_tiny(tmp_path / "run", **{**SMALL, "images": images})
    graph = TinyModel().graph
    rows = _db(run_dir).execute("SELECT DISTINCT clean_pred, targets FROM results").fetchall()
    assert rows
    for clean, targets in rows:
        pred = np.zeros(len(LABELS), dtype=bool)
        pred[json.loads(clean)] = True
        around = np.zeros(len(LABELS), dtype=bool)
        around[json.loads(targets)] = True
        assert graph.is_consistent(pred, around=around)


def test_sharded_run_equals_single_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    single = run_tiny(tmp_path / "single", **SMALL)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        run_tiny(tmp_path / "sharded", **SMALL)
    sharded = tmp_path / "sharded"
    counts = [_db(sharded, r).execute("SELECT COUNT(*) FROM units").fetchone()[0] for r in (0, 1)]
    assert all(c > 0 for c in counts)
    assert stored_rows(sharded) == stored_rows(single)
    assert aggregate([sharded]).summary == aggregate([single]).summary


def test_transfer_and_gradient_correlation_records(tmp_path: Path) -> None:
    transfer = {"attack": {"name": "mla-u", "options": {"steps": 5}}, "eps": 0.1,
                "models": [{"name": "tiny", "label": "m0"}, {"name": "tiny", "label": "m1"}]}  # fmt: skip
    config = ExperimentConfig.from_dict(
        tiny_config(**SMALL, transfer=transfer, gradient_correlation=True)
    )
    run_dir = run_experiment(
        config, tmp_path / "run", model=TinyModel(), dataset=TinyDataset(), progress=False,
        transfer_models={"m0": TinyModel(seed=0), "m1": TinyModel(seed=1)},
    )  # fmt: skip
    db = _db(run_dir)
    pairs = {(s, t) for s, t in db.execute("SELECT DISTINCT source, target FROM transfer")}
    assert pairs == {(s, t) for s in ("m0", "m1") for t in ("m0", "m1")}
    # success on the target model counts only images whose clean prediction there contained Ω
    assert (
        db.execute("SELECT COUNT(*) FROM transfer WHERE success AND NOT eligible").fetchone()[0]
        == 0
    )
    n_images = db.execute(
        "SELECT COUNT(DISTINCT ts_id || ':' || image_id) FROM results"
    ).fetchone()[0]
    assert db.execute("SELECT COUNT(*) FROM gradcorr").fetchone()[0] == n_images
    cosines = db.execute("SELECT cos_mla_c, cos_gmla FROM gradcorr").fetchall()
    assert all(-1.0 - 1e-6 <= c <= 1.0 + 1e-6 for row in cosines for c in row if c is not None)


def test_examples_saved(tmp_path: Path) -> None:
    run_dir = run_tiny(tmp_path / "run", **SMALL)
    files = sorted((run_dir / "examples").glob("*.npz"))
    assert files and all(f.with_suffix(".png").stat().st_size > 0 for f in files)
    data = np.load(files[0])
    assert np.abs(data["delta"]).max() <= 0.1 + 1e-6


class _InterruptingDataset(TinyDataset):
    """Raises KeyboardInterrupt (as Ctrl-C would) on its ``after``-th image load."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.loads = after, 0

    def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
        self.loads += 1
        if self.loads == self.after:
            raise KeyboardInterrupt
        return super().__getitem__(index)


def test_ctrl_c_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict(tiny_config(**SMALL))
    reference = run_tiny(tmp_path / "reference", **SMALL)
    for after in (24 + 7, 24 + 23):  # mid-way through attack batches (24 loads scan the dataset)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(
                config,
                tmp_path / "run",
                model=TinyModel(),
                dataset=_InterruptingDataset(after),
                progress=False,
            )
    partial = stored_rows(tmp_path / "run")
    assert 0 < len(partial) < len(stored_rows(reference))
    run_experiment(
        config, tmp_path / "run", model=TinyModel(), dataset=TinyDataset(), progress=False
    )
    assert stored_rows(tmp_path / "run") == stored_rows(reference)


def test_unavailable_attack_is_named_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlattack.attacks.registry

    # An attack missing from the registry is named by the config check, before any work.
    monkeypatch.delitem(mlattack.attacks.registry.REGISTRY, "gmla")
    with pytest.raises(ValueError, match=r"unknown attack 'gmla'"):
        run_tiny(tmp_path / "run", **SMALL)
    assert not list((tmp_path / "run").glob("*.sqlite"))


def test_gradient_correlation_compares_omega_with_psi(tmp_path: Path) -> None:
    # Where Ψ = Ω the MLA-C and GMLA objectives coincide; where Ψ grew beyond Ω they differ.
    run_dir = run_tiny(tmp_path / "run", **SMALL, gradient_correlation=True)
    db = _db(run_dir)
    rows = db.execute(
        "SELECT g.cos_mla_c, g.cos_gmla, r.targets, r.flip_set FROM gradcorr g JOIN results r "
        "ON r.ts_id = g.ts_id AND r.image_id = g.image_id AND r.attack = 'gmla'"
    ).fetchall()
    assert rows
    for mla_c, gmla, targets, flip_set in rows:
        if targets == flip_set:
            assert mla_c == pytest.approx(gmla, abs=1e-6)
    assert any(t != f and abs(a - b) > 1e-6 for a, b, t, f in rows)


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [({"stepz": 5}, TypeError, "stepz"), ({"steps": -1}, ValueError, "steps")],
)
def test_bad_attack_option_is_named_before_any_work(
    tmp_path: Path, options: dict[str, int], error: type[Exception], named: str
) -> None:
    attacks = [{"name": "mla-u", "options": {"steps": 5}}, {"name": "gmla", "options": options}]
    with pytest.raises(error, match=rf"config key 'attacks\[1\]' \(gmla, eps=[\d.]+\): .*{named}"):
        run_tiny(tmp_path / "run", **{**SMALL, "attacks": attacks})
    assert not list((tmp_path / "run").glob("*.sqlite"))


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "results.txt"
    out.write_text("not a run directory")
    with pytest.raises(ValueError, match=r"results\.txt is a file"):
        run_tiny(out, **SMALL)
    assert out.read_text() == "not a run directory"
