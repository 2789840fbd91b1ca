"""One grammar that names a label graph, shared by the library, the configs and the command line.

``load_graph(spec)`` accepts:

- a :class:`~mlattack.graph.LabelGraph`: returned as it is;
- ``"builtin:NAME"``: a packaged graph (``voc``, ``nus-wide``; :mod:`.builtin`);
- ``"label-set:NAME"``: the graph of a built-in ImageNet label set (``objects``,
  ``imagenet-auto``, ...; :mod:`.label_sets`);
- ``"openimages:DIR"``: the OpenImages box hierarchy read from ``DIR``
  (``bbox_labels_600_hierarchy.json``, named by ``class-descriptions-boxable.csv`` when that file
  is there; :mod:`.openimages`);
- any other string, or a :class:`~pathlib.Path`: a LabelGraph JSON file (:meth:`LabelGraph.save`).

Relative paths are taken as given when they exist, else relative to ``base_dir`` (a config file's
folder). A bare built-in name such as ``"voc"`` is a path like any other: the message of the
``FileNotFoundError`` says to write ``builtin:voc``.
"""

from __future__ import annotations

from pathlib import Path

from mlattack.graph import LabelGraph

__all__ = ["GRAPH_SPEC_HELP", "load_graph"]

#: One line for command-line help texts.
GRAPH_SPEC_HELP = (
    "a label graph: builtin:NAME (voc, nus-wide), label-set:NAME (an ImageNet label set: objects, "
    "imagenet-auto, ...), "
    "openimages:DIR, or the path of a graph JSON file"
)

_OPENIMAGES_HIERARCHY = "bbox_labels_600_hierarchy.json"
_OPENIMAGES_NAMES = "class-descriptions-boxable.csv"


def _located(path: Path, base_dir: Path | None) -> Path:
    if path.exists() or path.is_absolute() or base_dir is None:
        return path
    return base_dir / path


def load_graph(spec: LabelGraph | str | Path, *, base_dir: str | Path | None = None) -> LabelGraph:
    """The label graph that ``spec`` names (the grammar is in the module's docstring).

    Raises:
        TypeError: ``spec`` is neither a LabelGraph, a str nor a Path.
        ValueError: an unknown built-in graph or label set, or a file that is not a valid graph
            (the message names it).
        FileNotFoundError: a graph file or OpenImages folder that does not exist.
    """
    if isinstance(spec, LabelGraph):
        return spec
    if not isinstance(spec, str | Path):
        raise TypeError(
            "graph must be a LabelGraph, 'builtin:NAME', 'label-set:NAME', 'openimages:DIR' or "
            f"the path of a graph JSON file, got {type(spec).__name__}"
        )
    base = None if base_dir is None else Path(base_dir)
    text = str(spec)
    if isinstance(spec, str) and text.startswith("builtin:"):
        from mlattack.graph_sources.builtin import load_builtin

        return load_builtin(text.removeprefix("builtin:"))
    if isinstance(spec, str) and text.startswith("label-set:"):
        from mlattack.graph_sources.label_sets import label_set_graph

        return label_set_graph(text.removeprefix("label-set:"))
    if isinstance(spec, str) and text.startswith("openimages:"):
        from mlattack.graph_sources.openimages import load_openimages_graph

        folder = _located(Path(text.removeprefix("openimages:")), base)
        hierarchy = folder / _OPENIMAGES_HIERARCHY
        if not hierarchy.is_file():
            raise FileNotFoundError(f"graph {text!r}: OpenImages hierarchy not found: {hierarchy}")
        names = folder / _OPENIMAGES_NAMES
        return load_openimages_graph(hierarchy, names if names.is_file() else None)
    path = _located(Path(text), base)
    if not path.exists():  # a FIFO or a folder is refused by name when it is read
        from mlattack.graph_sources.builtin import available_builtin

        hint = (
            f" (the built-in graph is named 'builtin:{text}')"
            if text in available_builtin()
            else ""
        )
        raise FileNotFoundError(f"label graph file not found: {text}{hint}")
    return LabelGraph.load(path)
