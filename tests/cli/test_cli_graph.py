"""`mlattack graph build | show | target-set`, driven through ``mlattack.cli.main``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mlattack.cli import main
from mlattack.graph import LabelGraph
from mlattack.graph_sources.builtin import load_builtin


@pytest.fixture
def diamond(tmp_path: Path) -> Path:
    """a -> c <- b, c -> d, plus a lone label e."""
    path = tmp_path / "diamond.json"
    LabelGraph(["a", "b", "c", "d", "e"], [("a", "c"), ("b", "c"), ("c", "d")]).save(path)
    return path


@pytest.fixture
def vehicles(tmp_path: Path) -> Path:
    path = tmp_path / "vehicles.json"
    LabelGraph(["vehicle", "car", "bike"], [("vehicle", "car"), ("vehicle", "bike")]).save(path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["graph", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------- build
@pytest.mark.slow
def test_build_from_wordnet_labels(wordnet: Any, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "animals.json"
    code, stdout, _ = run(
        capsys, "build", "--wordnet", "dog", "cat", "car", "bicycle", "-o", str(out)
    )
    assert code == 0
    assert f"wrote 6 labels, 4 edges to {out}" in stdout
    graph = LabelGraph.load(out)
    assert graph.names[:4] == ("dog", "cat", "car", "bicycle")
    assert [graph.names[i] for i in graph.parents("dog")] == ["animal"]


def test_build_from_labels_file_with_synsets(wordnet: Any, tmp_path: Path, capsys: Any) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text(
        "# VOC-style names\ncar\nmotorbike = motorcycle.n.01\n\ntvmonitor  # screen\nbus\n"
    )
    out = tmp_path / "g.json"
    code, _, _ = run(
        capsys,
        "build", "--labels-file", str(labels),
        "--synset", "tvmonitor=television_receiver.n.01", "--min-shared", "1", "-o", str(out),
    )  # fmt: skip
    assert code == 0
    graph = LabelGraph.load(out)
    assert graph.names[:4] == ("car", "motorbike", "tvmonitor", "bus")
    assert graph.metadata["synsets"]["motorbike"] == "motorcycle.n.01"
    assert graph.metadata["synsets"]["tvmonitor"] == "television_receiver.n.01"
    assert graph.metadata["options"]["min_shared"] == 1


def test_build_builtin_to_stdout(capsys: Any) -> None:
    code, stdout, _ = run(capsys, "build", "--builtin", "voc")
    assert code == 0
    assert json.loads(stdout) == load_builtin("voc").to_json()


def test_build_from_openimages(openimages_dir: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "oi.json"
    code, _, _ = run(
        capsys,
        "build", "--openimages", str(openimages_dir / "bbox_labels_600_hierarchy.json"),
        "--names", str(openimages_dir / "class-descriptions-boxable.csv"), "-o", str(out),
    )  # fmt: skip
    assert code == 0
    graph = LabelGraph.load(out)
    assert len(graph) == 601
    assert [graph.names[i] for i in graph.parents("Tortoise")] == ["Turtle"]


# -------------------------------------------------------------------------------------- show
def test_show_prints_multi_parent_nodes_under_each_parent(diamond: Path, capsys: Any) -> None:
    code, stdout, _ = run(capsys, "show", str(diamond))
    assert code == 0
    tree, stats = stdout.split("\n\n")
    assert tree.splitlines() == [
        "a",
        "  c  [2 parents: a, b]",
        "    d",
        "b",
        "  c  [2 parents: a, b]  (children listed above)",
        "e",
    ]
    assert stats.strip() == ("labels: 5  edges: 3  roots: 3  leaves: 2  depth: 2  multi-parent: 1")


def test_show_builtin_voc_indents_by_depth(capsys: Any) -> None:
    code, stdout, _ = run(capsys, "show", "builtin:voc")
    assert code == 0
    lines = stdout.splitlines()
    chain = ["organism", "animal", "mammal", "carnivore", "dog"]
    positions = [lines.index("  " * depth + name) for depth, name in enumerate(chain)]
    assert positions == sorted(positions)
    assert "labels: 35  edges: 33  roots: 2  leaves: 20" in lines[-1]
    assert "multi-parent: 0" in lines[-1]


def test_show_max_depth_and_stats_only(diamond: Path, capsys: Any) -> None:
    code, stdout, _ = run(capsys, "show", str(diamond), "--max-depth", "0")
    assert code == 0
    assert stdout.splitlines()[:3] == ["a  (+1 children)", "b  (+1 children)", "e"]
    code, stdout, _ = run(capsys, "show", str(diamond), "--stats-only")
    assert code == 0
    assert stdout.splitlines() == [
        "labels: 5  edges: 3  roots: 3  leaves: 2  depth: 2  multi-parent: 1"
    ]


# -------------------------------------------------------------------------------- target-set
@pytest.mark.parametrize(
    ("on", "targets", "direction", "psi"),
    [
        (["vehicle", "car"], ["car"], "off", ["vehicle", "car"]),  # car was vehicle's only child on
        (["vehicle", "car", "bike"], ["car"], "off", ["car"]),  # bike keeps vehicle on
        ([], ["car"], "on", ["vehicle", "car"]),  # turning car on needs vehicle on
        (["vehicle", "bike"], ["car"], "on", ["car"]),
    ],
)
def test_target_set_prints_psi(
    vehicles: Path,
    capsys: Any,
    on: list[str],
    targets: list[str],
    direction: str,
    psi: list[str],
) -> None:
    code, stdout, _ = run(
        capsys, "target-set", str(vehicles), "--on", *on, "--targets", *targets,
        "--direction", direction,
    )  # fmt: skip
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0] == f"Omega (targets, {len(targets)}): {', '.join(targets)}"
    assert lines[1] == f"Psi (consistent target set, {len(psi)}): {', '.join(psi)}"
    added = [label for label in psi if label not in targets]
    assert lines[2] == f"added by the graph ({len(added)}): {', '.join(added) or '-'}"


def test_target_set_on_builtin_voc_climbs_the_chain(capsys: Any) -> None:
    code, stdout, _ = run(
        capsys, "target-set", "builtin:voc", "--on", "dog", "carnivore", "mammal", "animal",
        "organism", "person", "--targets", "dog",
    )  # fmt: skip
    assert code == 0
    assert "Psi (consistent target set, 4): dog, animal, carnivore, mammal" in stdout


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["target-set", "{vehicles}", "--on", "car", "--targets", "lorry"], "'lorry'"),
        (["target-set", "{vehicles}", "--on", "cart", "--targets", "car"], "'cart'"),
        (["target-set", "{vehicles}", "--on", "vehicle", "--targets", "car"], "car"),
        (["show", "{tmp}/missing.json"], "missing.json"),
        (["show", "{tmp}/broken.json"], "broken.json"),
        (["show", "voc"], "the built-in graph is named 'builtin:voc'"),
        (["show", "builtin:coco"], "available: voc, nus-wide"),
        (["show", "label-set:coco"], "unknown label set 'coco'"),
        (["show", "{vehicles}", "--max-depth", "-1"], "--max-depth"),
        (["build", "--builtin", "coco"], "available: voc, nus-wide"),
        (["build", "--wordnet", "dog", "--synset", "dog"], "LABEL=SYNSET"),
        (["build", "--wordnet", "dog", "--names", "x.csv"], "--names cannot be used with"),
        (["build", "--openimages", "{tmp}/h.json"], "h.json"),
        (["build", "--openimages", "{tmp}/h.json", "--synset", "a=b"], "--synset"),
        (["build", "--labels-file", "{tmp}/none.txt"], "none.txt"),
        (["build", "--labels-file", "{tmp}/empty.txt"], "names no labels"),
        (["build", "--labels-file", "{tmp}"], "cannot be read"),
        (["build", "--builtin", "voc", "-o", "{tmp}"], "cannot write"),
        (["build", "--builtin", "voc", "-o", "{tmp}/no/such/dir/g.json"], "g.json"),
    ],
)
def test_errors_are_clean_messages_with_exit_code_2(
    vehicles: Path, tmp_path: Path, capsys: Any, argv: list[str], fragment: str
) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    filled = [arg.format(vehicles=vehicles, tmp=tmp_path) for arg in argv]
    code, stdout, stderr = run(capsys, *filled)
    assert code == 2
    assert stderr.startswith("mlattack graph: error: ")
    assert fragment in stderr
    assert "Traceback" not in stderr


def test_unknown_wordnet_label_is_named(wordnet: Any, capsys: Any) -> None:
    code, _, stderr = run(capsys, "build", "--wordnet", "dog", "xqzzyplonk")
    assert code == 2
    assert "'xqzzyplonk'" in stderr and "synsets=" in stderr


def test_an_action_is_required(capsys: Any) -> None:
    with pytest.raises(SystemExit) as info:
        main(["graph"])
    assert info.value.code == 2


@pytest.mark.parametrize("action", ["build --openimages", "show"])
def test_json_nested_too_deeply_is_one_line_naming_the_file(
    tmp_path: Path, capsys: Any, action: str
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code, stdout, stderr = run(capsys, *action.split(), str(deep))
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and "deep.json" in stderr and "nested too deeply" in stderr


def test_openimages_cycle_names_the_file(tmp_path: Path, capsys: Any) -> None:
    cyclic = tmp_path / "cyclic.json"
    node_b: dict[str, Any] = {"LabelName": "/m/b", "Subcategory": [{"LabelName": "/m/a"}]}
    cyclic.write_text(
        json.dumps(
            {
                "LabelName": "/m/0bl9f",
                "Subcategory": [{"LabelName": "/m/a", "Subcategory": [node_b]}],
            }
        )
    )
    code, _, stderr = run(capsys, "build", "--openimages", str(cyclic))
    assert code == 2 and "cyclic.json" in stderr and "cycle" in stderr


@pytest.mark.parametrize(
    ("extra", "psi"),
    [
        # swap: vehicle keeps bike (turning on) as its on child
        (["--targets", "car", "bike", "--direction", "mixed"], ["car", "bike"]),
        # turning vehicle on with car turning off: bike is the child picked
        (["--on", "car", "--targets", "vehicle", "car", "--direction", "mixed",
          "--logits", "car=3", "bike=1"], ["vehicle", "car", "bike"]),
    ],
)  # fmt: skip
def test_target_set_mixed_direction(
    vehicles: Path, capsys: Any, extra: list[str], psi: list[str]
) -> None:
    on = [] if "--on" in extra else ["--on", "vehicle", "car"]
    code, stdout, _ = run(capsys, "target-set", str(vehicles), *on, *extra)
    assert code == 0
    assert f"Psi (consistent target set, {len(psi)}): {', '.join(psi)}" in stdout


def test_target_set_repair_and_bad_options(vehicles: Path, capsys: Any) -> None:
    # car and bike on without their parent: the plain rules take car only; repair walks up
    # through the off vehicle and turns bike, hanging under it, off too
    code, stdout, _ = run(
        capsys, "target-set", str(vehicles), "--on", "car", "bike", "--targets", "car", "--repair"
    )
    assert code == 0 and "Psi (consistent target set, 2): car, bike" in stdout
    code, stdout, _ = run(
        capsys, "target-set", str(vehicles), "--on", "car", "bike", "--targets", "car"
    )
    assert code == 0 and "Psi (consistent target set, 1): car" in stdout
    code, _, stderr = run(
        capsys, "target-set", str(vehicles), "--targets", "car", "--direction", "on",
        "--logits", "car=high",
    )  # fmt: skip
    assert code == 2 and "--logits" in stderr and "'car=high'" in stderr
    code, _, stderr = run(capsys, "target-set", str(vehicles), "--on", "car", "--targets", "bike")
    assert code == 2 and "direction='mixed'" in stderr


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_labels_or_graph_file_is_refused_without_blocking(
    tmp_path: Path, capsys: Any
) -> None:
    fifo = tmp_path / "labels.txt"
    os.mkfifo(fifo)
    code, _, stderr = run(capsys, "build", "--labels-file", str(fifo))
    assert code == 2
    assert stderr.strip().endswith(
        "labels.txt' cannot be read: it is a FIFO (named pipe), not a regular file"
    )
    code, _, stderr = run(capsys, "show", str(fifo))
    assert code == 2
    assert stderr.strip().endswith(
        "labels.txt' cannot be read: it is a FIFO (named pipe), not a regular file"
    )
