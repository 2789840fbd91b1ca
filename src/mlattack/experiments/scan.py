"""The clean scan: the attacked model's prediction (and the ground truth) on every scanned image.

Joined ranks each scan a contiguous share of the image batches and gather the shares, so that every
rank holds the whole scan at ``1/W`` of its cost (:mod:`.distributed`). Images that cannot be read
are skipped explicitly (never replaced by another image); a resume keeps the images its run skipped
when it started, so that it plans the same target sets.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mlattack.data.images import UnreadableImageError
from mlattack.experiments.builders import label_names_of
from mlattack.experiments.config import ExperimentConfig
from mlattack.experiments.distributed import Ranks
from mlattack.experiments.reading import read_item
from mlattack.experiments.store import fault_point
from mlattack.losses import logit_threshold


@dataclass
class CleanScan:
    """Clean predictions (and ground truth) of the scanned images, as bool numpy arrays."""

    clean_pred: np.ndarray  # [N, C]; all False for skipped images, so they are never eligible
    ground_truth: np.ndarray | None  # [N, C]
    skipped: dict[int, str]  # image id -> why it could not be read
    n_nonfinite: int = (
        0  # read images whose clean logits hold a NaN or an infinity (never eligible)
    )

    def digest(self) -> str:
        """A hash of the scan (predictions, ground truth, skipped images): ranks that agree on it
        attacked the same images for the same target sets."""
        digest = hashlib.sha256(json.dumps(list(self.clean_pred.shape)).encode())
        digest.update(np.packbits(self.clean_pred).tobytes())
        if self.ground_truth is not None:
            digest.update(b"ground truth")
            digest.update(np.packbits(self.ground_truth).tobytes())
        digest.update(json.dumps(sorted(self.skipped)).encode())
        return digest.hexdigest()[:16]


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype images are given to ``model`` in: its parameters' floating dtype (float32 for a
    model without floating parameters)."""
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.is_floating_point():
        return parameter.dtype
    return torch.float32


@dataclass
class _ScanShard:
    """One rank's share of a scan: images ``first`` to ``stop``, label rows packed to bits."""

    first: int
    stop: int
    clean: np.ndarray
    truth: np.ndarray | None
    skipped: dict[int, str]
    read_now: list[int]  # images of ``keep_skipped`` that read this time
    n_nonfinite: int


def scan_clean(
    model: nn.Module,
    dataset: Dataset[Any],
    n_images: int,
    columns: torch.Tensor | None,
    config: ExperimentConfig,
    device: torch.device,
    ranks: Ranks,
    *,
    progress: bool,
    what: str,
    keep_skipped: dict[int, str] | None = None,
) -> CleanScan:
    """The clean predictions of the first ``n_images``: joined ranks each scan a contiguous share
    of the batches (the same batches a single rank scans, so the same numbers) and gather them.

    Every image is read (transient errors retried, :func:`.reading.read_item`); one that still
    cannot be read is skipped. ``keep_skipped`` (image id -> reason) lists the images a resumed
    run skipped when it started: they stay skipped with that reason even where they read now
    (with a warning), so that the resume plans the same target sets and images."""
    starts = range(0, n_images, config.batch_size)
    share = ranks.share(len(starts)) if ranks.joined else range(len(starts))
    first = starts[share.start] if len(share) else n_images
    stop = min(starts[share.stop - 1] + config.batch_size, n_images) if len(share) else n_images
    shard = _scan_range(
        model, dataset, first, stop, columns, config, device, progress=progress, what=what,
        keep_skipped=keep_skipped or {},
    )  # fmt: skip
    num_labels = len(label_names_of(model))
    clean = np.zeros((n_images, num_labels), dtype=bool)
    truth = None if columns is None else np.zeros((n_images, num_labels), dtype=bool)
    skipped: dict[int, str] = {}
    read_now: list[int] = []
    n_nonfinite = 0
    for part in ranks.gather(shard):
        rows = slice(part.first, part.stop)
        clean[rows] = np.unpackbits(part.clean, axis=1, count=num_labels).astype(bool)
        if truth is not None and part.truth is not None:
            truth[rows] = np.unpackbits(part.truth, axis=1, count=num_labels).astype(bool)
        skipped.update(part.skipped)
        read_now += part.read_now
        n_nonfinite += part.n_nonfinite
    if n_nonfinite:
        warnings.warn(
            f"{what}: the model's output on {n_nonfinite} of the {n_images - len(skipped)} read "
            "images holds a NaN or an infinite logit (NaN/Inf weights, or a broken normalisation?); "
            "those images are never attacked",
            RuntimeWarning,
            stacklevel=2,
        )
    if read_now:
        warnings.warn(
            f"{what}: {len(read_now)} image(s) skipped as unreadable when this run started read "
            f"now (ids {sorted(read_now)[:10]}); they stay skipped so that the resume attacks the "
            "same images (start over with '--force' to include them)",
            RuntimeWarning,
            stacklevel=2,
        )
    if skipped:
        warnings.warn(
            f"{what}: skipped {len(skipped)} unreadable image(s) of {n_images} "
            f"(e.g. {next(iter(skipped.values()))}); they are listed in the store and the report "
            "(in a run's config, 'dataset: options: validate: true' drops them before the scan)",
            RuntimeWarning,
            stacklevel=2,
        )
    return CleanScan(clean, truth, dict(sorted(skipped.items())), n_nonfinite)


