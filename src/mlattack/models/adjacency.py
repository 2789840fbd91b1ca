"""ML-GCN's label propagation matrix, in two styles: the paper's and the released code's.

* ``"paper"`` (Chen et al. 2019, eqs. 6-8): ``P(j | i) = #(i and j) / #i`` binarised at ``tau``
  (``A_ij = 1`` iff ``P(j | i) >= tau``, ``i != j``), then re-weighted per **row**: each label
  keeps ``1 - p`` of its own feature and spreads ``p`` evenly over its ``n_i`` neighbours
  (``A'_ij = p / n_i``, ``A'_ii = 1 - p``; a label without neighbours keeps ``A'_ii = 1``). Every row
  sums to 1 and the matrix is used as it is: label i gathers from the labels j it implies.
* ``"official"`` (megvii-research/ML-GCN's ``gen_A`` + ``gen_adj``): the same binarised ``A``,
  then ``A * p / (column sums + 1e-6) + I`` with p = 0.25 (so the **diagonal is 1** plus nothing,
  and the **columns**, not the rows, are normalised), and the forward propagates with
  ``gen_adj(A) = (A D)^T D = D A^T D``, ``D = diag(rowsum(A))^-1/2``. The transpose makes the
  **edges point the other way**: label i gathers from the labels that imply i. The released
  checkpoints were trained with this matrix, and :func:`mlattack.models.load_mlgcn_checkpoint`
  uses it (from the checkpoint's stored ``A``).

Training "an ML-GCN like the paper" (``build_model("ml-gcn", train_labels=...)``) uses
``adjacency_style="paper"`` unless told otherwise; ``"official"`` gives the released code's graph.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)
AdjacencyStyle = Literal["paper", "official"]
ADJACENCY_STYLES = ("paper", "official")
DEFAULT_P = {"paper": 0.2, "official": 0.25}


def cooccurrence_adjacency(
    labels: ArrayT,
    tau: float = 0.4,
    p: float | None = None,
    *,
    style: AdjacencyStyle = "paper",
) -> ArrayT:
    """ML-GCN's propagation matrix ``[C, C]`` from training labels ``[N, C]`` (bool or 0/1).

    ``style`` is ``"paper"`` (eq. 8; ``p`` default 0.2) or ``"official"`` (the released code's
    ``gen_adj(gen_A(...))``; ``p`` default 0.25): see the module docstring for how they differ.
    A label never seen has no edge. Returns a float32 ``[C, C]`` of the input's kind (numpy in ->
    numpy out; torch in -> torch out on the same device).
    """
    if style not in ADJACENCY_STYLES:
        raise ValueError(f"style must be one of {ADJACENCY_STYLES}, got {style!r}")
    p = DEFAULT_P[style] if p is None else p
    if not 0 < tau <= 1:
        raise ValueError(f"tau must be in (0, 1], got {tau!r}")
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    is_torch = isinstance(labels, Tensor)
    values = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if values.ndim != 2 or values.shape[1] < 1:
        raise ValueError(f"labels must have shape [N, C], got {list(values.shape)}")
    if values.dtype != np.bool_ and not np.isin(values, (0, 1)).all():
        raise ValueError("labels must be bool or 0/1 (threshold soft labels first)")
    present = values.astype(np.float64)
    joint = present.T @ present  # [C, C]: images with both i and j
    counts = np.diag(joint).copy()
    if style == "official":
        np.fill_diagonal(joint, 0)  # ML-GCN's *_adj.pkl counts pairs of distinct labels
        result = official_propagation(
            torch.from_numpy(official_gen_a(joint, counts, tau, p))
        ).numpy()
    else:
        result = _paper_adjacency(joint, counts, tau, p)
    if is_torch:
        return torch.from_numpy(result).to(labels.device)  # type: ignore[return-value]
    return result  # type: ignore[return-value]


def _paper_adjacency(joint: np.ndarray, counts: np.ndarray, tau: float, p: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        conditional = np.where(counts[:, None] > 0, joint / counts[:, None], 0.0)
    neighbours = conditional >= tau
    np.fill_diagonal(neighbours, False)
    degree = neighbours.sum(axis=1)
    weights = np.where(neighbours, p / np.maximum(degree, 1)[:, None], 0.0)
    np.fill_diagonal(weights, np.where(degree > 0, 1.0 - p, 1.0))
    return weights.astype(np.float32)


def official_gen_a(
    pair_counts: np.ndarray, label_counts: np.ndarray, t: float, p: float = 0.25
) -> np.ndarray:
    """ML-GCN's ``gen_A``: the matrix its checkpoints store as ``A`` (float32 ``[C, C]``).

    ``pair_counts[i, j]``: training images with both i and j (zero diagonal, the ``adj`` of
    ``*_adj.pkl``); ``label_counts[i]``: images with i (``nums``). ``P(j | i)`` is binarised at
    ``t``, scaled by ``p / (column sum + 1e-6)``, and the identity is added. A label never seen
    (count 0) has no edge (the official code would divide by zero).
    """
    pairs = np.asarray(pair_counts, dtype=np.float64)
    nums = np.asarray(label_counts, dtype=np.float64)
    if pairs.ndim != 2 or pairs.shape[0] != pairs.shape[1] or nums.shape != (pairs.shape[0],):
        raise ValueError(
            f"pair counts must be [C, C] and label counts [C], got {list(pairs.shape)} and "
            f"{list(nums.shape)}"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        conditional = np.where(nums[:, None] > 0, pairs / nums[:, None], 0.0)
    binary = (conditional >= t).astype(np.float64)
    scaled = binary * p / (binary.sum(0, keepdims=True) + 1e-6)
    return (scaled + np.identity(len(nums))).astype(np.float32)


def official_propagation(a: Tensor) -> Tensor:
    """ML-GCN's ``gen_adj``: ``(A D)^T D`` with ``D = diag(rowsum(A)^-1/2)``, in float32 as the
    official code computes it (the matrix its forward multiplies by)."""
    degree = torch.diag(torch.pow(a.sum(1).float(), -0.5))
    return torch.matmul(torch.matmul(a, degree).t(), degree)
