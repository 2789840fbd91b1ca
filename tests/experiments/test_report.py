"""Reports: every figure file produced and non-empty, escaped HTML, notes for absent data."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from exp_fixtures import LABELS, TinyDataset, TinyModel, run_tiny, tiny_config

from mlattack.experiments import ExperimentConfig, StoreError, build_report, run_experiment
from mlattack.experiments import report as report_module
from mlattack.experiments.report import MARKER_FILE, escape_cell, unescape_cell

FIGURES = ("fig5_eps.png", "fig6_sizes.png", "fig7_transfer.png", "fig8_gradcorr.png",
           "fig9_qualitative.png", "fig10_perturbations.png")  # fmt: skip
pytestmark = pytest.mark.slow  # runs experiments and draws every figure (about a minute in all)

TRANSFER = {"attack": {"name": "gmla", "options": {"steps": 5}}, "eps": 0.1,
            "models": [{"name": "tiny", "label": "m0"}, {"name": "tiny", "label": "m1"}]}  # fmt: skip


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full")
    config = ExperimentConfig.from_dict(
        tiny_config(
            gradient_correlation=True,
            transfer=TRANSFER,
            images={"per_target_set": 3},
            target_sets={"sizes": [1, 2], "mode": "random", "draws": 3},
        )  # fmt: skip
    )
    run_dir = run_experiment(
        config, out / "run", model=TinyModel(), dataset=TinyDataset(), progress=False,
        transfer_models={"m0": TinyModel(seed=0), "m1": TinyModel(seed=1)},
    )  # fmt: skip
    return build_report(run_dir)


def test_every_figure_is_written(full_report: Path) -> None:
    folder = full_report.parent
    for name in FIGURES:
        path = folder / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = full_report.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert "Not drawn" not in html


def test_the_report_shows_the_attack_settings_and_the_transfer_source(full_report: Path) -> None:
    html = full_report.read_text(encoding="utf-8")
    settings = html[html.index("<h2>Attacks and settings</h2>") :].split("</table>")[0]
    assert settings.count("steps=5") == 3  # mla-u, gmla, and the transfer attack
    assert "gmla (Fig. 7 transfer)" in settings and "threshold=0.5" in settings
    assert html.count("Perturbations made by gmla at ε = 0.1.") == 2  # table and Fig. 7


def test_links_to_related_reports_are_relative(tmp_path: Path) -> None:
    run_dir = run_tiny(
        tmp_path / "a" / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"},
        examples=0,
    )  # fmt: skip
    other = tmp_path / "b" / "run" / "report" / "report.html"
    page = build_report(run_dir, links=[("the other part & more", other)])
    html = page.read_text(encoding="utf-8")
    assert "<a href='../../../b/run/report/report.html'>the other part &amp; more</a>" in html
    see_also = html[html.index("See also") :].split("</p>")[0]
    assert str(tmp_path) not in see_also


def test_fig6_intervals_stay_in_the_range_and_name_n(full_report: Path) -> None:
    payload = json.loads((full_report.parent / "report.json").read_text(encoding="utf-8"))
    points = payload["fig6_points"]
    per_set = payload["per_target_set"]
    assert {p["metric"] for p in points} >= {"fr_naive", "fr_semantic"}
    for point in points:
        assert point["low"] <= point["mean"] <= point["high"]
        if point["metric"] != "ssim":
            assert point["low"] >= 0.0 and point["high"] <= 1.0
        values = [r[point["metric"]] for r in per_set
                  if (r["attack"], r["size"], r["eps"]) == (point["attack"], point["size"], 0.05)
                  and r[point["metric"]] is not None]  # fmt: skip
        assert point["n"] == len(values) and point["mean"] == pytest.approx(np.mean(values))
    assert "95% percentile-bootstrap interval" in full_report.read_text(encoding="utf-8")


def test_tables_and_json(full_report: Path) -> None:
    folder = full_report.parent
    with (folder / "table1.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["attack"], r["eps"], r["size"]) for r in rows} == {
        (a, e, k) for a in ("mla-u", "gmla") for e in ("0.05", "0.2") for k in ("1", "2")
    }
    assert all(
        0.0 <= float(r["fr_semantic_mean"]) <= float(r["fr_naive_mean"]) <= 1.0 for r in rows
    )
    with (folder / "table2.csv").open() as handle:
        assert set(next(csv.DictReader(handle))) >= {"nt_rate_k1", "nt_rate_k2"}
    payload = json.loads((folder / "report.json").read_text())
    assert payload["n_rows"] > 0 and "table1" in payload["denominators"]
    assert (folder / "transfer.csv").stat().st_size > 0


def test_html_states_denominators(full_report: Path) -> None:
    html = full_report.read_text(encoding="utf-8")
    assert html.count("Denominator") >= len(FIGURES) + 2
    assert "source attack fooled" in html


def _run_with_label_names(tmp_path: Path, names: tuple[str, ...], **overrides: Any) -> Path:
    """A tiny run whose model and dataset use ``names`` as their labels."""
    config = ExperimentConfig.from_dict(tiny_config(**overrides))
    return run_experiment(
        config,
        tmp_path / "run",
        model=TinyModel(names),
        dataset=TinyDataset(names=names),
        progress=False,
    )


def test_label_names_are_escaped(tmp_path: Path) -> None:
    names = ("<script>alert(1)</script>", "dog", "cat", "a&b", "car", 'bus"')
    run_dir = _run_with_label_names(
        tmp_path, names, eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}
    )
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert "<script>" not in html and 'bus"' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a&amp;b" in html


def test_label_names_with_mathtext_characters_are_drawn_literally(tmp_path: Path) -> None:
    # "$\\nope{$" is invalid mathtext: parsed as maths, it made matplotlib raise while drawing
    names = ("$\\nope{$", "d_og$", "cat", "vehicle^2", "car", "bus")
    run_dir = _run_with_label_names(tmp_path, names, gradient_correlation=True)
    report_dir = build_report(run_dir).parent
    for name in ("fig5_eps", "fig6_sizes", "fig8_gradcorr", "fig9_qualitative"):
        assert (report_dir / f"{name}.png").stat().st_size > 0, name


def test_absent_data_gives_notes(tmp_path: Path) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}, examples=0
    )
    page = build_report(run_dir)
    html = page.read_text(encoding="utf-8")
    assert html.count("Not drawn") == 6
    assert "gradient_correlation: true" in html
    assert not (page.parent / "fig5_eps.png").exists()


def test_two_runs_in_one_report(tmp_path: Path) -> None:
    small = {"eps": [0.1], "target_sets": {"sizes": [1], "mode": "combinations"}, "examples": 1}
    first = run_tiny(tmp_path / "a", **small, model={"name": "tiny", "label": "A"})
    second = run_tiny(tmp_path / "b", **small, model={"name": "tiny", "label": "B"})
    page = build_report(first, second, out_dir=tmp_path / "both")
    with (page.parent / "table1.csv").open() as handle:
        assert {r["model"] for r in csv.DictReader(handle)} == {"A", "B"}
    with pytest.raises(ValueError, match="same model twice"):
        build_report(first, first, out_dir=tmp_path / "bad")


def test_missing_run_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no results store"):
        build_report(tmp_path / "empty")
    assert LABELS


def test_csv_cells_are_formula_safe_and_recoverable(tmp_path: Path) -> None:
    names = ("=cmd|' /C calc'!A0", "+dog", "-cat", "@vehicle", "'car", "bus")
    run_dir = _run_with_label_names(
        tmp_path, names, eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}
    )
    folder = build_report(run_dir).parent
    with (folder / "per_target_set.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())
    recovered = {unescape_cell(r["labels"]) for r in rows}
    assert recovered <= set(names) and len(recovered & set(names[:5])) >= 2
    assert escape_cell("=1+1") == "'=1+1" and unescape_cell(escape_cell("=1+1")) == "=1+1"
    assert unescape_cell(escape_cell("'quoted")) == "'quoted"
    assert escape_cell(-0.5) == -0.5 and escape_cell("dog") == "dog"


def test_an_interrupted_report_leaves_the_old_one_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}
    )
    page = build_report(run_dir)
    before = {p.name: p.read_bytes() for p in page.parent.iterdir()}

    def write_half(agg: Any, target: Path, *rest: Any) -> None:
        (target / "table1.csv").write_text("half of a new report")
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module, "_write_report", write_half)
    with pytest.raises(KeyboardInterrupt):
        build_report(run_dir)
    assert {p.name: p.read_bytes() for p in page.parent.iterdir()} == before
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".report")) == []


def test_out_folder_that_is_not_a_report_is_not_replaced(tmp_path: Path) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not an mlattack report folder"):
        build_report(run_dir, out_dir=mine)
    assert (mine / "thesis.tex").read_text() == "precious"
    page = build_report(run_dir, out_dir=tmp_path / "new")
    assert build_report(run_dir, out_dir=page.parent) == page  # an earlier report is replaced
    assert build_report(run_dir) == run_dir / "report" / "report.html"
    assert build_report(run_dir) == run_dir / "report" / "report.html"  # the default, again


@pytest.mark.parametrize("planted", ["report.html", "report.json"])
def test_a_folder_holding_a_file_named_like_a_report_is_not_replaced(
    tmp_path: Path, planted: str
) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / planted).write_text("my own page")
    (mine / "data.csv").write_text("precious")
    with pytest.raises(ValueError, match="not an mlattack report folder"):
        build_report(run_dir, out_dir=mine)
    assert sorted(p.name for p in mine.iterdir()) == sorted([planted, "data.csv"])
    assert (mine / "data.csv").read_text() == "precious"


def test_a_report_folder_is_replaced_only_by_a_report_of_the_same_runs_and_files(
    tmp_path: Path,
) -> None:
    first = run_tiny(
        tmp_path / "first", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}
    )
    out = build_report(first, out_dir=tmp_path / "out").parent
    marker = json.loads((out / MARKER_FILE).read_text(encoding="utf-8"))
    assert marker["runs"] == [str(first.resolve())] and "report.html" in marker["files"]
    second = tmp_path / "second"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns("report"))
    with pytest.raises(ValueError, match="holds the report of other runs"):
        build_report(second, out_dir=out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files mlattack did not write \(notes\.txt\)"):
        build_report(first, out_dir=out)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    build_report(first, out_dir=out)


def test_only_leftovers_of_dead_report_processes_are_removed(tmp_path: Path) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}
    )
    users = tmp_path / ".out.old-12"  # named like a leftover, but no marker: the user's
    users.mkdir()
    (users / "keep.txt").write_text("mine")
    running = tmp_path / f".out.partial-{os.getppid()}"  # a live process's report in progress
    running.mkdir()
    (running / MARKER_FILE).write_text(
        json.dumps({"mlattack_report": 1, "runs": [], "files": []}), encoding="utf-8"
    )
    stale = tmp_path / f".out.partial-{_pid_of_ended_process()}"  # an interrupted report's
    stale.mkdir()
    (stale / MARKER_FILE).write_text(running.joinpath(MARKER_FILE).read_text(), encoding="utf-8")
    build_report(run_dir, out_dir=tmp_path / "out")
    assert (users / "keep.txt").read_text() == "mine" and running.is_dir()
    assert not stale.exists()


def _pid_of_ended_process() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("stored", ["../../outside.npz", "/etc/passwd", "examples/../../x.npz"])
def test_example_paths_outside_the_run_are_refused(tmp_path: Path, stored: str) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}
    )
    db = sqlite3.connect(run_dir / "results-rank0.sqlite")
    db.execute("UPDATE examples SET path = ?", (stored,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="outside the run folder"):
        build_report(run_dir)


def test_a_store_without_its_results_table_is_named(tmp_path: Path) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"}
    )
    db = sqlite3.connect(run_dir / "results-rank0.sqlite")
    db.execute("DROP TABLE results")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=r"results-rank0\.sqlite is damaged: tables \['results'\]"):
        build_report(run_dir)


def test_qualitative_lines_tell_the_flip_set_from_collateral_flips() -> None:
    """Fig. 9: GMLA's Ψ beyond Ω is marked Ψ, an unrelated flip is orange, Ω is marked T."""
    from types import SimpleNamespace

    import numpy as np

    from mlattack.experiments.figures import _label_lines
    from mlattack.graph import LabelGraph

    names = ("animal", "dog", "cat", "vehicle")
    graph = LabelGraph(names, [("animal", "dog"), ("animal", "cat")])
    run = SimpleNamespace(label_names=names)
    arrays = {
        "clean_pred": np.array([1, 1, 0, 0]),
        "adv_pred": np.array([0, 0, 0, 1]),  # dog and animal off, vehicle turned on
        "targets": np.array([0, 1, 0, 0]),
        "flip_set": np.array([1, 1, 0, 0]),
    }
    lines = dict(_label_lines(run, graph, arrays))
    assert lines["  T dog: on→off"] == "tab:blue"
    assert lines["  Ψ animal: on→off"] == "teal"
    assert lines["  vehicle: off→on"] == "darkorange"
    # Results stored before the flip set was saved read it as Ω.
    del arrays["flip_set"]
    assert dict(_label_lines(run, graph, arrays))["  animal: on→off"] == "darkorange"


