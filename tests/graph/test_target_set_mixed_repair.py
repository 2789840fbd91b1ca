"""Mixed target sets and ``repair=True`` on hand-made graphs with known answers, and against the
authors' ``compute_tree_off_loss`` (``../shared/data/official-reference/target_sets.npz``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_reference import ZOO, mask, named

from mlattack.graph import LabelGraph

# root -> mid -> {x, y}
FORK = LabelGraph(["root", "mid", "x", "y"], [("root", "mid"), ("mid", "x"), ("mid", "y")])
# top -> mid -> {a, b}; other -> b (b has two parents)
SHARED_CHILD = LabelGraph(
    ["top", "mid", "a", "b", "other"],
    [("top", "mid"), ("mid", "a"), ("mid", "b"), ("other", "b")],
)


# ----------------------------------------------------------------------------- mixed


@pytest.mark.parametrize(
    ("graph", "on", "targets", "expected"),
    [
        # swap dog for cat: animal keeps an on child (cat, turning on), so it stays
        (ZOO, ["animal", "dog"], ["dog", "cat"], {"dog", "cat"}),
        # the present target is no support: cat needs pet, which is off
        (ZOO, ["pet", "dog"], ["dog", "cat"], {"dog", "cat"}),
        # two trees: the halves do not meet, Psi is the plain union
        (ZOO, ["animal", "dog", "vehicle"], ["dog", "car"], {"dog", "animal", "car"}),
        (ZOO, ["vehicle", "bike"], ["bike", "plant"], {"bike", "vehicle", "plant"}),
        (FORK, ["root", "mid", "x"], ["x", "y"], {"x", "y"}),
    ],
)
def test_mixed_known_answers(
    graph: LabelGraph, on: list[str], targets: list[str], expected: set[str]
) -> None:
    pred = mask(graph, on)
    target_mask = mask(graph, targets)
    psi = graph.consistent_target_set(pred, target_mask, direction="mixed")
    assert named(graph, psi) == expected
    after = pred ^ psi
    assert graph.is_consistent(after, around=target_mask)
    assert not (after & target_mask & pred).any() and (after | ~target_mask | pred).all()


def test_mixed_batch_rows_are_independent_and_torch_parity() -> None:
    pred = np.stack([mask(ZOO, ["animal", "dog"]), mask(ZOO, ["animal", "dog"])])
    targets = np.stack([mask(ZOO, ["dog", "cat"]), mask(ZOO, ["dog"])])
    psi = ZOO.consistent_target_set(pred, targets, direction="mixed")
    assert [named(ZOO, row) for row in psi] == [{"dog", "cat"}, {"dog", "animal"}]
    as_torch = ZOO.consistent_target_set(
        torch.from_numpy(pred), torch.from_numpy(targets), direction="mixed"
    )
    assert isinstance(as_torch, torch.Tensor) and np.array_equal(as_torch.numpy(), psi)


def test_mixed_turn_on_picks_a_child_that_is_not_turning_off() -> None:
    # turning vehicle on needs a child on; car is being turned off, so bike is picked even
    # though car has the higher logit
    pred = mask(ZOO, ["car"])  # car on without its parent: already inconsistent
    logits = np.zeros(8)
    logits[ZOO.index("car")], logits[ZOO.index("bike")] = 5.0, -1.0
    psi = ZOO.consistent_target_set(
        pred, mask(ZOO, ["vehicle", "car"]), direction="mixed", logits=logits
    )
    assert named(ZOO, psi) == {"vehicle", "car", "bike"}


@pytest.mark.parametrize(
    ("graph", "on", "targets", "label"),
    [
        # cat needs animal on, which is a target to turn off
        (ZOO, ["animal", "dog"], ["animal", "cat"], "animal"),
        # turning root off takes mid (its only parent goes), which y needs
        (FORK, ["root", "mid", "x"], ["root", "y"], "y"),
    ],
)
def test_contradicting_halves_are_refused(
    graph: LabelGraph, on: list[str], targets: list[str], label: str
) -> None:
    with pytest.raises(ValueError, match=f"contradict.*'{label}'"):
        graph.consistent_target_set(mask(graph, on), mask(graph, targets), direction="mixed")


def test_one_sided_directions_name_the_option() -> None:
    pred = mask(ZOO, ["animal", "dog"])
    with pytest.raises(
        ValueError,
        match=r"label 'cat' is not present.*direction='off' requires every target to be "
        r"predicted present.*direction='mixed'",
    ):
        ZOO.consistent_target_set(pred, ["dog", "cat"])
    with pytest.raises(
        ValueError, match=r"'dog' is already present.*direction='on'.*direction='mixed'"
    ):
        ZOO.consistent_target_set(pred, ["dog", "cat"], direction="on")
    for bad in ("both", "OFF", None, 1):
        with pytest.raises(ValueError, match="direction must be one of 'off', 'on', 'mixed'"):
            ZOO.consistent_target_set(pred, ["dog"], direction=bad)  # type: ignore[arg-type]
    for bad in ("false", 0, 1, None):
        with pytest.raises(TypeError, match="official_closure must be True or False"):
            ZOO.consistent_target_set(pred, ["dog"], official_closure=bad)  # type: ignore[arg-type]
    assert named(
        ZOO, ZOO.consistent_target_set(pred, ["dog"], official_closure=np.bool_(True))
    ) == {
        "dog",
        "animal",
    }
    # The former name of the option is refused, naming the new one.
    for old in (True, False):
        with pytest.raises(TypeError, match="repair=.* was renamed official_closure="):
            ZOO.consistent_target_set(pred, ["dog"], repair=old)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- repair


@pytest.mark.parametrize(
    ("graph", "on", "targets", "plain", "repaired"),
    [
        # mid is off under an on root (inconsistent): the search walks up through mid; root
        # has no on child left and goes; the authors' code does the same
        (FORK, ["root", "x"], ["x"], {"x"}, {"x", "root"}),
        # x and y hang under mid, whose parent root is off: walking up through root turns
        # mid off, and y with it (y's only parent)
        (FORK, ["mid", "x", "y"], ["x"], {"x"}, {"x", "mid", "y"}),
        # going down from root through the off mid: x and y have no parent on left
        (FORK, ["root", "x", "y"], ["root"], {"root"}, {"root", "x", "y"}),
        # DAG-safe: b keeps its other parent, where the authors' code would turn it off
        (SHARED_CHILD, ["top", "a", "b", "other"], ["a"], {"a"}, {"a", "top"}),
        # consistent: the same as the plain rules
        (FORK, ["root", "mid", "x", "y"], ["x"], {"x"}, {"x"}),
        (FORK, ["root", "mid", "x"], ["x"], {"x", "mid", "root"}, {"x", "mid", "root"}),
    ],
)
def test_repair_known_answers(
    graph: LabelGraph, on: list[str], targets: list[str], plain: set[str], repaired: set[str]
) -> None:
    pred = mask(graph, on)
    target_mask = mask(graph, targets)
    assert named(graph, graph.consistent_target_set(pred, target_mask)) == plain
    psi = graph.consistent_target_set(pred, target_mask, official_closure=True)
    assert named(graph, psi) == repaired
    assert graph.is_consistent(pred & ~psi, around=target_mask)


def test_repair_only_changes_the_turn_off_half() -> None:
    pred = mask(FORK, ["root", "x"])
    logits = np.arange(4, dtype=float)
    assert np.array_equal(
        FORK.consistent_target_set(
            pred, ["y"], direction="on", logits=logits, official_closure=True
        ),
        FORK.consistent_target_set(pred, ["y"], direction="on", logits=logits),
    )


# ----------------------------------------------------------------------------- official data


@pytest.fixture(scope="module")
def official_target_sets(pytestconfig: pytest.Config) -> dict[str, np.ndarray]:
    # ../shared/data beside the project root, as SHARED_DATA in tests/conftest.py
    path = (
        pytestconfig.rootpath.parent / "shared" / "data" / "official-reference" / "target_sets.npz"
    )
    if not path.exists():
        pytest.skip(f"official reference data not found at {path}")
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def test_repair_reproduces_the_authors_target_sets(official_target_sets: dict) -> None:
    data = official_target_sets
    graph = LabelGraph([str(name) for name in data["label_names"]], data["edges"].tolist())
    assert graph == LabelGraph.builtin(str(data["graph"]))
    psi = graph.consistent_target_set(data["pred"], data["targets"], official_closure=True)
    assert len(psi) == 300
    mismatched = np.flatnonzero((psi != data["psi"]).any(axis=1))
    assert mismatched.size == 0, f"cases {mismatched.tolist()} differ"
    # the plain rules differ on noisy predictions only, and there repair matters
    plain = graph.consistent_target_set(data["pred"], data["targets"])
    consistent = data["pred_consistent"]
    assert np.array_equal(plain[consistent], psi[consistent])
    assert (plain[~consistent] != psi[~consistent]).any(axis=1).sum() > 0
    # the target order does not matter: ask for the two targets as a list, both ways round
    for case in np.flatnonzero(data["n_targets"] == 2)[:20]:
        first, second = data["target_index"][case].tolist()
        for order in ([first, second], [second, first]):
            got = graph.consistent_target_set(data["pred"][case], order, official_closure=True)
            assert np.array_equal(got, data["psi"][case])


def _one_wrong_label_cases(graph: LabelGraph) -> tuple[np.ndarray, np.ndarray]:
    """Every consistent VOC prediction of one or two leaves with their ancestors, one of its leaves
    as the target, and one other label flipped so that the prediction is inconsistent."""
    n = len(graph)
    chains = np.zeros((n, n), dtype=bool)
    for leaf in graph.leaves.tolist():
        chains[leaf, leaf] = True
        chains[leaf, graph.ancestors(leaf)] = True
    preds, targets = [], []
    leaves = graph.leaves.tolist()
    for i, first in enumerate(leaves):
        for second in [None, *leaves[i + 1 :]]:
            base = chains[first] | (chains[second] if second is not None else False)
            for target in [first] if second is None else [first, second]:
                for wrong in range(n):
                    if wrong != target:
                        pred = base.copy()
                        pred[wrong] ^= True
                        preds.append(pred)
                        targets.append(np.eye(n, dtype=bool)[target])
    pred_array, target_array = np.array(preds), np.array(targets)
    noisy = ~np.asarray(graph.is_consistent(pred_array))
    return pred_array[noisy], target_array[noisy]


def test_repair_leaves_no_local_inconsistency_with_one_wrong_clean_label() -> None:
    graph = LabelGraph.builtin("voc")
    pred, targets = _one_wrong_label_cases(graph)
    plain = graph.consistent_target_set(pred, targets)
    repaired = graph.consistent_target_set(pred, targets, official_closure=True)
    plain_bad = ~np.asarray(graph.is_consistent(pred & ~plain, around=targets))
    repaired_bad = ~np.asarray(graph.is_consistent(pred & ~repaired, around=targets))
    assert plain_bad.sum() > 0
    assert repaired_bad.sum() == 0
