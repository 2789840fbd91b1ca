"""Resume after a real ``kill -9`` of a subprocess mid-run, then rerun.

The final tables must equal those of an uninterrupted run: no row lost, none duplicated.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from exp_fixtures import stored_rows

from mlattack.experiments.aggregate import aggregate

HERE = Path(__file__).resolve().parent
SCAN_LOADS = 24  # the tiny dataset is read once for clean predictions before any attack

SCRIPT = textwrap.dedent(
    f"""
    import os, sys, time
    from pathlib import Path
    sys.path.insert(0, {str(HERE)!r})
    import torch
    torch.set_num_threads(1)
    from exp_fixtures import TinyDataset, TinyModel, tiny_config
    from mlattack.experiments import ExperimentConfig, run_experiment

    class GatedDataset(TinyDataset):
        # After GATE_AFTER image loads, announce it in GATE_FILE and block (to be killed there).
        loads = 0

        def __getitem__(self, index):
            gate = os.environ.get("GATE_AFTER")
            GatedDataset.loads += 1
            if gate is not None and GatedDataset.loads > int(gate):
                Path(os.environ["GATE_FILE"]).touch()
                time.sleep(600)
            return super().__getitem__(index)

    config = ExperimentConfig.from_dict(
        tiny_config(eps=[0.1, 0.3], target_sets={{"sizes": [1], "mode": "combinations"}})
    )
    run_experiment(config, sys.argv[1], model=TinyModel(), dataset=GatedDataset(), progress=False)
    """
)


def _start(
    script: Path, out: Path, gate_after: int | None = None, gate_file: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    if gate_after is not None:
        assert gate_file is not None
        env.update(GATE_AFTER=str(gate_after), GATE_FILE=str(gate_file))
    return subprocess.Popen(
        [sys.executable, str(script), str(out)], env=env, stderr=subprocess.PIPE
    )


def _wait_for(condition, process: subprocess.Popen[bytes], what: str, limit: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            raise AssertionError(
                f"process ended before {what}: {process.stderr.read().decode()[-2000:]}"
            )  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _count(out: Path) -> int:
    path = out / "results-rank0.sqlite"
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        finally:
            db.close()
    except sqlite3.OperationalError:  # tables not created yet
        return 0


@pytest.mark.slow
def test_interrupted_runs_resume_to_identical_tables(tmp_path: Path) -> None:
    script = tmp_path / "run_tiny.py"
    script.write_text(SCRIPT, encoding="utf-8")
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    full = _start(script, reference)

    # 1. kill -9 while blocked after a few committed batches (surely mid-run).
    gate = tmp_path / "gate"
    proc = _start(script, resumed, SCAN_LOADS + 5 * 4, gate)
    _wait_for(gate.exists, proc, "the gate")
    proc.kill()
    proc.wait(timeout=60)
    after_kill = _count(resumed)
    assert after_kill > 0

    # 2. kill -9 at an arbitrary point: as soon as more rows show up (possibly mid-transaction).
    proc = _start(script, resumed)
    _wait_for(lambda: _count(resumed) > after_kill, proc, "new rows")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)

    # 3. finish.
    assert _start(script, resumed).wait(timeout=120) == 0
    assert full.wait(timeout=120) == 0

    rows = stored_rows(resumed)
    assert rows == stored_rows(reference)
    assert len(rows) == len(set(rows))
    assert stored_rows(resumed, "units") == stored_rows(reference, "units")
    assert stored_rows(resumed, "examples") == stored_rows(reference, "examples")
    assert aggregate([resumed]).summary == aggregate([reference]).summary
