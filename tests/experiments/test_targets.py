"""Target-set drawing and image selection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlattack.experiments.config import TargetSetSpec
from mlattack.experiments.targets import choose_images, draw_target_sets, eligible_images

NAMES = tuple(f"l{i}" for i in range(8))
ALL = np.ones(len(NAMES), dtype=bool)


def test_combinations_enumerate_subsets() -> None:
    spec = TargetSetSpec(sizes=[1, 2], mode="combinations", labels=["l0", "l1", "l2"])
    sets = draw_target_sets(spec, NAMES, present=ALL)
    assert sets == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]


def test_random_draws_are_distinct_and_seeded() -> None:
    spec = TargetSetSpec(sizes=[2, 3], mode="random", draws=5)
    first = draw_target_sets(spec, NAMES, present=ALL, seed=3)
    assert first == draw_target_sets(spec, NAMES, present=ALL, seed=3)
    assert first != draw_target_sets(spec, NAMES, present=ALL, seed=4)
    assert len(first) == len(set(first)) == 10
    assert [len(s) for s in first] == [2] * 5 + [3] * 5


def test_random_with_few_possibilities_enumerates_them() -> None:
    spec = TargetSetSpec(sizes=[1], mode="random", draws=50)
    assert draw_target_sets(spec, NAMES, present=ALL) == [(i,) for i in range(8)]


def test_only_present_labels_are_candidates() -> None:
    present = np.zeros(len(NAMES), dtype=bool)
    present[[1, 4]] = True
    spec = TargetSetSpec(sizes=[1], mode="combinations")
    assert draw_target_sets(spec, NAMES, present=present) == [(1,), (4,)]
    spec = TargetSetSpec(sizes=[1], mode="combinations", only_present=False)
    assert len(draw_target_sets(spec, NAMES, present=present)) == 8


def test_openimages_rule_mixes_leaves_and_outside_labels() -> None:
    leaves, outside = [0, 1, 2, 3], [4, 5, 6, 7]
    spec = TargetSetSpec(sizes=[1, 2, 3, 4], mode="openimages", draws=6)
    for labels in draw_target_sets(spec, NAMES, present=ALL, leaves=leaves, outside=outside):
        k = len(labels)
        assert sum(label in leaves for label in labels) == math.ceil(k / 2)
        assert sum(label in outside for label in labels) == k - math.ceil(k / 2)


def test_size_larger_than_label_set_is_refused() -> None:
    spec = TargetSetSpec(sizes=[9], mode="random")
    with pytest.raises(ValueError, match=r"target_sets\.sizes.*size 9 is larger than the 8 labels"):
        draw_target_sets(spec, NAMES, present=ALL)
    spec = TargetSetSpec(sizes=[3], labels=["l0", "l1"])
    with pytest.raises(ValueError, match="larger than the 2 labels"):
        draw_target_sets(spec, NAMES, present=ALL)


def test_unknown_target_label_is_named() -> None:
    with pytest.raises(ValueError, match="unknown labels.*'zebra'"):
        draw_target_sets(TargetSetSpec(labels=["l0", "zebra"]), NAMES, present=ALL)


def test_eligible_images_need_prediction_and_ground_truth() -> None:
    clean = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)
    truth = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)
    assert eligible_images((0, 1), clean, truth).tolist() == [0]
    assert eligible_images((1,), clean, truth).tolist() == [0, 2, 3]
    assert eligible_images((1,), clean, None).tolist() == [0, 2, 3]


def test_choose_images_is_seeded_sorted_and_bounded() -> None:
    candidates = np.arange(100)
    chosen = choose_images(candidates, 10, seed=0, ts_id=2)
    assert len(chosen) == 10 and list(chosen) == sorted(chosen)
    assert chosen == choose_images(candidates, 10, seed=0, ts_id=2)
    assert chosen != choose_images(candidates, 10, seed=0, ts_id=3)
    assert choose_images(np.array([5, 7]), 10, seed=0, ts_id=0) == (5, 7)


def test_a_plan_over_the_cap_is_refused_before_it_is_built() -> None:
    import time

    from mlattack.experiments.config import MAX_TARGET_SETS

    names = [f"l{i}" for i in range(44)]
    present = np.ones(44, dtype=bool)
    started = time.perf_counter()
    spec = TargetSetSpec(sizes=[8], mode="combinations")  # C(44, 8) = 177,232,627 sets
    with pytest.raises(ValueError, match=r"'target_sets.max_sets'.* 177,232,627 target sets"):
        draw_target_sets(spec, names, present=present)
    spec = TargetSetSpec(sizes=[3, 4], mode="random", draws=MAX_TARGET_SETS)
    with pytest.raises(ValueError, match=r"'target_sets.draws'.* more than the cap of 20,000"):
        draw_target_sets(spec, names, present=present)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(ValueError, match="draws"):
        TargetSetSpec(draws=10**9)
    spec = TargetSetSpec(sizes=[8], mode="combinations", max_sets=5)
    assert len(draw_target_sets(spec, names, present=present)) == 5


def test_leaf_sets_are_drawn_among_the_leaves_one_image_holds() -> None:
    rng = np.random.default_rng(0)
    on = rng.random((40, len(NAMES))) < 0.6
    leaves = [1, 2, 4, 5, 6]  # 0, 3 and 7 are inner labels
    spec = TargetSetSpec(sizes=[1, 2, 3, 4], mode="leaves", draws=6)
    sets = draw_target_sets(spec, NAMES, present=on.any(axis=0), leaves=leaves, image_labels=on)
    assert sets == draw_target_sets(
        spec, NAMES, present=on.any(axis=0), leaves=leaves, image_labels=on
    )
    assert len(set(sets)) == len(sets)
    for size in (1, 2, 3, 4):
        of_size = [s for s in sets if len(s) == size]
        assert 1 <= len(of_size) <= 6
        for labels in of_size:
            assert set(labels) <= set(leaves)
            assert on[:, list(labels)].all(axis=1).any()  # some image holds every label
    assert (
        draw_target_sets(
            TargetSetSpec(sizes=[6], mode="leaves"),
            NAMES,
            present=ALL,
            leaves=leaves,
            image_labels=on,
        )
        == []
    )  # no image holds six leaves (there are five): nothing drawn, with a warning
