"""A real SIGKILL at every stage of a small run, then resume: every table as if never interrupted.

The kills come from the store's fault points (``MLATTACK_KILL_AT``, see docs/experiments.md): the
process sends itself SIGKILL at an exact stage, so each window is hit for certain rather than by
chance. Stages: during the clean scan (before the store exists), inside store creation (before and
after its metadata is committed, before the rename), inside a unit's transaction (its rows inserted,
not committed; twice, the second time after a resume) and during the report (every file written,
before the swap, over an older report). After each kill the run folder holds either no store or a
complete one, and the final tables and report equal those of an uninterrupted run: 0 rows lost,
0 duplicated, 0 changed.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import signal
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from exp_fixtures import run_tiny_with_report, stored_rows, tiny_config

from mlattack.experiments import build_report

pytestmark = pytest.mark.slow  # kills and resumes runs in subprocesses (about 30 s)

TABLES = ("results", "units", "examples", "target_sets", "gradcorr", "transfer", "meta")
CONFIG = tiny_config(
    attacks=[{"name": "mla-u", "options": {"steps": 2}}],
    eps=[0.1],
    target_sets={"sizes": [1], "mode": "combinations"},
    images={"per_target_set": 3},
    gradient_correlation=True,
    transfer={
        "attack": {"name": "mla-u", "options": {"steps": 2}},
        "eps": 0.1,
        "models": [{"name": "tiny", "label": "m0"}, {"name": "tiny", "label": "m1"}],
    },
    examples=1,
)

_PRELOAD = [
    "torch",
    "matplotlib.pyplot",
    "exp_fixtures",
    "mlattack.experiments",
    "mlattack.attacks",
]


@pytest.fixture(scope="module")
def processes() -> Any:
    """A forkserver that imported torch and mlattack once: each stage runs in a fresh child (a real
    process, killed by a real SIGKILL) without paying the imports again."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def _start(processes: Any, out: Path, point: str | None) -> Any:
    child = processes.Process(target=run_tiny_with_report, args=(str(out), CONFIG, point))
    child.start()
    return child


def _run_killed_at(processes: Any, out: Path, point: str | None, child: Any = None) -> int | None:
    child = child or _start(processes, out, point)
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        raise AssertionError(f"the run killed at {point} did not end")
    return child.exitcode


def _tables(run_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    return {table: stored_rows(run_dir, table) for table in TABLES}


def _store_state(run_dir: Path) -> int | None:
    """None without a store, else its number of committed units (a store is always complete)."""
    path = run_dir / "results-rank0.sqlite"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert set(TABLES) <= tables
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(db.execute("SELECT COUNT(*) FROM units").fetchone()[0])
    finally:
        db.close()


def _report_files(run_dir: Path) -> dict[str, Any]:
    """The report's tables and JSON, without wall-clock timings."""
    folder = run_dir / "report"
    files: dict[str, Any] = {}
    for name in (
        "table1.csv",
        "table2.csv",
        "per_target_set.csv",
        "empty_target_sets.csv",
        "transfer.csv",
    ):
        with (folder / name).open(encoding="utf-8") as handle:
            files[name] = [
                {k: v for k, v in row.items() if k != "seconds_per_image"}
                for row in csv.DictReader(handle)
            ]
    payload = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    for key in ("per_target_set", "runs"):
        payload.pop(key)
    files["report.json"] = payload
    return files


def _examples(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    return {path.name: dict(np.load(path)) for path in sorted((run_dir / "examples").glob("*.npz"))}


@pytest.mark.slow
def test_sigkill_at_every_stage_resumes_to_identical_tables(tmp_path: Path, processes: Any) -> None:
    out = tmp_path / "resumed"
    killed = -signal.SIGKILL
    first = _start(processes, out, "scan:2")  # runs while this process computes the reference
    reference = tmp_path / "reference"
    run_tiny_with_report(str(reference), CONFIG, None)

    # Before the store exists, and inside its creation: never a half store, never config.json.
    for point in ("scan:2", "store-create", "store-create-committed"):
        child = first if point == "scan:2" else None
        assert _run_killed_at(processes, out, point, child) == killed, point
        assert _store_state(out) is None and not (out / "config.json").exists(), point

    # Inside a unit's transaction: the unit being written is absent, the earlier ones complete.
    assert _run_killed_at(processes, out, "unit-transaction:4") == killed
    assert _store_state(out) == 3
    assert _run_killed_at(processes, out, "unit-transaction:2") == killed
    assert _store_state(out) == 4
    assert (out / "config.json").is_file()

    # During a report written over an older one: the old report stays whole.
    old_page = build_report(out)
    old_report = {p.name: p.read_bytes() for p in old_page.parent.iterdir()}
    assert _run_killed_at(processes, out, "report") == killed
    assert {p.name: p.read_bytes() for p in old_page.parent.iterdir()} == old_report

    assert _run_killed_at(processes, out, None) == 0
    expected, got = _tables(reference), _tables(out)
    for table in TABLES:
        assert got[table] == expected[table], table
        assert len(set(got[table])) == len(got[table]), table
    assert len(got["results"]) > 0 and len(got["transfer"]) > 0 and len(got["gradcorr"]) > 0
    assert _report_files(out) == _report_files(reference)
    ours, theirs = _examples(out), _examples(reference)
    assert ours.keys() == theirs.keys() and ours
    for name, arrays in ours.items():
        assert arrays.keys() == theirs[name].keys()
        assert all(np.array_equal(arrays[k], theirs[name][k]) for k in arrays), name
    leftovers = [p.name for p in out.iterdir() if "partial" in p.name or ".old-" in p.name]
    assert leftovers == []
