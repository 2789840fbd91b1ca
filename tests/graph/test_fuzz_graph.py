"""Fuzzing the graph surface (issue 9): ``LabelGraph(...)``, ``LabelGraph.load`` on JSON files and
``LabelGraph.from_openimages`` on structurally mutated copies of the real OpenImages hierarchy.

Every input must either be accepted, and then give a graph whose invariants hold (names as given
and unique, acyclic, consistent target sets that contain the targets and keep the prediction
consistent), or be refused with a ``TypeError``/``ValueError`` whose message names the bad part
(the argument or item for the constructor, the file for a file).  Anything else (another
exception, a hang, a silently wrong graph) fails.  Outcomes are counted and printed by the last
test (``pytest -s``).  Runs under the deterministic hypothesis profile of ``tests/conftest.py``.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlattack.graph import LabelGraph

OUTCOMES: Counter[tuple[str, str]] = Counter()
_file_numbers = itertools.count()


def check_invariants(graph: LabelGraph, rng: np.random.Generator) -> None:
    """Structure and consistent-target-set invariants of an accepted graph."""
    names = graph.names
    assert len(set(names)) == len(names) and all(isinstance(name, str) and name for name in names)
    edges = graph.edges
    assert edges.dtype == np.int64 and edges.ndim == 2 and edges.shape[1] == 2
    if edges.size:
        assert edges.min() >= 0 and edges.max() < len(graph)
        # the longest-path depth strictly grows along every edge: no cycle
        assert (graph.depths[edges[:, 1]] > graph.depths[edges[:, 0]]).all()
    if not len(graph):
        return
    # consistent predictions: random leaves with all their ancestors; random on labels as targets
    pred = np.zeros((3, len(graph)), dtype=bool)
    for row in pred:
        for leaf in rng.choice(graph.leaves, size=min(2, graph.leaves.size), replace=False):
            row[leaf] = True
            row[graph.ancestors(int(leaf))] = True
    targets = pred & (rng.random(pred.shape) < 0.3)
    for repair in (False, True):
        psi = graph.consistent_target_set(pred, targets, official_closure=repair)
        assert (psi | ~targets).all() and not (psi & ~pred).any()
        assert np.asarray(graph.is_consistent(pred & ~psi, around=targets)).all()


def record(test: str, outcome: str) -> None:
    OUTCOMES[(test, outcome)] += 1


# ----------------------------------------------------------------------------- constructor

label_names = st.text(alphabet="abcdefgh", min_size=0, max_size=3)
label_refs = st.one_of(
    label_names,
    st.integers(-2, 8),
    st.integers(0, 5).map(np.int64),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
)
name_collections = st.one_of(
    st.lists(label_names, max_size=8),
    st.lists(label_names, max_size=8, unique=True).map(tuple),
    st.lists(label_names, min_size=1, max_size=8, unique=True).map(np.array),
    st.lists(st.one_of(label_names, st.integers(), st.none()), max_size=4),
    st.sets(label_names, max_size=4),
    st.dictionaries(label_names, st.integers(), max_size=3),
    st.none(),
    st.integers(),
    st.integers().map(np.int64),
    label_names,
)
single_edges = st.one_of(
    st.tuples(label_refs, label_refs),
    st.lists(label_refs, min_size=0, max_size=3),
    st.frozensets(label_names, min_size=1, max_size=2),
    st.dictionaries(st.sampled_from([0, 1, "parent", "child"]), label_refs, max_size=2),
    label_names,
    st.integers(),
    st.none(),
)
edge_collections = st.one_of(
    st.lists(single_edges, max_size=10),
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=12),
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=12).map(
        lambda pairs: np.array(pairs, dtype=np.int64).reshape(-1, 2)
    ),
    st.frozensets(st.tuples(label_names, label_names), max_size=4),
    st.dictionaries(label_names, label_names, max_size=3),
    st.none(),
    st.integers(),
)


@st.composite
def well_formed_arguments(draw: st.DrawFn) -> tuple[Any, Any]:
    """Unique names in an ordered container and edges between them, by name or index; the
    edges may still repeat, loop or close a cycle."""
    names = draw(
        st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=3), max_size=8, unique=True)
    )
    container = draw(st.sampled_from([list, tuple, np.array])) if names else list
    if not names:
        return container(names), []
    ends = st.one_of(
        st.sampled_from(names),
        st.integers(0, len(names) - 1),
        st.integers(0, len(names) - 1).map(np.int64),
    )
    # low -> high index: acyclic except where low == high (a self-loop)
    forward = st.tuples(st.integers(0, len(names) - 1), st.integers(0, len(names) - 1)).map(
        lambda pair: (min(pair), max(pair))
    )
    edges = draw(
        st.one_of(
            st.lists(forward, max_size=10),  # mostly acyclic
            st.lists(st.tuples(ends, ends), max_size=6),
        )
    )
    return container(names), edges


constructor_arguments = st.one_of(
    well_formed_arguments(),
    well_formed_arguments(),
    st.tuples(name_collections, edge_collections),
)


@given(constructor_arguments, st.integers(0, 2**32 - 1))
def test_constructor_accepts_or_names_the_bad_argument(
    arguments: tuple[Any, Any], seed: int
) -> None:
    names, edges = arguments
    try:
        graph = LabelGraph(names, edges)
    except (TypeError, ValueError) as error:
        record("constructor", type(error).__name__)
        assert re.search(r"names|edge|label", str(error)), str(error)
        return
    record("constructor", "accepted")
    given_names = names.tolist() if isinstance(names, np.ndarray) else list(names)
    assert list(graph.names) == given_names
    check_invariants(graph, np.random.default_rng(seed))


# ----------------------------------------------------------------------------- JSON files

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), label_names),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(label_names, inner)),
    max_leaves=8,
)


@st.composite
def graph_documents(draw: st.DrawFn) -> str:
    """Text of a label graph file: a valid document with some keys replaced, a truncation of
    one, arbitrary JSON, or JSON nested deeper than the parser's recursion limit."""
    n = draw(st.integers(0, 6))
    names = [f"l{i}" for i in range(n)]
    pairs = [[names[i], names[j]] for i in range(n) for j in range(i + 1, n)]
    document: dict[str, Any] = {
        "schema": "mlattack.label_graph",
        "version": 1,
        "names": names,
        "edges": draw(st.lists(st.sampled_from(pairs), max_size=6)) if pairs else [],
        "metadata": {"source": "fuzz"},
    }
    for key in draw(st.lists(st.sampled_from(sorted(document)), max_size=2, unique=True)):
        if draw(st.booleans()):
            document[key] = draw(json_values)
        else:
            del document[key]
    if n >= 2 and draw(st.booleans()):  # a back edge: a cycle, or a self-loop
        document["edges"] = [*document.get("edges", []), [names[-1], draw(st.sampled_from(names))]]
    text = json.dumps(document)
    kind = draw(st.sampled_from(["document", "truncated", "any json", "deep"]))
    if kind == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "any json":
        return json.dumps(draw(json_values))
    if kind == "deep":
        depth = draw(st.integers(2_000, 20_000))
        return '{"metadata": ' + "[" * depth + "]" * depth + "}"
    return text


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_graph")


