"""`mlattack demo` end to end in its reduced mode: both parts run, print their tables and write reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlattack.cli import main

pytestmark = pytest.mark.slow


def test_quick_demo_runs_both_parts_writes_reports_and_reuses_its_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["demo", "--quick", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out

    for part in ("photos", "synthetic"):
        report = tmp_path / part / "report"
        assert (report / "report.html").stat().st_size > 0
        assert (report / "table1.csv").read_text().count("\n") >= 2
        assert str((report / "report.html").resolve()) in out
    # one table row per attack and part: attack, eps, |Ω|, then the metric columns
    rows = re.findall(r"^(mla-u|mla-c|gmla|gmla-proj)\s+\d\.\d{4}\s+1\s+\d+", out, re.MULTILINE)
    assert sorted(set(rows)) == ["gmla", "gmla-proj", "mla-c", "mla-u"]
    assert len(rows) == 8

    checkpoint = tmp_path / "synthetic-small-cnn.pt"
    trained = checkpoint.stat().st_mtime_ns
    assert main(args) == 0
    assert "reusing the synthetic-scenes model" in capsys.readouterr().out
    assert checkpoint.stat().st_mtime_ns == trained


@pytest.mark.parametrize("flag", ["--eps", "--synthetic-eps", "--steps"])
def test_bad_demo_options_are_refused(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", flag, "0", "--out", str(tmp_path)]) == 2
    assert flag in capsys.readouterr().err
