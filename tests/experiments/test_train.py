"""Training: mAP against scikit-learn, the correlation report, and a tiny end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mlattack.data import SyntheticScenes
from mlattack.experiments.train import (
    TrainReport,
    average_precision_per_label,
    correlation_report,
    mean_average_precision,
    predict_scores,
    train_model,
)


class TinyNet(nn.Module):
    """A few-parameter multi-label model with the attributes the trainer reads."""

    def __init__(self, label_names: tuple[str, ...]) -> None:
        super().__init__()
        self.label_names = label_names
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Linear(8, len(label_names))

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.head(self.features(images).flatten(1))
        return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_sklearn_with_ties(seed: int) -> None:
    average_precision_score = pytest.importorskip("sklearn.metrics").average_precision_score
    rng = np.random.default_rng(seed)
    labels = rng.random((60, 5)) < 0.3
    labels[:, 4] = False  # a label with no positive is left out of the mean
    scores = np.round(rng.random((60, 5)), 1)  # many ties
    scores[labels] += 0.3
    per_label = average_precision_per_label(scores, labels)
    for c in range(4):
        assert per_label[c] == pytest.approx(
            average_precision_score(labels[:, c], scores[:, c]), abs=1e-12
        )
    assert math.isnan(per_label[4])
    expected = np.mean([average_precision_score(labels[:, c], scores[:, c]) for c in range(4)])
    assert mean_average_precision(
        torch.from_numpy(scores), torch.from_numpy(labels)
    ) == pytest.approx(expected)


def test_map_closed_form_and_bad_input() -> None:
    labels = np.array([[1], [0], [1], [0]])
    # ranking: pos, neg, pos, neg -> AP = (1/1 + 2/3) / 2
    assert mean_average_precision(np.array([[0.9], [0.8], [0.7], [0.1]]), labels) == pytest.approx(
        5 / 6
    )
    assert mean_average_precision(np.array([[0.9], [0.1], [0.8], [0.2]]), labels) == pytest.approx(
        1.0
    )
    with pytest.raises(ValueError, match="no label has a positive"):
        mean_average_precision(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="differ in shape"):
        mean_average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        mean_average_precision(np.full((2, 1), np.nan), np.ones((2, 1)))


def test_correlation_report_counts() -> None:
    names = ("a", "b", "c")
    # columns a, b, c; predictions and ground truth for 5 images
    predicted = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]])
    truth = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1]])
    (pair,) = correlation_report(predicted, truth, names, [("a", "b")])
    assert pair.n_a_predicted == 3 and pair.p_b_given_a == pytest.approx(2 / 3)
    assert pair.n_a_predicted_b_absent == 2 and pair.p_b_given_a_b_absent == pytest.approx(1 / 2)
    assert pair.p_b == pytest.approx(3 / 5)
    assert pair.data_p_b_given_a == pytest.approx(2 / 4)
    # a present with b: images 0 and 4 (found in 0); without b: images 1 and 2 (found in both)
    assert pair.a_recall_with_b == pytest.approx(
        1 / 2
    ) and pair.a_recall_without_b == pytest.approx(1.0)
    assert "P(b predicted | a predicted) = 0.667 (n=3" in pair.line()
    (never,) = correlation_report(np.zeros((2, 3)), np.zeros((2, 3)), names, [("c", "a")])
    assert math.isnan(never.p_b_given_a)
    with pytest.raises(ValueError, match="'z' is not a label"):
        correlation_report(predicted, truth, names, [("a", "z")])


@pytest.mark.slow
def test_train_model_end_to_end_tiny() -> None:
    train = SyntheticScenes(96, size=16, seed=0, split="train")
    val = SyntheticScenes(48, size=16, seed=0, split="test")
    model = TinyNet(train.label_names)
    before = [p.detach().clone() for p in model.parameters()]
    lines: list[str] = []
    report = train_model(
        model,
        train,
        val,
        epochs=2,
        lr=1e-2,
        batch_size=32,
        seed=0,
        progress=False,
        log=lines.append,
    )
    assert isinstance(report, TrainReport) and len(report.epochs) == 2
    assert [e.epoch for e in report.epochs] == [1, 2] and all(
        0.0 < e.val_map <= 1.0 for e in report.epochs
    )
    assert len(lines) == 2 and "val mAP" in lines[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not model.training
    assert set(report.per_label_ap) == set(train.label_names)
    assert [(c.a, c.b) for c in report.correlations] == train.correlated_pairs
    scores, targets = predict_scores(model, val)
    assert report.final_map == pytest.approx(mean_average_precision(scores, targets))
    as_dict = report.to_dict()
    assert as_dict["final_map"] == report.final_map and len(as_dict["epochs"]) == 2


@pytest.mark.slow
def test_training_is_seeded() -> None:
    train = SyntheticScenes(64, size=16, split="train")
    val = SyntheticScenes(32, size=16, split="test")
    maps = []
    for _ in range(2):
        torch.manual_seed(5)
        model = TinyNet(train.label_names)
        maps.append(
            train_model(
                model, train, val, epochs=1, lr=1e-2, batch_size=16, seed=3, progress=False
            ).final_map
        )
    assert maps[0] == maps[1]


def test_asl_loss_trains() -> None:
    train = SyntheticScenes(32, size=16, split="train")
    val = SyntheticScenes(32, size=16, split="test")
    report = train_model(TinyNet(train.label_names), train, val, epochs=1, lr=1e-2, batch_size=16, loss="asl",
                         progress=False)  # fmt: skip
    assert report.loss == "asl" and math.isfinite(report.epochs[0].train_loss)


def test_bad_training_arguments_are_named() -> None:
    train = SyntheticScenes(8, size=16)
    model = TinyNet(train.label_names)
    with pytest.raises(ValueError, match="epochs"):
        train_model(model, train, train, epochs=0, lr=0.1, batch_size=4)
    with pytest.raises(ValueError, match="lr"):
        train_model(model, train, train, epochs=1, lr=-1.0, batch_size=4)
    with pytest.raises(ValueError, match="loss must be"):
        train_model(model, train, train, epochs=1, lr=0.1, batch_size=4, loss="mse")  # type: ignore[arg-type]
    renamed = TinyNet(("x",) + train.label_names[1:])
    with pytest.raises(ValueError, match=r"position 0: 'x' vs 'round'"):
        train_model(renamed, train, train, epochs=1, lr=0.1, batch_size=4)
    empty = SyntheticScenes(8, size=16)
    empty._labels = torch.zeros(8, 20)  # as if nothing were annotated
    with pytest.raises(ValueError, match="no positive label"):
        train_model(model, train, empty, epochs=1, lr=0.1, batch_size=4)
    fewer = TinyNet(train.label_names[:3])
    with pytest.raises(ValueError, match="3 labels but the training set has 20"):
        train_model(fewer, train, train, epochs=1, lr=0.1, batch_size=4)
