"""Training multi-label models: the loop, mAP, and the label-correlation report.

``train_model`` trains any model that maps images ``[B, 3, H, W]`` in [0, 1] to logits ``[B, C]`` on a
dataset yielding ``(image, labels[C])`` with BCE or the asymmetric loss (AdamW, one-cycle schedule),
and measures the validation mAP after every epoch. For datasets with ``correlated_pairs`` (the
synthetic scenes) it also measures how often the trained model predicts label B when it predicts
label A on held-out images: the spurious co-occurrence the semantic-aware attacks have to fight.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mlattack._validation import check_int

LossName = Literal["bce", "asl"]
ArrayLike = Tensor | np.ndarray


def _as_numpy(values: ArrayLike, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a [N, C] matrix, got shape {list(array.shape)}")
    return array


def average_precision_per_label(scores: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Average precision of each label (column), NaN for labels with no positive.

    AP = sum over distinct score thresholds (high to low) of (recall gain) x precision, ties counted
    together - the definition of ``sklearn.metrics.average_precision_score``.
    """
    score = _as_numpy(scores, "scores").astype(np.float64)
    truth = _as_numpy(labels, "labels") > 0.5
    if score.shape != truth.shape:
        raise ValueError(
            f"scores {list(score.shape)} and labels {list(truth.shape)} differ in shape"
        )
    if not np.isfinite(score).all():
        raise ValueError("scores contain NaN or infinite values")
    result = np.full(score.shape[1], np.nan)
    for column in range(score.shape[1]):
        positives = truth[:, column]
        if not positives.any():
            continue
        order = np.argsort(-score[:, column], kind="mergesort")
        ranked = score[order, column]
        hits = np.cumsum(positives[order])
        # the last position of each run of equal scores: ties share one threshold
        ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
        true_pos = hits[ends]
        precision = true_pos / (ends + 1)
        recall_gain = np.diff(np.r_[0, true_pos]) / true_pos[-1]
        result[column] = float(np.sum(recall_gain * precision))
    return result


