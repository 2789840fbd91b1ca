"""The runner stores each image's forward and backward passes; Table 1 shows them per image."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

from exp_fixtures import run_tiny

from mlattack.experiments import build_report
from mlattack.experiments.aggregate import aggregate
from mlattack.experiments.store import ADDED_COLUMNS

SMALL = {
    "target_sets": {"sizes": [1], "mode": "combinations", "labels": ["dog", "car"]},
    "eps": [0.1],
    "examples": 0,
    "images": {"per_target_set": 3},
    "attacks": [
        {"name": "mla-u", "options": {"steps": 5}},
        {"name": "gmla", "options": {"steps": 5, "mode": "steepest", "repair": False}},
    ],
}


def test_stored_passes_are_the_attacks_counts_and_table1_shows_them(tmp_path: Path) -> None:
    run_dir = run_tiny(tmp_path / "run", **SMALL)
    db = sqlite3.connect(run_dir / "results-rank0.sqlite")
    rows = db.execute(
        "SELECT attack, iterations, forward_passes, backward_passes FROM results WHERE attacked"
    ).fetchall()
    assert rows
    for attack, iterations, forward, backward in rows:
        # One evaluation of the start and one per step; steepest GMLA takes g_t and g_nt each time.
        assert forward == iterations + 1
        assert backward == (iterations + 1) * (2 if attack == "gmla" else 1)
    db.close()
    summary = {row["attack"]: row for row in aggregate([run_dir]).summary}
    for attack in ("mla-u", "gmla"):
        stored = [b for a, _, _, b in rows if a == attack]
        assert summary[attack]["backward_passes_per_image"] == sum(stored) / len(stored)
    html = build_report(run_dir)
    page = Path(html).read_text()
    assert "backward passes / image" in page
    expected = f"{summary['gmla']['backward_passes_per_image']:.1f}"
    assert f"<td>{expected}</td>" in page
    with (Path(html).parent / "table1.csv").open() as handle:
        table1 = {row["attack"]: row for row in csv.DictReader(handle)}
    assert float(table1["gmla"]["backward_passes_per_image"]) == float(expected)


def test_a_store_written_before_the_counts_reads_as_unknown_and_gets_the_columns(
    tmp_path: Path,
) -> None:
    run_dir = run_tiny(tmp_path / "run", **SMALL)
    path = run_dir / "results-rank0.sqlite"
    db = sqlite3.connect(path)
    for column in ADDED_COLUMNS["results"]:  # as a store of the first schema 1
        db.execute(f"ALTER TABLE results DROP COLUMN {column}")
    db.commit()
    db.close()
    summary = aggregate([run_dir]).summary
    assert all(row["n_nonfinite"] == 0 for row in summary)
    assert all(
        row["backward_passes_per_image"] != row["backward_passes_per_image"] for row in summary
    )
    assert "n/a" in Path(build_report(run_dir)).read_text()
    # Resuming the run (opening the store for writing) adds the columns back.
    run_tiny(tmp_path / "run", **SMALL)
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(results)")}
    assert set(ADDED_COLUMNS["results"]) <= columns
