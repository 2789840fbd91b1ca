"""violations / is_consistent / consistent_target_set on hand-made DAGs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_reference import ZOO, mask, named

from mlattack.graph import LabelGraph

# diamond: top -> left, right -> bottom
DIAMOND = LabelGraph(
    ["top", "left", "right", "bottom"],
    [("top", "left"), ("top", "right"), ("left", "bottom"), ("right", "bottom")],
)
CHAIN = LabelGraph(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "d")])


# ----------------------------------------------------------------------------- violations


def test_violations_known_cases() -> None:
    consistent = mask(ZOO, ["animal", "dog", "pet", "vehicle", "car"])
    assert not ZOO.violations(consistent).any()
    assert ZOO.is_consistent(consistent)
    # a parent with no on child, a child with no on parent; off labels never violate
    broken = mask(ZOO, ["animal", "car", "plant"])
    assert named(ZOO, ZOO.violations(broken)) == {"animal", "car"}
    assert not ZOO.is_consistent(broken)
    # a child with one of two parents on is fine
    assert not ZOO.violations(mask(ZOO, ["pet", "cat"])).any()
    assert not ZOO.violations(np.zeros(len(ZOO), dtype=bool)).any()


def test_violations_any_leading_shape_and_torch() -> None:
    rows = np.stack([mask(ZOO, ["animal"]), mask(ZOO, ["dog", "pet"]), mask(ZOO, ["car"])])
    batch = np.stack([rows, rows[::-1]])  # [2, 3, C]
    result = ZOO.violations(batch)
    assert isinstance(result, np.ndarray) and result.shape == batch.shape
    assert named(ZOO, result[0, 0]) == {"animal"} and named(ZOO, result[1, 0]) == {"car"}
    as_torch = ZOO.violations(torch.from_numpy(batch))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.bool
    assert np.array_equal(as_torch.numpy(), result)
    consistent = ZOO.is_consistent(torch.from_numpy(batch))
    assert isinstance(consistent, torch.Tensor) and consistent.shape == (2, 3)
    assert consistent.tolist() == [[False, True, False], [False, True, False]]


def test_local_consistency_ignores_unrelated_labels() -> None:
    # vehicle on without any child: inconsistent, but far from the dog
    pred = mask(ZOO, ["animal", "dog", "vehicle"])
    around = mask(ZOO, ["dog"])
    assert not ZOO.is_consistent(pred)
    assert ZOO.is_consistent(pred, around=around)
    assert not ZOO.is_consistent(pred, around=mask(ZOO, ["car"]))  # car's parent is vehicle
    # the region reaches through ancestors and descendants: cat is a sibling, not in the region
    pred = mask(ZOO, ["animal", "dog", "pet", "cat"])
    pred[ZOO.index("pet")] = False  # cat keeps animal: still consistent
    assert ZOO.is_consistent(pred, around=mask(ZOO, ["dog"]))
    chain_pred = mask(CHAIN, ["a", "b", "c"])  # c has a child d that is off
    assert not CHAIN.is_consistent(chain_pred, around=mask(CHAIN, ["a"]))  # d's ancestors incl. a
    batch = np.stack([chain_pred, mask(CHAIN, ["a", "b", "c", "d"])])
    assert CHAIN.is_consistent(batch, around=np.stack([mask(CHAIN, ["d"])] * 2)).tolist() == [
        False,
        True,
    ]


def test_consistency_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 8\].*\(7,\)"):
        ZOO.violations(np.zeros(7, dtype=bool))
    with pytest.raises(ValueError, match="around must have the prediction's shape"):
        ZOO.is_consistent(np.zeros((2, 8), dtype=bool), around=np.zeros((3, 8), dtype=bool))
    with pytest.raises(TypeError, match="dtype float"):
        ZOO.violations(np.zeros(8))
    with pytest.raises(TypeError, match="list"):
        ZOO.violations([True] * 8)  # type: ignore[arg-type]
    # 0/1 integers are read as booleans
    assert not ZOO.violations(np.zeros(8, dtype=np.int64)).any()


# ----------------------------------------------------------------------------- turn off


@pytest.mark.parametrize(
    ("graph", "on", "targets", "expected"),
    [
        # tree: the dog's parent loses its only on child
        (ZOO, ["animal", "dog", "vehicle", "car"], ["dog"], {"dog", "animal"}),
        # multi-parent: animal keeps cat on, pet keeps cat too
        (ZOO, ["animal", "pet", "dog", "cat"], ["dog"], {"dog"}),
        # dog keeps its other parent pet: only the animal goes
        (ZOO, ["animal", "pet", "dog"], ["animal"], {"animal"}),
        # pet off: dog has no other parent on and goes with the animal
        (ZOO, ["animal", "dog", "cat"], ["animal"], {"animal", "dog", "cat"}),
        # removing both parents takes the shared children along
        (ZOO, ["animal", "pet", "dog", "cat"], ["animal", "pet"], {"animal", "pet", "dog", "cat"}),
        # a child's removal propagates up only when the parent has nothing else on
        (ZOO, ["animal", "pet", "dog"], ["dog"], {"dog", "animal", "pet"}),
        # forest: the other tree and the isolated label stay put
        (ZOO, ["vehicle", "bike", "plant", "animal", "cat"], ["bike"], {"bike", "vehicle"}),
        (ZOO, ["plant"], ["plant"], {"plant"}),
        # chain: everything hangs on b
        (CHAIN, ["a", "b", "c", "d"], ["b"], {"a", "b", "c", "d"}),
        (CHAIN, ["a", "b", "c", "d"], ["d"], {"a", "b", "c", "d"}),
        # diamond: bottom needs both sides gone; top goes when both children go
        (DIAMOND, ["top", "left", "right", "bottom"], ["left"], {"left"}),
        (
            DIAMOND,
            ["top", "left", "right", "bottom"],
            ["bottom"],
            {"top", "left", "right", "bottom"},
        ),
        (DIAMOND, ["top", "left", "right", "bottom"], ["top"], {"top", "left", "right", "bottom"}),
        (
            DIAMOND,
            ["top", "left", "right", "bottom"],
            ["left", "right"],
            {"top", "left", "right", "bottom"},
        ),
        (DIAMOND, ["top", "left", "bottom"], ["left"], {"top", "left", "bottom"}),
    ],
)
def test_turn_off_known_answers(
    graph: LabelGraph, on: list[str], targets: list[str], expected: set[str]
) -> None:
    pred = mask(graph, on)
    psi = graph.consistent_target_set(pred, mask(graph, targets))
    assert isinstance(psi, np.ndarray) and psi.dtype == bool and psi.shape == pred.shape
    assert named(graph, psi) == expected
    by_name = graph.consistent_target_set(pred, targets)
    assert named(graph, by_name) == expected


def test_turn_off_leaves_existing_inconsistencies_alone() -> None:
    # vehicle on with no child (already inconsistent), and b on while its parent a is off
    pred = mask(ZOO, ["vehicle", "animal", "dog"])
    assert named(ZOO, ZOO.consistent_target_set(pred, ["dog"])) == {"dog", "animal"}
    chain = mask(CHAIN, ["b", "c"])
    assert named(CHAIN, CHAIN.consistent_target_set(chain, ["c"])) == {"b", "c"}
    # an on child whose parent was already off is not pulled in by the parent's neighbours
    pred = mask(CHAIN, ["a", "c", "d"])
    assert named(CHAIN, CHAIN.consistent_target_set(pred, ["a"])) == {"a"}


def test_turn_off_batch_and_torch_parity() -> None:
    preds = np.stack(
        [
            mask(ZOO, ["animal", "dog", "vehicle", "car"]),
            mask(ZOO, ["animal", "pet", "dog", "cat"]),
            mask(ZOO, ["vehicle", "car", "bike"]),
        ]
    )
    targets = np.stack([mask(ZOO, ["dog"]), mask(ZOO, ["pet"]), np.zeros(8, dtype=bool)])
    psi = ZOO.consistent_target_set(preds, targets)
    assert [named(ZOO, row) for row in psi] == [{"dog", "animal"}, {"pet"}, set()]
    as_torch = ZOO.consistent_target_set(torch.from_numpy(preds), torch.from_numpy(targets))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.bool
    assert as_torch.device == torch.device("cpu")
    assert np.array_equal(as_torch.numpy(), psi)
    for row in range(3):
        single = ZOO.consistent_target_set(
            torch.from_numpy(preds[row]), torch.from_numpy(targets[row])
        )
        assert single.shape == (8,) and np.array_equal(single.numpy(), psi[row])


def test_inputs_are_not_modified() -> None:
    pred = torch.from_numpy(mask(ZOO, ["animal", "dog"]))
    targets = torch.from_numpy(mask(ZOO, ["dog"]))
    before = (pred.clone(), targets.clone())
    ZOO.consistent_target_set(pred, targets)
    assert torch.equal(pred, before[0]) and torch.equal(targets, before[1])


# ----------------------------------------------------------------------------- turn on


@pytest.mark.parametrize(
    ("graph", "on", "targets", "expected"),
    [
        (ZOO, [], ["dog"], {"dog", "animal", "pet"}),  # every off parent of an unsupported label
        (ZOO, ["pet", "cat"], ["dog"], {"dog"}),  # pet already supports dog
        (ZOO, ["animal", "cat"], ["dog"], {"dog"}),
        (ZOO, [], ["plant"], {"plant"}),
        (ZOO, [], ["dog", "animal"], {"dog", "animal"}),  # a target supports its child
        (CHAIN, [], ["d"], {"a", "b", "c", "d"}),
        (CHAIN, ["a"], ["c", "d"], {"b", "c", "d"}),  # stops at the first on ancestor
        (DIAMOND, ["top", "left"], ["bottom"], {"bottom"}),
        (DIAMOND, [], ["bottom"], {"top", "left", "right", "bottom"}),
        (ZOO, ["car"], ["vehicle"], {"vehicle"}),  # a child is on already
    ],
)
def test_turn_on_known_answers(
    graph: LabelGraph, on: list[str], targets: list[str], expected: set[str]
) -> None:
    pred = mask(graph, on)
    psi = graph.consistent_target_set(pred, mask(graph, targets), direction="on")
    assert named(graph, psi) == expected


def test_turn_on_picks_highest_logit_child_recursively() -> None:
    logits = np.array([0.0, -1.0, -3.0, -4.0])
    assert named(
        CHAIN, CHAIN.consistent_target_set(np.zeros(4, bool), ["a"], direction="on", logits=logits)
    ) == {
        "a",
        "b",
        "c",
        "d",
    }
    zoo_logits = np.full(8, -5.0)
    zoo_logits[ZOO.index("bike")] = -1.0
    psi = ZOO.consistent_target_set(
        np.zeros(8, bool), ["vehicle"], direction="on", logits=zoo_logits
    )
    assert named(ZOO, psi) == {"vehicle", "bike"}
    zoo_logits[ZOO.index("car")] = 2.0
    batch = np.stack([zoo_logits, -zoo_logits])
    psi = ZOO.consistent_target_set(
        torch.zeros(2, 8, dtype=torch.bool),
        torch.from_numpy(np.stack([mask(ZOO, ["vehicle"])] * 2)),
        direction="on",
        logits=torch.from_numpy(batch).float(),
    )
    assert [named(ZOO, row) for row in psi] == [{"vehicle", "car"}, {"vehicle", "bike"}]
    # the child picked for a target needs no further parents: its picker supports it
    psi = DIAMOND.consistent_target_set(
        np.zeros(4, bool), ["left"], direction="on", logits=np.array([0.0, 0.0, 0.0, 1.0])
    )
    assert named(DIAMOND, psi) == {"top", "left", "bottom"}


def test_turn_on_without_logits_when_a_child_must_be_chosen() -> None:
    with pytest.raises(ValueError, match="'vehicle'.*pass logits"):
        ZOO.consistent_target_set(np.zeros(8, bool), ["vehicle"], direction="on")
    with pytest.raises(ValueError, match="'a'.*image 1.*pass logits"):
        CHAIN.consistent_target_set(
            np.zeros((2, 4), bool), np.array([[0, 0, 0, 1], [1, 0, 0, 0]], bool), direction="on"
        )


# ----------------------------------------------------------------------------- errors


def test_target_set_errors() -> None:
    pred = np.stack([mask(ZOO, ["animal", "dog"]), mask(ZOO, ["vehicle", "car"])])
    bad_targets = np.stack([mask(ZOO, ["dog"]), mask(ZOO, ["bike"])])
    with pytest.raises(ValueError, match="image 1, label 'bike' is not present"):
        ZOO.consistent_target_set(pred, bad_targets)
    with pytest.raises(ValueError, match="label 'dog' is already present"):
        ZOO.consistent_target_set(pred[0], ["dog"], direction="on")
    with pytest.raises(ValueError, match=r"targets must have the prediction's shape \(2, 8\)"):
        ZOO.consistent_target_set(pred, bad_targets[:1])
    with pytest.raises(ValueError, match=r"pred must have shape \[\.\.\., 8\]"):
        ZOO.consistent_target_set(pred[:, :5], bad_targets[:, :5])
    with pytest.raises(ValueError, match=r"\[B, 8\] or \[8\]"):
        ZOO.consistent_target_set(pred[None], bad_targets[None])
    with pytest.raises(ValueError, match="label index 8 out of range"):
        ZOO.consistent_target_set(pred[0], [8])
    with pytest.raises(ValueError, match="unknown label 'zebra'"):
        ZOO.consistent_target_set(pred[0], ["zebra"])
    with pytest.raises(ValueError, match=r"single \[C\] prediction"):
        ZOO.consistent_target_set(pred, ["dog"])
    with pytest.raises(ValueError, match="direction must be one of 'off', 'on', 'mixed'"):
        ZOO.consistent_target_set(pred, bad_targets, direction="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"logits must have the prediction's shape \(8,\)"):
        ZOO.consistent_target_set(
            np.zeros(8, bool), ["vehicle"], direction="on", logits=np.zeros(7)
        )
    with pytest.raises(TypeError, match="dtype float"):
        ZOO.consistent_target_set(pred, bad_targets.astype(float))
    with pytest.raises(TypeError, match="targets"):
        ZOO.consistent_target_set(pred[0], "dog")  # type: ignore[arg-type]
    off = np.zeros(8, bool)
    with pytest.raises(TypeError, match="logits must hold real numbers, got dtype bool"):
        ZOO.consistent_target_set(off, ["vehicle"], direction="on", logits=np.ones(8, bool))
    with pytest.raises(TypeError, match="logits must hold real numbers"):
        ZOO.consistent_target_set(
            off, ["vehicle"], direction="on", logits=torch.ones(8, dtype=torch.bool)
        )
    nan_logits = np.zeros(8)
    nan_logits[ZOO.index("car")] = np.nan
    with pytest.raises(ValueError, match="logits hold NaN.*'car'"):
        ZOO.consistent_target_set(off, ["vehicle"], direction="on", logits=nan_logits)


def test_single_prediction_gives_a_scalar_for_numpy_and_torch() -> None:
    pred = mask(ZOO, ["animal", "dog"])
    for around in (None, mask(ZOO, ["dog"])):
        as_numpy = ZOO.is_consistent(pred, around=around)
        as_torch = ZOO.is_consistent(
            torch.from_numpy(pred), around=None if around is None else torch.from_numpy(around)
        )
        assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == ()
        assert isinstance(as_torch, torch.Tensor) and as_torch.shape == ()
        assert bool(as_numpy) and bool(as_torch)


def test_empty_batches_and_views() -> None:
    empty = np.zeros((0, 8), dtype=bool)
    assert ZOO.consistent_target_set(empty, empty).shape == (0, 8)
    assert ZOO.is_consistent(torch.zeros(0, 8, dtype=torch.bool)).shape == (0,)
    assert LabelGraph([]).violations(np.zeros((3, 0), dtype=bool)).shape == (3, 0)
    # a non-contiguous view (reversed labels of a reversed graph) gives the same answer
    reversed_zoo = LabelGraph(ZOO.names[::-1], [(ZOO.names[p], ZOO.names[c]) for p, c in ZOO.edges])
    pred = np.stack([mask(ZOO, ["animal", "dog", "vehicle", "car"])] * 2)
    targets = np.stack([mask(ZOO, ["dog"]), mask(ZOO, ["car"])])
    psi = reversed_zoo.consistent_target_set(pred[:, ::-1], targets[:, ::-1])
    assert np.array_equal(psi[:, ::-1], ZOO.consistent_target_set(pred, targets))
    assert np.array_equal(
        reversed_zoo.is_consistent(pred[:, ::-1], around=targets[:, ::-1]), [True, True]
    )


def test_logits_that_require_grad_are_accepted() -> None:
    logits = torch.zeros(8, requires_grad=True)
    psi = ZOO.consistent_target_set(
        torch.zeros(8, dtype=torch.bool), ["vehicle"], direction="on", logits=logits * 2
    )
    assert named(ZOO, psi) == {"vehicle", "car"}  # tie: the lower index
    # logits are ignored when turning off
    assert named(
        ZOO, ZOO.consistent_target_set(mask(ZOO, ["plant"]), ["plant"], logits=logits)
    ) == {"plant"}


def test_integer_masks() -> None:
    assert ZOO.is_consistent(mask(ZOO, ["animal", "dog"]).astype(np.uint8))
    with pytest.raises(ValueError, match="pred holds integers other than 0 and 1"):
        ZOO.violations(np.full(8, 2))
