"""Property tests (hypothesis): the vectorised consistency code against the set-based reference
of the definitions, and the invariances the closure must have."""

from __future__ import annotations

import numpy as np
from graph_reference import (
    closure_region,
    neighbour_sets,
    reference_repair_turn_off,
    reference_turn_off,
    reference_violations,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlattack.graph import LabelGraph

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def dags(draw: st.DrawFn, max_labels: int = 10) -> tuple[int, list[tuple[int, int]]]:
    """A random DAG: edges only go from a lower to a higher position of a hidden order,
    which is then shuffled so that label indices do not follow it."""
    n = draw(st.integers(1, max_labels))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=2 * n, unique=True)) if pairs else []
    shuffle = draw(st.permutations(range(n)))
    return n, [(shuffle[i], shuffle[j]) for i, j in chosen]


@st.composite
def cases(
    draw: st.DrawFn, batch: int = 4
) -> tuple[LabelGraph, list[tuple[int, int]], np.ndarray, np.ndarray]:
    """A DAG, predictions [B, C] (any, not necessarily consistent) and turn-off targets."""
    n, edges = draw(dags())
    graph = LabelGraph([f"l{i}" for i in range(n)], edges)
    pred = np.array(
        draw(
            st.lists(
                st.lists(st.booleans(), min_size=n, max_size=n), min_size=batch, max_size=batch
            )
        )
    )
    chooser = np.array(
        draw(
            st.lists(
                st.lists(st.booleans(), min_size=n, max_size=n), min_size=batch, max_size=batch
            )
        )
    )
    return graph, edges, pred, pred & chooser


def consistent_pred(n: int, edges: list[tuple[int, int]], leaf_choice: list[bool]) -> np.ndarray:
    """Chosen leaves and all their ancestors: consistent by construction."""
    graph = LabelGraph([f"l{i}" for i in range(n)], edges)
    on = np.zeros(n, dtype=bool)
    for leaf, take in zip(graph.leaves.tolist(), leaf_choice, strict=False):
        if take:
            on[leaf] = True
            on[graph.ancestors(leaf)] = True
    return on


@SETTINGS
@given(cases())
def test_violations_match_reference(case: tuple) -> None:
    graph, edges, pred, _ = case
    got = graph.violations(pred)
    for row in range(pred.shape[0]):
        assert got[row].tolist() == reference_violations(len(graph), edges, pred[row].tolist())


@SETTINGS
@given(cases())
def test_turn_off_matches_reference_and_basic_properties(case: tuple) -> None:
    graph, edges, pred, targets = case
    psi = graph.consistent_target_set(pred, targets)
    for row in range(pred.shape[0]):
        expected = reference_turn_off(
            len(graph), edges, pred[row].tolist(), np.flatnonzero(targets[row]).tolist()
        )
        assert set(np.flatnonzero(psi[row]).tolist()) == expected
    assert (psi | ~targets).all(), "Psi must contain the targets"
    assert not (psi & ~pred).any(), "Psi holds only labels that are on"


@SETTINGS
@given(dags(), st.data())
def test_turning_psi_off_keeps_local_consistency(dag: tuple, data: st.DataObject) -> None:
    n, edges = dag
    graph = LabelGraph([f"l{i}" for i in range(n)], edges)
    choice = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    pred = consistent_pred(n, edges, choice)
    on_labels = np.flatnonzero(pred)
    if on_labels.size == 0:
        return
    picked = data.draw(
        st.lists(st.sampled_from(on_labels.tolist()), min_size=1, max_size=3, unique=True)
    )
    targets = np.zeros(n, dtype=bool)
    targets[picked] = True
    assert graph.is_consistent(pred, around=targets)
    psi = graph.consistent_target_set(pred, targets)
    assert graph.is_consistent(pred & ~psi, around=targets)
    # the region in the reference sense, checked label by label
    region = closure_region(n, edges, picked)
    violating = reference_violations(n, edges, (pred & ~psi).tolist())
    assert not any(violating[c] for c in region)


