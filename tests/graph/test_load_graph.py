"""``load_graph(spec)``: the one grammar that names a graph, for the library, configs and CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlattack.data import resolve_graph
from mlattack.graph import LabelGraph
from mlattack.graph_sources import load_graph
from mlattack.graph_sources.builtin import load_builtin
from mlattack.graph_sources.label_sets import label_set_graph
from mlattack.graph_sources.openimages import load_openimages_graph


def test_each_form_reads_its_source(tmp_path: Path, openimages_dir: Path) -> None:
    graph = LabelGraph(["animal", "dog"], [("animal", "dog")])
    assert load_graph(graph) is graph
    assert load_graph("builtin:voc") == load_builtin("voc")
    assert load_graph("label-set:objects") == label_set_graph("objects")
    assert load_graph(f"openimages:{openimages_dir}") == load_openimages_graph(
        openimages_dir / "bbox_labels_600_hierarchy.json",
        openimages_dir / "class-descriptions-boxable.csv",
    )
    graph.save(tmp_path / "g.json")
    assert load_graph(tmp_path / "g.json") == graph
    assert load_graph(str(tmp_path / "g.json")) == graph
    assert load_graph("g.json", base_dir=tmp_path) == graph


def test_openimages_folder_relative_to_base_dir_and_without_names(
    tmp_path: Path, openimages_dir: Path
) -> None:
    (tmp_path / "oi").mkdir()
    (tmp_path / "oi" / "bbox_labels_600_hierarchy.json").write_bytes(
        (openimages_dir / "bbox_labels_600_hierarchy.json").read_bytes()
    )
    graph = load_graph("openimages:oi", base_dir=tmp_path)
    assert len(graph) == 601 and all(name.startswith("/m/") for name in graph.names)


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("voc", FileNotFoundError, "the built-in graph is named 'builtin:voc'"),
        ("nope.json", FileNotFoundError, "label graph file not found: nope.json"),
        ("builtin:coco", ValueError, "available: voc, nus-wide"),
        ("label-set:coco", ValueError, "unknown label set 'coco'"),
        ("openimages:/no/such/folder", FileNotFoundError, "OpenImages hierarchy not found"),
        (3, TypeError, "got int"),
        (None, TypeError, "got NoneType"),
    ],
)
def test_bad_specs_are_named(spec: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        load_graph(spec)  # type: ignore[arg-type]


def test_the_datasets_graph_option_uses_the_same_grammar() -> None:
    assert resolve_graph(None) is None
    assert resolve_graph("label-set:imagenet-auto") == label_set_graph("imagenet-auto")
    with pytest.raises(FileNotFoundError, match="builtin:voc"):
        resolve_graph("voc")