def test_qualitative_lines_tell_labels_the_attack_broke_from_ones_broken_before() -> None:
    """Fig. 9: ! (red) for a label the attack left inconsistent, ~ (purple) for one that was
    already inconsistent in the clean prediction."""
    from types import SimpleNamespace

    import numpy as np

    from mlattack.experiments.figures import _QUALITATIVE_LEGEND, _label_lines
    from mlattack.graph import LabelGraph

    names = ("animal", "dog", "cat", "vehicle", "car")
    graph = LabelGraph(names, [("animal", "dog"), ("animal", "cat"), ("vehicle", "car")])
    run = SimpleNamespace(label_names=names)
    arrays = {
        # car is on without vehicle before the attack: inconsistent already
        "clean_pred": np.array([1, 1, 0, 0, 1]),
        "adv_pred": np.array([1, 0, 0, 0, 1]),  # dog off: animal left without a child
        "targets": np.array([0, 1, 0, 0, 0]),
        "flip_set": np.array([0, 1, 0, 0, 0]),
    }
    lines = dict(_label_lines(run, graph, arrays))
    assert lines["  ! animal: on→on"] == "red"
    assert lines["  ~ car: on→on"] == "purple"
    assert ("~  inconsistent already before the attack", "purple") in _QUALITATIVE_LEGEND