def mean_average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Mean over labels with at least one positive of the average precision (see above)."""
    per_label = average_precision_per_label(scores, labels)
    if np.isnan(per_label).all():
        raise ValueError("mAP is undefined: no label has a positive example")
    return float(np.nanmean(per_label))


@dataclass(frozen=True)
class PairCorrelation:
    """How a model's predictions of two labels co-occur on held-out images.

    ``p_b_given_a``: P(B predicted | A predicted); ``p_b_given_a_b_absent``: the same restricted to
    images where B is truly absent (B predicted only because A is there: the spurious part);
    ``p_b``: P(B predicted) over all images; ``data_p_b_given_a``: P(B present | A present) in the
    ground truth; ``a_recall_with_b`` / ``a_recall_without_b``: P(A predicted | A present) on images
    with / without B (a model leaning on B to see A finds A less often without it). NaN where the
    condition never holds.
    """

    a: str
    b: str
    n_a_predicted: int
    p_b_given_a: float
    n_a_predicted_b_absent: int
    p_b_given_a_b_absent: float
    p_b: float
    data_p_b_given_a: float
    a_recall_with_b: float
    a_recall_without_b: float

    def line(self) -> str:
        return (
            f"P({self.b} predicted | {self.a} predicted) = {self.p_b_given_a:.3f} "
            f"(n={self.n_a_predicted}; {self.b} absent: {self.p_b_given_a_b_absent:.3f}, "
            f"n={self.n_a_predicted_b_absent}); P({self.b} predicted) = {self.p_b:.3f}; "
            f"data P({self.b} | {self.a}) = {self.data_p_b_given_a:.3f}; "
            f"{self.a} found with {self.b} {self.a_recall_with_b:.3f}, "
            f"without {self.a_recall_without_b:.3f}"
        )


def _rate(hits: np.ndarray, condition: np.ndarray) -> float:
    count = int(condition.sum())
    return float((hits & condition).sum() / count) if count else math.nan


def correlation_report(
    predicted: ArrayLike,
    labels: ArrayLike,
    label_names: Sequence[str],
    pairs: Sequence[tuple[str, str]],
) -> list[PairCorrelation]:
    """:class:`PairCorrelation` of each ``(A, B)`` pair from 0/1 predictions and ground truth ``[N, C]``."""
    pred = _as_numpy(predicted, "predicted") > 0.5
    truth = _as_numpy(labels, "labels") > 0.5
    if pred.shape != truth.shape or pred.shape[1] != len(label_names):
        raise ValueError(
            f"predicted {list(pred.shape)}, labels {list(truth.shape)} and {len(label_names)} label "
            "names do not match"
        )
    position = {name: i for i, name in enumerate(label_names)}
    report = []
    for a, b in pairs:
        for name in (a, b):
            if name not in position:
                raise ValueError(f"correlated pair ({a!r}, {b!r}): {name!r} is not a label")
        ia, ib = position[a], position[b]
        a_pred, b_pred, a_true, b_true = pred[:, ia], pred[:, ib], truth[:, ia], truth[:, ib]
        report.append(
            PairCorrelation(
                a=a,
                b=b,
                n_a_predicted=int(a_pred.sum()),
                p_b_given_a=_rate(b_pred, a_pred),
                n_a_predicted_b_absent=int((a_pred & ~b_true).sum()),
                p_b_given_a_b_absent=_rate(b_pred, a_pred & ~b_true),
                p_b=float(b_pred.mean()),
                data_p_b_given_a=_rate(b_true, a_true),
                a_recall_with_b=_rate(a_pred, a_true & b_true),
                a_recall_without_b=_rate(a_pred, a_true & ~b_true),
            )
        )
    return report


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_map: float
    seconds: float


@dataclass
class TrainReport:
    """What a training run did: per-epoch loss and validation mAP, final per-label AP, correlations."""

    label_names: tuple[str, ...]
    loss: str
    epochs: list[EpochRecord] = field(default_factory=list)
    per_label_ap: dict[str, float] = field(default_factory=dict)
    correlations: list[PairCorrelation] = field(default_factory=list)
    seconds: float = 0.0
    num_skipped: int = 0

    @property
    def final_map(self) -> float:
        return self.epochs[-1].val_map if self.epochs else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN APs become None), e.g. for a checkpoint's ``extra``."""
        return {
            "loss": self.loss,
            "final_map": self.final_map,
            "seconds": self.seconds,
            "num_skipped": self.num_skipped,
            "epochs": [asdict(e) for e in self.epochs],
            "per_label_ap": {
                k: (None if math.isnan(v) else v) for k, v in self.per_label_ap.items()
            },
            "correlations": [
                {
                    k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in asdict(c).items()
                }
                for c in self.correlations
            ],
        }

    def correlation_lines(self) -> list[str]:
        return [c.line() for c in self.correlations]


def _check_labels_match(model: nn.Module, dataset: Dataset[Any], what: str) -> tuple[str, ...]:
    data_names = tuple(getattr(dataset, "label_names", ()))
    model_names = tuple(getattr(model, "label_names", ()))
    if data_names and model_names and data_names != model_names:
        if len(data_names) != len(model_names):
            raise ValueError(
                f"the model has {len(model_names)} labels but the {what} set has {len(data_names)}"
            )
        at = next(i for i, (m, d) in enumerate(zip(model_names, data_names, strict=True)) if m != d)
        raise ValueError(
            f"the model's labels differ from the {what} set's at position {at}: "
            f"{model_names[at]!r} vs {data_names[at]!r}"
        )
    return data_names or model_names


def _make_loss(model: nn.Module, loss: str) -> Callable[[Tensor, Tensor], Tensor]:
    if loss == "bce":
        return F.binary_cross_entropy_with_logits
    if loss == "asl":
        criterion = getattr(model, "criterion", None)
        if callable(criterion):  # an ASL model carries its own gamma/clip settings
            return criterion()
        from mlattack.models.asl import AsymmetricLoss

        return AsymmetricLoss()
    raise ValueError(f"loss must be 'bce' or 'asl', got {loss!r}")


