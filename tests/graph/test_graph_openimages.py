"""The OpenImages hierarchy reader, on the real files and on small hand-written ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlattack.graph import LabelGraph
from mlattack.graph_sources.openimages import ENTITY_MID, load_openimages_graph

HIERARCHY = "bbox_labels_600_hierarchy.json"
BOXABLE = "class-descriptions-boxable.csv"


def multi_parent_count(graph: LabelGraph) -> int:
    return int(sum(len(graph.parents(i)) > 1 for i in range(len(graph))))


def test_real_hierarchy_601_classes_45_multi_parent(openimages_dir: Path) -> None:
    graph = load_openimages_graph(openimages_dir / HIERARCHY, openimages_dir / BOXABLE)
    assert len(graph) == 601
    assert multi_parent_count(graph) == 45
    assert "Entity" not in graph.names and ENTITY_MID not in graph.metadata["mids"].values()
    assert graph.metadata["source"] == "openimages"
    assert graph.metadata["mids"]["Tortoise"] == "/m/011k07"
    assert [graph.names[i] for i in graph.parents("Tortoise")] == ["Turtle"]
    assert graph.index("Animal") in graph.ancestors("Tortoise")
    # labels are ordered by MID, the order of the boxable CSV (and of models trained on it)
    mids = [graph.metadata["mids"][name] for name in graph.names]
    assert mids == sorted(mids)
    assert graph.is_consistent(np.zeros(601, dtype=bool))


def test_real_hierarchy_without_names_and_with_parts(openimages_dir: Path) -> None:
    by_mid = load_openimages_graph(openimages_dir / HIERARCHY)
    assert len(by_mid) == 601 and by_mid.names[0] == "/m/011k07"
    with_parts = load_openimages_graph(openimages_dir / HIERARCHY, include_parts=True)
    assert len(with_parts) == 601
    assert len(with_parts.edges) > len(by_mid.edges)
    part_edges = {tuple(edge) for edge in with_parts.metadata["part_edges"]}
    assert part_edges and all(
        with_parts.index(part) in with_parts.children(whole) for whole, part in part_edges
    )
    assert by_mid.metadata["part_edges"] == []


def write_tree(
    tmp_path: Path, tree: dict, csv_rows: list[str] | None = None
) -> tuple[Path, Path | None]:
    hierarchy = tmp_path / "h.json"
    hierarchy.write_text(json.dumps(tree))
    if csv_rows is None:
        return hierarchy, None
    descriptions = tmp_path / "d.csv"
    descriptions.write_text("\n".join(csv_rows) + "\n")
    return hierarchy, descriptions


SMALL_TREE = {
    "LabelName": ENTITY_MID,
    "Subcategory": [
        {
            "LabelName": "/m/b",
            "Subcategory": [{"LabelName": "/m/d"}],
            "Part": [{"LabelName": "/m/e"}],
        },
        {"LabelName": "/m/c", "Subcategory": [{"LabelName": "/m/d"}, {"LabelName": "/m/e"}]},
    ],
}


def test_small_tree_multi_parent_and_parts(tmp_path: Path) -> None:
    hierarchy, descriptions = write_tree(
        tmp_path,
        SMALL_TREE,
        ["LabelName,DisplayName", "/m/b,Bee", "/m/c,Sea", "/m/d,Dee", "/m/e,Eel"],
    )
    graph = load_openimages_graph(hierarchy, descriptions)
    assert graph.names == ("Bee", "Sea", "Dee", "Eel")
    assert graph.parents("Dee").tolist() == [0, 1]
    assert graph.parents("Eel").tolist() == [1]
    with_parts = load_openimages_graph(hierarchy, descriptions, include_parts=True)
    assert with_parts.parents("Eel").tolist() == [0, 1]
    assert with_parts.metadata["part_edges"] == [["Bee", "Eel"]]


def test_shared_display_names_are_disambiguated(tmp_path: Path) -> None:
    hierarchy, descriptions = write_tree(
        tmp_path, SMALL_TREE, ["/m/b,Bee", "/m/c,Bee", "/m/d,Dee", "/m/e,Eel"]
    )
    graph = load_openimages_graph(hierarchy, descriptions)
    assert graph.names == ("Bee (/m/b)", "Bee (/m/c)", "Dee", "Eel")
    assert graph.metadata["renamed"] == {"Bee (/m/b)": "Bee", "Bee (/m/c)": "Bee"}
    assert graph.metadata["mids"]["Bee (/m/c)"] == "/m/c"


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing.json"):
        load_openimages_graph(tmp_path / "nothing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2")
    with pytest.raises(ValueError, match="broken.json"):
        load_openimages_graph(broken)
    hierarchy, _ = write_tree(tmp_path, {"LabelName": ENTITY_MID, "Subcategory": [{"Name": "x"}]})
    with pytest.raises(ValueError, match="LabelName"):
        load_openimages_graph(hierarchy)
    hierarchy, descriptions = write_tree(tmp_path, SMALL_TREE, ["/m/b,Bee", "/m/c,Sea"])
    with pytest.raises(ValueError, match=r"d.csv.*/m/d"):
        load_openimages_graph(hierarchy, descriptions)
    hierarchy, descriptions = write_tree(tmp_path, SMALL_TREE, ["/m/b"])
    with pytest.raises(ValueError, match="d.csv.*line 1"):
        load_openimages_graph(hierarchy, descriptions)
    with pytest.raises(ValueError, match="missing.csv"):
        load_openimages_graph(hierarchy, tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="class descriptions file.*cannot be read"):
        load_openimages_graph(hierarchy, tmp_path)  # a directory
    with pytest.raises(ValueError, match="hierarchy file.*cannot be read"):
        load_openimages_graph(tmp_path)


def test_real_hierarchy_target_sets(openimages_dir: Path) -> None:
    """One leaf and its ancestors on: turning the leaf off takes every on label along, and
    turning it on from nothing needs exactly those ancestors."""
    graph = load_openimages_graph(openimages_dir / HIERARCHY)
    leaves = graph.leaves
    pred = np.zeros((leaves.size, len(graph)), dtype=bool)
    targets = np.zeros_like(pred)
    for row, leaf in enumerate(leaves):
        pred[row, leaf] = targets[row, leaf] = True
        pred[row, graph.ancestors(leaf)] = True
    assert graph.is_consistent(pred).all()
    assert np.array_equal(graph.consistent_target_set(pred, targets), pred)
    assert np.array_equal(
        graph.consistent_target_set(np.zeros_like(pred), targets, direction="on"), pred
    )


def test_strict_options_and_deep_or_cyclic_files(tmp_path: Path) -> None:
    hierarchy, _ = write_tree(tmp_path, SMALL_TREE)
    for bad in ("no", "false", 0, 1, None):
        with pytest.raises(TypeError, match="include_parts must be True or False"):
            load_openimages_graph(hierarchy, include_parts=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="include_parts"):
            load_openimages_graph(hierarchy, include_parts=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="hierarchy_json must be a path"):
        load_openimages_graph(3)  # type: ignore[arg-type]
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="deep.json.*nested too deeply"):
        load_openimages_graph(deep)
    cyclic = tmp_path / "cyclic.json"
    loop = {"LabelName": "/m/b", "Subcategory": [{"LabelName": "/m/a"}]}
    cyclic.write_text(json.dumps({"LabelName": "/m/a", "Subcategory": [loop]}))
    with pytest.raises(ValueError, match="cyclic.json.*cycle"):
        load_openimages_graph(cyclic)
    selfloop = tmp_path / "self.json"
    selfloop.write_text(json.dumps({"LabelName": "/m/a", "Subcategory": [{"LabelName": "/m/a"}]}))
    with pytest.raises(ValueError, match="self.json.*self-loop"):
        load_openimages_graph(selfloop)
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"Subcategory": [{"LabelName": f"/m/{i}"} for i in range(10_000)]}))
    with pytest.raises(ValueError, match=r"huge.json.*LabelName.*keys \['Subcategory'\]") as info:
        load_openimages_graph(huge)
    assert len(str(info.value)) < 300