@pytest.mark.parametrize(
    "text",
    [" =1+1", "\n=cmd|'/C calc'!A0", "\r\n+1", "\u3000@SUM(A1)", "\uff1d1+1", "\uff0b1",
     "\uff0d1", "\uff20SUM(A1)", " \t-2", "\u00a0=1"],
)  # fmt: skip
def test_formulas_after_white_space_or_in_fullwidth_are_escaped(text: str) -> None:
    assert escape_cell(text) == "'" + text and unescape_cell(escape_cell(text)) == text


def test_formula_safe_csv_file_round_trips(tmp_path: Path) -> None:
    from mlattack.experiments.report import _write_csv

    cells = [" =1+1", "\n=2", "\uff1d3", "dog", "a=b", "-"]
    _write_csv(tmp_path / "t.csv", [{"cell": c} for c in cells])
    with (tmp_path / "t.csv").open(encoding="utf-8", newline="") as handle:
        read = [row["cell"] for row in csv.DictReader(handle)]
    assert all(not c.lstrip() or c.lstrip()[0] not in "=+-@\uff1d" for c in read)
    assert [unescape_cell(c) for c in read] == cells


def test_a_default_report_folder_of_an_earlier_mlattack_is_replaced_but_not_with_others(
    tmp_path: Path,
) -> None:
    run_dir = run_tiny(
        tmp_path / "run", eps=[0.1], target_sets={"sizes": [1], "mode": "combinations"},
        examples=0,
    )  # fmt: skip
    folder = build_report(run_dir).parent
    (folder / MARKER_FILE).unlink()  # as written before the marker existed
    assert build_report(run_dir) == folder / "report.html"
    (folder / MARKER_FILE).unlink()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an mlattack report folder"):
        build_report(run_dir)
    assert (folder / "notes.txt").read_text() == "mine"
    mine = tmp_path / "mine"  # with --out, a folder without the marker is never replaced
    shutil.copytree(folder, mine, ignore=shutil.ignore_patterns("notes.txt"))
    with pytest.raises(ValueError, match="not an mlattack report folder"):
        build_report(run_dir, out_dir=mine)


@pytest.mark.parametrize(
    ("eps", "shown"),
    [(4 / 255, "4/255"), (0.5 / 255, "0.5/255"), (0.25 / 255, "0.25/255"), (0.01, "0.01"),
     (0.3 / 255, "0.001176"), (0.1, "0.1"), (1.5 / 255, "1.5/255")],
)  # fmt: skip
def test_eps_is_written_in_grey_levels_when_it_is_a_whole_or_a_small_fraction_of_one(
    eps: float, shown: str
) -> None:
    from mlattack.experiments.figures import format_eps

    assert format_eps(eps) == shown
