"""The paper's aggregates against values computed by hand on a crafted store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from exp_fixtures import LABELS, tiny_config, tiny_graph

from mlattack.experiments import ExperimentConfig, ResultStore
from mlattack.experiments.aggregate import aggregate, transfer_matrix

EMPTY = "[]"


def _row(
    ts: int,
    image: int,
    success: int,
    semantic: int,
    nt: float | None,
    ssim: float | None,
    attacked: int = 1,
    nonfinite: int = 0,
) -> tuple[Any, ...]:
    return (ts, image, "gmla", 0.1, attacked, success, semantic, nt, 0.1, 1.0, ssim, 3, 0.01, 0,
            "[0]", EMPTY, "[0]", "[0]", nonfinite, 4, 3)  # fmt: skip


def make_run(
    run_dir: Path, per_rank: list[list[tuple[Any, ...]]], target_sets: list[tuple[Any, ...]]
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    config = ExperimentConfig.from_dict(tiny_config(eps=[0.1], attacks=[{"name": "gmla"}]))
    meta = {"config_hash": config.config_hash(), "config": config.model_dump(mode="json"), "model": "tiny",
            "label_names": list(LABELS), "graph": tiny_graph().to_json()}  # fmt: skip
    for rank, rows in enumerate(per_rank):
        with ResultStore.create_or_open(run_dir / f"results-rank{rank}.sqlite", meta) as store:
            store.record_target_sets(target_sets)
            store.write_unit(f"unit{rank}", results=rows)


TARGET_SETS = [(0, 1, "[0]", 5, 5), (1, 1, "[1]", 2, 2), (2, 1, "[2]", 1, 1), (3, 1, "[4]", 0, 0)]
# ts0: 4 attacked images (+1 skipped): FR_N 2/4, FR_S 1/4, NT_R (0.5+0)/2, SSIM (0.9+0.7)/2
# ts1: 2 images, both semantic successes: FR_N 1, FR_S 1, NT_R 0.25, SSIM 0.6
# ts2: 1 failed image: FR_N 0, FR_S 0, NT_R and SSIM undefined
RANK0 = [_row(0, 0, 1, 1, 0.5, 0.9), _row(1, 0, 1, 1, 0.25, 0.6), _row(1, 1, 1, 1, 0.25, 0.6)]
RANK1 = [_row(0, 1, 1, 0, 0.0, 0.7), _row(0, 2, 0, 0, None, None), _row(0, 3, 0, 0, None, None),
         _row(0, 4, 0, 0, None, None, attacked=0), _row(2, 0, 0, 0, None, None)]  # fmt: skip


def test_per_target_set_pools_ranks(tmp_path: Path) -> None:
    make_run(tmp_path / "run", [RANK0, RANK1], TARGET_SETS)
    agg = aggregate([tmp_path / "run"])
    per_set = {row["ts_id"]: row for row in agg.per_set}
    assert per_set[0]["n_images"] == 4  # the skipped image is not in I
    assert per_set[0]["fr_naive"] == pytest.approx(0.5)  # 2/4 pooled, not the mean of 1/1 and 1/3
    assert per_set[0]["fr_semantic"] == pytest.approx(0.25)
    assert per_set[0]["nt_rate"] == pytest.approx(0.25)
    assert per_set[0]["ssim"] == pytest.approx(0.8)
    assert per_set[1]["fr_semantic"] == pytest.approx(1.0)
    assert per_set[2]["fr_naive"] == 0.0 and math.isnan(per_set[2]["nt_rate"])
    assert 3 not in per_set
    assert agg.n_rows == 8


def test_mean_and_std_across_target_sets(tmp_path: Path) -> None:
    make_run(tmp_path / "run", [RANK0, RANK1], TARGET_SETS)
    (summary,) = aggregate([tmp_path / "run"]).summary
    assert (summary["n_sets"], summary["n_empty_sets"], summary["n_images"]) == (3, 1, 7)
    assert summary["fr_naive_mean"] == pytest.approx(0.5)
    assert summary["fr_naive_std"] == pytest.approx(math.sqrt(1 / 6))  # population std of 0.5, 1, 0
    assert summary["fr_semantic_mean"] == pytest.approx(1.25 / 3)
    assert summary["nt_rate_mean"] == pytest.approx(0.25)
    assert summary["nt_rate_std"] == pytest.approx(0.0)
    assert summary["nt_rate_n_sets"] == 2  # ts2 had no success
    assert summary["ssim_mean"] == pytest.approx(0.7)
    assert summary["ssim_std"] == pytest.approx(0.1)


def test_empty_target_sets_are_listed(tmp_path: Path) -> None:
    make_run(tmp_path / "run", [RANK0, RANK1], TARGET_SETS)
    (empty,) = aggregate([tmp_path / "run"]).empty_sets
    assert empty["ts_id"] == 3 and empty["labels"] == ["car"] and empty["n_eligible"] == 0


def test_transfer_matrix_uses_source_fooled_images() -> None:
    rows = [
        {
            "source": "a",
            "target": "b",
            "ts_id": 0,
            "n_fooled": 4,
            "n_transferred": 1,
            "n_semantic": 0,
        },
        {
            "source": "a",
            "target": "b",
            "ts_id": 1,
            "n_fooled": 2,
            "n_transferred": 2,
            "n_semantic": 1,
        },
        {
            "source": "a",
            "target": "b",
            "ts_id": 2,
            "n_fooled": 0,
            "n_transferred": 0,
            "n_semantic": 0,
        },
    ]
    sources, targets, matrix = transfer_matrix(rows)
    assert (sources, targets) == (["a"], ["b"])
    assert matrix[0, 0] == pytest.approx((0.25 + 1.0) / 2)  # ts2 fooled nothing: left out
    _, _, semantic = transfer_matrix(rows, semantic=True)
    assert semantic[0, 0] == pytest.approx(0.25)


_WITHOUT_UNIQUE_KEY = """
CREATE TABLE plain AS SELECT * FROM results; DROP TABLE results; ALTER TABLE plain RENAME TO results;
INSERT INTO results SELECT * FROM results WHERE ts_id = 1 AND image_id = 0;
"""


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("UPDATE results SET success = 2 WHERE image_id = 0", r"\(0, 0, 'gmla', 0.1\) has success = 2"),
        ("UPDATE results SET nt_flip_fraction = 5 WHERE ts_id = 1", "nt_flip_fraction = 5.0"),
        ("UPDATE results SET ssim = -3 WHERE ts_id = 1", "ssim = -3.0"),
        ("UPDATE results SET semantic_success = 1, success = 0 WHERE ts_id = 1", "success = 0"),
        ("UPDATE results SET attacked = 'yes'", "attacked = 'yes'"),
        ("UPDATE results SET nonfinite_logits = 7", "nonfinite_logits = 7"),
        ("UPDATE results SET ts_id = 9 WHERE ts_id = 1", "target set 9"),
        (_WITHOUT_UNIQUE_KEY, r"holds the row \(1, 0, 'gmla', 0.1\) 2 times"),
    ],
    ids=["success-2", "nt-5", "ssim", "semantic-without-success", "text-flag", "nonfinite",
         "unknown-set", "duplicate-row"],
)  # fmt: skip
def test_damaged_rows_are_refused_naming_the_store(
    tmp_path: Path, damage: str, message: str
) -> None:
    import sqlite3

    from mlattack.experiments import StoreError

    make_run(tmp_path / "run", [RANK0], TARGET_SETS)
    db = sqlite3.connect(tmp_path / "run" / "results-rank0.sqlite")
    db.executescript(damage)
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=r"results-rank0\.sqlite is damaged: .*" + message):
        aggregate([tmp_path / "run"])