def _write(folder: Path, stem: str, text: str) -> Path:
    path = folder / f"{stem}_{next(_file_numbers)}.json"
    path.write_text(text, encoding="utf-8")
    return path


@given(graph_documents(), st.integers(0, 2**32 - 1))
def test_load_accepts_or_names_the_file(fuzz_dir: Path, text: str, seed: int) -> None:
    path = _write(fuzz_dir, "graph", text)
    try:
        graph = LabelGraph.load(path)
    except ValueError as error:  # load reports every problem as a ValueError naming the file
        record("load", type(error).__name__)
        assert path.name in str(error), str(error)
        return
    record("load", "accepted")
    check_invariants(graph, np.random.default_rng(seed))
    assert LabelGraph.from_json(json.loads(json.dumps(graph.to_json()))) == graph


# ----------------------------------------------------------------------------- OpenImages

MUTATIONS = (
    "none",
    "drop LabelName",
    "LabelName not a string",
    "empty LabelName",
    "children not a list",
    "child not an object",
    "self-loop",
    "cycle",
    "copy subtree elsewhere",
    "junk Part",
    "truncate",
    "top level not an object",
    "deep",
)
#: Mutations that must be refused, with a word the message must contain besides the file name.
MUST_REFUSE = {
    "drop LabelName": "LabelName",
    "LabelName not a string": "LabelName",
    "empty LabelName": "empty",
    "children not a list": "must be a list",
    "child not an object": "LabelName",
    "self-loop": "self-loop",
    "cycle": "cycle",
    "truncate": "not valid JSON",
    "top level not an object": "JSON object",
    "deep": "nested too deeply",
}


