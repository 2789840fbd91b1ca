"""Synthetic hierarchical scenes: contract, determinism, taxonomy, correlations, bad arguments."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from mlattack.data import SyntheticScenes, build_dataset
from mlattack.data.synthetic import DENSE_GROUPS, GROUPS, KINDS, SHAPES


def test_items_follow_the_dataset_contract() -> None:
    ds = SyntheticScenes(8, size=32, seed=1)
    image, labels = ds[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert labels.shape == (20,) and set(labels.unique().tolist()) <= {0.0, 1.0}
    assert len(ds) == 8 and ds.num_skipped == 0
    assert ds.label_names[:4] == tuple(GROUPS) and len(set(ds.label_names)) == 20


def test_graph_is_groups_over_leaves_and_labels_are_closed_upward() -> None:
    ds = SyntheticScenes(500, size=16)
    graph = ds.graph
    assert graph.names == ds.label_names
    assert len(graph.roots) == 4 and len(graph.leaves) == 16
    for group, leaves in GROUPS.items():
        assert {graph.names[c] for c in graph.children(group)} == set(leaves)
    labels = ds.labels.bool()
    assert not graph.violations(labels.numpy()).any()
    leaves_per_image = labels[:, 4:].sum(dim=1)
    assert int(leaves_per_image.min()) >= 1 and int(leaves_per_image.max()) <= 4


def test_deterministic_in_seed_split_and_index_and_batch_invariant() -> None:
    ds = SyntheticScenes(50, size=32, seed=7)
    batch, batch_labels = ds.render([4, 9, 4])
    single, single_labels = ds[9]
    assert torch.equal(batch[1], single) and torch.equal(batch_labels[1], single_labels)
    assert torch.equal(batch[0], batch[2])
    again = SyntheticScenes(50, size=32, seed=7)
    assert torch.equal(again[9][0], single)
    assert not torch.equal(SyntheticScenes(50, size=32, seed=8)[9][0], single)
    assert not torch.equal(SyntheticScenes(50, size=32, seed=7, split="test")[9][0], single)
    assert torch.equal(ds.labels[[4, 9]], batch_labels[:2])


def test_dataloader_batches_equal_render() -> None:
    ds = SyntheticScenes(10, size=16)
    images, labels = next(iter(DataLoader(ds, batch_size=10, shuffle=False)))
    expected_images, expected_labels = ds.render(range(10))
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_objects_are_drawn_brighter_than_the_background() -> None:
    ds = SyntheticScenes(64, size=32)
    images, _ = ds.render(range(64))
    # objects have HSV value >= 0.7; backgrounds stay below ~0.45
    assert bool((images.amax(dim=(1, 2, 3)) >= 0.6).all())
    assert bool((images.amin(dim=(1, 2, 3)) <= 0.45).all())


def test_correlated_pairs_co_occur() -> None:
    ds = SyntheticScenes(4000, size=16, correlation=0.9)
    labels = ds.labels.bool()
    names = ds.label_names
    for a, b in ds.correlated_pairs:
        with_a = labels[:, names.index(a)]
        assert float(labels[with_a, names.index(b)].float().mean()) > 0.75
        assert float(labels[:, names.index(b)].float().mean()) < 0.35
    # an uncorrelated pair stays near the base rate
    disc, frame = names.index("disc"), names.index("frame")
    assert float(labels[labels[:, disc], frame].float().mean()) < 0.3


def test_no_correlation_without_pairs() -> None:
    ds = SyntheticScenes(3000, size=16, correlated_pairs=[])
    labels = ds.labels.bool()
    ring, tee = ds.label_names.index("ring"), ds.label_names.index("tee")
    assert ds.correlated_pairs == []
    assert float(labels[labels[:, ring], tee].float().mean()) < 0.3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"n": 4, "size": 8}, "size"),
        ({"n": 4, "split": "dev"}, "split"),
        ({"n": 4, "correlated_pairs": [("ring", "unicorn")]}, "'unicorn' is not a leaf"),
        ({"n": 4, "correlated_pairs": [("ring", "ring")]}, "itself"),
        ({"n": 4, "correlation": 1.5}, "correlation"),
        ({"n": 4, "max_objects": 4}, "max_objects"),
        ({"n": 4, "dense": True, "size": 32}, "multiple of 3"),
        ({"n": 4, "dense": True, "max_objects": 6}, "max_objects"),
        ({"n": 4, "min_objects": 1.5}, "min_objects"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticScenes(**kwargs)  # type: ignore[arg-type]


def test_index_errors_and_registry() -> None:
    ds = build_dataset("synthetic", n=3, size=16)
    assert isinstance(ds, SyntheticScenes)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        build_dataset("mnist")
    with pytest.raises(TypeError, match="synthetic"):
        build_dataset("synthetic", n=3, colour="red")


def test_dense_scenes_have_a_three_level_taxonomy_of_44_labels() -> None:
    ds = SyntheticScenes(600, size=48, dense=True)
    graph = ds.graph
    assert len(ds.label_names) == len(set(ds.label_names)) == 44
    assert ds.label_names[:4] == tuple(KINDS) and set(ds.leaf_names) <= set(SHAPES)
    assert int(graph.depths.max()) == 2 and len(graph.roots) == 4 and len(graph.leaves) == 32
    for kind, groups in KINDS.items():
        assert {graph.names[c] for c in graph.children(kind)} == set(groups)
    for group, leaves in DENSE_GROUPS.items():
        assert {graph.names[c] for c in graph.children(group)} == set(leaves)
    labels = ds.labels.bool()
    assert not graph.violations(labels.numpy()).any()
    objects = labels[:, -32:].sum(dim=1)
    assert int(objects.min()) >= 2 and int(objects.max()) == 6
    # Five-leaf target sets have images that show all five.
    assert int((objects >= 5).sum()) > 50


def test_dense_scenes_draw_up_to_six_objects_in_a_3x3_grid() -> None:
    ds = SyntheticScenes(32, size=48, dense=True, seed=3)
    images, labels = ds.render(range(32))
    assert images.shape == (32, 3, 48, 48) and labels.shape == (32, 44)
    # Each cell (16 x 16) holds at most one object: count the cells with a bright object.
    cells = images.amax(dim=1).unfold(1, 16, 16).unfold(2, 16, 16).amax(dim=(-1, -2))
    occupied = (cells > 0.6).flatten(1).sum(dim=1)
    assert torch.equal(occupied, labels[:, -32:].sum(dim=1).long())
    assert torch.equal(SyntheticScenes(32, size=48, dense=True, seed=3)[5][0], images[5])


def test_dense_is_a_strict_bool() -> None:
    with pytest.raises(TypeError, match="dense"):
        SyntheticScenes(4, dense=1)  # type: ignore[arg-type]