def _scan_range(
    model: nn.Module,
    dataset: Dataset[Any],
    first: int,
    stop: int,
    columns: torch.Tensor | None,
    config: ExperimentConfig,
    device: torch.device,
    *,
    progress: bool,
    what: str,
    keep_skipped: dict[int, str],
) -> _ScanShard:
    logit_cut = logit_threshold(config.threshold)
    num_labels = len(label_names_of(model))
    clean = np.zeros((stop - first, num_labels), dtype=bool)
    truth = None if columns is None else np.zeros((stop - first, num_labels), dtype=bool)
    skipped: dict[int, str] = {}
    read_now: list[int] = []
    n_nonfinite = 0
    batches = range(first, stop, config.batch_size)
    for start in tqdm(batches, desc=what, disable=not progress, unit="batch"):
        fault_point("scan")
        items: dict[int, tuple[Any, Any]] = {}
        for i in range(start, min(start + config.batch_size, stop)):
            try:
                item = read_item(dataset, i)
            except UnreadableImageError as exc:
                skipped[i] = str(exc)  # left all False: never eligible, never attacked
                continue
            if i in keep_skipped:  # skipped when the run started: stays skipped, the plan with it
                skipped[i] = keep_skipped[i]
                read_now.append(i)
                continue
            items[i] = item
        if not items:
            continue
        rows = [i - first for i in items]
        images = torch.stack([image for image, _ in items.values()])
        images = images.to(device=device, dtype=input_dtype(model))
        with torch.no_grad():
            logits = model(images)
        finite = torch.isfinite(logits).all(dim=1)
        n_nonfinite += int((~finite).sum())
        # an image with a NaN or infinite clean logit has no prediction: nothing is on
        clean[rows] = ((logits > logit_cut) & finite[:, None]).cpu().numpy()
        if columns is not None and truth is not None:
            labels = torch.stack([torch.as_tensor(label) for _, label in items.values()]).bool()
            padded = torch.cat([labels, torch.zeros(len(rows), 1, dtype=torch.bool)], dim=1)
            truth[rows] = padded[:, columns].numpy()  # column -1 = the all-False pad
    packed_truth = None if truth is None else np.packbits(truth, axis=1)
    return _ScanShard(
        first, stop, np.packbits(clean, axis=1), packed_truth, skipped, read_now, n_nonfinite
    )


__all__ = ["CleanScan", "input_dtype", "scan_clean"]