def _nodes_with_paths(tree: dict[str, Any]) -> list[tuple[dict[str, Any], list[str], bool]]:
    """Every node below the root, with the MIDs of its strict ancestors (the root's included)
    and whether it hangs below a ``Part`` list (read only with ``include_parts``)."""
    found: list[tuple[dict[str, Any], list[str], bool]] = []
    stack: list[tuple[dict[str, Any], list[str], bool]] = [(tree, [], False)]
    while stack:
        node, above, in_part = stack.pop()
        for key in ("Subcategory", "Part"):
            for child in node.get(key, []):
                entry = (child, [*above, node["LabelName"]], in_part or key == "Part")
                found.append(entry)
                stack.append(entry)
    return found


class Hierarchy(str):
    """The hierarchy file's text, with a short repr for hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"<OpenImages hierarchy, {len(self)} characters>"


@pytest.fixture(scope="module")
def hierarchy_text(openimages_dir: Path) -> str:
    return Hierarchy((openimages_dir / "bbox_labels_600_hierarchy.json").read_text("utf-8"))


@given(st.sampled_from(MUTATIONS), st.data())
def test_mutated_openimages_hierarchy(
    fuzz_dir: Path, hierarchy_text: str, mutation: str, data: st.DataObject
) -> None:
    tree = json.loads(hierarchy_text)
    nodes = _nodes_with_paths(tree)
    node, above, in_part = nodes[data.draw(st.integers(0, len(nodes) - 1), label="node")]
    children = node.setdefault("Subcategory", [])
    if mutation == "drop LabelName":
        del node["LabelName"]
    elif mutation == "LabelName not a string":
        node["LabelName"] = data.draw(st.one_of(st.none(), st.integers(), st.lists(label_names)))
    elif mutation == "empty LabelName":
        node["LabelName"] = ""
    elif mutation == "children not a list":
        node[data.draw(st.sampled_from(["Subcategory", "Part"]))] = data.draw(
            st.one_of(st.integers(), label_names, st.dictionaries(label_names, st.integers()))
        )
    elif mutation == "child not an object":
        children.append(data.draw(st.one_of(st.integers(), label_names, st.none())))
    elif mutation == "self-loop":
        children.append({"LabelName": node["LabelName"]})
    elif mutation == "cycle" and len(above) > 1:  # above[0] is Entity, which is dropped
        children.append({"LabelName": data.draw(st.sampled_from(above[1:]))})
    elif mutation == "cycle":
        mutation = "none"  # a child of Entity has no ancestor to loop back to
    elif mutation == "copy subtree elsewhere":
        other, _, _ = nodes[data.draw(st.integers(0, len(nodes) - 1), label="other")]
        if other is not node and node["LabelName"] not in above:
            other.setdefault("Subcategory", []).append(copy.deepcopy(node))
    elif mutation == "junk Part":
        node["Part"] = [{"LabelName": "/m/part"}, data.draw(json_values)]
    text = json.dumps(tree)
    if mutation == "truncate":
        text = text[: data.draw(st.integers(0, len(text) - 2))]
    elif mutation == "top level not an object":
        text = json.dumps([tree])
    elif mutation == "deep":
        depth = data.draw(st.integers(2_000, 20_000))
        text = "[" * depth + "]" * depth
    path = _write(fuzz_dir, "hierarchy", text)
    include_parts = data.draw(st.booleans(), label="include_parts")
    must_refuse = mutation in MUST_REFUSE and (
        include_parts or not in_part or mutation in ("truncate", "top level not an object", "deep")
    )
    try:
        graph = LabelGraph.from_openimages(path, include_parts=include_parts)
    except (TypeError, ValueError) as error:
        record("openimages", type(error).__name__)
        assert path.name in str(error), str(error)
        if must_refuse:
            assert MUST_REFUSE[mutation] in str(error), (mutation, str(error))
        return
    record("openimages", "accepted")
    # a malformed node below a Part list is ignored without include_parts, nowhere else
    assert not must_refuse, f"{mutation} was accepted"
    assert graph.metadata["include_parts"] is include_parts
    check_invariants(graph, np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))))


def test_every_fuzzer_saw_both_outcomes() -> None:
    """Prints the counts; each fuzzer must have produced accepted and refused inputs."""
    if not OUTCOMES:
        pytest.skip("run together with the fuzz tests above")
    for test in sorted({test for test, _ in OUTCOMES}):
        counts = {outcome: n for (name, outcome), n in sorted(OUTCOMES.items()) if name == test}
        print(f"fuzz {test}: {counts}")
        assert counts.get("accepted", 0) > 0 and sum(counts.values()) > counts["accepted"]
