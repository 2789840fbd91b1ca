"""``mlattack graph``: build label graphs, print them, and compute consistent target sets.

mlattack graph build --wordnet dog cat car bicycle -o animals.json
mlattack graph build --labels-file labels.txt --synset tvmonitor=television_receiver.n.01 -o g.json
mlattack graph build --openimages bbox_labels_600_hierarchy.json --names classes.csv -o oi.json
mlattack graph show voc
mlattack graph target-set voc --on dog carnivore mammal animal organism --targets dog
mlattack graph target-set voc --on dog carnivore --targets dog cat --direction mixed --repair
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mlattack.graph import DIRECTIONS, LabelGraph

_GRAPH_HELP = "a label graph JSON file, or a built-in graph name (voc, nus-wide)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "graph",
        help="build, print and query label graphs",
        description="Build label graphs (WordNet, OpenImages, built-in), print them as trees "
        "with statistics, and compute consistent target sets.",
    )
    actions = parser.add_subparsers(dest="graph_command", metavar="ACTION")
    actions.required = True

    build = actions.add_parser(
        "build",
        help="build a graph and write it as JSON",
        description="Build a label graph from WordNet labels, the OpenImages hierarchy or a "
        "built-in graph, and write its JSON document.",
    )
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--wordnet", nargs="+", metavar="LABEL", help="label names to place in a WordNet tree"
    )
    source.add_argument(
        "--labels-file",
        type=Path,
        metavar="FILE",
        help="WordNet labels, one per line ('label' or 'label=synset'; '#' starts a comment)",
    )
    source.add_argument(
        "--openimages",
        type=Path,
        metavar="HIERARCHY_JSON",
        help="OpenImages bbox_labels_600_hierarchy.json",
    )
    source.add_argument("--builtin", metavar="NAME", help="a built-in graph (voc, nus-wide)")
    build.add_argument(
        "--synset",
        action="append",
        default=[],
        metavar="LABEL=SYNSET",
        help="WordNet synset for a label, e.g. tvmonitor=television_receiver.n.01 (repeatable)",
    )
    build.add_argument(
        "--min-shared",
        type=int,
        metavar="N",
        help="WordNet: keep abstract classes shared by at least N labels (default 2)",
    )
    build.add_argument(
        "--names", type=Path, metavar="CSV", help="OpenImages class-descriptions CSV (MID,name)"
    )
    build.add_argument(
        "--include-parts", action="store_true", help="OpenImages: also add Part edges"
    )
    build.add_argument(
        "-o", "--output", type=Path, metavar="OUT_JSON", help="where to write (default: stdout)"
    )
    build.set_defaults(func=_build)

    show = actions.add_parser(
        "show",
        help="print a graph as an indented tree, with statistics",
        description="Print a graph as an indented tree (a node with several parents appears "
        "under each of them, marked) followed by its statistics.",
    )
    show.add_argument("graph", metavar="GRAPH", help=_GRAPH_HELP)
    show.add_argument(
        "--max-depth", type=int, metavar="D", help="print the tree only down to depth D"
    )
    show.add_argument("--stats-only", action="store_true", help="print only the statistics")
    show.set_defaults(func=_show)

    target_set = actions.add_parser(
        "target-set",
        help="print the consistent target set (Psi) of a prediction and targets",
        description="Grow the targets (Omega) into the least consistent target set (Psi) "
        "for a prediction given as the labels predicted present.",
    )
    target_set.add_argument("graph", metavar="GRAPH", help=_GRAPH_HELP)
    target_set.add_argument(
        "--on", nargs="*", default=[], metavar="LABEL", help="labels predicted present"
    )
    target_set.add_argument(
        "--targets", nargs="+", required=True, metavar="LABEL", help="labels to flip (Omega)"
    )
    target_set.add_argument(
        "--direction",
        choices=DIRECTIONS,
        default="off",
        help="off: turn present targets off (default); on: turn absent targets on; "
        "mixed: both, each target by its state in the prediction",
    )
    target_set.add_argument(
        "--logits",
        nargs="*",
        default=[],
        metavar="LABEL=LOGIT",
        help="clean logits of labels that turning a target on may pick as a child "
        "(the highest wins; unnamed labels get -inf)",
    )
    target_set.add_argument(
        "--repair",
        action="store_true",
        help="the authors' rule on inconsistent predictions: also turn off on labels hanging "
        "under an off label the search walks through",
    )
    target_set.set_defaults(func=_target_set)


# ------------------------------------------------------------------------------------- build
def _parse_synset_option(text: str, where: str) -> tuple[str, str]:
    label, sep, synset = text.partition("=")
    if not sep or not label.strip() or not synset.strip():
        raise ValueError(
            f"{where}: expected LABEL=SYNSET (e.g. tvmonitor=television_receiver.n.01), got {text!r}"
        )
    return label.strip(), synset.strip()


def _read_labels_file(path: Path) -> tuple[list[str], dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"labels file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:  # a directory, no permission, not text
        raise ValueError(f"labels file {str(path)!r} cannot be read: {error}") from None
    labels: list[str] = []
    synsets: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" in line:
            label, synset = _parse_synset_option(line, f"{path}:{number}")
            synsets[label] = synset
        else:
            label = line
        labels.append(label)
    if not labels:
        raise ValueError(f"labels file {str(path)!r} names no labels")
    return labels, synsets


def _reject_options(source: str, options: dict[str, bool]) -> None:
    given = [flag for flag, used in options.items() if used]
    if given:
        raise ValueError(f"{', '.join(given)} cannot be used with {source}")


def _build_graph(args: argparse.Namespace) -> LabelGraph:
    wordnet_only = {"--synset": bool(args.synset), "--min-shared": args.min_shared is not None}
    openimages_only = {"--names": args.names is not None, "--include-parts": args.include_parts}
    if args.openimages is not None:
        _reject_options("--openimages", wordnet_only)
        for path in (args.openimages, args.names):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"OpenImages file {str(path)!r} does not exist")
        return LabelGraph.from_openimages(
            args.openimages, args.names, include_parts=args.include_parts
        )
    if args.builtin is not None:
        _reject_options("--builtin", {**wordnet_only, **openimages_only})
        from mlattack.graph_sources.builtin import load_builtin

        return load_builtin(args.builtin)

    _reject_options("--wordnet/--labels-file", openimages_only)
    if args.labels_file is not None:
        labels, synsets = _read_labels_file(args.labels_file)
    else:
        labels, synsets = list(args.wordnet), {}
    for text in args.synset:
        label, synset = _parse_synset_option(text, "--synset")
        synsets[label] = synset
    from mlattack.graph_sources.wordnet import build_wordnet_graph

    min_shared = 2 if args.min_shared is None else args.min_shared
    return build_wordnet_graph(labels, synsets=synsets, min_shared=min_shared)


def _build(args: argparse.Namespace) -> int:
    graph = _build_graph(args)
    if args.output is None:
        json.dump(graph.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        try:
            graph.save(args.output)
        except OSError as error:  # a missing folder, a directory, no permission
            raise ValueError(f"cannot write {str(args.output)!r}: {error.strerror}") from None
        print(f"wrote {len(graph)} labels, {len(graph.edges)} edges to {args.output}")
    return 0


# -------------------------------------------------------------------------------------- show
def _load_graph(spec: str) -> LabelGraph:
    from mlattack.graph_sources.builtin import available_builtin, load_builtin

    if Path(spec).is_file():
        return LabelGraph.load(spec)
    if spec in available_builtin():
        return load_builtin(spec)
    raise FileNotFoundError(
        f"graph file {spec!r} does not exist (nor is it a built-in graph: "
        f"{', '.join(available_builtin())})"
    )


def _tree_lines(graph: LabelGraph, max_depth: int | None) -> list[str]:
    names = graph.names
    parent_lists = [graph.parents(i).tolist() for i in range(len(graph))]
    expanded: set[int] = set()
    lines: list[str] = []
    # Depth-first with an explicit stack (deep graphs must not hit the recursion limit).
    stack: list[tuple[int, int]] = [(int(root), 0) for root in reversed(graph.roots.tolist())]
    while stack:
        node, level = stack.pop()
        children = graph.children(node).tolist()
        text = "  " * level + names[node]
        if len(parent_lists[node]) > 1:
            others = ", ".join(names[p] for p in parent_lists[node])
            text += f"  [{len(parent_lists[node])} parents: {others}]"
        if node in expanded:
            if children:
                text += "  (children listed above)"
            lines.append(text)
            continue
        expanded.add(node)
        if children and max_depth is not None and level >= max_depth:
            text += f"  (+{len(children)} children)"
            children = []
        lines.append(text)
        stack.extend((int(child), level + 1) for child in reversed(children))
    return lines


def _stats_line(graph: LabelGraph) -> str:
    n = len(graph)
    depth = max((graph.depth(i) for i in range(n)), default=0)
    multi_parent = sum(1 for i in range(n) if len(graph.parents(i)) > 1)
    return (
        f"labels: {n}  edges: {len(graph.edges)}  roots: {len(graph.roots)}  "
        f"leaves: {len(graph.leaves)}  depth: {depth}  multi-parent: {multi_parent}"
    )


def _show(args: argparse.Namespace) -> int:
    if args.max_depth is not None and args.max_depth < 0:
        raise ValueError(f"--max-depth must be >= 0, got {args.max_depth}")
    graph = _load_graph(args.graph)
    if not args.stats_only:
        for line in _tree_lines(graph, args.max_depth):
            print(line)
        print()
    print(_stats_line(graph))
    return 0


# -------------------------------------------------------------------------------- target-set
def _label_mask(graph: LabelGraph, labels: list[str], flag: str) -> np.ndarray:
    known = set(graph.names)
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ValueError(f"{flag}: unknown label(s) {unknown} (not in the graph)")
    mask = np.zeros(len(graph), dtype=bool)
    mask[[graph.index(label) for label in labels]] = True
    return mask


def _logit_values(graph: LabelGraph, items: list[str]) -> np.ndarray:
    logits = np.full(len(graph), -np.inf)
    for item in items:
        label, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not np.isfinite(number):
            raise ValueError(f"--logits: expected LABEL=LOGIT with a finite number, got {item!r}")
        logits[_label_mask(graph, [label], "--logits")] = number
    return logits


def _target_set(args: argparse.Namespace) -> int:
    graph = _load_graph(args.graph)
    pred = _label_mask(graph, args.on, "--on")
    targets = _label_mask(graph, args.targets, "--targets")
    logits = _logit_values(graph, args.logits) if args.logits else None
    psi = np.asarray(
        graph.consistent_target_set(
            pred, targets, direction=args.direction, logits=logits, official_closure=args.repair
        )
    )
    names = graph.names
    omega_names = [names[i] for i in np.flatnonzero(targets)]
    psi_names = [names[i] for i in np.flatnonzero(psi)]
    added = [names[i] for i in np.flatnonzero(psi & ~targets)]
    print(f"Omega (targets, {len(omega_names)}): {', '.join(omega_names)}")
    print(f"Psi (consistent target set, {len(psi_names)}): {', '.join(psi_names)}")
    print(f"added by the graph ({len(added)}): {', '.join(added) if added else '-'}")
    return 0