@torch.no_grad()
def predict_scores(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """``(sigmoid scores [N, C], ground-truth labels [N, C])`` of ``model`` in eval mode on ``dataset``.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    scores, labels = [], []
    try:
        for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            scores.append(torch.sigmoid(model(images.to(device))).float().cpu())
            labels.append(targets.float())
    finally:
        model.train(was_training)
    return torch.cat(scores), torch.cat(labels)


def _warmup_cosine(total_steps: int, warmup_share: float = 0.2) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up from 0.1 to 1, then cosine decay to ~0."""
    warmup = max(1, round(warmup_share * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def train_model(
    model: nn.Module,
    train_ds: Dataset[Any],
    val_ds: Dataset[Any],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    loss: LossName = "bce",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    weight_decay: float = 1e-4,
    threshold: float = 0.5,
    correlated_pairs: Sequence[tuple[str, str]] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainReport:
    """Train ``model`` in place on ``train_ds`` and evaluate it on ``val_ds`` after every epoch.

    AdamW (``lr`` is the peak of a warm-up + cosine schedule, ``weight_decay``) on BCE with logits or the
    asymmetric loss (``loss="asl"``: the model's own ``criterion()`` when it has one). Shuffling is
    seeded by ``seed``. Every epoch logs ``train loss`` and the validation mAP (``log``, default
    ``tqdm.write`` when ``progress`` else silent; ``progress`` also shows a progress bar). At the
    end the report holds the per-label AP and, for ``correlated_pairs`` (default: the validation
    set's ``correlated_pairs`` attribute, if any), the :class:`PairCorrelation` of the predictions
    (``sigmoid > threshold``) on ``val_ds``. The model is left in eval mode.
    """
    check_int(epochs, "epochs", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if len(train_ds) == 0 or len(val_ds) == 0:  # type: ignore[arg-type]
        raise ValueError("train and validation sets must not be empty")
    names = _check_labels_match(model, train_ds, "training")
    _check_labels_match(model, val_ds, "validation")
    known_labels = getattr(val_ds, "labels", None)
    if isinstance(known_labels, Tensor) and not bool((known_labels > 0.5).any()):
        raise ValueError("the validation set has no positive label: its mAP is undefined")
    criterion = _make_loss(model, loss)
    pairs = list(
        correlated_pairs
        if correlated_pairs is not None
        else getattr(val_ds, "correlated_pairs", [])
    )
    write = log if log is not None else (tqdm.write if progress else None)

    torch.manual_seed(seed)
    model.to(device)
    loader = DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_ds) > batch_size,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(seed),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(epochs * len(loader)))
    report = TrainReport(label_names=names, loss=loss)
    start = time.perf_counter()
    scores = targets = torch.empty(0)
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        total, batches = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
        for images, labels in bar:
            logits = model(images.to(device))
            if logits.shape != labels.shape:
                raise ValueError(
                    f"the model gave logits {list(logits.shape)} for labels {list(labels.shape)}"
                )
            batch_loss = criterion(logits, labels.to(device=device, dtype=logits.dtype))
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            schedule.step()
            total += float(batch_loss.detach())
            batches += 1
            bar.set_postfix(loss=f"{total / batches:.4f}")
        scores, targets = predict_scores(
            model, val_ds, batch_size=max(batch_size, 128), device=device
        )
        record = EpochRecord(
            epoch=epoch,
            train_loss=total / max(batches, 1),
            val_map=mean_average_precision(scores, targets),
            seconds=time.perf_counter() - epoch_start,
        )
        report.epochs.append(record)
        if write is not None:
            write(
                f"epoch {epoch}/{epochs}  train loss {record.train_loss:.4f}  "
                f"val mAP {record.val_map:.4f}  ({record.seconds:.1f} s)"
            )
    model.eval()
    report.seconds = time.perf_counter() - start
    if not names:  # neither the model nor the data named the labels
        names = report.label_names = tuple(f"label_{i}" for i in range(targets.shape[1]))
    report.per_label_ap = dict(
        zip(names, average_precision_per_label(scores, targets).tolist(), strict=True)
    )
    if pairs:
        report.correlations = correlation_report(scores > threshold, targets, names, pairs)
    report.num_skipped = int(getattr(train_ds, "num_skipped", 0)) + int(
        getattr(val_ds, "num_skipped", 0)
    )
    return report
