"""`mlattack report`: from a run directory to the HTML page."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from mlattack.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from exp_fixtures import run_tiny  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: extra threads only add overhead


@pytest.mark.slow
def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}
    )
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out
    assert (run_dir / "report" / "report.html").stat().st_size > 0
    assert main(["report", str(run_dir), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "table1.csv").is_file()


def test_report_on_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def _damaged_run(tmp_path: Path, sql: str) -> Path:
    import sqlite3

    run_dir = run_tiny(
        tmp_path / "run",
        eps=[0.1],
        target_sets={"sizes": [1], "mode": "combinations"},
        attacks=[{"name": "mla-u", "options": {"steps": 2}}],
    )
    db = sqlite3.connect(run_dir / "results-rank0.sqlite")
    db.execute(sql)
    db.commit()
    db.close()
    return run_dir


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("DROP TABLE results", r"is damaged: tables \['results'\] are missing"),
        ("UPDATE examples SET path = '../../../etc/passwd'", "outside the run folder"),
        ("UPDATE meta SET value = '{' WHERE key = 'label_names'", "meta value 'label_names'"),
        ("UPDATE meta SET value = '3' WHERE key = 'label_names'", "'label_names' is not a list"),
        (
            "UPDATE meta SET value = json_set(value, '$.dataset', 'voc') WHERE key = 'config'",
            r"results-rank0\.sqlite: damaged metadata: 'config.dataset' is not a mapping",
        ),
        (
            "UPDATE meta SET value = json_set(value, '$.edges', 3) WHERE key = 'graph'",
            r"results-rank0\.sqlite: damaged metadata: 'graph': key 'edges'",
        ),
        ("UPDATE results SET success = 2", r"results-rank0\.sqlite is damaged: .*success = 2"),
    ],
    ids=[
        "no-results-table",
        "outside-path",
        "bad-json",
        "bad-type",
        "dataset-str",
        "graph",
        "success-2",
    ],  # fmt: skip
)
def test_damaged_stores_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str, message: str
) -> None:
    run_dir = _damaged_run(tmp_path, sql)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlattack report: error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_report_out_refuses_a_folder_it_did_not_write_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"},
        attacks=[{"name": "mla-u", "options": {"steps": 2}}], examples=0,
    )  # fmt: skip
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my page")
    (mine / "paper.tex").write_text("precious")
    assert main(["report", str(run_dir), "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlattack report: error: ") and err.count("\n") == 1
    assert "not an mlattack report folder" in err
    assert {p.name: p.read_text() for p in mine.iterdir()} == {
        "report.html": "my page",
        "paper.tex": "precious",
    }


def _rewrite_examples(run_dir: Path, damage: str) -> None:
    import numpy as np

    for path in sorted((run_dir / "examples").glob("*.npz")):
        arrays = dict(np.load(path))
        if damage == "truncated":
            path.write_bytes(path.read_bytes()[:200])
            continue
        if damage == "no-delta":
            del arrays["delta"]
        elif damage == "wide-targets":
            arrays["targets"] = np.zeros(len(arrays["targets"]) + 3, dtype=bool)
        np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "damaged example file: File is not a zip file"),
        ("no-delta", r"damaged example file: arrays \['delta'\] are missing"),
        ("wide-targets", r"damaged example file: 'targets' has shape \(9,\)"),
    ],
)
def test_damaged_example_files_are_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"},
        attacks=[{"name": "gmla", "options": {"steps": 2}}], examples=1,
    )  # fmt: skip
    _rewrite_examples(run_dir, damage)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlattack report: error: ") and err.count("\n") == 1
    assert re.search(r"examples/ts\d+_img\d+_gmla_eps0\.1\.npz: " + message, err), err