@SETTINGS
@given(dags(), st.data())
def test_turning_psi_on_keeps_local_consistency(dag: tuple, data: st.DataObject) -> None:
    n, edges = dag
    graph = LabelGraph([f"l{i}" for i in range(n)], edges)
    pred = consistent_pred(n, edges, data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    off_labels = np.flatnonzero(~pred)
    if off_labels.size == 0:
        return
    picked = data.draw(
        st.lists(st.sampled_from(off_labels.tolist()), min_size=1, max_size=3, unique=True)
    )
    targets = np.zeros(n, dtype=bool)
    targets[picked] = True
    logits = np.array(data.draw(st.permutations(range(n))), dtype=float)
    psi = graph.consistent_target_set(pred, targets, direction="on", logits=logits)
    assert (psi | ~targets).all() and not (psi & pred).any()
    assert graph.is_consistent(pred | psi, around=targets)


@SETTINGS
@given(cases(), st.data())
def test_independent_of_label_order(case: tuple, data: st.DataObject) -> None:
    graph, edges, pred, targets = case
    n = len(graph)
    perm = np.array(data.draw(st.permutations(range(n))), dtype=int)  # new position -> old label
    new_position = np.argsort(perm)
    permuted = LabelGraph(
        [graph.names[i] for i in perm],
        [(int(new_position[p]), int(new_position[c])) for p, c in edges],
    )
    psi = graph.consistent_target_set(pred, targets)
    psi_permuted = permuted.consistent_target_set(pred[:, perm], targets[:, perm])
    assert np.array_equal(psi_permuted, psi[:, perm])
    logits = np.tile(np.arange(n, dtype=float), (pred.shape[0], 1))
    off_targets = ~pred & np.roll(targets, 1, axis=0)
    on_psi = graph.consistent_target_set(pred, off_targets, direction="on", logits=logits)
    on_permuted = permuted.consistent_target_set(
        pred[:, perm], off_targets[:, perm], direction="on", logits=logits[:, perm]
    )
    assert np.array_equal(on_permuted, on_psi[:, perm])


@SETTINGS
@given(cases(batch=5), st.permutations(range(5)))
def test_independent_of_batch_composition(case: tuple, order: list[int]) -> None:
    graph, _, pred, targets = case
    psi = graph.consistent_target_set(pred, targets)
    shuffled = graph.consistent_target_set(pred[order], targets[order])
    assert np.array_equal(shuffled, psi[order])
    for row in range(pred.shape[0]):
        assert np.array_equal(graph.consistent_target_set(pred[row], targets[row]), psi[row])
    assert np.array_equal(graph.consistent_target_set(pred[:2], targets[:2]), psi[:2])


@SETTINGS
@given(cases())
def test_local_consistency_matches_reference_region(case: tuple) -> None:
    graph, edges, pred, around = case
    around = around | np.roll(pred, 1, axis=1)  # also labels that are off
    got = graph.is_consistent(pred, around=around)
    for row in range(pred.shape[0]):
        violating = reference_violations(len(graph), edges, pred[row].tolist())
        region = closure_region(len(graph), edges, np.flatnonzero(around[row]).tolist())
        assert got[row] == (not any(violating[c] for c in region))
    assert np.array_equal(graph.is_consistent(pred), ~graph.violations(pred).any(axis=1))


# ----------------------------------------------------------------------------- repair=True


@SETTINGS
@given(cases())
def test_repair_matches_reference_and_is_dag_safe(case: tuple) -> None:
    graph, edges, pred, targets = case
    psi = graph.consistent_target_set(pred, targets, official_closure=True)
    parents, children = neighbour_sets(len(graph), edges)
    for row in range(pred.shape[0]):
        on = pred[row].tolist()
        members = set(np.flatnonzero(psi[row]).tolist())
        expected = reference_repair_turn_off(
            len(graph), edges, on, np.flatnonzero(targets[row]).tolist()
        )
        assert members == expected
        assert np.array_equal(
            graph.consistent_target_set(pred[row], targets[row], official_closure=True), psi[row]
        )
        # DAG-safe: a label another on parent outside Psi supports is only taken when it has
        # no on child left, i.e. never dragged down by a parent
        for label in members - set(np.flatnonzero(targets[row]).tolist()):
            if any(on[p] and p not in members for p in parents[label]):
                assert all(not on[k] or k in members for k in children[label])
    assert (psi | ~targets).all() and not (psi & ~pred).any()
    assert (psi | ~graph.consistent_target_set(pred, targets)).all(), "repair only adds labels"


@SETTINGS
@given(dags(), st.data())
def test_repair_is_the_minimal_set_on_consistent_predictions(
    dag: tuple, data: st.DataObject
) -> None:
    n, edges = dag
    graph = LabelGraph([f"l{i}" for i in range(n)], edges)
    pred = consistent_pred(n, edges, data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    chooser = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    targets = pred & chooser
    assert graph.is_consistent(pred)
    assert np.array_equal(
        graph.consistent_target_set(pred, targets, official_closure=True),
        graph.consistent_target_set(pred, targets),
    )


# ----------------------------------------------------------------------------- mixed targets


@SETTINGS
@given(dags(), st.data())
def test_mixed_targets_give_a_consistent_superset(dag: tuple, data: st.DataObject) -> None:
    n, edges = dag
    graph = LabelGraph([f"l{i}" for i in range(n)], edges)
    pred = consistent_pred(n, edges, data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    targets = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    logits = np.array(data.draw(st.permutations(range(n))), dtype=float)
    try:
        psi = graph.consistent_target_set(pred, targets, direction="mixed", logits=logits)
    except ValueError as error:  # halves that contradict each other are refused, by name
        assert "contradict" in str(error)
        return
    assert (psi | ~targets).all(), "Psi contains the targets"
    assert graph.is_consistent(pred ^ psi, around=targets)
    present, absent = targets & pred, targets & ~pred
    # labels turning on only add support, so the turn-off half is within the plain closure
    off_alone = graph.consistent_target_set(pred, present)
    assert not (psi & pred & ~off_alone).any()
    # one-sided sets are the plain directions
    assert np.array_equal(graph.consistent_target_set(pred, present, direction="mixed"), off_alone)
    assert np.array_equal(
        graph.consistent_target_set(pred, absent, direction="mixed", logits=logits),
        graph.consistent_target_set(pred, absent, direction="on", logits=logits),
    )
    # independent of label order
    perm = np.array(data.draw(st.permutations(range(n))), dtype=int)
    new_position = np.argsort(perm)
    permuted = LabelGraph(
        [graph.names[i] for i in perm],
        [(int(new_position[p]), int(new_position[c])) for p, c in edges],
    )
    psi_permuted = permuted.consistent_target_set(
        pred[perm], targets[perm], direction="mixed", logits=logits[perm]
    )
    assert np.array_equal(psi_permuted, psi[perm])
